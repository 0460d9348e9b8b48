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
	// The table may hold either encoding of port blocks: compare with the
	// compact one and, if the table is not in sync with it, with the
	// per-host one too, and report against the closer.
	var rs *compiler.Ruleset
	var want *nft.TableState
	for _, enc := range []compiler.Encoding{compiler.Compact, compiler.PerHost} {
		c := compiler.Compile(plan, compiler.Options{Encoding: enc, Node: node})
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
	var routes []compiler.PolicyRule
	if rs.Steering != nil {
		if routes, err = b.steering(rs, plan.Cluster, &r); err != nil {
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

// steering adds to r how natpool's policy rules differ from the node's in
// rs (a missing one has this node translate hosts whose replies go to
// another; a foreign one sits where natpool's go) and the state of each
// peer, and returns natpool's policy rules in force.
func (b *Box) steering(rs *compiler.Ruleset, c *pool.Cluster, r *render.StatusReport) ([]compiler.PolicyRule, error) {
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return nil, err
	}
	defer routing.Close()
	have, foreign, err := routing.PolicyRules(compiler.Reserved(c))
	if err != nil {
		return nil, err
	}
	routes, err := routing.ForeignRoutes(compiler.NodeTables(c))
	if err != nil {
		return nil, err
	}
	d := compiler.Difference{Object: "policy rules"}
	for _, f := range append(foreign, routes...) {
		d.Extra = append(d.Extra, f+" (not natpool's, in its ranges)")
	}
	for _, pr := range rs.Steering.Routes {
		if !slices.Contains(have, pr) {
			d.Missing = append(d.Missing, pr.String())
		}
	}
	for _, pr := range have {
		if !slices.Contains(rs.Steering.Routes, pr) {
			d.Extra = append(d.Extra, pr.String())
		}
	}
	if len(d.Missing)+len(d.Extra) > 0 {
		r.Drift = append(r.Drift, d)
	}
	r.Peers, err = peerStates(routing, c, rs.Steering.Node)
	return have, err
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
