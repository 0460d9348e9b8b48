//go:build linux

package box

import (
	"errors"
	"slices"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// stamp reads the digest natpool stamped on a target's table.
func (b *Box) stamp(t journal.Target) (string, bool, error) {
	tables, err := b.Kernels(t.Netns).Tables()
	if err != nil {
		return "", false, err
	}
	defer tables.Close()
	st, err := tables.Stamp(t.Table)
	return st.Digest, st.Exists, err
}

// Apply puts plan in force, journaled: natpool's table replaced in one
// transaction and, for a node of a cluster, natpool's policy rules made
// those of the plan. A table or policy routing that is not natpool's is
// refused before the journal is touched.
func (b *Box) Apply(plan *pool.Plan, o Options) (Applied, error) {
	if err := CheckNode(plan, o.Node); err != nil {
		return Applied{}, err
	}
	rs := compiler.Compile(plan, compiler.Options{Encoding: o.Encoding, Node: o.Node})
	tables, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return Applied{}, err
	}
	defer tables.Close()
	if err := claimable(tables, rs.Table); err != nil {
		return Applied{}, err
	}
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return Applied{}, err
	}
	defer routing.Close()
	if rs.Steering != nil {
		if err := claimCluster(routing, plan.Cluster); err != nil {
			return Applied{}, err
		}
	}
	rec := plan.Record()
	if err := b.Journal.Change(journal.Apply, b.Netns, rs.Table, rs.Digest, &rec, func() error {
		return applyNode(tables, routing, rs, plan.Cluster)
	}); err != nil {
		return Applied{}, err
	}
	a := Applied{ApplyReport: applyReport(rs, b.Netns), Ruleset: rs}
	a.Warnings = missingInterfaces(routing, plan, b.Netns)
	return a, nil
}

func applyReport(rs *compiler.Ruleset, netns string) render.ApplyReport {
	return render.ApplyReport{Table: rs.Table, Netns: netns, Digest: rs.Digest, Rules: len(rs.Rules), Maps: len(rs.Maps), Elements: rs.Elements()}
}

// missingInterfaces says which oif names the namespace does not have: the
// rules load and will match once such an interface appears.
func missingInterfaces(r Routing, plan *pool.Plan, netns string) []string {
	links, err := r.LinksUp()
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range plan.Egress {
		found := false
		for name := range links {
			found = found || pool.MatchesInterface(e.OIF, name)
		}
		if e.OIF != "" && !found {
			out = append(out, "egress "+e.Name+": no interface "+e.OIF+" in "+render.Where(netns)+" yet; its rule matches once it exists")
		}
	}
	return out
}

// applyNode replaces natpool's table with rs and, for a node of a cluster,
// makes natpool's policy rules those of rs: the new rules are added before
// the table changes (a rule for a mark no packet carries yet is inert) and
// the stale ones deleted after, so no packet meets a table without its
// rules. Should the table be refused, the rules are put back as they were.
func applyNode(t Tables, r Routing, rs *compiler.Ruleset, c *pool.Cluster) error {
	if rs.Steering == nil {
		return t.Apply(rs)
	}
	reserved := compiler.Reserved(c)
	had, _, err := r.PolicyRules(reserved)
	if err != nil {
		return err
	}
	if err := r.SetPolicyRules(append(slices.Clone(had), rs.Steering.Routes...), reserved); err != nil {
		return errors.Join(err, r.SetPolicyRules(had, reserved))
	}
	if err := t.Apply(rs); err != nil {
		return errors.Join(err, r.SetPolicyRules(had, reserved))
	}
	return r.SetPolicyRules(rs.Steering.Routes, reserved)
}

// claimable refuses, before anything is written to the journal, a table
// natpool did not make; reading the stamp also fails early without
// privileges. The kernel change checks the stamp again, in its transaction.
func claimable(t Tables, table string) error {
	st, err := t.Stamp(table)
	if err == nil && st.Exists && !st.Natpool {
		err = &nft.NotNatpoolsError{Table: table}
	}
	return err
}

// claimCluster refuses a cluster's policy-routing ranges when a rule or
// route natpool did not make sits in them.
func claimCluster(r Routing, c *pool.Cluster) error {
	_, foreign, err := r.PolicyRules(compiler.Reserved(c))
	if err != nil {
		return err
	}
	routes, err := r.ForeignRoutes(compiler.NodeTables(c))
	if err != nil {
		return err
	}
	if foreign = append(foreign, routes...); len(foreign) > 0 {
		return &linux.ForeignError{What: foreign}
	}
	return nil
}

// DryRun says what Apply would change and changes nothing.
func (b *Box) DryRun(plan *pool.Plan, o Options) (render.DryRunReport, error) {
	if err := CheckNode(plan, o.Node); err != nil {
		return render.DryRunReport{}, err
	}
	rs := compiler.Compile(plan, compiler.Options{Encoding: o.Encoding, Node: o.Node})
	r := render.DryRunReport{ApplyReport: applyReport(rs, b.Netns)}
	want, err := nft.Expected(rs)
	if err != nil {
		return r, err
	}
	tables, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return r, err
	}
	defer tables.Close()
	st, err := tables.Stamp(rs.Table)
	switch {
	case err != nil:
		return r, err
	case st.Exists && !st.Natpool:
		return r, &nft.NotNatpoolsError{Table: rs.Table}
	case !st.Exists:
		r.Create = true
		return r, nil
	}
	have, err := tables.Read(rs.Table)
	if err != nil {
		return r, err
	}
	// What the live table lacks is added; what the plan lacks is removed.
	r.Changes = nft.Compare(have, want)
	return r, nil
}

// Delete removes natpool's table and natpool's policy rules, told by their
// protocol (no plan is needed to find them, and no other rule is touched),
// journaled; dry, it says what it would remove.
func (b *Box) Delete(table string, dryRun bool) (render.DeleteReport, error) {
	rep := render.DeleteReport{Table: table, Netns: b.Netns, DryRun: dryRun}
	tables, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return rep, err
	}
	defer tables.Close()
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return rep, err
	}
	defer routing.Close()
	rules, _, err := routing.PolicyRules(func(compiler.PolicyRule) bool { return false })
	if err != nil {
		return rep, err
	}
	if err := claimable(tables, table); err != nil {
		return rep, err
	}
	if dryRun {
		st, err := tables.Stamp(table)
		rep.Deleted, rep.PolicyRules = st.Exists, len(rules)
		return rep, err
	}
	err = b.Journal.Change(journal.Delete, b.Netns, table, "", nil, func() (err error) {
		if rep.Deleted, err = tables.Delete(table); err != nil {
			return err
		}
		rep.PolicyRules, err = routing.DeletePolicyRules()
		return err
	})
	return rep, err
}
