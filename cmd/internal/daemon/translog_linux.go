//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool/translog"
	"github.com/natpool/natpool/render/ipfix"
)

// sessions takes the translations natpool's rules make, from conntrack's
// events, to the translation log and the IPFIX collectors.
type sessions struct {
	d  *daemon
	mu sync.Mutex
	w  *translog.Writer // nil without a log
	x  *ipfix.Encoder   // nil without collectors
	to []net.Conn       // the collectors
	// last is when the last event came: a window of lost events begins
	// there.
	last time.Time
}

// followSessions logs and exports every translation natpool's rules make
// until ctx ends: those there at the start from a dump (the log only),
// each later one as it begins and ends. Blocks are written and messages
// sent every second. Lost events are a window in the log, and a dump then
// finds the translations that began and ended in it; a disk that refuses
// writes is one line in watch's log and a count, and logging resumes when
// it takes them again. NAT never waits on either.
func (d *daemon) followSessions(ctx context.Context, label int) {
	s := &sessions{d: d, last: d.c.Clock.Now()}
	for _, c := range d.c.Collectors {
		conn, err := net.Dial("udp", c.String())
		if err != nil {
			fmt.Fprintf(d.c.Log, "ipfix: %v\n", err)
			continue
		}
		defer conn.Close()
		s.to = append(s.to, conn)
	}
	if len(s.to) > 0 {
		s.x = &ipfix.Encoder{}
		fmt.Fprintf(d.c.Log, "exporting NAT44 session events over IPFIX to %v\n", d.c.Collectors)
	}
	if d.c.Translations != nil && !s.open(ctx) {
		return
	}
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.w != nil {
			if err := s.w.Close(d.c.Clock.Now()); err != nil {
				fmt.Fprintf(d.c.Log, "translation log: %v\n", err)
			}
		}
	}()
	defer every(d.c.Clock, time.Second, s.flusher())()
	for ctx.Err() == nil {
		err := s.follow(ctx, label)
		switch {
		case err == nil:
		case errors.Is(err, conntrack.ErrEventsLost):
			d.c.Metrics.logEventsLost.Inc()
			now := d.c.Clock.Now()
			s.mu.Lock()
			logged := s.w != nil
			if logged {
				s.w.Loss(s.last, now)
				s.w.Resync()
			}
			s.mu.Unlock()
			if logged {
				fmt.Fprintf(d.c.Log, "translation log: conntrack events were lost; the log marks %s to %s, and a dump finds the translations alive\n",
					s.last.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
			} else {
				fmt.Fprintf(d.c.Log, "ipfix: conntrack events were lost after %s: the collectors miss them\n", s.last.Format(time.RFC3339Nano))
			}
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

// open opens the log, trying again every 10 seconds while it cannot (a
// read-only disk at boot); false when ctx ended first.
func (s *sessions) open(ctx context.Context) bool {
	d := s.d
	lc := d.c.Translations
	for said := false; ; said = true {
		w, notes, err := translog.Open(lc.Dir, lc.Options, d.c.Clock.Now())
		if err == nil {
			for _, n := range notes {
				d.c.Metrics.logErrors.Inc()
				fmt.Fprintf(d.c.Log, "%v\n", n)
			}
			fmt.Fprintf(d.c.Log, "logging translations in %s\n", lc.Dir)
			s.w = w
			return true
		}
		d.c.Metrics.logErrors.Inc()
		if !said {
			fmt.Fprintf(d.c.Log, "translation log: %v; trying again every 10s (NAT goes on)\n", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Second):
		}
	}
}

// follow takes the events of one subscription, after a dump of the
// translations alive for the log, until it fails or ctx ends.
func (s *sessions) follow(ctx context.Context, label int) error {
	d := s.d
	k := d.c.Box.Kernels(d.c.Box.Netns)
	sub, err := k.Events(label)
	if err != nil {
		return err
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 1)
	go func() { failed <- sub.Run(ctx, s.event) }()
	if s.w == nil {
		return <-failed
	}
	ct, err := k.Conntrack()
	if err != nil {
		return err
	}
	defer ct.Close()
	now := d.c.Clock.Now()
	if _, err := ct.Scan(label, func(e *conntrack.Entry) error {
		if e.Natpool && e.Translated {
			s.mu.Lock()
			s.w.Existing(now, translog.Conn{Proto: e.Dest.Proto, Inside: netip.AddrPortFrom(e.Host, e.Port), Public: e.Public, Dst: e.Dest.Addr})
			s.mu.Unlock()
		}
		return nil
	}); err != nil {
		return err
	}
	s.mu.Lock()
	s.w.Resynced(now)
	s.mu.Unlock()
	return <-failed
}

// event takes one of conntrack's events.
func (s *sessions) event(c conntrack.Change) {
	conn := translog.Conn{Proto: c.Dest.Proto, Inside: netip.AddrPortFrom(c.Host, c.Port), Public: c.Public, Dst: c.Dest.Addr}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		if c.Delta > 0 {
			s.w.Start(c.At, conn)
		} else {
			s.w.End(c.At, conn)
		}
	}
	if s.x != nil {
		s.x.Add(ipfix.Event{At: c.At, Create: c.Delta > 0, Proto: conn.Proto, Inside: conn.Inside, Public: conn.Public, Dst: conn.Dst})
	}
	s.last = c.At
}

// flusher returns what writes the log's block and sends the IPFIX
// messages each second: it notes a step of the wall clock, and says once
// when writing fails and when it works again.
func (s *sessions) flusher() func() {
	d := s.d
	prev := d.c.Clock.Now()
	failing := false
	var records uint64
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		now := d.c.Clock.Now()
		if s.x != nil {
			for _, m := range s.x.Messages(now) {
				for _, c := range s.to {
					c.Write(m) // a collector away loses what UDP loses
				}
			}
		}
		if s.w == nil {
			return
		}
		// The monotonic clock says how long it was; the wall clock, what
		// it says.
		if step := now.Round(0).Sub(prev.Round(0)) - now.Sub(prev); step > time.Second || step < -time.Second {
			s.w.ClockStep(now, step)
			fmt.Fprintf(d.c.Log, "translation log: the wall clock stepped by %s\n", step.Round(time.Millisecond))
		}
		prev = now
		err := s.w.Flush(now)
		d.c.Metrics.logRecords.Add(float64(s.w.Records - records))
		records = s.w.Records
		d.c.Metrics.logBytes.Set(float64(s.w.Bytes()))
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
