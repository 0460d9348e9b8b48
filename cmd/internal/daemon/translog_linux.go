//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool/translog"
)

// logTranslations logs every translation natpool's rules make, from
// conntrack's new and destroy events, until ctx ends: those there at the
// start from a dump, each later one as it begins and ends. Blocks are
// written every second. Lost events are a window in the log, and a dump
// then finds the translations that began and ended in it; a disk that
// refuses writes is one line in watch's log and a count, and logging
// resumes when it takes them again. NAT never waits on the log.
func (d *daemon) logTranslations(ctx context.Context, label int) {
	lc := d.c.Translations
	var w *translog.Writer
	var notes []error
	for said := false; ; said = true {
		var err error
		if w, notes, err = translog.Open(lc.Dir, lc.Options, d.c.Clock.Now()); err == nil {
			break
		}
		d.c.Metrics.logErrors.Inc()
		if !said {
			fmt.Fprintf(d.c.Log, "translation log: %v; trying again every 10s (NAT goes on)\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
	for _, n := range notes {
		d.c.Metrics.logErrors.Inc()
		fmt.Fprintf(d.c.Log, "%v\n", n)
	}
	fmt.Fprintf(d.c.Log, "logging translations in %s\n", lc.Dir)
	var mu sync.Mutex // w, and when an event last came
	last := d.c.Clock.Now()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if err := w.Close(d.c.Clock.Now()); err != nil {
			fmt.Fprintf(d.c.Log, "translation log: %v\n", err)
		}
	}()
	defer every(d.c.Clock, time.Second, d.flushLog(w, &mu))()
	for ctx.Err() == nil {
		err := d.followTranslations(ctx, w, &mu, &last, label)
		switch {
		case err == nil:
		case errors.Is(err, conntrack.ErrEventsLost):
			d.c.Metrics.logEventsLost.Inc()
			now := d.c.Clock.Now()
			mu.Lock()
			w.Loss(last, now)
			w.Resync()
			mu.Unlock()
			fmt.Fprintf(d.c.Log, "translation log: conntrack events were lost; the log marks %s to %s, and a dump finds the translations alive\n",
				last.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
		default:
			d.c.Metrics.logErrors.Inc()
			fmt.Fprintf(d.c.Log, "translation log: %v; retrying in a second\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// followTranslations logs from one subscription, after a dump of the
// translations alive, until it fails or ctx ends.
func (d *daemon) followTranslations(ctx context.Context, w *translog.Writer, mu *sync.Mutex, last *time.Time, label int) error {
	k := d.c.Box.Kernels(d.c.Box.Netns)
	sub, err := k.Events(label)
	if err != nil {
		return err
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 1)
	go func() {
		failed <- sub.Run(ctx, func(c conntrack.Change) {
			conn := translog.Conn{Proto: c.Dest.Proto, Inside: netip.AddrPortFrom(c.Host, c.Port), Public: c.Public, Dst: c.Dest.Addr}
			mu.Lock()
			defer mu.Unlock()
			if c.Delta > 0 {
				w.Start(c.At, conn)
			} else {
				w.End(c.At, conn)
			}
			*last = c.At
		})
	}()
	ct, err := k.Conntrack()
	if err != nil {
		return err
	}
	defer ct.Close()
	now := d.c.Clock.Now()
	if _, err := ct.Scan(label, func(e *conntrack.Entry) error {
		if e.Natpool && e.Translated {
			mu.Lock()
			w.Existing(now, translog.Conn{Proto: e.Dest.Proto, Inside: netip.AddrPortFrom(e.Host, e.Port), Public: e.Public, Dst: e.Dest.Addr})
			mu.Unlock()
		}
		return nil
	}); err != nil {
		return err
	}
	mu.Lock()
	w.Resynced(now)
	mu.Unlock()
	return <-failed
}

// flushLog returns what writes the log's block each second: it notes a
// step of the wall clock, and says once when writing fails and when it
// works again.
func (d *daemon) flushLog(w *translog.Writer, mu *sync.Mutex) func() {
	prev := d.c.Clock.Now()
	failing := false
	var records uint64
	return func() {
		mu.Lock()
		defer mu.Unlock()
		now := d.c.Clock.Now()
		// The monotonic clock says how long it was; the wall clock, what
		// it says.
		if step := now.Round(0).Sub(prev.Round(0)) - now.Sub(prev); step > time.Second || step < -time.Second {
			w.ClockStep(now, step)
			fmt.Fprintf(d.c.Log, "translation log: the wall clock stepped by %s\n", step.Round(time.Millisecond))
		}
		prev = now
		err := w.Flush(now)
		d.c.Metrics.logRecords.Add(float64(w.Records - records))
		records = w.Records
		d.c.Metrics.logBytes.Set(float64(w.Bytes()))
		switch {
		case err != nil && !failing:
			failing = true
			d.c.Metrics.logErrors.Inc()
			fmt.Fprintf(d.c.Log, "translation log: %v; translations are not logged until it works again (NAT goes on)\n", err)
		case err != nil:
			d.c.Metrics.logErrors.Inc()
		case failing:
			failing = false
			fmt.Fprintf(d.c.Log, "translation log: writing works again; the log marks the window it missed\n")
		}
	}
}
