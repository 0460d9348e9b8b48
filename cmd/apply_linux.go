//go:build linux

package cmd

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

func runApply(o *applyOptions, stdout, stderr io.Writer) error {
	if o.delete {
		return runDelete(o, stdout, stderr)
	}
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	_, err = applyPlan(plan, o, stdout, stderr)
	return err
}

// applyPlan puts plan in force, journaled, and returns its digest: what
// apply and watch do.
func applyPlan(plan *pool.Plan, o *applyOptions, stdout, stderr io.Writer) (string, error) {
	if err := checkNode(plan, o.node); err != nil {
		return "", err
	}
	rs := compiler.Compile(plan, compiler.Options{Encoding: encodings[o.encoding], Node: o.node})
	k, err := nft.Dial(o.netns)
	if err != nil {
		return "", err
	}
	defer k.Close()
	if o.dryRun {
		return rs.Digest, dryRun(k, rs, o, stdout)
	}
	path, err := onePath(o.journal, plan.Spec.Journal)
	if err != nil {
		return "", err
	}
	if err := claimable(k, rs.Table); err != nil {
		return "", err
	}
	if rs.Steering != nil {
		if err := claimableRouting(plan.Cluster, o.netns); err != nil {
			return "", err
		}
	}
	rec := plan.Record()
	w, err := journalWriter(path, stderr)
	if err != nil {
		return "", err
	}
	if err := w.Change(journal.Apply, o.netns, rs.Table, rs.Digest, &rec, func() error { return applyNode(k, rs, plan.Cluster, o.netns) }); err != nil {
		return "", err
	}
	warnMissingInterfaces(plan, o.netns, stderr)
	if o.output == "json" {
		return rs.Digest, render.JSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "digest": rs.Digest,
			"rules": len(rs.Rules), "maps": len(rs.Maps), "elements": rs.Elements()})
	}
	fmt.Fprintf(stdout, "applied table ip %s (plan %s) in %s: %d rules, %d maps, %d elements\n",
		rs.Table, rs.Digest, where(o.netns), len(rs.Rules), len(rs.Maps), rs.Elements())
	return rs.Digest, nil
}

// warnMissingInterfaces reports oif names the namespace does not have: the
// rules load and will match once such an interface appears.
func warnMissingInterfaces(plan *pool.Plan, netns string, stderr io.Writer) {
	names, err := linux.Interfaces(netns)
	if err != nil {
		return
	}
	for _, e := range plan.Egress {
		if e.OIF != "" && !slices.ContainsFunc(names, func(name string) bool { return pool.MatchesInterface(e.OIF, name) }) {
			fmt.Fprintf(stderr, "natpool: warning: egress %s: no interface %s in %s yet; its rule matches once it exists\n", e.Name, e.OIF, where(netns))
		}
	}
}

// applyNode replaces natpool's table with rs and, for a node of a cluster,
// makes natpool's policy rules those of rs: the new rules are added before
// the table changes (a rule for a mark no packet carries yet is inert) and
// the stale ones deleted after, so no packet meets a table without its
// rules. Should the table be refused, the rules are put back as they were.
func applyNode(k *nft.Kernel, rs *compiler.Ruleset, c *pool.Cluster, netns string) error {
	if rs.Steering == nil {
		return k.Apply(rs)
	}
	r, err := linux.OpenRouting(netns)
	if err != nil {
		return err
	}
	defer r.Close()
	reserved := compiler.Reserved(c)
	had, _, err := r.PolicyRules(reserved)
	if err != nil {
		return err
	}
	if err := r.SetPolicyRules(append(slices.Clone(had), rs.Steering.Routes...), reserved); err != nil {
		return errors.Join(err, r.SetPolicyRules(had, reserved))
	}
	if err := k.Apply(rs); err != nil {
		return errors.Join(err, r.SetPolicyRules(had, reserved))
	}
	return r.SetPolicyRules(rs.Steering.Routes, reserved)
}

// claimableRouting refuses, before anything is written to the journal, a
// cluster's policy-routing ranges when a rule or route natpool did not make
// sits in them.
func claimableRouting(c *pool.Cluster, netns string) error {
	r, err := linux.OpenRouting(netns)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.ClaimCluster(c)
}

func dryRun(k *nft.Kernel, rs *compiler.Ruleset, o *applyOptions, stdout io.Writer) error {
	want, err := nft.Expected(rs)
	if err != nil {
		return err
	}
	st, err := k.Stamp(rs.Table)
	if err != nil {
		return err
	}
	if st.Exists && !st.Natpool {
		return &nft.NotNatpoolsError{Table: rs.Table}
	}
	if !st.Exists {
		if o.output == "json" {
			return render.JSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "create": true,
				"rules": len(rs.Rules), "maps": len(rs.Maps), "elements": rs.Elements()})
		}
		fmt.Fprintf(stdout, "no table ip %s in %s yet: would create it with %d rules, %d maps, %d elements\n",
			rs.Table, where(o.netns), len(rs.Rules), len(rs.Maps), rs.Elements())
		return nil
	}
	have, err := k.Read(rs.Table)
	if err != nil {
		return err
	}
	// What the live table lacks is added; what the plan lacks is removed.
	changes := nft.Compare(have, want)
	if o.output == "json" {
		return render.JSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "changes": differencesJSON(changes, "remove", "add")})
	}
	if len(changes) == 0 {
		fmt.Fprintf(stdout, "table ip %s in %s already holds the plan: nothing to change\n", rs.Table, where(o.netns))
		return nil
	}
	fmt.Fprintf(stdout, "would change table ip %s in %s:\n", rs.Table, where(o.netns))
	writeDifferences(stdout, changes, "to remove", "to add")
	return nil
}

func runDelete(o *applyOptions, stdout, stderr io.Writer) error {
	table, fromSpec, err := o.spec.unplanned()
	if err != nil {
		return err
	}
	k, err := nft.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	r, err := linux.OpenRouting(o.netns)
	if err != nil {
		return err
	}
	defer r.Close()
	// natpool's policy rules go with its table, told by their protocol:
	// no spec or node is needed to find them, and no other rule is touched.
	rules, _, err := r.PolicyRules(func(compiler.PolicyRule) bool { return false })
	if err != nil {
		return err
	}
	st, err := k.Stamp(table)
	if err != nil {
		return err
	}
	if st.Exists && !st.Natpool {
		return &nft.NotNatpoolsError{Table: table}
	}
	var deleted bool
	removed := len(rules)
	if !o.dryRun {
		path, err := onePath(o.journal, fromSpec)
		if err != nil {
			return err
		}
		w, err := journalWriter(path, stderr)
		if err != nil {
			return err
		}
		if err := w.Change(journal.Delete, o.netns, table, "", nil, func() (err error) {
			if deleted, err = k.Delete(table); err != nil {
				return err
			}
			removed, err = r.DeletePolicyRules()
			return err
		}); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return render.JSON(stdout, map[string]any{"table": table, "netns": o.netns, "deleted": deleted || o.dryRun && st.Exists,
			"policy_rules": removed, "dry_run": o.dryRun})
	}
	verb, rulesVerb := "deleted", "removed"
	if o.dryRun {
		verb, rulesVerb, deleted = "would delete", "would remove", st.Exists
	}
	switch {
	case deleted:
		fmt.Fprintf(stdout, "%s table ip %s in %s", verb, table, where(o.netns))
	default:
		fmt.Fprintf(stdout, "no table ip %s in %s", table, where(o.netns))
	}
	switch {
	case removed > 0:
		fmt.Fprintf(stdout, "; %s %s of natpool's\n", rulesVerb, render.Plural(uint64(removed), "policy rule"))
	case !deleted:
		fmt.Fprintf(stdout, ": nothing to delete\n")
	default:
		fmt.Fprintln(stdout)
	}
	return nil
}

// claimable refuses, before anything is written to the journal, a table
// natpool did not make; reading the stamp also fails early without
// privileges. The kernel change checks the stamp again, in its transaction.
func claimable(k *nft.Kernel, table string) error {
	st, err := k.Stamp(table)
	if err == nil && st.Exists && !st.Natpool {
		err = &nft.NotNatpoolsError{Table: table}
	}
	return err
}
