//go:build linux

package cmd

import (
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

func runFlush(o *flushOptions, stdout, stderr io.Writer) error {
	plan, selector, err := o.selector(stderr)
	if err != nil {
		return err
	}
	r, err := flush(plan, selector, o.netns, o.dryRun)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return render.JSON(stdout, r)
	}
	verb := "deleted"
	if o.dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "scanned %d conntrack entries in %s, %d source-NATed, %d by natpool; %s %d\n", r.Scanned, where(o.netns), r.SNAT, r.Natpool, verb, r.Selected)
	publics := make([]string, 0, len(r.ByPublic))
	for p := range r.ByPublic {
		publics = append(publics, p)
	}
	slices.SortFunc(publics, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	rows := make([][]string, len(publics))
	for i, p := range publics {
		rows[i] = []string{p, fmt.Sprint(r.ByPublic[p])}
	}
	if len(rows) == 0 {
		return nil
	}
	return render.Table(stdout, []string{"PUBLIC", "ENTRIES"}, rows, 1)
}

// flush deletes (or, dry, counts) the entries of natpool's rules that
// selector picks, in netns: what flush and watch do.
func flush(plan *pool.Plan, selector conntrack.Selector, netns string, dryRun bool) (flushReport, error) {
	r := flushReport{DryRun: dryRun, ByPublic: map[string]int{}}
	c, err := conntrack.Dial(netns)
	if err != nil {
		return r, err
	}
	defer c.Close()
	r.Scanned, err = c.Scan(plan.CTLabel, func(e *conntrack.Entry) error {
		if e.Translated {
			r.SNAT++
		}
		if !e.Natpool {
			return nil
		}
		r.Natpool++
		if !selector(e) {
			return nil
		}
		r.Selected++
		r.ByPublic[e.Public.Addr().String()]++
		if dryRun {
			return nil
		}
		if err := c.Delete(e); err != nil {
			return fmt.Errorf("deleting the entry of %s as %s: %w (%d deleted before)", e.Host, e.Public, err, r.Deleted)
		}
		r.Deleted++
		return nil
	})
	return r, err
}

// selector combines the flags: (--stale or --public) within --egress's entry.
func (o *flushOptions) selector(stderr io.Writer) (*pool.Plan, conntrack.Selector, error) {
	if !o.stale && len(o.public) == 0 && o.egress == "" {
		return nil, nil, fmt.Errorf("say what to flush: --stale, --public ADDR or --egress NAME")
	}
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return nil, nil, err
	}
	var reasons []conntrack.Selector
	if o.stale {
		reasons = append(reasons, conntrack.StaleIn(plan))
	}
	if len(o.public) > 0 {
		addrs := make([]netip.Addr, len(o.public))
		for i, s := range o.public {
			a, err := pool.ParseAddr(s)
			if err != nil {
				return nil, nil, fmt.Errorf("--public %w", err)
			}
			addrs[i] = a
		}
		reasons = append(reasons, conntrack.TranslatedTo(addrs))
	}
	scope := func(*conntrack.Entry) bool { return true }
	if o.egress != "" {
		e, err := plan.EgressNamed(o.egress)
		if err != nil {
			return nil, nil, err
		}
		scope = conntrack.Of(e)
	}
	return plan, func(e *conntrack.Entry) bool {
		if !scope(e) {
			return false
		}
		if len(reasons) == 0 {
			return true
		}
		return slices.ContainsFunc(reasons, func(r conntrack.Selector) bool { return r(e) })
	}, nil
}
