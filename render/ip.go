package render

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/natpool/natpool/compiler"
)

// IP writes natpool's policy routing of a ruleset (a site's uplinks, a
// cluster node's steering) as `ip -batch` input: its rules, and the routes
// of its uplinks' tables, each marked natpool's (proto 78). What only the
// kernel can say (an uplink's own address, a gateway the spec leaves to
// the main table) natpool apply and watch add; the file says so.
//
// With v6 it writes the IPv6 rules and routes instead, for ip -6 -batch
// (ip takes one family a batch): those of the uplinks' prefix translations.
func IP(w io.Writer, rs *compiler.Ruleset, version string, v6 bool) error {
	var rules []compiler.PolicyRule
	var routes []compiler.Route
	if st := rs.Steering; st != nil {
		rules = append(rules, st.Routes...)
	}
	if u := rs.Uplinks; u != nil {
		rules = append(rules, u.Rules...)
		routes = append(routes, u.Routes...)
	}
	rules = slices.DeleteFunc(rules, func(r compiler.PolicyRule) bool { return r.V6 != v6 })
	routes = slices.DeleteFunc(routes, func(r compiler.Route) bool { return r.Dst.Addr().Is6() != v6 })
	switch {
	case len(rules) == 0 && v6:
		return fmt.Errorf("format ip6: the plan has no IPv6 policy routing (it comes with uplinks: whose entries have private6 and pool6)")
	case len(rules) == 0:
		return fmt.Errorf("format ip: the plan has no policy routing (it comes with uplinks:, or a node of nodes:)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(version, rs.Digest))
	batch := "ip -batch"
	if v6 {
		batch = "ip -6 -batch"
	}
	fmt.Fprintf(&b, "# natpool's policy routing, for %s (natpool apply makes and keeps it, protocol 78).\n", batch)
	if u := rs.Uplinks; u != nil && v6 {
		fmt.Fprintf(&b, "# An uplink's IPv6 default route (the main table's through it) natpool apply and watch take from the kernel.\n")
	} else if u != nil {
		fmt.Fprintf(&b, "# Each uplink's own address gets two rules more (from ADDR, as its fwmark's), and an uplink\n")
		fmt.Fprintf(&b, "# without gateway: in the spec its default route: natpool apply and watch take them from the kernel.\n")
	}
	for _, r := range rules {
		_, rest, _ := strings.Cut(r.String(), ":\t")
		fmt.Fprintf(&b, "rule add priority %d %s proto 78\n", r.Priority, rest)
	}
	for _, r := range routes {
		fmt.Fprintf(&b, "route replace %s proto 78\n", r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
