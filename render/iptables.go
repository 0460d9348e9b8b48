package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"go4.org/netipx"

	"github.com/natpool/natpool/compiler"
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
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(o.Version, rs))
	fmt.Fprintf(&b, "# Load with: iptables-restore --noflush; for a reload with the jump in place, render with --no-jump.\n")
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", chain)
	maps := map[string]compiler.Map{}
	for _, m := range rs.Maps {
		maps[m.Name] = m
	}
	for _, r := range rs.Rules {
		t := r.Target
		switch t.Kind {
		case compiler.ByHost, compiler.ByHostBlock:
			m := maps[t.Map]
			if t.Kind == compiler.ByHostBlock && len(m.Elements) > PerHostRulesWarning {
				fmt.Fprintf(stderr, "natpool: warning: egress %s: %d per-host iptables rules; every new connection walks them in order\n", r.Egress, 3*len(m.Elements))
			}
			for _, e := range m.Elements {
				match := sourceMatch(compact(netipx.IPRangeFrom(e.From, e.To))) + oif(r)
				if t.Kind == compiler.ByHostBlock {
					writeL4(&b, chain, match, fmt.Sprintf("%s:%s", e.Addr, e.Ports), "")
				} else {
					fmt.Fprintf(&b, "-A %s %s -j SNAT --to-source %s\n", chain, match, e.Addr)
				}
			}
			continue
		}
		for _, src := range r.Sources {
			match := sourceMatch(compact(src)) + oif(r)
			switch t.Kind {
			case compiler.ByValue:
				mask := uint32FromAddr(t.Mask)
				for _, e := range maps[t.Map].Elements {
					lo, hi := uint32FromAddr(e.From), uint32FromAddr(e.To)
					values := fmt.Sprintf("%#x:%#x", lo, hi)
					if lo == hi {
						values = fmt.Sprintf("%#x", lo)
					}
					writeSNAT(&b, chain, r, fmt.Sprintf(`%s -m u32 --u32 "0xc&%#x=%s"`, match, mask, values), e.Addr.String(), "")
				}
			case compiler.ByJhash:
				for i, a := range r.Publics() {
					writeSNAT(&b, chain, r, fmt.Sprintf("%s -m set --match-set %s src", match, SetName(rs.Table, r.Egress, i)), a.String(), "")
				}
			case compiler.ByRange:
				writeSNAT(&b, chain, r, match, fmt.Sprintf("%s-%s", t.First, t.Last), " --persistent")
			}
		}
	}
	if !o.NoJump {
		fmt.Fprintf(&b, "-I POSTROUTING 1 -j %s\n", chain)
	}
	b.WriteString("COMMIT\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeSNAT writes the SNAT rule(s) of r for match: with a port range, one
// rule each for TCP and UDP (iptables takes ports only after -p).
func writeSNAT(b *strings.Builder, chain string, r compiler.Rule, match, to, suffix string) {
	if r.L4 {
		writeL4(b, chain, match, fmt.Sprintf("%s:%s", to, r.Ports), suffix)
		return
	}
	fmt.Fprintf(b, "-A %s %s -j SNAT --to-source %s%s\n", chain, match, to, suffix)
}

func writeL4(b *strings.Builder, chain, match, to, suffix string) {
	for _, proto := range []string{"tcp", "udp"} {
		fmt.Fprintf(b, "-A %s %s -p %s -j SNAT --to-source %s%s\n", chain, match, proto, to, suffix)
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

func uint32FromAddr(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
