package render

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"go4.org/netipx"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// PerHostRulesWarning is the number of inside hosts above which the block
// strategy's per-host iptables rules are worth a warning: every new
// connection walks them in order.
const PerHostRulesWarning = 65536

// IPTables writes the ruleset as iptables-restore input for the nat table,
// meant for `iptables-restore --noflush`: natpool's chain is declared (which
// creates or flushes it) and refilled, and nothing else is touched. Warnings
// go to stderr.
func IPTables(w, stderr io.Writer, rs *compiler.Ruleset, o Options) error {
	for _, r := range rs.Rules {
		if r.Target.Kind == compiler.ByValuePorts {
			return fmt.Errorf("iptables cannot carry the compact port blocks of egress %s: compile them per host", r.Egress)
		}
	}
	chain := IPTablesChain(rs.Table)
	b := bufio.NewWriterSize(w, 1<<16)
	fmt.Fprintf(b, "# %s\n", header(o.Version, rs.Digest))
	fmt.Fprintf(b, "# Load with: iptables-restore --noflush; for a reload with the jump in place, render with --no-jump.\n")
	fmt.Fprintf(b, "# No guard: iptables cannot drop after source NAT what leaves untranslated (natpool apply and nft do).\n")
	for _, r := range rs.Rules {
		if r.Target.Kind == compiler.ByJhash {
			fmt.Fprintf(b, "# Load the sets it matches first: natpool render --format ipset | ipset restore\n")
			break
		}
	}
	fmt.Fprintf(b, "*nat\n:%s - [0:0]\n", chain)
	services := IPTablesPreChain(rs.Table)
	if len(rs.Forwards) > 0 {
		fmt.Fprintf(b, ":%s - [0:0]\n", services)
	}
	for _, h := range rs.Hairpins {
		for _, src := range h.Sources {
			fmt.Fprintf(b, "-A %s %s -d %s/32%s -m conntrack --ctstate DNAT -j MASQUERADE\n", chain, sourceMatch(compact(src)), h.Inside.Addr, iptablesPorts(h.Protocol, h.Inside.Ports))
		}
	}
	for _, f := range rs.Forwards {
		to := f.Inside.Addr.String()
		if p := f.Port(); p != 0 {
			to += fmt.Sprintf(":%d", p)
		}
		fmt.Fprintf(b, "-A %s -d %s/32%s -j DNAT --to-destination %s\n", services, f.Public.Addr, iptablesPorts(f.Protocol, f.Public.Ports), to)
	}
	maps := map[string]compiler.Map{}
	for _, m := range rs.Maps {
		maps[m.Name] = m
	}
	// Every rule marks the connections it translates as natpool's, with
	// connlabel as its last match: only when the rest matched.
	out := iptablesRules{b: b, chain: chain, mark: fmt.Sprintf(" -m connlabel --label %d --set", rs.Label)}
	for _, r := range rs.Rules {
		t := r.Target
		switch t.Kind {
		case compiler.ByHost, compiler.ByHostBlock:
			m := maps[t.Map]
			if t.Kind == compiler.ByHostBlock && m.Len > PerHostRulesWarning {
				fmt.Fprintf(stderr, "natpool: warning: egress %s: %d per-host iptables rules; every new connection walks them in order\n", r.Egress, 3*m.Len)
			}
			for e := range m.Elements {
				match := sourceMatch(compact(netipx.IPRangeFrom(e.From, e.To))) + oif(r)
				if t.Kind == compiler.ByHostBlock {
					out.l4(match, fmt.Sprintf("%s:%s", e.Addr, e.Ports), "")
				} else {
					out.snat(match, e.Addr.String(), "")
				}
			}
			continue
		}
		for _, src := range r.Sources {
			match := sourceMatch(compact(src)) + oif(r)
			switch t.Kind {
			case compiler.ByValue:
				mask := pool.Uint32(t.Mask)
				for e := range maps[t.Map].Elements {
					lo, hi := pool.Uint32(e.From), pool.Uint32(e.To)
					values := fmt.Sprintf("%#x:%#x", lo, hi)
					if lo == hi {
						values = fmt.Sprintf("%#x", lo)
					}
					out.rule(r, fmt.Sprintf(`%s -m u32 --u32 "0xc&%#x=%s"`, match, mask, values), e.Addr.String(), "")
				}
			case compiler.ByJhash:
				for i, a := range r.Publics() {
					out.rule(r, fmt.Sprintf("%s -m set --match-set %s src", match, SetName(rs.Table, r.KernelName(), i)), a.String(), "")
				}
			case compiler.ByRange:
				out.rule(r, match, fmt.Sprintf("%s-%s", t.First, t.Last), " --persistent")
			}
		}
	}
	if !o.NoJump {
		fmt.Fprintf(b, "-I POSTROUTING 1 -j %s\n", chain)
		if len(rs.Forwards) > 0 {
			fmt.Fprintf(b, "-I PREROUTING 1 -j %s\n", services)
		}
	}
	b.WriteString("COMMIT\n")
	return b.Flush()
}

// IP6Tables writes the IPv6 prefix translations as ip6tables-restore input
// for the nat table, for `ip6tables-restore --noflush`: NETMAP in natpool's
// chain, which POSTROUTING jumps to, and back in its services chain, which
// PREROUTING jumps to. It has no guard, as iptables has none.
func IP6Tables(w io.Writer, rs *compiler.Ruleset, o Options) error {
	if len(rs.Prefixes6) == 0 {
		return fmt.Errorf("format ip6tables: the plan has no IPv6 prefix translations (private6 and pool6)")
	}
	chain, pre := IPTablesChain(rs.Table), IPTablesPreChain(rs.Table)
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "# %s\n", header(o.Version, rs.Digest))
	fmt.Fprintf(b, "# Load with: ip6tables-restore --noflush; for a reload with the jumps in place, render with --no-jump.\n")
	fmt.Fprintf(b, "*nat\n:%s - [0:0]\n:%s - [0:0]\n", chain, pre)
	for _, x := range rs.Prefixes6 {
		if !x.Public.IsValid() {
			fmt.Fprintf(b, "# egress %s: the prefix of %s is not known here: no translation\n", x.Egress, x.OIF)
			continue
		}
		fmt.Fprintf(b, "-A %s -s %s -o %s -j NETMAP --to %s\n", chain, x.Inside, x.OIF, x.Public)
		fmt.Fprintf(b, "-A %s -d %s -i %s -j NETMAP --to %s\n", pre, x.Public, x.OIF, x.Inside)
	}
	if !o.NoJump {
		fmt.Fprintf(b, "-I POSTROUTING 1 -j %s\n-I PREROUTING 1 -j %s\n", chain, pre)
	}
	b.WriteString("COMMIT\n")
	return b.Flush()
}

// iptablesRules writes the SNAT rules of natpool's chain.
type iptablesRules struct {
	b     *bufio.Writer
	chain string
	mark  string // the connlabel match that ends every rule's matches
}

// rule writes the SNAT rule(s) of r for match: with a port range, one rule
// each for TCP and UDP (iptables takes ports only after -p).
func (w iptablesRules) rule(r compiler.Rule, match, to, suffix string) {
	if r.L4 {
		w.l4(match, fmt.Sprintf("%s:%s", to, r.Ports), suffix)
		return
	}
	w.snat(match, to, suffix)
}

func (w iptablesRules) snat(match, to, suffix string) {
	fmt.Fprintf(w.b, "-A %s %s%s -j SNAT --to-source %s%s\n", w.chain, match, w.mark, to, suffix)
}

func (w iptablesRules) l4(match, to, suffix string) {
	for _, proto := range []string{"tcp", "udp"} {
		w.snat(fmt.Sprintf("%s -p %s", match, proto), to, suffix)
	}
}

func sourceMatch(src string) string {
	if strings.Contains(src, "-") {
		return "-m iprange --src-range " + src
	}
	return "-s " + src
}

func oif(r compiler.Rule) string {
	if r.OIF == "" {
		return ""
	}
	// iptables writes the wildcard "eth*" as "eth+".
	if prefix, wildcard := strings.CutSuffix(r.OIF, "*"); wildcard {
		return " -o " + prefix + "+"
	}
	return " -o " + r.OIF
}

// IPTablesChain is the name of natpool's iptables chain for table.
func IPTablesChain(table string) string {
	return strings.ToUpper(truncate(table, 28))
}

// IPTablesPreChain is the name of natpool's chain for table that
// PREROUTING jumps to: the services', and the prefix translations' way in.
func IPTablesPreChain(table string) string {
	return strings.ToUpper(truncate(table, 24)) + "_PRE"
}

// iptablesPorts matches a service's protocol and destination ports.
func iptablesPorts(protocol string, ports pool.PortRange) string {
	if ports.Lo == ports.Hi {
		return fmt.Sprintf(" -p %s --dport %d", protocol, ports.Lo)
	}
	return fmt.Sprintf(" -p %s --dport %d:%d", protocol, ports.Lo, ports.Hi)
}

// SetName is the ipset name of the set of the i-th public address of an
// egress entry; ipset names hold 31 characters.
func SetName(table, egress string, i int) string {
	name := fmt.Sprintf("%s_%s_%d", table, egress, i)
	if len(name) <= 31 {
		return name
	}
	sum := sha256.Sum256([]byte(table + "/" + egress))
	return fmt.Sprintf("np_%s_%d", hex.EncodeToString(sum[:6]), i)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
