package compiler

import (
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"

	"github.com/natpool/natpool/pool"
)

// UplinkChain is the chain of a site's table that gives each new
// connection of an inside host its uplink, as a packet mark that natpool's
// policy rules route by, and keeps it for the connection's life.
const UplinkChain = "uplink"

// Uplinks is what a site with several uplinks adds to natpool's table and
// to the kernel's policy routing:
//
//   - the uplink chain (prerouting, before routing) marks a new connection's
//     first packet with the mark of the member its host leaves by, found
//     by jhash of the source over Runs; it labels the connection with the
//     member's conntrack label, and marks each later packet of a labelled
//     connection by its label, so a connection keeps its uplink when the
//     runs change;
//   - for each member, policy rules send marked packets, and the box's own
//     packets from the uplink's address, to the member's routing table
//     (after the main table's routes other than default routes), which
//     holds the uplink's default route and a throw route per inside range.
type Uplinks struct {
	Sources []netipx.IPRange // the inside hosts
	Seed    uint32
	Buckets int
	Runs    []BucketRange // bucket runs and the Mark of the member they leave by now
	Members []UplinkMember
	States  []pool.UplinkState // by member: what Runs follow
	Rules   []PolicyRule
	Routes  []Route
}

// UplinkMember is one member uplink as the kernel sees it.
type UplinkMember struct {
	Name  string
	OIF   string
	Mark  uint32
	Label int
	Table int
}

// UplinkFacts is what the kernel says of a member uplink, and watch of its
// health.
type UplinkFacts struct {
	State pool.UplinkState
	// Address is the uplink's own address; invalid while it has none.
	Address netip.Addr
	// Gateway is its next hop: the spec's, or the main table's default
	// route through it; invalid while none is known.
	Gateway netip.Addr
	// Gateway6 is its IPv6 next hop, the main table's IPv6 default route
	// through it, for an entry with IPv6 prefix translations.
	Gateway6 netip.Addr
}

// Route is a route natpool keeps in one of its routing tables: a unicast
// route through Gateway (when valid) out of OIF, or a throw route.
type Route struct {
	Table   int
	Dst     netip.Prefix
	Gateway netip.Addr
	OIF     string
	Throw   bool
}

// String writes the route as `ip route` takes it.
func (r Route) String() string {
	if r.Throw {
		return fmt.Sprintf("throw %s table %d", dst(r.Dst), r.Table)
	}
	via := ""
	if r.Gateway.IsValid() {
		via = " via " + r.Gateway.String()
	}
	return fmt.Sprintf("%s%s dev %s table %d", dst(r.Dst), via, r.OIF, r.Table)
}

func dst(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "default"
	}
	return p.String()
}

// uplinks compiles the uplinks of p given what is known of each member
// (facts; nil: all up, nothing learned) and the IPv6 prefix translations.
func uplinks(p *pool.Plan, facts []UplinkFacts, prefixes6 []Prefix6) *Uplinks {
	u := p.Uplinks
	if facts == nil {
		facts = make([]UplinkFacts, len(u.Members))
	}
	states := make([]pool.UplinkState, len(u.Members))
	for i, f := range facts {
		states[i] = f.State
	}
	first := p.Egress[u.Members[0].Egress]
	out := &Uplinks{Sources: first.Inside.Ranges(), Seed: u.Seed, Buckets: u.Buckets(), States: states}
	for _, r := range u.Choose(states) {
		out.Runs = append(out.Runs, BucketRange{Lo: r.Lo, Hi: r.Hi, Mark: u.MemberMark(r.Owner)})
	}
	for i, m := range u.Members {
		mm := UplinkMember{Name: m.Name, OIF: m.OIF, Mark: u.MemberMark(i), Label: m.Label, Table: u.MemberTable(i)}
		out.Members = append(out.Members, mm)
		// First the main table's routes but its default routes, so that
		// inside and local networks are reached as they always are; then
		// the member's table.
		out.Rules = append(out.Rules,
			PolicyRule{Priority: u.Priority, Mark: mm.Mark, Table: mainTable, Suppress: true},
			PolicyRule{Priority: u.Priority + 1, Mark: mm.Mark, Table: mm.Table})
		if a := facts[i].Address; a.IsValid() {
			from := netip.PrefixFrom(a, 32)
			out.Rules = append(out.Rules,
				PolicyRule{Priority: u.Priority, From: from, Table: mainTable, Suppress: true},
				PolicyRule{Priority: u.Priority + 1, From: from, Table: mm.Table})
		}
		gw := facts[i].Gateway
		if e := p.Egress[m.Egress]; e.Gateway.IsValid() {
			gw = e.Gateway
		}
		if gw.IsValid() {
			out.Routes = append(out.Routes, Route{Table: mm.Table, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: gw, OIF: m.OIF})
		}
		for _, r := range out.Sources {
			for _, pfx := range r.Prefixes() {
				out.Routes = append(out.Routes, Route{Table: mm.Table, Dst: pfx, Throw: true})
			}
		}
		if npt := p.Egress[m.Egress].NPT; len(npt) > 0 {
			// IPv6: the replies of connections that came in through the
			// uplink to its prefix carry its mark (in the ip6 table) and
			// leave by its table, as in IPv4.
			out.Rules = append(out.Rules,
				PolicyRule{Priority: u.Priority, Mark: mm.Mark, Table: mainTable, Suppress: true, V6: true},
				PolicyRule{Priority: u.Priority + 1, Mark: mm.Mark, Table: mm.Table, V6: true})
			if gw := facts[i].Gateway6; gw.IsValid() {
				out.Routes = append(out.Routes, Route{Table: mm.Table, Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), Gateway: gw, OIF: m.OIF})
			}
			for _, n := range npt {
				out.Routes = append(out.Routes, Route{Table: mm.Table, Dst: n.Inside, Throw: true})
			}
			// The box's own packets from the uplink's public prefixes
			// leave by it, as from its IPv4 address.
			for _, x := range prefixes6 {
				if x.Egress == m.Name && x.Public.IsValid() {
					out.Rules = append(out.Rules,
						PolicyRule{Priority: u.Priority, From: x.Public, Table: mainTable, Suppress: true, V6: true},
						PolicyRule{Priority: u.Priority + 1, From: x.Public, Table: mm.Table, V6: true})
				}
			}
		}
	}
	return out
}

// mainTable is the kernel's main routing table.
const mainTable = 254

// UplinksComment is the stamp on the uplink chain's rules. It says the
// state of each member the runs follow ("uplinks isp-a=up isp-b=down"), so
// that the table tells what it was compiled for.
func (rs *Ruleset) UplinksComment() string {
	s := stampPrefix + rs.Digest + " uplinks"
	for i, m := range rs.Uplinks.Members {
		s += " " + m.Name + "=" + rs.Uplinks.States[i].String()
	}
	return s
}

// UplinkStates reads the members' states from the stamp of an uplink
// chain's rule; nil when it says none of u's.
func UplinkStates(comment string, u *pool.Uplinks) []pool.UplinkState {
	_, rest, ok := strings.Cut(comment, " uplinks ")
	if !ok {
		return nil
	}
	states := u.AllUp()
	fields := strings.Fields(rest)
	if len(fields) != len(u.Members) {
		return nil
	}
	for i, f := range fields {
		name, state, _ := strings.Cut(f, "=")
		s, ok := pool.ParseUplinkState(state)
		if name != u.Members[i].Name || !ok {
			return nil
		}
		states[i] = s
	}
	return states
}

// UplinkReserved returns whether a policy rule sits where u puts natpool's:
// at one of its two priorities, looking up one of its members' tables, or
// for one of their marks.
func UplinkReserved(u *pool.Uplinks) func(PolicyRule) bool {
	n := len(u.Members)
	return func(r PolicyRule) bool {
		return r.Priority == u.Priority || r.Priority == u.Priority+1 ||
			r.Table >= u.Table && r.Table < u.Table+n ||
			r.Mark >= u.Mark && uint64(r.Mark) < uint64(u.Mark)+uint64(n)
	}
}

// UplinkTables returns the routing tables of u's members.
func UplinkTables(u *pool.Uplinks) []int {
	tables := make([]int, len(u.Members))
	for i := range u.Members {
		tables[i] = u.MemberTable(i)
	}
	return tables
}
