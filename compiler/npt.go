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
	// Mark, for an uplink of a site, is kept on the connections that come
	// in to Public (their ct mark): the ip6 table's uplink chain puts it
	// on their replies, which natpool's IPv6 policy rules send out by the
	// uplink they came through.
	Mark uint32
}

// prefixes6 compiles the prefix translations of the plan's entries, the
// public prefixes read from the uplinks as addrs says (by interface).
func prefixes6(p *pool.Plan, addrs map[string]netip.Addr) []Prefix6 {
	var out []Prefix6
	for _, e := range p.Egress {
		for _, n := range e.NPTWith(addrs) {
			x := Prefix6{Egress: e.Name, OIF: e.OIF, Inside: n.Inside, Public: n.Public}
			if u := p.Uplinks; u != nil {
				if m := u.MemberNamed(e.Name); m >= 0 {
					x.Mark = u.MemberMark(m)
				}
			}
			out = append(out, x)
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

// Uplinks6Comment is the stamp on the rules of the ip6 table's uplink
// chain.
func (rs *Ruleset) Uplinks6Comment() string {
	return fmt.Sprintf("%s%s uplinks ipv6", stampPrefix, rs.Digest)
}

// Marks6 returns the marks of the prefixes that carry one, ascending,
// once each.
func (rs *Ruleset) Marks6() []uint32 {
	var marks []uint32
	for _, x := range rs.Prefixes6 {
		marks = append(marks, x.Mark)
	}
	return uniqueMarks(marks)
}

// PreroutingChain is the chain of natpool's ip6 table that translates new
// connections to a public prefix back to the inside prefix.
const PreroutingChain = "prerouting"
