package render

import (
	"fmt"
	"io"
	"strings"

	"github.com/natpool/natpool/compiler"
)

// IP writes natpool's policy routing of a ruleset (a site's uplinks, a
// cluster node's steering) as `ip -batch` input: its rules, and the routes
// of its uplinks' tables, each marked natpool's (proto 78). What only the
// kernel can say (an uplink's own address, a gateway the spec leaves to
// the main table) natpool apply and watch add; the file says so.
func IP(w io.Writer, rs *compiler.Ruleset, version string) error {
	var rules []compiler.PolicyRule
	var routes []compiler.Route
	if st := rs.Steering; st != nil {
		rules = append(rules, st.Routes...)
	}
	if u := rs.Uplinks; u != nil {
		rules = append(rules, u.Rules...)
		routes = append(routes, u.Routes...)
	}
	if len(rules) == 0 {
		return fmt.Errorf("format ip: the plan has no policy routing (it comes with uplinks:, or a node of nodes:)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(version, rs.Digest))
	fmt.Fprintf(&b, "# natpool's policy routing, for ip -batch (natpool apply makes and keeps it, protocol 78).\n")
	if u := rs.Uplinks; u != nil {
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
