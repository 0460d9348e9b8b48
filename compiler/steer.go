package compiler

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/natpool/natpool/pool"
)

// SteerChain is the chain of a cluster node's table that marks the packets
// of hosts whose public address a peer serves, before routing.
const SteerChain = "steer"

// Steering is what a node of a cluster adds to natpool's table and to the
// kernel's policy routing, so that a host's packets leave through the node
// that serves its public address whichever node the inside router picked:
//
//   - the steer chain marks a packet from an inside host with the mark of the
//     nodes ranked above this one for the host's public address;
//   - for each such mark, a policy rule per node ranked above this one, in
//     rank order, looks up that node's routing table, which BIRD fills with a
//     route through the node while its BGP session is up; an empty table
//     falls through to the next rule, and after the last to the main table;
//   - the NAT chain leaves alone the packets routed to a peer (that peer
//     translates them), labelling their connection as natpool's, so that
//     when the peer dies or comes back watch can delete the entries of the
//     flows it steered.
//
// So a packet goes to the first live node of its address's order, or is
// translated here when this node comes first among the live ones. A node
// without peers, or that comes first for every host, has no steer rules.
type Steering struct {
	Node  string
	Peers []netip.Addr // the other nodes' addresses, ascending
	// Rules are the steer chain's rules: their Target's map gives a mark.
	Rules  []Rule
	Routes []PolicyRule
}

// PolicyRule is one policy-routing rule: packets carrying exactly Mark
// (when not 0) and coming from From (when valid) look up Table, at
// Priority; with Suppress, a route of the table with a prefix of length 0
// (a default route) is passed over.
type PolicyRule struct {
	Priority int
	Mark     uint32
	From     netip.Prefix
	Table    int
	Suppress bool
	V6       bool // an IPv6 rule (ip -6 rule)
}

// String writes the rule as `ip rule` lists it.
func (r PolicyRule) String() string {
	from := "all"
	if r.From.IsValid() {
		from = r.From.String()
		if r.From.IsSingleIP() {
			from = r.From.Addr().String()
		}
	}
	s := fmt.Sprintf("%d:	from %s", r.Priority, from)
	if r.Mark != 0 {
		s += fmt.Sprintf(" fwmark %#x", r.Mark)
	}
	table := strconv.Itoa(r.Table)
	if r.Table == mainTable {
		table = "main"
	}
	s += " lookup " + table
	if r.Suppress {
		s += " suppress_prefixlength 0"
	}
	return s
}

// NodeTable returns the routing table through which node i of a cluster is
// reached: the same on every node.
func NodeTable(c *pool.Cluster, i int) int { return c.Table + i }

// steering compiles what node adds to the ruleset of p; the NAT rules must
// be compiled already.
func steering(rs *Ruleset, p *pool.Plan, node string) *Steering {
	c := p.Cluster
	self := c.NodeIndex(node)
	st := &Steering{Node: node}
	for i, n := range c.Nodes {
		if i != self {
			st.Peers = append(st.Peers, n.Address)
		}
	}
	slices.SortFunc(st.Peers, netip.Addr.Compare)
	// A mark per sequence of nodes ranked above this one, numbered as the
	// ascending chunks first show them; chunks this node owns get none.
	marks := map[string]uint32{}
	chunkMark := make([]uint32, len(c.Chunks))
	for i, ch := range c.Chunks {
		above := ch.Order[:slices.Index(ch.Order, self)]
		if len(above) == 0 {
			continue
		}
		key := fmt.Sprint(above)
		m, ok := marks[key]
		if !ok {
			m = c.Mark + uint32(len(marks))
			marks[key] = m
			for rank, n := range above {
				st.Routes = append(st.Routes, PolicyRule{Priority: c.Priority + rank, Mark: m, Table: NodeTable(c, n)})
			}
		}
		chunkMark[i] = m
	}
	slices.SortFunc(st.Routes, func(a, b PolicyRule) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Mark, b.Mark))
	})
	markOf := func(a netip.Addr) uint32 { return chunkMark[c.ChunkIndex(a)] }
	for _, r := range rs.Rules {
		if r.L4 {
			continue // the rule for every protocol finds the same address
		}
		s := Rule{Egress: r.Egress, Sources: r.Sources, Target: r.Target, egress: r.egress}
		switch t := &s.Target; t.Kind {
		case ByValue, ByHost:
			m := rs.mapNamed(t.Map)
			var elems []Element
			for e := range m.Elements {
				if mark := markOf(e.Addr); mark != 0 {
					elems = append(elems, Element{From: e.From, To: e.To, Mark: mark})
				}
			}
			if len(elems) == 0 {
				continue // this node serves every host of the entry first
			}
			steer := listedMap(m.Name+"_steer", MarkMap, elems)
			rs.Maps = append(rs.Maps, steer)
			t.Map = steer.Name
		case ByJhash:
			t.Runs = nil
			for _, run := range r.Target.Runs {
				mark := markOf(run.Addr)
				switch n := len(t.Runs); {
				case mark == 0:
				case n > 0 && t.Runs[n-1].Mark == mark && t.Runs[n-1].Hi+1 == run.Lo:
					t.Runs[n-1].Hi = run.Hi
				default:
					t.Runs = append(t.Runs, BucketRange{Lo: run.Lo, Hi: run.Hi, Mark: mark})
				}
			}
			if len(t.Runs) == 0 {
				continue
			}
		}
		st.Rules = append(st.Rules, s)
	}
	return st
}

// mapNamed returns the ruleset's map of that name.
func (rs *Ruleset) mapNamed(name string) Map {
	i := slices.IndexFunc(rs.Maps, func(m Map) bool { return m.Name == name })
	return rs.Maps[i]
}

// PeersComment is the stamp on the NAT chain's rule that leaves packets
// routed to a peer untranslated.
func (rs *Ruleset) PeersComment() string {
	return fmt.Sprintf("%s%s node %s", stampPrefix, rs.Digest, rs.Steering.Node)
}

// stamped reports whether what follows a stamp's digest is natpool's.
func stamped(what string) bool {
	return strings.HasPrefix(what, "egress ") || strings.HasPrefix(what, "node ") || strings.HasPrefix(what, "guard ") || strings.HasPrefix(what, "uplinks ") ||
		strings.HasPrefix(what, "service ") || strings.HasPrefix(what, "hairpin ")
}

// Reserved returns whether a policy rule sits where c puts natpool's: at one
// of its priorities, looking up one of its nodes' routing tables, or for
// one of its marks. natpool makes its own rules there and refuses to work
// beside another's.
func Reserved(c *pool.Cluster) func(PolicyRule) bool {
	return func(r PolicyRule) bool {
		return r.Priority >= c.Priority && r.Priority < c.Priority+len(c.Nodes)-1 ||
			r.Table >= c.Table && r.Table < c.Table+len(c.Nodes) ||
			r.Mark >= c.Mark && uint64(r.Mark) < uint64(c.Mark)+uint64(len(c.Chunks))
	}
}

// NodeTables returns the routing tables of c's nodes.
func NodeTables(c *pool.Cluster) []int {
	tables := make([]int, len(c.Nodes))
	for i := range c.Nodes {
		tables[i] = NodeTable(c, i)
	}
	return tables
}
