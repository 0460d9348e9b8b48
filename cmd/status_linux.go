//go:build linux

package cmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

func runStatus(o *statusOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	return statusOf(plan, o, stdout, stderr)
}

// statusOf compares natpool's table in the kernel with plan: what status
// and watch report.
func statusOf(plan *pool.Plan, o *statusOptions, stdout, stderr io.Writer) error {
	if err := checkNode(plan, o.node); err != nil {
		return err
	}
	k, err := nft.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	stamp, err := k.Stamp(plan.Table)
	if err != nil {
		return err
	}
	if !stamp.Exists {
		return fmt.Errorf("no table ip %s in %s", plan.Table, where(o.netns))
	}
	have, err := k.Read(plan.Table)
	if err != nil {
		return err
	}
	// The table may hold either encoding of port blocks: compare with the
	// compact one and, if the table is not in sync with it, with the
	// per-host one too, and report against the closer.
	var diffs []nft.Difference
	var rs *compiler.Ruleset
	var want *nft.TableState
	for _, enc := range []compiler.Encoding{compiler.Compact, compiler.PerHost} {
		r := compiler.Compile(plan, compiler.Options{Encoding: enc, Node: o.node})
		w, err := nft.Expected(r)
		if err != nil {
			return err
		}
		if d := nft.Compare(w, have); rs == nil || size(d) < size(diffs) {
			diffs, rs, want = d, r, w
		}
		if len(diffs) == 0 {
			break
		}
	}
	peers, routes, err := steeringOf(rs, plan.Cluster, o.netns, &diffs)
	if err != nil {
		return err
	}
	// The table may agree with the compiled plan and still not be the
	// plan, were the compiler wrong: run every host's packets through the
	// rules over the elements the kernel holds, and compare their fate with
	// the plan's own lookup.
	v, err := nft.Verify(want.Program().WithSetsOf(have.Program()), plan, o.node, routes)
	if err != nil {
		return err
	}
	diffs = append(diffs, v.Difference()...)
	path, err := onePath(o.journal, plan.Spec.Journal)
	if err != nil {
		return err
	}
	known := inForce(path, o.netns, plan.Table, stamp.Digest, stderr)
	inSync := len(diffs) == 0 && known.Err == nil
	if o.output == "json" {
		j := map[string]any{"path": path}
		if len(known.Notes) > 0 {
			j["notes"] = known.Notes
		}
		if known.Err != nil {
			j["drift"] = known.Err.Error()
		} else {
			j["entry"], j["digest"], j["since"] = known.Seq, known.Digest, known.From.UTC()
		}
		out := map[string]any{"table": plan.Table, "netns": o.netns, "digest": rs.Digest, "stamped": stamp.Natpool,
			"in_sync": inSync, "drift": differencesJSON(diffs, "missing", "extra"), "journal": j}
		if peers != nil {
			out["peers"] = peers
		}
		err = render.JSON(stdout, out)
	} else {
		if len(diffs) == 0 {
			fmt.Fprintf(stdout, "table ip %s in %s is in sync with the plan (%s): %d rules, %d elements\n",
				plan.Table, where(o.netns), rs.Digest, len(rs.Rules), rs.Elements())
		} else {
			fmt.Fprintf(stdout, "table ip %s in %s has drifted from the plan (%s):\n", plan.Table, where(o.netns), rs.Digest)
			if !stamp.Natpool {
				fmt.Fprintf(stdout, "no rule of it carries natpool's stamp: another tool made it, or natpool's rules are gone (apply refuses such a table)\n")
			}
			writeDifferences(stdout, diffs, "missing", "extra")
		}
		for _, p := range peers {
			state := "down: its routing table %d is empty, this node translates the hosts it would steer to it"
			if p.Up {
				state = "up: its routing table %d holds its routes"
			}
			fmt.Fprintf(stdout, "peer %s "+state+"\n", p.Node, p.Table)
		}
		if known.Err != nil {
			fmt.Fprintf(stdout, "journal %s: %v\n", path, known.Err)
		} else {
			fmt.Fprintf(stdout, "journal %s: entry %d, plan %s, in force since %s\n", path, known.Seq, known.Digest, render.TimeText(known.From))
		}
		for _, n := range known.Notes {
			fmt.Fprintf(stdout, "journal note: %s\n", n)
		}
	}
	if err != nil || inSync {
		return err
	}
	return &exitError{code: exitFound}
}

// peerState is whether a peer of a node is up: its routing table holds the
// routes BIRD learns from it (a route another put there does not count).
type peerState struct {
	Node  string `json:"node"`
	Table int    `json:"table"`
	Up    bool   `json:"up"`
}

// steeringOf adds to diffs how natpool's policy rules in netns differ from
// the node's in rs (a missing one has this node translate hosts whose
// replies go to another), and returns the state of each peer and the
// policy rules in force; nothing for a single box.
func steeringOf(rs *compiler.Ruleset, c *pool.Cluster, netns string, diffs *[]nft.Difference) ([]peerState, []compiler.PolicyRule, error) {
	if rs.Steering == nil {
		return nil, nil, nil
	}
	r, err := linux.OpenRouting(netns)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	have, foreign, err := r.PolicyRules(compiler.Reserved(c))
	if err != nil {
		return nil, nil, err
	}
	routes, err := r.ForeignRoutes(compiler.NodeTables(c))
	if err != nil {
		return nil, nil, err
	}
	d := nft.Difference{Object: "policy rules"}
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
		*diffs = append(*diffs, d)
	}
	peers, err := peerStates(r, c, rs.Steering.Node)
	return peers, have, err
}

// peerStates returns whether each peer of node is up.
func peerStates(r *linux.Routing, c *pool.Cluster, node string) ([]peerState, error) {
	peers := []peerState{}
	for i, n := range c.Nodes {
		if n.Name == node {
			continue
		}
		p := peerState{Node: n.Name, Table: compiler.NodeTable(c, i)}
		var err error
		if p.Up, err = r.HasBIRDRoutes(p.Table); err != nil {
			return nil, err
		}
		peers = append(peers, p)
	}
	return peers, nil
}

// known is what the journal says of a table: the entry in force, or why it
// cannot say the table's plan is the one it recorded.
type known struct {
	journal.Span
	Err   error
	Notes []string // what the journal's reader passed over
}

// inForce settles the journal at path and finds the entry in force in this
// machine's table in netns, which should name digest, the plan stamped on
// the table. Whatever keeps the journal from saying so (it is missing,
// damaged, unreadable, or never recorded the plan) is its Err: status
// reports it beside the table's drift, never instead of it.
func inForce(path, netns, table, digest string, stderr io.Writer) known {
	w, err := journalWriter(path, stderr)
	if err != nil {
		return known{Err: err}
	}
	c, last, err := w.InForce(netns, table)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return known{Err: fmt.Errorf("no journal here: this table's plan (%s) was never recorded", digest)}
	case err != nil:
		return known{Err: err}
	case last == nil:
		return known{Err: fmt.Errorf("no plan of this table in force: this table's plan (%s) was never recorded", digest), Notes: c.Notes}
	case last.Digest != digest:
		return known{Err: fmt.Errorf("entry %d says plan %s is in force since %s, but the table holds %s", last.Seq, last.Digest, render.TimeText(last.From), digest), Notes: c.Notes}
	}
	return known{Span: *last, Notes: c.Notes}
}

// size counts the differing lines.
func size(diffs []nft.Difference) int {
	n := 0
	for _, d := range diffs {
		n += len(d.Missing) + len(d.Extra)
	}
	return n
}
