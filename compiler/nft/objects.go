//go:build linux

package nft

import (
	"encoding/binary"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"go4.org/netipx"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// The kernel objects of a ruleset, built as nft builds them from the
// rendered text (checked with nft --debug=netlink), so that the table apply
// loads lists like the one nft -f loads.

// Registers: NFT_REG_1 is the first 16-byte register; 8 (NFT_REG32_00) and
// up name its 4-byte parts, which the compact port blocks need.
const (
	reg1 = 1
	reg2 = 2
	reg3 = 3
	reg4 = 4
	r32  = 8 // NFT_REG32_00
)

// objects is a ruleset as kernel objects, in the order a batch creates them.
type objects struct {
	table  *nftables.Table
	chains []chainRules      // the NAT chain, then a cluster node's steer chain, ..., then the ip6 table's
	sets   []setWithElements // named maps, then each rule's anonymous sets
	// table6 is the ip6 table of the same name, for the IPv6 prefix
	// translations; nil for none. drop6 deletes natpool's ip6 table that
	// a ruleset without them leaves behind.
	table6 *nftables.Table
	drop6  bool
}

// add records a set, giving it its batch-local ID now, so that the lookups
// built next can name it (AddSet would assign IDs only when queued).
func (o *objects) add(s setWithElements) {
	s.set.ID = uint32(len(o.sets) + 1)
	if s.set.Anonymous {
		s.set.Name = "__set%d"
		if s.set.IsMap {
			s.set.Name = "__map%d"
		}
	}
	o.sets = append(o.sets, s)
}

// setWithElements is a set and its elements. The elements of a map of a
// million hosts are made a message at a time as the batch is queued, never
// all at once: chunks gives the kernel elements a message's worth at a time.
type setWithElements struct {
	set    *nftables.Set
	what   string // the set, for an error: "map NAME"
	n      int    // elements of the ruleset's map, or kernel elements
	chunks iter.Seq[[]nftables.SetElement]
}

// listed is a set whose kernel elements are at hand.
func listed(s *nftables.Set, what string, elems []nftables.SetElement) setWithElements {
	return setWithElements{s, what, len(elems), slices.Chunk(elems, elementsPerMessage)}
}

// all returns every kernel element of the set.
func (s setWithElements) all() []nftables.SetElement {
	out := make([]nftables.SetElement, 0, s.n)
	for c := range s.chunks {
		out = append(out, c...)
	}
	return out
}

// chunked makes the kernel elements of a ruleset's map a message at a time:
// encode turns up to elementsPerMessage elements into kernel elements, first
// telling whether they begin the map.
func chunked(m compiler.Map, encode func(elems []compiler.Element, first bool) []nftables.SetElement) iter.Seq[[]nftables.SetElement] {
	return func(yield func([]nftables.SetElement) bool) {
		buf := make([]compiler.Element, 0, elementsPerMessage)
		first := true
		for e := range m.Elements {
			if buf = append(buf, e); len(buf) == elementsPerMessage {
				if !yield(encode(buf, first)) {
					return
				}
				buf, first = buf[:0], false
			}
		}
		if len(buf) > 0 || first {
			yield(encode(buf, first))
		}
	}
}

func buildObjects(rs *compiler.Ruleset) (*objects, error) {
	o := &objects{table: &nftables.Table{Family: nftables.TableFamilyIPv4, Name: rs.Table}}
	accept := nftables.ChainPolicyAccept
	nat := &chainRules{chain: &nftables.Chain{Name: compiler.Chain, Table: o.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}}
	named := map[string]*nftables.Set{}
	for _, m := range rs.Maps {
		s := &nftables.Set{Table: o.table, Name: m.Name, IsMap: true, KeyType: nftables.TypeIPAddr, Interval: m.Interval}
		// put writes an element's data, width bytes, into dst.
		var width int
		var put func(dst []byte, e compiler.Element)
		switch m.Kind {
		case compiler.AddrMap:
			s.DataType, width = nftables.TypeIPAddr, 4
			put = func(dst []byte, e compiler.Element) { a := e.Addr.As4(); copy(dst, a[:]) }
		case compiler.PortBlockMap:
			dt, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
			if err != nil {
				return nil, err
			}
			// The data is an interval of address . port: both ends, each
			// field padded to a 4-byte register.
			dt.Bytes *= 2
			s.DataType, width = dt, 16
			put = func(dst []byte, e compiler.Element) {
				a := e.Addr.As4()
				copy(dst[0:], a[:])
				binary.BigEndian.PutUint16(dst[4:], e.Ports.Lo)
				copy(dst[8:], a[:])
				binary.BigEndian.PutUint16(dst[12:], e.Ports.Hi)
			}
		case compiler.PortMap:
			s.DataType, width = nftables.TypeInetService, 2
			put = func(dst []byte, e compiler.Element) { binary.BigEndian.PutUint16(dst, e.Ports.Lo) }
		case compiler.MarkMap:
			s.DataType, width = nftables.TypeMark, 4
			put = func(dst []byte, e compiler.Element) { binary.NativeEndian.PutUint32(dst, e.Mark) }
		}
		value := func(e compiler.Element) []byte {
			v := make([]byte, width)
			put(v, e)
			return v
		}
		encode := func(elems []compiler.Element, first bool) []nftables.SetElement {
			return intervals(elems, value, first)
		}
		if !s.Interval {
			// A hash map of declared size gets the kernel's fixed-size
			// backend: a resizable one rehashes after a large load, and a
			// dump during the rehash misses elements.
			s.Size = uint32(m.Len)
			encode = func(elems []compiler.Element, _ bool) []nftables.SetElement {
				// A message's keys and data share one allocation each: a
				// per-host map has a million elements.
				out := make([]nftables.SetElement, len(elems))
				keys, data := make([]byte, 4*len(elems)), make([]byte, width*len(elems))
				for k, e := range elems {
					key, val := keys[4*k:4*k+4:4*k+4], data[width*k:width*(k+1):width*(k+1)]
					from := e.From.As4()
					copy(key, from[:])
					put(val, e)
					out[k] = nftables.SetElement{Key: key, Val: val}
				}
				return out
			}
		}
		named[m.Name] = s
		o.add(setWithElements{s, "map " + m.Name, m.Len, chunked(m, encode)})
	}
	add := func(c *chainRules, exprs []expr.Any, comment string) {
		c.rules = append(c.rules, &nftables.Rule{Table: c.chain.Table, Chain: c.chain, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	for _, h := range rs.Hairpins {
		add(nat, o.hairpinExprs(h), rs.HairpinComment(h))
	}
	if st := rs.Steering; st != nil && len(st.Peers) > 0 {
		// Packets routed to a peer leave untranslated: the peer translates
		// them. Their connection is labelled natpool's, so that watch may
		// delete it when the peer dies or comes back.
		s := o.anonymous("the rule for peers", nftables.TypeIPAddr, nftables.SetDatatype{}, false, peerElements(st.Peers))
		x := append([]expr.Any{&expr.Rt{Register: reg1, Key: expr.RtNexthop4}, lookup(s, reg1)}, labelExprs(rs.Label)...)
		add(nat, append(x, &expr.Verdict{Kind: expr.VerdictAccept}), rs.PeersComment())
	}
	for _, r := range rs.Rules {
		exprs, err := o.ruleExprs(r, rs.Label, named)
		if err != nil {
			return nil, err
		}
		add(nat, exprs, rs.Comment(r))
	}
	o.chains = append(o.chains, *nat)
	// The guard runs after source NAT has set up the connection's
	// translation, so that it sees whether there is one.
	guard := &chainRules{chain: &nftables.Chain{Name: compiler.GuardChain, Table: o.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource + 10), Policy: &accept}}
	for _, g := range rs.Guards {
		add(guard, o.guardExprs(g, rs.Steering), rs.GuardComment(g))
	}
	o.chains = append(o.chains, *guard)
	if st := rs.Steering; st != nil && len(st.Rules) > 0 {
		// Marks are set before routing, which they steer: at mangle priority.
		steer := &chainRules{chain: &nftables.Chain{Name: compiler.SteerChain, Table: o.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}}
		if len(rs.Forwards) > 0 {
			// A service's replies leave from the node that sent its
			// connection on: only that node knows it.
			add(steer, append(isReply(), &expr.Verdict{Kind: expr.VerdictAccept}), rs.ServicesComment())
		}
		for _, r := range st.Rules {
			add(steer, o.steerExprs(r, named), rs.Comment(r))
		}
		o.chains = append(o.chains, *steer)
	}
	if u := rs.Uplinks; u != nil {
		// As the steer chain's: before routing, which the marks choose.
		c := &chainRules{chain: &nftables.Chain{Name: compiler.UplinkChain, Table: o.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}}
		choose := compiler.Rule{Egress: "uplinks", Sources: u.Sources, Target: compiler.Target{Kind: compiler.ByJhash, Seed: u.Seed, Buckets: u.Buckets, Runs: u.Runs}}
		x := append(o.sourceExprs(choose), ctStateNew()...)
		x = append(x, o.valueOf(choose, named, nftables.TypeMark)...)
		add(c, append(x, setMark()), rs.UplinksComment())
		for _, m := range u.Members {
			x := append([]expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m.Mark)}}, ctStateNew()...)
			add(c, append(x, labelExprs(m.Label)...), rs.UplinksComment())
		}
		for _, m := range u.Members {
			x := append(o.sourceExprs(choose), &expr.Ct{Register: reg1, Key: expr.CtKeyLABELS},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: compiler.LabelBits(m.Label), Xor: make([]byte, 16)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 16)},
				&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m.Mark)})
			add(c, append(x, setMark()), rs.UplinksComment())
		}
		for _, m := range rs.ReplyMarks() {
			// A service's replies leave by the uplink its connection
			// came through: the mark its forward kept.
			add(c, replyMark(m), rs.UplinksComment())
		}
		o.chains = append(o.chains, *c)
	}
	if len(rs.Prefixes6) > 0 {
		o.prefixes6(rs, add)
	}
	if len(rs.Forwards) > 0 {
		svc := &chainRules{chain: &nftables.Chain{Name: compiler.ServiceChain, Table: o.table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept}}
		for _, f := range rs.Forwards {
			add(svc, forwardExprs(f), rs.ServiceComment(f))
		}
		o.chains = append(o.chains, *svc)
	}
	return o, nil
}

// prefixes6 adds natpool's ip6 table: its NAT chains (a prefix
// translation each way per known prefix) and its guard.
func (o *objects) prefixes6(rs *compiler.Ruleset, add func(*chainRules, []expr.Any, string)) {
	o.table6 = &nftables.Table{Family: nftables.TableFamilyIPv6, Name: rs.Table}
	accept := nftables.ChainPolicyAccept
	post := &chainRules{chain: &nftables.Chain{Name: compiler.Chain, Table: o.table6, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}}
	pre := &chainRules{chain: &nftables.Chain{Name: compiler.PreroutingChain, Table: o.table6, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept}}
	guard := &chainRules{chain: &nftables.Chain{Name: compiler.GuardChain, Table: o.table6, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource + 10), Policy: &accept}}
	for _, x := range rs.Prefixes6 {
		if x.Public.IsValid() {
			out := append(prefix6Match(8, x.Inside), oifExprs(x.OIF)...)
			add(post, append(out, prefixNAT(expr.NATTypeSourceNAT, x.Public)...), rs.Prefix6Comment(x))
			in := append(prefix6Match(24, x.Public), ifnameExprs(expr.MetaKeyIIFNAME, x.OIF)...)
			if x.Mark != 0 {
				in = append(in, setCtMark(x.Mark)...)
			}
			add(pre, append(in, prefixNAT(expr.NATTypeDestNAT, x.Inside)...), rs.Prefix6Comment(x))
		}
		g := append(prefix6Match(8, x.Inside), oifExprs(x.OIF)...)
		add(guard, append(g, untranslatedDrop()...), rs.Guard6Comment(x))
	}
	o.chains = append(o.chains, *post, *pre, *guard)
	if marks := rs.Marks6(); len(marks) > 0 {
		c := &chainRules{chain: &nftables.Chain{Name: compiler.UplinkChain, Table: o.table6, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}}
		for _, m := range marks {
			add(c, replyMark(m), rs.Uplinks6Comment())
		}
		o.chains = append(o.chains, *c)
	}
}

// setCtMark keeps a mark on the connection, as nft encodes `ct mark set
// MARK`.
func setCtMark(m uint32) []expr.Any {
	return []expr.Any{&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m)},
		&expr.Ct{Register: reg1, SourceRegister: true, Key: expr.CtKeyMARK}}
}

// replyMark marks the replies of the connections that keep mark m, as nft
// encodes `ct direction reply ct mark M meta mark set M`.
func replyMark(m uint32) []expr.Any {
	return append(isReply(), &expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m)},
		&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m)}, setMark())
}

// isReply matches the replies of a connection, as nft encodes `ct
// direction reply`.
func isReply() []expr.Any {
	return []expr.Any{&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{replyDirection}}}
}

// prefix6Match matches the IPv6 address at offset (8: source, 24:
// destination) against a prefix, as nft encodes `ip6 saddr PREFIX`: the
// bytes the prefix covers, masked when it ends within one.
func prefix6Match(offset uint32, p netip.Prefix) []expr.Any {
	n := uint32(p.Bits()+7) / 8
	a := p.Addr().As16()
	x := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n}}
	if p.Bits()%8 != 0 {
		m := make([]byte, n)
		for i := range m {
			m[i] = 0xff
		}
		m[n-1] = byte(0xff << (8 - p.Bits()%8))
		x = append(x, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: n, Mask: m, Xor: make([]byte, n)})
	}
	return append(x, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: a[:n]})
}

// prefixNAT translates to a prefix, keeping the host bits, as nft encodes
// `snat ip6 prefix to PREFIX` (and dnat): the prefix's first and last
// addresses, and the NETMAP flag.
func prefixNAT(kind expr.NATType, p netip.Prefix) []expr.Any {
	first, last := p.Addr().As16(), netipx.PrefixLastIP(p).As16()
	return []expr.Any{&expr.Immediate{Register: reg1, Data: first[:]}, &expr.Immediate{Register: reg2, Data: last[:]},
		&expr.NAT{Type: kind, Family: unix.NFPROTO_IPV6, RegAddrMin: reg1, RegAddrMax: reg2, Prefix: true}}
}

// replyDirection is conntrack's direction of a connection's replies
// (IP_CT_DIR_REPLY).
const replyDirection = 1

// forwardExprs sends a service's connection on to its server, as nft
// encodes `ip daddr PUBLIC meta l4proto PROTO th dport PORTS [ct mark set
// MARK] dnat ip to INSIDE[:PORT]`.
func forwardExprs(f compiler.Forward) []expr.Any {
	x := append(daddrIs(f.Public.Addr), servicePorts(f.Protocol, f.Public.Ports)...)
	if f.Mark != 0 {
		x = append(x, setCtMark(f.Mark)...)
	}
	x = append(x, &expr.Immediate{Register: reg1, Data: ip4(f.Inside.Addr)})
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}
	if p := f.Port(); p != 0 {
		x = append(x, &expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(p)})
		nat.RegProtoMin, nat.Specified = reg2, true
	}
	return append(x, nat)
}

// servicePorts matches a service's protocol and destination ports, as nft
// encodes `meta l4proto PROTO th dport PORTS`.
func servicePorts(protocol string, ports pool.PortRange) []expr.Any {
	proto := byte(unix.IPPROTO_TCP)
	if protocol == "udp" {
		proto = unix.IPPROTO_UDP
	}
	x := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
	if ports.Lo == ports.Hi {
		return append(x, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(ports.Lo)})
	}
	return append(x, &expr.Cmp{Op: expr.CmpOpGte, Register: reg1, Data: binaryutil.BigEndian.PutUint16(ports.Lo)},
		&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: binaryutil.BigEndian.PutUint16(ports.Hi)})
}

// hairpinExprs gives an inside host's connection to a service the box's
// address, as nft encodes `ip saddr SOURCES ip daddr INSIDE meta l4proto
// PROTO th dport PORTS ct status dnat masquerade`.
func (o *objects) hairpinExprs(h compiler.Hairpin) []expr.Any {
	x := o.sourceExprs(compiler.Rule{Egress: "hairpin " + h.Service, Sources: h.Sources})
	x = append(x, daddrIs(h.Inside.Addr)...)
	x = append(x, servicePorts(h.Protocol, h.Inside.Ports)...)
	return append(append(x, ctStatus(ipsDstNAT, true)...), &expr.Masq{})
}

// daddrIs matches the destination address, as nft encodes `ip daddr
// ADDR`.
func daddrIs(a netip.Addr) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(a)}}
}

// ctStatus matches a conntrack status bit set, or not set, as nft encodes
// `ct status BIT` and `ct status ! BIT`.
func ctStatus(bit uint32, set bool) []expr.Any {
	op := expr.CmpOpEq
	if set {
		op = expr.CmpOpNeq
	}
	return []expr.Any{&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: make([]byte, 4)}}
}

// untranslatedDrop counts and drops a packet of a connection no source NAT
// translated, as nft encodes `ct status ! snat counter drop`.
func untranslatedDrop() []expr.Any {
	return append(ctStatus(ipsSrcNAT, false), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// ctStateNew matches a connection's first packet, as nft encodes `ct state
// new`.
func ctStateNew() []expr.Any {
	return []expr.Any{&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)}}
}

// setMark sets the packet mark from reg1, as nft encodes `meta mark set`.
func setMark() expr.Any {
	return &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1}
}

// guardExprs drops and counts, as nft encodes `ip saddr SOURCES oifname
// OIF ct status ! snat counter drop` (for any interface, `rt ip nexthop !=
// { PEERS }` in place of the oifname on a node with peers).
func (o *objects) guardExprs(g compiler.Guard, st *compiler.Steering) []expr.Any {
	x := o.sourceExprs(compiler.Rule{Egress: g.Egress, Sources: g.Sources})
	switch {
	case g.OIF != "":
		x = append(x, oifExprs(g.OIF)...)
	case st != nil && len(st.Peers) > 0:
		s := o.anonymous("a set of the guard of egress "+g.Egress, nftables.TypeIPAddr, nftables.SetDatatype{}, false, peerElements(st.Peers))
		l := lookup(s, reg1)
		l.Invert = true
		x = append(x, &expr.Rt{Register: reg1, Key: expr.RtNexthop4}, l)
	}
	return append(x, untranslatedDrop()...)
}

// ipsSrcNAT is the conntrack status bit of a source-NATed connection
// (IPS_SRC_NAT).
const ipsSrcNAT = 1 << 4

// ipsDstNAT is the status bit of a destination-NATed one (IPS_DST_NAT).
const ipsDstNAT = 1 << 5

// oifExprs matches the output interface, as nft encodes `oifname NAME`.
func oifExprs(oif string) []expr.Any { return ifnameExprs(expr.MetaKeyOIFNAME, oif) }

// ifnameExprs matches an interface name (key: oifname or iifname), as nft
// encodes `oifname NAME`.
func ifnameExprs(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(name)}}
}

// labelExprs marks the connection as natpool's, as nft encodes `ct label
// set N`.
func labelExprs(label int) []expr.Any {
	return []expr.Any{&expr.Immediate{Register: reg1, Data: compiler.LabelBits(label)},
		&expr.Ct{Register: reg1, SourceRegister: true, Key: expr.CtKeyLABELS}}
}

// steerExprs sets the packet mark of a steer rule: the rule's target finds
// the mark as a NAT rule's finds the address.
func (o *objects) steerExprs(r compiler.Rule, named map[string]*nftables.Set) []expr.Any {
	x := append(o.sourceExprs(r), o.valueOf(r, named, nftables.TypeMark)...)
	return append(x, setMark())
}

// valueOf leaves in reg1 the value a ByValue, ByHost or ByJhash target
// finds for the packet's source address: the public address of a NAT rule,
// or the mark of a steer rule (valueType, the data of a jhash target's map).
func (o *objects) valueOf(r compiler.Rule, named map[string]*nftables.Set, valueType nftables.SetDatatype) []expr.Any {
	switch t := r.Target; t.Kind {
	case compiler.ByValue:
		return []expr.Any{saddr(reg1), mask(reg1, reg1, t.Mask), lookupMap(named[t.Map], reg1, reg1)}
	case compiler.ByHost:
		return []expr.Any{saddr(reg1), lookupMap(named[t.Map], reg1, reg1)}
	case compiler.ByJhash:
		s := o.anonymousSet(nftables.TypeInteger, valueType, true)
		o.add(bucketElements(s, "a set of the rule of egress "+r.Egress, t))
		return append(o.jhash(t), lookupMap(s, reg1, reg1))
	}
	return nil
}

// peerElements is the set of the peers' addresses.
func peerElements(peers []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, len(peers))
	for i, p := range peers {
		out[i] = nftables.SetElement{Key: ip4(p)}
	}
	return out
}

// anonymous adds a constant anonymous set (a map when dataType is set) for
// one rule and returns it; what names it in errors.
func (o *objects) anonymous(what string, keyType, dataType nftables.SetDatatype, interval bool, elems []nftables.SetElement) *nftables.Set {
	s := o.anonymousSet(keyType, dataType, interval)
	o.add(listed(s, what, elems))
	return s
}

// anonymousSet is a constant anonymous set (a map when dataType is set) of
// natpool's table, not yet added.
func (o *objects) anonymousSet(keyType, dataType nftables.SetDatatype, interval bool) *nftables.Set {
	s := &nftables.Set{Table: o.table, Anonymous: true, Constant: true, Interval: interval, KeyType: keyType}
	if dataType.Bytes > 0 {
		s.IsMap, s.DataType = true, dataType
	}
	return s
}

func lookup(s *nftables.Set, sreg uint32) *expr.Lookup {
	return &expr.Lookup{SourceRegister: sreg, SetName: s.Name, SetID: s.ID}
}

func lookupMap(s *nftables.Set, sreg, dreg uint32) *expr.Lookup {
	return &expr.Lookup{SourceRegister: sreg, DestRegister: dreg, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}
}

func saddr(dreg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: dreg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

func mask(sreg, dreg uint32, m netip.Addr) *expr.Bitwise {
	return &expr.Bitwise{SourceRegister: sreg, DestRegister: dreg, Len: 4, Mask: ip4(m), Xor: make([]byte, 4)}
}

// sourceExprs matches a rule's sources.
func (o *objects) sourceExprs(r compiler.Rule) []expr.Any {
	if src := r.Sources; len(src) > 1 {
		s := o.anonymous("a set of the rule of egress "+r.Egress, nftables.TypeIPAddr, nftables.SetDatatype{}, true, intervals(rangeElements(src), nil, true))
		return []expr.Any{saddr(reg1), lookup(s, reg1)}
	}
	return sourceMatch(r.Sources[0])
}

// jhash leaves a jhash target's bucket in reg1, in network order (see
// compiler.BucketRange).
func (o *objects) jhash(t compiler.Target) []expr.Any {
	return []expr.Any{saddr(reg2),
		&expr.Hash{SourceRegister: reg2, DestRegister: reg1, Length: 4, Modulus: uint32(t.Buckets), Seed: t.Seed, Type: expr.HashTypeJenkins},
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4}}
}

func (o *objects) ruleExprs(r compiler.Rule, label int, named map[string]*nftables.Set) ([]expr.Any, error) {
	x := o.sourceExprs(r)
	if r.OIF != "" {
		x = append(x, oifExprs(r.OIF)...)
	}
	if r.L4 {
		s := o.anonymous("a set of the rule of egress "+r.Egress, nftables.TypeInetProto, nftables.SetDatatype{}, false,
			[]nftables.SetElement{{Key: []byte{unix.IPPROTO_TCP}}, {Key: []byte{unix.IPPROTO_UDP}}})
		x = append(x, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1}, lookup(s, reg1))
	}
	// Mark the connection as natpool's before translating it.
	x = append(x, labelExprs(label)...)
	nat := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}
	t := r.Target
	portReg := uint32(reg2) // where the port range goes, if the rule has one
	switch t.Kind {
	case compiler.ByValue, compiler.ByJhash, compiler.ByHost:
		x = append(x, o.valueOf(r, named, nftables.TypeIPAddr)...)
	case compiler.ByRange:
		x = append(x, &expr.Immediate{Register: reg1, Data: ip4(t.First)}, &expr.Immediate{Register: reg2, Data: ip4(t.Last)})
		nat.RegAddrMax, nat.Persistent, portReg = reg2, true, reg3
	case compiler.ByHostBlock:
		// The map's data fills NFT_REG_1 as address, low port, address,
		// high port: 4-byte registers 8, 9, 10 and 11.
		x = append(x, saddr(reg1), lookupMap(named[t.Map], reg1, reg1))
		nat.RegAddrMax, nat.RegProtoMin, nat.RegProtoMax, nat.Specified = r32+2, r32+1, r32+3, true
	case compiler.ByValuePorts:
		x = append(x, saddr(r32),
			mask(r32, r32+1, t.Mask), lookupMap(named[t.Map], r32+1, r32+2),
			mask(r32, r32+3, t.PortMask), lookupMap(named[t.MinMap], r32+3, r32+4), lookupMap(named[t.MaxMap], r32+3, r32+5))
		nat.RegAddrMin, nat.RegProtoMin, nat.RegProtoMax, nat.Specified = r32+2, r32+4, r32+5, true
	default:
		return nil, fmt.Errorf("egress %s: no kernel form for target kind %d", r.Egress, t.Kind)
	}
	if r.Ports != (compiler.Rule{}).Ports {
		x = append(x, &expr.Immediate{Register: portReg, Data: binaryutil.BigEndian.PutUint16(r.Ports.Lo)},
			&expr.Immediate{Register: portReg + 1, Data: binaryutil.BigEndian.PutUint16(r.Ports.Hi)})
		nat.RegProtoMin, nat.RegProtoMax, nat.Specified = portReg, portReg+1, true
	}
	return append(x, nat), nil
}

// sourceMatch matches the source address against one range as nft encodes
// `ip saddr RANGE`: a prefix of whole bytes compares only those bytes, any
// other prefix is masked, an address is compared, a range is bounded.
func sourceMatch(r netipx.IPRange) []expr.Any {
	from, to := r.From(), r.To()
	p, isPrefix := r.Prefix()
	switch {
	case isPrefix && p.Bits() < 32 && p.Bits()%8 == 0:
		n := uint32(p.Bits() / 8)
		return []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(from)[:n]}}
	case isPrefix && p.Bits() < 32:
		return []expr.Any{saddr(reg1), &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: prefixMask(p), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(from)}}
	case from == to:
		return []expr.Any{saddr(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(from)}}
	}
	return []expr.Any{saddr(reg1), &expr.Cmp{Op: expr.CmpOpGte, Register: reg1, Data: ip4(from)},
		&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: ip4(to)}}
}

// ifname is the data nft compares an interface name with: the name padded
// to IFNAMSIZ, or for a wildcard "eth*" the bare prefix, which the kernel
// compares for its own length.
func ifname(name string) []byte {
	if prefix, wildcard := strings.CutSuffix(name, "*"); wildcard {
		return []byte(prefix)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// intervals encodes map or set elements for an interval set as nft does (the
// kernel answers EEXIST otherwise): an end element at 0.0.0.0 unless the
// first range starts there, then per range its start (with its value, when
// val is set) and an end element at the address after it. first says
// whether elems begins the set.
func intervals(elems []compiler.Element, val func(compiler.Element) []byte, first bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(elems)+1)
	zero := netip.IPv4Unspecified()
	if first && (len(elems) == 0 || elems[0].From != zero) {
		out = append(out, nftables.SetElement{Key: ip4(zero), IntervalEnd: true})
	}
	for _, e := range elems {
		start := nftables.SetElement{Key: ip4(e.From)}
		if val != nil {
			start.Val = val(e)
		}
		out = append(out, start)
		if next := e.To.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: ip4(next), IntervalEnd: true})
		}
	}
	return out
}

// bucketElements encodes a jhash target's runs of buckets as nft encodes
// an anonymous interval map of ranges: an end element at 0 unless the first
// run starts there, each run's start with its address (or, in a steer rule,
// its mark) as the bucket number as a 4-byte key in network order, and an
// end element after each run the next does not start right after. The runs
// of a NAT rule tile 0 to Buckets-1, so the last is the only end element.
// A map may hold a million runs: its elements are made a message at a time.
func bucketElements(s *nftables.Set, what string, t compiler.Target) setWithElements {
	runs := t.Runs
	startsAtZero := len(runs) > 0 && runs[0].Lo == 0
	endsAfter := func(i int) bool { return i+1 == len(runs) || runs[i+1].Lo != runs[i].Hi+1 }
	n := len(runs)
	if !startsAtZero {
		n++
	}
	for i := range runs {
		if endsAfter(i) {
			n++
		}
	}
	chunks := func(yield func([]nftables.SetElement) bool) {
		if len(runs) == 0 {
			yield([]nftables.SetElement{{Key: binary.BigEndian.AppendUint32(nil, 0), IntervalEnd: true}})
			return
		}
		// A message takes at most elementsPerMessage elements: a run may
		// bring an end element, and the first message the one at 0.
		perMessage := (elementsPerMessage - 1) / 2
		for lo := 0; lo < len(runs); lo += perMessage {
			if !yield(runElements(runs, lo, min(lo+perMessage, len(runs)), lo == 0 && !startsAtZero, endsAfter)) {
				return
			}
		}
	}
	return setWithElements{s, what, n, chunks}
}

// runElements encodes runs[lo:hi] as bucketElements does, after an end
// element at 0 if zeroEnd; the keys and values share one allocation each.
func runElements(runs []compiler.BucketRange, lo, hi int, zeroEnd bool, endsAfter func(int) bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*(hi-lo)+1)
	keys, vals := make([]byte, 0, 4*(2*(hi-lo)+1)), make([]byte, 4*(hi-lo))
	key := func(x uint32) []byte {
		keys = binary.BigEndian.AppendUint32(keys, x)
		return keys[len(keys)-4 : len(keys) : len(keys)]
	}
	if zeroEnd {
		out = append(out, nftables.SetElement{Key: key(0), IntervalEnd: true})
	}
	for i := lo; i < hi; i++ {
		b := runs[i]
		val := vals[4*(i-lo) : 4*(i-lo)+4 : 4*(i-lo)+4]
		if b.Addr.IsValid() {
			a := b.Addr.As4()
			copy(val, a[:])
		} else {
			binary.NativeEndian.PutUint32(val, b.Mark)
		}
		out = append(out, nftables.SetElement{Key: key(b.Lo), Val: val})
		if endsAfter(i) {
			out = append(out, nftables.SetElement{Key: key(b.Hi + 1), IntervalEnd: true})
		}
	}
	return out
}

func rangeElements(ranges []netipx.IPRange) []compiler.Element {
	out := make([]compiler.Element, len(ranges))
	for i, r := range ranges {
		out[i] = compiler.Element{From: r.From(), To: r.To()}
	}
	return out
}

func ip4(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

func prefixMask(p netip.Prefix) []byte {
	return binaryutil.BigEndian.PutUint32(^uint32(0) << (32 - p.Bits()))
}
