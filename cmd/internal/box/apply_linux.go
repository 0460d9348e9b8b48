//go:build linux

package box

import (
	"errors"
	"fmt"
	"net/netip"
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
// transaction and natpool's policy routing (a cluster node's rules, a
// site's uplinks' rules and routes) made that of the plan. A table or
// policy routing that is not natpool's is refused before the journal is
// touched.
func (b *Box) Apply(plan *pool.Plan, o Options) (Applied, error) { return b.apply(plan, o, true) }

// Reassert puts plan in force again as Apply does, without a journal entry:
// the plan in force is the same, compiled again for what changed beside it
// (a site's uplinks' states, an uplink's address or gateway).
func (b *Box) Reassert(plan *pool.Plan, o Options) (Applied, error) { return b.apply(plan, o, false) }

func (b *Box) apply(plan *pool.Plan, o Options, journaled bool) (Applied, error) {
	if err := CheckNode(plan, o.Node); err != nil {
		return Applied{}, err
	}
	tables, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return Applied{}, err
	}
	defer tables.Close()
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return Applied{}, err
	}
	defer routing.Close()
	rs, err := compileFor(routing, plan, o)
	if err != nil {
		return Applied{}, err
	}
	if err := claimable(tables, rs.Table); err != nil {
		return Applied{}, err
	}
	pol := policyOf(rs, plan)
	if err := claimRouting(routing, plan, pol); err != nil {
		return Applied{}, err
	}
	change := func() error { return applyRouting(tables, routing, rs, pol) }
	if journaled {
		rec := plan.Record()
		err = b.Journal.Change(journal.Apply, b.Netns, rs.Table, rs.Digest, &rec, change)
	} else {
		err = change()
	}
	if err != nil {
		return Applied{}, err
	}
	a := Applied{ApplyReport: applyReport(rs, b.Netns), Ruleset: rs}
	a.Warnings = append(missingInterfaces(routing, plan, b.Netns), strictUplinks(routing, plan)...)
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

// strictUplinks says which of a site's uplinks filter reverse paths
// strictly: the replies to hosts that leave by an uplink other than the
// main table's choice arrive there, and would be dropped.
func strictUplinks(r Routing, plan *pool.Plan) []string {
	if plan.Uplinks == nil {
		return nil
	}
	var out []string
	for _, m := range plan.Uplinks.Members {
		if v, err := r.RPFilter(m.OIF); err == nil && v == 1 {
			out = append(out, fmt.Sprintf("uplink %s: %s filters reverse paths strictly (rp_filter 1): replies to the hosts that leave by it are dropped while the main table prefers another uplink; set net.ipv4.conf.%s.rp_filter=2 (and all.rp_filter to 0 or 2)", m.Name, m.OIF, m.OIF))
		}
	}
	return out
}

// compileFor compiles plan for this box: for a site with uplinks, with
// what the kernel says of each (its address, its gateway) and the states
// o gives (all up when none).
func compileFor(r Routing, plan *pool.Plan, o Options) (*compiler.Ruleset, error) {
	co := compiler.Options{Encoding: o.Encoding, Node: o.Node}
	if u := plan.Uplinks; u != nil {
		for i, m := range u.Members {
			f := compiler.UplinkFacts{State: pool.UplinkUp}
			if o.Uplinks != nil {
				f.State = o.Uplinks[i]
			}
			var err error
			if f.Address, f.Gateway, err = r.Uplink(m.OIF); err != nil {
				return nil, err
			}
			if len(plan.Egress[m.Egress].NPT) > 0 {
				if _, f.Gateway6, err = r.Uplink6(m.OIF); err != nil {
					return nil, err
				}
			}
			co.Uplinks = append(co.Uplinks, f)
		}
	}
	var err error
	if co.Addrs6, err = uplinkAddrs6(r, plan); err != nil {
		return nil, err
	}
	return compiler.Compile(plan, co), nil
}

// uplinkAddrs6 returns the global IPv6 address of each uplink whose
// prefix an entry's pool6 takes (from-interface) and that has one, by
// interface.
func uplinkAddrs6(r Routing, plan *pool.Plan) (map[string]netip.Addr, error) {
	addrs := map[string]netip.Addr{}
	for _, e := range plan.Egress {
		if !slices.ContainsFunc(e.NPT, func(n pool.NPT) bool { return n.FromInterface }) {
			continue
		}
		a, _, err := r.Uplink6(e.OIF)
		if err != nil {
			return nil, err
		}
		if a.IsValid() {
			addrs[e.OIF] = a
		}
	}
	return addrs, nil
}

// policy is natpool's policy routing of a ruleset: its rules and routes,
// the tables where only its routes may be, and where its rules go.
type policy struct {
	rules    []compiler.PolicyRule
	routes   []compiler.Route
	tables   []int
	reserved func(compiler.PolicyRule) bool
}

func policyOf(rs *compiler.Ruleset, plan *pool.Plan) policy {
	p := policy{reserved: func(compiler.PolicyRule) bool { return false }}
	if st := rs.Steering; st != nil {
		p.rules, p.reserved = append(p.rules, st.Routes...), compiler.Reserved(plan.Cluster)
	}
	if u := rs.Uplinks; u != nil {
		p.rules, p.routes, p.tables = append(p.rules, u.Rules...), u.Routes, compiler.UplinkTables(plan.Uplinks)
		p.reserved = compiler.UplinkReserved(plan.Uplinks)
	}
	return p
}

// applyRouting replaces natpool's table with rs and makes natpool's policy
// routing p: the routes first (only natpool's rules look them up), then
// the new rules before the table changes (a rule for a mark no packet
// carries yet is inert), the stale ones after, so no packet meets a table
// without its rules. Should anything be refused, the rules and routes are
// put back as they were.
func applyRouting(t Tables, r Routing, rs *compiler.Ruleset, p policy) error {
	had, _, err := r.PolicyRules(p.reserved)
	if err != nil {
		return err
	}
	hadRoutes, _, err := r.Routes(nil)
	if err != nil {
		return err
	}
	back := func(err error) error {
		return errors.Join(err, r.SetPolicyRules(had, p.reserved), r.SetRoutes(nil, hadRoutes))
	}
	if err := r.SetRoutes(p.tables, p.routes); err != nil {
		return back(err)
	}
	if err := r.SetPolicyRules(append(slices.Clone(had), p.rules...), p.reserved); err != nil {
		return back(err)
	}
	if err := t.Apply(rs); err != nil {
		return back(err)
	}
	return r.SetPolicyRules(p.rules, p.reserved)
}

// claimable refuses, before anything is written to the journal, a table
// natpool did not make; reading the stamp also fails early without
// privileges. The kernel change checks the stamp again, in its transaction.
func claimable(t Tables, table string) error {
	st, err := t.Stamp(table)
	if err == nil && st.Exists && !st.Natpool {
		err = &nft.NotNatpoolsError{Family: "ip", Table: table}
	}
	return err
}

// claimRouting refuses natpool's policy-routing ranges (a cluster's, a
// site's uplinks') when a rule or route natpool did not make sits in them.
func claimRouting(r Routing, plan *pool.Plan, p policy) error {
	_, foreign, err := r.PolicyRules(p.reserved)
	if err != nil {
		return err
	}
	if plan.Cluster != nil {
		routes, err := r.ForeignRoutes(compiler.NodeTables(plan.Cluster))
		if err != nil {
			return err
		}
		foreign = append(foreign, routes...)
	}
	_, routes, err := r.Routes(p.tables)
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
	routing, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return render.DryRunReport{}, err
	}
	defer routing.Close()
	rs, err := compileFor(routing, plan, o)
	if err != nil {
		return render.DryRunReport{}, err
	}
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
		return r, &nft.NotNatpoolsError{Family: "ip", Table: rs.Table}
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

// Delete removes natpool's table and natpool's policy rules and routes,
// told by their protocol (no plan is needed to find them, and no other rule
// or route is touched), journaled; dry, it says what it would remove.
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
	routes, _, err := routing.Routes(nil)
	if err != nil {
		return rep, err
	}
	if err := claimable(tables, table); err != nil {
		return rep, err
	}
	if dryRun {
		st, err := tables.Stamp(table)
		rep.Deleted, rep.PolicyRules, rep.Routes = st.Exists, len(rules), len(routes)
		return rep, err
	}
	err = b.Journal.Change(journal.Delete, b.Netns, table, "", nil, func() (err error) {
		if rep.Deleted, err = tables.Delete(table); err != nil {
			return err
		}
		if rep.PolicyRules, err = routing.DeletePolicyRules(); err != nil {
			return err
		}
		rep.Routes, err = routing.DeleteRoutes()
		return err
	})
	return rep, err
}

// UplinkPrefixes puts in plan the public IPv6 prefixes its entries take
// from their uplinks' addresses (pool6 from-interface), as the namespace
// holds them now; an uplink without a global IPv6 address leaves its
// prefix unknown.
func (b *Box) UplinkPrefixes(plan *pool.Plan) error {
	if !slices.ContainsFunc(plan.Egress, func(e *pool.Egress) bool {
		return slices.ContainsFunc(e.NPT, func(n pool.NPT) bool { return n.FromInterface })
	}) {
		return nil
	}
	r, err := b.Kernels(b.Netns).Routing()
	if err != nil {
		return err
	}
	defer r.Close()
	addrs, err := uplinkAddrs6(r, plan)
	if err != nil {
		return err
	}
	for _, e := range plan.Egress {
		e.NPT = e.NPTWith(addrs)
	}
	return nil
}
