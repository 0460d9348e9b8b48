//go:build linux

package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/pool"
)

// ErrEventsLost is returned by Subscription.Run when the kernel dropped
// events because they came faster than they were read (ENOBUFS): counts
// kept from events are then wrong until a dump resynchronises them.
var ErrEventsLost = errors.New("conntrack events were lost")

// eventBuffer is the receive buffer the kernel queues events in: some
// 20,000 events, seconds of a busy NAT box while a resync dump runs.
const eventBuffer = 8 << 20

// Change is a connection natpool's rules translated that appeared (Delta 1)
// or was destroyed (Delta -1).
type Change struct {
	pool.Connection
	Delta int
}

// Subscription receives conntrack's new and destroy events of one
// namespace.
type Subscription struct {
	netns  *os.File
	conn   *ct.Conn
	label  int
	events chan ct.Event
	errs   chan error
}

// Subscribe joins the conntrack event groups of the named namespace (the
// current one when empty); label is the conntrack label bit natpool's rules
// set. Events are queued from here on: a dump taken after Subscribe misses
// none of them.
func Subscribe(netns string, label int) (_ *Subscription, err error) {
	defer func() { err = linux.Privileged(err) }()
	s := &Subscription{label: label}
	cfg := &netlink.Config{}
	if netns != "" {
		if s.netns, err = linux.OpenNetNS(netns); err != nil {
			return nil, err
		}
		cfg.NetNS = int(s.netns.Fd())
	}
	if s.conn, err = ct.Dial(cfg); err == nil {
		// Past net.core.rmem_max, as root may: the default buffer loses
		// events at a few thousand connections a second.
		err = s.conn.SetReadBuffer(eventBuffer)
	}
	if err == nil {
		s.events = make(chan ct.Event, 1024)
		s.errs, err = s.conn.Listen(s.events, 1, []netfilter.NetlinkGroup{netfilter.GroupCTNew, netfilter.GroupCTDestroy})
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Run sends the changes of natpool's IPv4 source-NATed connections to out
// until ctx ends (nil) or the subscription fails: an error wrapping
// ErrEventsLost when the kernel dropped events.
func (s *Subscription) Run(ctx context.Context, out chan<- Change) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.errs:
			if errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("%w: %v", ErrEventsLost, err)
			}
			return fmt.Errorf("conntrack events: %w", err)
		case ev := <-s.events:
			c, ok := s.change(ev)
			if !ok {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// change is the change an event makes to natpool's connections; false for
// updates and for entries natpool's rules did not translate.
func (s *Subscription) change(ev ct.Event) (Change, bool) {
	c := Change{Delta: 1}
	switch ev.Type {
	case ct.EventNew:
	case ct.EventDestroy:
		c.Delta = -1
	default:
		return c, false
	}
	f := ev.Flow
	if f == nil || !f.Status.SrcNAT() || !f.TupleOrig.IP.SourceAddress.Is4() || !hasLabel(f.Labels, s.label) {
		return c, false
	}
	c.Connection = pool.Connection{
		Host:   f.TupleOrig.IP.SourceAddress,
		Public: netip.AddrPortFrom(f.TupleReply.IP.DestinationAddress, f.TupleReply.Proto.DestinationPort),
		Dest: pool.Destination{Addr: netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort),
			Proto: f.TupleOrig.Proto.Protocol},
	}
	return c, true
}

// Close ends the subscription; Run must have returned.
func (s *Subscription) Close() error {
	if s.conn != nil {
		// The decoder may be blocked handing over an event or an error:
		// take them while the connection closes, which waits for it.
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-s.events:
				case <-s.errs:
				case <-done:
					return
				}
			}
		}()
		s.conn.Close()
		close(done)
	}
	if s.netns != nil {
		return s.netns.Close()
	}
	return nil
}
