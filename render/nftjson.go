package render

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"

	"go4.org/netipx"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// obj is one JSON object; encoding/json sorts its keys, so output is stable.
type obj = map[string]any

// NFTJSON writes the ruleset as nft JSON for `nft -j -f`: the commands that
// replace natpool's table in one transaction, built only from the shapes
// `nft -j list ruleset` prints (nft 1.0.6 can crash on others). The "natpool"
// key, which nft ignores, carries the version and digest.
func NFTJSON(w io.Writer, rs *compiler.Ruleset, version string) error {
	for _, r := range rs.Rules {
		if k := r.Target.Kind; k == compiler.ByHostBlock || k == compiler.ByValuePorts {
			return fmt.Errorf("egress %s: nft 1.0.6 cannot load port blocks from JSON (it rejects the per-host map's type, and compares the compact form's port lookups as if they were constants); use --format nft, or natpool apply", r.Egress)
		}
	}
	// The document is written a command at a time, in the form JSON gives
	// it whole: {"natpool": ..., "nftables": [commands]}, indented.
	b := bufio.NewWriterSize(w, 1<<16)
	head, _ := json.Marshal(header(version, rs.Digest))
	fmt.Fprintf(b, "{\n  \"natpool\": %s,\n  \"nftables\": [", head)
	n := 0
	command := func(cmd obj) {
		text, _ := json.MarshalIndent(cmd, "    ", "  ")
		if n++; n > 1 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		b.Write(text)
	}
	table := obj{"family": "ip", "name": rs.Table}
	command(obj{"metainfo": obj{"json_schema_version": 1}})
	command(obj{"add": obj{"table": table}})
	command(obj{"delete": obj{"table": table}})
	command(obj{"add": obj{"table": table}})
	for _, m := range rs.Maps {
		command(obj{"add": obj{"map": nftJSONMap(rs.Table, m)}})
	}
	command(obj{"add": obj{"chain": obj{"family": "ip", "table": rs.Table, "name": compiler.Chain,
		"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}})
	rule := func(chain, comment string, exprs ...any) {
		command(obj{"add": obj{"rule": obj{"family": "ip", "table": rs.Table, "chain": chain, "comment": comment, "expr": exprs}}})
	}
	for _, h := range rs.Hairpins {
		exprs := append([]any{sourcesMatch(h.Sources), match(daddr, h.Inside.Addr.String())}, servicePortsJSON(h.Protocol, h.Inside.Ports)...)
		rule(compiler.Chain, rs.HairpinComment(h), append(exprs, flags(obj{"ct": obj{"key": "status"}}, "dnat"), obj{"masquerade": nil})...)
	}
	for _, r := range rs.Rules {
		rule(compiler.Chain, rs.Comment(r), nftJSONExprs(r, rs.Label)...)
	}
	command(obj{"add": obj{"chain": obj{"family": "ip", "table": rs.Table, "name": compiler.GuardChain,
		"type": "filter", "hook": "postrouting", "prio": 110, "policy": "accept"}}})
	for _, g := range rs.Guards {
		exprs := []any{sourcesMatch(g.Sources)}
		if g.OIF != "" {
			exprs = append(exprs, match(obj{"meta": obj{"key": "oifname"}}, g.OIF))
		}
		exprs = append(exprs, obj{"match": obj{"op": "!", "left": obj{"ct": obj{"key": "status"}}, "right": "snat"}},
			obj{"counter": obj{"packets": 0, "bytes": 0}}, obj{"drop": nil})
		rule(compiler.GuardChain, rs.GuardComment(g), exprs...)
	}
	if u := rs.Uplinks; u != nil {
		comment := rs.UplinksComment()
		command(obj{"add": obj{"chain": obj{"family": "ip", "table": rs.Table, "name": compiler.UplinkChain,
			"type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}}})
		var runs []any
		for _, b := range u.Runs {
			runs = append(runs, []any{obj{"range": []uint32{b.Lo, b.Hi}}, b.Mark})
		}
		hash := obj{"jhash": obj{"mod": u.Buckets, "seed": u.Seed, "expr": saddr}}
		rule(compiler.UplinkChain, comment, sourcesMatch(u.Sources), flags(obj{"ct": obj{"key": "state"}}, "new"),
			setTo(mark, obj{"map": obj{"key": hash, "data": obj{"set": runs}}}))
		for _, m := range u.Members {
			rule(compiler.UplinkChain, comment, match(mark, m.Mark), flags(obj{"ct": obj{"key": "state"}}, "new"), setTo(label, m.Label))
		}
		for _, m := range u.Members {
			rule(compiler.UplinkChain, comment, sourcesMatch(u.Sources), flags(label, m.Label), setTo(mark, m.Mark))
		}
		for _, m := range rs.ReplyMarks() {
			rule(compiler.UplinkChain, comment, replyMarkJSON(m)...)
		}
	}
	if len(rs.Forwards) > 0 {
		command(obj{"add": obj{"chain": obj{"family": "ip", "table": rs.Table, "name": compiler.ServiceChain,
			"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}})
		for _, f := range rs.Forwards {
			exprs := append([]any{match(daddr, f.Public.Addr.String())}, servicePortsJSON(f.Protocol, f.Public.Ports)...)
			if f.Mark != 0 {
				exprs = append(exprs, setTo(ctMark, f.Mark))
			}
			to := obj{"addr": f.Inside.Addr.String()}
			if p := f.Port(); p != 0 {
				to["port"] = p
			}
			rule(compiler.ServiceChain, rs.ServiceComment(f), append(exprs, obj{"dnat": to})...)
		}
	}
	if len(rs.Prefixes6) > 0 {
		prefixes6JSON(rs, command)
	}
	b.WriteString("\n  ]\n}\n")
	return b.Flush()
}

// prefixes6JSON writes the commands of natpool's ip6 table, replaced as
// the ip table is.
func prefixes6JSON(rs *compiler.Ruleset, command func(obj)) {
	table := obj{"family": "ip6", "name": rs.Table}
	command(obj{"add": obj{"table": table}})
	command(obj{"delete": obj{"table": table}})
	command(obj{"add": obj{"table": table}})
	chain := func(name, kind, hook string, prio int) {
		command(obj{"add": obj{"chain": obj{"family": "ip6", "table": rs.Table, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
	}
	rule := func(chain, comment string, exprs ...any) {
		command(obj{"add": obj{"rule": obj{"family": "ip6", "table": rs.Table, "chain": chain, "comment": comment, "expr": exprs}}})
	}
	field := func(name string) obj { return obj{"payload": obj{"protocol": "ip6", "field": name}} }
	prefix := func(p netip.Prefix) obj { return obj{"prefix": obj{"addr": p.Addr().String(), "len": p.Bits()}} }
	to := func(p netip.Prefix) obj { return obj{"addr": prefix(p), "flags": "netmap", "type_flags": "prefix"} }
	chain(compiler.Chain, "nat", "postrouting", 100)
	for _, x := range rs.Prefixes6 {
		if x.Public.IsValid() {
			rule(compiler.Chain, rs.Prefix6Comment(x), match(field("saddr"), prefix(x.Inside)), match(obj{"meta": obj{"key": "oifname"}}, x.OIF), obj{"snat": to(x.Public)})
		}
	}
	chain(compiler.PreroutingChain, "nat", "prerouting", -100)
	for _, x := range rs.Prefixes6 {
		if x.Public.IsValid() {
			in := []any{match(field("daddr"), prefix(x.Public)), match(obj{"meta": obj{"key": "iifname"}}, x.OIF)}
			if x.Mark != 0 {
				in = append(in, setTo(ctMark, x.Mark))
			}
			rule(compiler.PreroutingChain, rs.Prefix6Comment(x), append(in, obj{"dnat": to(x.Inside)})...)
		}
	}
	chain(compiler.GuardChain, "filter", "postrouting", 110)
	for _, x := range rs.Prefixes6 {
		rule(compiler.GuardChain, rs.Guard6Comment(x), match(field("saddr"), prefix(x.Inside)), match(obj{"meta": obj{"key": "oifname"}}, x.OIF),
			obj{"match": obj{"op": "!", "left": obj{"ct": obj{"key": "status"}}, "right": "snat"}}, obj{"counter": obj{"packets": 0, "bytes": 0}}, obj{"drop": nil})
	}
	if marks := rs.Marks6(); len(marks) > 0 {
		chain(compiler.UplinkChain, "filter", "prerouting", -150)
		for _, m := range marks {
			rule(compiler.UplinkChain, rs.Uplinks6Comment(), replyMarkJSON(m)...)
		}
	}
}

// replyMarkJSON marks the replies of the connections that keep mark m.
func replyMarkJSON(m uint32) []any {
	return []any{match(obj{"ct": obj{"key": "direction"}}, "reply"), match(ctMark, m), setTo(mark, m)}
}

func nftJSONMap(table string, m compiler.Map) obj {
	elems := make([]any, 0, m.Len)
	for e := range m.Elements {
		elems = append(elems, []any{addrRange(netipx.IPRangeFrom(e.From, e.To)), e.Addr.String()})
	}
	set := obj{"family": "ip", "table": table, "name": m.Name, "type": "ipv4_addr", "map": "ipv4_addr", "elem": elems}
	if m.Interval {
		set["flags"] = []string{"interval"}
	} else {
		set["size"] = m.Len
	}
	return set
}

// The operands natpool's rules read and set.
var (
	saddr  = obj{"payload": obj{"protocol": "ip", "field": "saddr"}}
	daddr  = obj{"payload": obj{"protocol": "ip", "field": "daddr"}}
	mark   = obj{"meta": obj{"key": "mark"}}
	ctMark = obj{"ct": obj{"key": "mark"}}
	label  = obj{"ct": obj{"key": "label"}}
)

func match(left, right any) obj {
	return obj{"match": obj{"op": "==", "left": left, "right": right}}
}

// flags matches a flag of a bitmask (ct state, ct status, ct label), as
// nft writes `ct state new`.
func flags(left, right any) obj {
	return obj{"match": obj{"op": "in", "left": left, "right": right}}
}

// setTo sets key to value, as nft writes `meta mark set VALUE`.
func setTo(key, value any) obj {
	return obj{"mangle": obj{"key": key, "value": value}}
}

// servicePortsJSON matches a service's protocol and destination ports.
func servicePortsJSON(protocol string, ports pool.PortRange) []any {
	return []any{match(obj{"meta": obj{"key": "l4proto"}}, protocol), match(obj{"payload": obj{"protocol": "th", "field": "dport"}}, portRange(ports))}
}

// sourcesMatch matches the source address against ranges.
func sourcesMatch(ranges []netipx.IPRange) obj {
	if len(ranges) == 1 {
		return match(saddr, addrRange(ranges[0]))
	}
	set := make([]any, len(ranges))
	for i, s := range ranges {
		set[i] = addrRange(s)
	}
	return match(saddr, obj{"set": set})
}

func nftJSONExprs(r compiler.Rule, ctLabel int) []any {
	exprs := []any{sourcesMatch(r.Sources)}
	if r.OIF != "" {
		exprs = append(exprs, match(obj{"meta": obj{"key": "oifname"}}, r.OIF))
	}
	if r.L4 {
		exprs = append(exprs, match(obj{"meta": obj{"key": "l4proto"}}, obj{"set": []string{"tcp", "udp"}}))
	}
	t := r.Target
	snat := obj{}
	switch t.Kind {
	case compiler.ByValue:
		snat["addr"] = obj{"map": obj{"key": obj{"&": []any{saddr, t.Mask.String()}}, "data": "@" + t.Map}}
	case compiler.ByJhash:
		var buckets []any
		for _, b := range t.Runs {
			buckets = append(buckets, []any{obj{"range": []uint32{b.Lo, b.Hi}}, b.Addr.String()})
		}
		hash := obj{"jhash": obj{"mod": t.Buckets, "seed": t.Seed, "expr": saddr}}
		snat["addr"] = obj{"map": obj{"key": hash, "data": obj{"set": buckets}}}
	case compiler.ByRange:
		snat["addr"] = obj{"range": []string{t.First.String(), t.Last.String()}}
		snat["flags"] = "persistent"
	case compiler.ByHost:
		snat["addr"] = obj{"map": obj{"key": saddr, "data": "@" + t.Map}}
	}
	if r.Ports != (pool.PortRange{}) {
		snat["port"] = portRange(r.Ports)
	}
	return append(exprs, setTo(label, ctLabel), obj{"snat": snat})
}

// addrRange writes an address range as nft JSON does: an address, a prefix
// or a range.
func addrRange(r netipx.IPRange) any {
	if p, ok := r.Prefix(); ok {
		if p.Bits() == 32 {
			return p.Addr().String()
		}
		return obj{"prefix": obj{"addr": p.Addr().String(), "len": p.Bits()}}
	}
	return obj{"range": []string{r.From().String(), r.To().String()}}
}

func portRange(p pool.PortRange) any {
	if p.Lo == p.Hi {
		return p.Lo
	}
	return obj{"range": []uint16{p.Lo, p.Hi}}
}
