package compiler

import (
	"fmt"
	"net/netip"

	"github.com/natpool/natpool/pool"
)

// Prefix6 is an IPv6 prefix translation as the kernel runs it, in natpool's
// ip6 table of the same name: new connections from Inside leaving through
// OIF get Public's prefix (`snat ip6 prefix to`), new ones to Public
// arriving through OIF get Inside's (`dnat ip6 prefix to`), and a guard
// drops what would leave OIF from Inside untranslated. Public is invalid
// while an uplink's prefix is not known: then only the guard is loaded.
type Prefix6 struct {
	Egress string
	OIF    string
	Inside netip.Prefix
	Public netip.Prefix
}

// prefixes6 compiles the prefix translations of the plan's entries, the
// public prefixes read from the uplinks as addrs says (by interface).
func prefixes6(p *pool.Plan, addrs map[string]netip.Addr) []Prefix6 {
	var out []Prefix6
	for _, e := range p.Egress {
		for _, n := range e.NPT {
			if a, ok := addrs[e.OIF]; ok && n.FromInterface {
				n = n.WithPublic(a)
			}
			out = append(out, Prefix6{Egress: e.Name, OIF: e.OIF, Inside: n.Inside, Public: n.Public})
		}
	}
	return out
}

// Prefix6Comment is the stamp on a rule of the ip6 table.
func (rs *Ruleset) Prefix6Comment(x Prefix6) string {
	return fmt.Sprintf("%s%s egress %s", stampPrefix, rs.Digest, x.Egress)
}

// Guard6Comment is the stamp on a guard rule of the ip6 table.
func (rs *Ruleset) Guard6Comment(x Prefix6) string {
	return fmt.Sprintf("%s%s guard %s", stampPrefix, rs.Digest, x.Egress)
}

// PreroutingChain is the chain of natpool's ip6 table that translates new
// connections to a public prefix back to the inside prefix.
const PreroutingChain = "prerouting"
