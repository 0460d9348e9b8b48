package render

import (
	"bufio"
	"fmt"
	"io"
	"iter"
	"math/bits"
	"net/netip"

	"github.com/natpool/natpool/compiler"
	"go4.org/netipx"
)

// IPSet writes `ipset restore` input for the per-address sets of the hash
// strategy (the sets its iptables rules match): each set is created if
// missing and flushed, then the hosts are added in address order, a run of
// consecutive hosts of one address as its prefixes, so a reload is safe and
// no set is ever held whole. A plan without hash entries has no sets: its
// file says so and loads nothing.
func IPSet(w io.Writer, rs *compiler.Ruleset, version string) error {
	b := bufio.NewWriterSize(w, 1<<16)
	fmt.Fprintf(b, "# %s\n", header(version, rs.Digest))
	done := map[string]bool{}
	for _, r := range rs.Rules {
		if r.Target.Kind != compiler.ByJhash || done[r.Egress] {
			continue
		}
		done[r.Egress] = true
		publics := r.Publics()
		index := make(map[netip.Addr]int, len(publics))
		for i, a := range publics {
			index[a] = i
		}
		// Count each set's prefixes first: ipset sizes a set when it is
		// created.
		counts := make([]int, len(publics))
		for run := range hostRuns(r) {
			counts[index[run.public]] += len(run.hosts.Prefixes())
		}
		for i := range publics {
			name := SetName(rs.Table, r.KernelName(), i)
			// maxelem: the default 65536, or the next power of two that holds the set.
			maxelem := max(65536, 1<<bits.Len(uint(counts[i])))
			fmt.Fprintf(b, "create %s hash:net family inet maxelem %d -exist\nflush %s\n", name, maxelem, name)
		}
		for run := range hostRuns(r) {
			name := SetName(rs.Table, r.KernelName(), index[run.public])
			for _, p := range run.hosts.Prefixes() {
				fmt.Fprintf(b, "add %s %s -exist\n", name, prefixText(p))
			}
		}
	}
	if len(done) == 0 {
		b.WriteString("# No egress entry uses the hash strategy: there are no sets to load.\n")
	}
	return b.Flush()
}

// hostRun is consecutive inside hosts that leave through one address.
type hostRun struct {
	hosts  netipx.IPRange
	public netip.Addr
}

// hostRuns returns the rule's inside hosts as runs, in address order.
func hostRuns(r compiler.Rule) iter.Seq[hostRun] {
	return func(yield func(hostRun) bool) {
		var cur hostRun
		for h := range r.Hosts() {
			if cur.public.IsValid() && h.Public == cur.public && cur.hosts.To().Next() == h.Addr {
				cur.hosts = netipx.IPRangeFrom(cur.hosts.From(), h.Addr)
				continue
			}
			if cur.public.IsValid() && !yield(cur) {
				return
			}
			cur = hostRun{netipx.IPRangeFrom(h.Addr, h.Addr), h.Public}
		}
		if cur.public.IsValid() {
			yield(cur)
		}
	}
}
