//go:build linux

package box

import (
	"fmt"
	"slices"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

// Flush deletes (or, dry, counts) the conntrack entries of natpool's rules
// that s selects under plan.
func (b *Box) Flush(plan *pool.Plan, s Selection, dryRun bool) (render.FlushReport, error) {
	selector, err := s.selector(plan)
	if err != nil {
		return render.FlushReport{}, err
	}
	return b.FlushBy(plan, selector, dryRun)
}

// FlushBy deletes (or, dry, counts) the conntrack entries of natpool's
// rules that selector picks: what flush and watch do. Entries other rules
// made are never touched. The dump is read and classified in constant
// memory.
func (b *Box) FlushBy(plan *pool.Plan, selector conntrack.Selector, dryRun bool) (render.FlushReport, error) {
	r := render.FlushReport{DryRun: dryRun, ByPublic: map[string]int{}, ByEgress: map[string]int{}, Netns: b.Netns}
	c, err := b.Kernels(b.Netns).Conntrack()
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
		r.ByEgress[egressOf(plan, e)]++
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

// CountLive counts the connections natpool's rules translated, from a
// conntrack dump, as it is read.
func (b *Box) CountLive(plan *pool.Plan) (*pool.LiveCounter, error) {
	c, err := b.Kernels(b.Netns).Conntrack()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	counter := plan.NewLiveCounter()
	_, err = c.Scan(plan.CTLabel, func(e *conntrack.Entry) error {
		if e.Natpool && e.Translated {
			counter.Count(e.Connection, 1)
		}
		return nil
	})
	return counter, err
}

// TableLoaded refuses a namespace without natpool's table: nothing there
// is translated by natpool, so a count of its connections would report an
// idle pool rather than a missing one.
func (b *Box) TableLoaded(table string) error {
	t, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return err
	}
	defer t.Close()
	stamp, err := t.Stamp(table)
	switch {
	case err != nil:
		return err
	case !stamp.Exists:
		return fmt.Errorf("no table ip %s in %s: natpool translates nothing there (apply the plan, or give --netns or --table)", table, render.Where(b.Netns))
	case !stamp.Natpool:
		return fmt.Errorf("table ip %s in %s is not natpool's", table, render.Where(b.Netns))
	}
	return nil
}

// GuardDrops returns, per egress entry, the packets natpool's guard has
// dropped since table was loaded.
func (b *Box) GuardDrops(table string) (map[string]uint64, error) {
	t, err := b.Kernels(b.Netns).Tables()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.GuardDrops(table)
}

// selector returns the selector of s under plan. An address no egress
// entry's pool holds, or an egress entry the plan lacks, is refused: such a
// flush would delete nothing, and say nothing of why.
func (s Selection) selector(plan *pool.Plan) (conntrack.Selector, error) {
	if !s.Stale && len(s.Public) == 0 && s.Egress == "" {
		return nil, fmt.Errorf("say what to flush: --stale, --public ADDR or --egress NAME")
	}
	var reasons []conntrack.Selector
	if s.Stale {
		reasons = append(reasons, conntrack.StaleIn(plan))
	}
	for _, a := range s.Public {
		if !slices.ContainsFunc(plan.Egress, func(e *pool.Egress) bool { return e.Carries(a) }) {
			return nil, fmt.Errorf("--public %s is no public address of the plan: no entry of natpool's can have it", a)
		}
	}
	if len(s.Public) > 0 {
		reasons = append(reasons, conntrack.TranslatedTo(s.Public))
	}
	scope := func(*conntrack.Entry) bool { return true }
	if s.Egress != "" {
		e, err := plan.EgressNamed(s.Egress)
		if err != nil {
			return nil, err
		}
		scope = conntrack.Of(e)
	}
	return func(e *conntrack.Entry) bool {
		if !scope(e) {
			return false
		}
		if len(reasons) == 0 {
			return true
		}
		return slices.ContainsFunc(reasons, func(r conntrack.Selector) bool { return r(e) })
	}, nil
}

// egressOf names the egress entry whose inside host made e: the one that
// translates it to e's public address when it is translated, "" for none.
func egressOf(plan *pool.Plan, e *conntrack.Entry) string {
	for _, eg := range plan.Egress {
		if eg.Inside.Contains(e.Host) && (!e.Translated || eg.Carries(e.Public.Addr())) {
			return eg.Name
		}
	}
	return ""
}
