package render

import (
	"fmt"
	"io"
	"math/bits"
	"strings"

	"github.com/natpool/natpool/compiler"
)

// IPSet writes `ipset restore` input for the per-address sets of the hash
// strategy (the sets its iptables rules match): each set is created if
// missing, flushed and refilled, so a reload is safe. A plan without hash
// entries has no sets: its file says so and loads nothing.
func IPSet(w io.Writer, rs *compiler.Ruleset, version string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(version, rs))
	done := map[string]bool{}
	for _, r := range rs.Rules {
		if r.Target.Kind != compiler.ByJhash || done[r.Egress] {
			continue
		}
		done[r.Egress] = true
		for i, set := range r.HostSets() {
			var prefixes []string
			for _, h := range set.Hosts {
				for _, p := range h.Prefixes() {
					prefixes = append(prefixes, prefixText(p))
				}
			}
			name := SetName(rs.Table, r.KernelName(), i)
			// maxelem: the default 65536, or the next power of two that holds the set.
			maxelem := max(65536, 1<<bits.Len(uint(len(prefixes))))
			fmt.Fprintf(&b, "create %s hash:net family inet maxelem %d -exist\nflush %s\n", name, maxelem, name)
			for _, p := range prefixes {
				fmt.Fprintf(&b, "add %s %s -exist\n", name, p)
			}
		}
	}
	if len(done) == 0 {
		b.WriteString("# No egress entry uses the hash strategy: there are no sets to load.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
