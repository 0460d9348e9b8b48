//go:build linux

package box

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

// Status compares natpool's table in the kernel with plan, for node of its
// cluster: every chain, map, element and rule as text; then every inside
// host's packets run through the rules over the elements the kernel holds,
// against the plan's own lookup; for a node, natpool's policy rules and the
// state of its peers. It names the journal entry in force, and the
// journal's trouble beside the table's drift, never instead of it. Port
// blocks are recognised in either encoding.
func (b *Box) Status(plan *pool.Plan, node string) (render.StatusReport, error) {
	r := render.StatusReport{Table: plan.Table, Netns: b.Netns}
	if err := CheckNode(plan, node); err != nil {
		return r, err
	}
	tables, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return r, err
	}
	defer tables.Close()
	stamp, err := tables.Stamp(plan.Table)
	if err != nil {
		return r, err
	}
	if !stamp.Exists {
		return r, fmt.Errorf("no table ip %s in %s", plan.Table, render.Where(b.Netns))
	}
	r.Stamped = stamp.Natpool
	have, err := tables.Read(plan.Table)
	if err != nil {
		return r, err
	}
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return r, err
	}
	defer routing.Close()
	// The table may hold either encoding of port blocks: compare with the
	// compact one and, if the table is not in sync with it, with the
	// per-host one too, and report against the closer. A site's uplinks
	// are compared as the table says watch last found them.
	var rs *compiler.Ruleset
	var want *nft.TableState
	o := Options{Node: node, Uplinks: uplinkStates(have, plan)}
	for _, enc := range []compiler.Encoding{compiler.Compact, compiler.PerHost} {
		o.Encoding = enc
		c, err := compileFor(routing, plan, o)
		if err != nil {
			return r, err
		}
		w, err := nft.Expected(c)
		if err != nil {
			return r, err
		}
		if d := nft.Compare(w, have); rs == nil || size(d) < size(r.Drift) {
			r.Drift, rs, want = d, c, w
		}
		if len(r.Drift) == 0 {
			break
		}
	}
	r.Digest, r.Rules, r.Elements = rs.Digest, len(rs.Rules), rs.Elements()
	routes, err := policyDrift(routing, rs, plan, &r)
	if err != nil {
		return r, err
	}
	if rs.Steering != nil {
		if r.Peers, err = peerStates(routing, plan.Cluster, rs.Steering.Node); err != nil {
			return r, err
		}
	}
	// The table may agree with the compiled plan and still not be the
	// plan, were the compiler wrong: run every host's packets through the
	// rules over the elements the kernel holds, and compare their fate with
	// the plan's own lookup.
	v, err := nft.Verify(want.Program().WithSetsOf(have.Program()), plan, node, routes)
	if err != nil {
		return r, err
	}
	r.Drift = append(r.Drift, v.Difference()...)
	r.Journal = b.inForce(plan.Table, stamp.Digest)
	return r, nil
}

// size counts the differing lines.
func size(diffs []compiler.Difference) int {
	n := 0
	for _, d := range diffs {
		n += len(d.Missing) + len(d.Extra)
	}
	return n
}

// policyDrift adds to r how natpool's policy routing differs from that of
// rs (a missing steer rule has this node translate hosts whose replies go
// to another; a missing uplink rule or route sends hosts out by the main
// table's route; a foreign rule or route sits where natpool's go), and
// returns natpool's policy rules in force.
func policyDrift(routing Routing, rs *compiler.Ruleset, plan *pool.Plan, r *render.StatusReport) ([]compiler.PolicyRule, error) {
	p := policyOf(rs, plan)
	have, foreign, err := routing.PolicyRules(p.reserved)
	if err != nil {
		return nil, err
	}
	if plan.Cluster != nil && rs.Steering != nil {
		routes, err := routing.ForeignRoutes(compiler.NodeTables(plan.Cluster))
		if err != nil {
			return nil, err
		}
		foreign = append(foreign, routes...)
	}
	haveRoutes, routes, err := routing.Routes(p.tables)
	if err != nil {
		return nil, err
	}
	d := compiler.Difference{Object: "policy routing"}
	for _, f := range append(foreign, routes...) {
		d.Extra = append(d.Extra, f+" (not natpool's, in its ranges)")
	}
	d.Missing, d.Extra = append(d.Missing, missing(p.rules, have)...), append(d.Extra, missing(have, p.rules)...)
	d.Missing, d.Extra = append(d.Missing, missing(p.routes, haveRoutes)...), append(d.Extra, missing(haveRoutes, p.routes)...)
	if len(d.Missing)+len(d.Extra) > 0 {
		r.Drift = append(r.Drift, d)
	}
	return have, nil
}

// missing returns, as text, what of want have lacks.
func missing[T interface {
	comparable
	String() string
}](want, have []T) []string {
	var out []string
	for _, x := range want {
		if !slices.Contains(have, x) {
			out = append(out, x.String())
		}
	}
	return out
}

// uplinkStates reads from natpool's table the states of the uplinks its
// marks follow; nil (all up) for a plan without uplinks or a table that
// says none.
func uplinkStates(have *nft.TableState, plan *pool.Plan) []pool.UplinkState {
	if plan.Uplinks == nil {
		return nil
	}
	for _, c := range have.Chains {
		if c.Name == compiler.UplinkChain && len(c.Rules) > 0 {
			return compiler.UplinkStates(c.Rules[0].Comment, plan.Uplinks)
		}
	}
	return nil
}

// Peers returns whether each peer of node is up: its routing table holds
// routes BIRD put there.
func (b *Box) Peers(c *pool.Cluster, node string) ([]render.PeerState, error) {
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return nil, err
	}
	defer routing.Close()
	return peerStates(routing, c, node)
}

func peerStates(r Routing, c *pool.Cluster, node string) ([]render.PeerState, error) {
	peers := []render.PeerState{}
	for i, n := range c.Nodes {
		if n.Name == node {
			continue
		}
		p := render.PeerState{Node: n.Name, Table: compiler.NodeTable(c, i)}
		var err error
		if p.Up, err = r.HasBIRDRoutes(p.Table); err != nil {
			return nil, err
		}
		peers = append(peers, p)
	}
	return peers, nil
}

// inForce settles the journal and finds the entry in force in this
// machine's table, which should name digest, the plan stamped on it.
// Whatever keeps the journal from saying so (it is missing, damaged,
// unreadable, or never recorded the plan) is its Err.
func (b *Box) inForce(table, digest string) render.JournalState {
	s := render.JournalState{Path: b.Journal.Dir}
	c, last, err := b.Journal.InForce(b.Netns, table)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.Err = fmt.Errorf("no journal here: this table's plan (%s) was never recorded", digest)
	case err != nil:
		s.Err = err
	case last == nil:
		s.Err, s.Notes = fmt.Errorf("no plan of this table in force: this table's plan (%s) was never recorded", digest), c.Notes
	case last.Digest != digest:
		s.Err, s.Notes = fmt.Errorf("entry %d says plan %s is in force since %s, but the table holds %s", last.Seq, last.Digest, render.TimeText(last.From), digest), c.Notes
	default:
		s.Seq, s.Digest, s.Since, s.Notes = last.Seq, last.Digest, last.From, c.Notes
	}
	return s
}
