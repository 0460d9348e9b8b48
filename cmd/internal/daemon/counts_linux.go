//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool"
)

// count keeps the connection counts from conntrack's events, rebuilt from a
// dump at first, every Resync, for each new plan and after any loss. It
// returns when ctx ends.
func (d *daemon) count(ctx context.Context, plan *pool.Plan, plans <-chan *pool.Plan) error {
	for ctx.Err() == nil {
		next, err := d.follow(ctx, plan, plans)
		plan = next
		switch {
		case err == nil:
		case errors.Is(err, conntrack.ErrEventsLost):
			d.c.Metrics.eventsLost.Inc()
			fmt.Fprintf(d.c.Log, "conntrack: events were lost; rebuilding the counts\n")
		default:
			d.c.Metrics.readErrors.Inc()
			fmt.Fprintf(d.c.Log, "conntrack: %v; retrying in a second\n", err)
			retry := make(chan struct{})
			t := d.c.Clock.AfterFunc(time.Second, func() { close(retry) })
			select {
			case <-ctx.Done():
				t.Stop()
			case <-retry:
			}
		}
	}
	return nil
}

// tally is the counts, which the events change as they arrive and the
// dumps rebuild; a scrape reads them as they are.
type tally struct {
	mu      sync.Mutex
	counter *pool.LiveCounter // nil while a dump rebuilds it
	pending []conntrack.Change
	last    []pool.LiveCapacity // what the counts said before the dump under way
}

// change counts an event, or keeps it for the dump under way.
func (t *tally) change(c conntrack.Change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counter == nil {
		t.pending = append(t.pending, c)
		return
	}
	t.counter.Count(c.Connection, c.Delta)
}

// usage is the port use now, or while a dump rebuilds the counts, as it
// was before: what a scrape reports.
func (t *tally) usage() []pool.LiveCapacity {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counter == nil {
		return t.last
	}
	return t.counter.Usage()
}

// follow counts from one subscription until it fails, the conntrack label
// changes with a new plan (nil error), or ctx ends. It returns the plan it
// counted for last.
func (d *daemon) follow(ctx context.Context, plan *pool.Plan, plans <-chan *pool.Plan) (*pool.Plan, error) {
	sub, err := d.c.Box.Kernels(d.c.Box.Netns).Events(plan.CTLabel)
	if err != nil {
		return plan, err
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 1)
	go func() { failed <- sub.Run(ctx, d.tally.change) }()
	if err := d.resync(plan); err != nil {
		return plan, err
	}
	resync := make(chan struct{}, 1)
	defer every(d.c.Clock, d.c.Resync, func() {
		select {
		case resync <- struct{}{}:
		default:
		}
	})()
	for {
		select {
		case <-ctx.Done():
			return plan, nil
		case err := <-failed:
			return plan, err
		case <-resync:
			if err := d.resync(plan); err != nil {
				return plan, err
			}
		case p := <-plans:
			relabel := p.CTLabel != plan.CTLabel
			plan = p
			if relabel {
				return plan, nil // subscribe again, for the new label
			}
			if err := d.resync(plan); err != nil {
				return plan, err
			}
		}
	}
}

// resync rebuilds the counts from a full dump. The events that arrive while
// it runs are counted on top of it: the counts are then off by at most the
// connections made and ended during the dump. The old counts go first, so
// that two never take memory at once; scrapes read their last figures
// meanwhile.
func (d *daemon) resync(plan *pool.Plan) error {
	t := d.tally
	t.mu.Lock()
	if t.counter != nil {
		t.last = t.counter.Usage()
	}
	t.counter, t.pending = nil, nil
	t.mu.Unlock()
	d.c.Metrics.resyncs.Inc()
	counter, err := d.c.Box.CountLive(plan)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.pending {
		counter.Count(c.Connection, c.Delta)
	}
	t.counter, t.pending, t.last = counter, nil, nil
	return nil
}
