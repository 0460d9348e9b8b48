//go:build linux

package conntrack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
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

// ctnetlink's event groups and new-entry message (linux/netfilter/nfnetlink.h).
const (
	groupNew       = 1 // NFNLGRP_CONNTRACK_NEW
	groupDestroy   = 3 // NFNLGRP_CONNTRACK_DESTROY
	ipctnlMsgCtNew = 0
)

// Change is a connection natpool's rules translated that appeared (Delta 1)
// or was destroyed (Delta -1).
type Change struct {
	pool.Connection
	Delta int
	// Port is the inside host's source port.
	Port uint16
	// At is when it happened: the kernel's time when it keeps conntrack
	// timestamps, else when the event was read (within batchWait of it).
	At time.Time
}

// Subscription receives conntrack's new and destroy events of one
// namespace. It reads them as the dump does, into one buffer and decoding
// only what natpool counts: a NAT box makes thousands of connections a
// second, and a general decoder's allocations and second system call per
// event would cost a good part of a core.
type Subscription struct {
	netns *os.File
	conn  *netlink.Conn
	raw   syscall.RawConn
	label int
	buf   []byte
}

// Subscribe joins the conntrack event groups of the named namespace (the
// current one when empty); label is the conntrack label bit natpool's rules
// set. Events queue from here on: a dump taken after Subscribe misses none.
func Subscribe(netns string, label int) (_ *Subscription, err error) {
	defer func() { err = linux.Privileged(err) }()
	s := &Subscription{label: label, buf: make([]byte, linux.DumpBuffer)}
	cfg := &netlink.Config{}
	if netns != "" {
		if s.netns, err = linux.OpenNetNS(netns); err != nil {
			return nil, err
		}
		cfg.NetNS = int(s.netns.Fd())
	}
	if s.conn, err = netlink.Dial(unix.NETLINK_NETFILTER, cfg); err == nil {
		// Past net.core.rmem_max, as root may: the default buffer loses
		// events at a few thousand connections a second.
		err = s.conn.SetReadBuffer(eventBuffer)
	}
	for _, g := range []uint32{groupNew, groupDestroy} {
		if err == nil {
			err = s.conn.JoinGroup(g)
		}
	}
	if err == nil {
		s.raw, err = s.conn.SyscallConn()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// batchWait is how long Run lets events gather in the socket before it
// reads them all: at thousands a second, a wakeup per event costs more than
// the event.
const batchWait = 100 * time.Millisecond

// Run calls fn with each change of natpool's IPv4 source-NATed connections,
// in the order the kernel reports them, until ctx ends (nil) or the
// subscription fails: an error wrapping ErrEventsLost when the kernel
// dropped events. Changes reach fn within batchWait of the event. Run
// closes the subscription's socket when ctx ends.
func (s *Subscription) Run(ctx context.Context, fn func(Change)) error {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	var e Entry
	var read time.Time
	for {
		n, err := linux.TryRecv(s.raw, s.buf)
		read = time.Now()
		if err == unix.EAGAIN { // all read: wait for the next, then let more gather
			if n, err = linux.Recv(s.raw, s.buf); err == nil {
				read = time.Now()
				time.Sleep(batchWait)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("%w: %v", ErrEventsLost, err)
		}
		if err != nil {
			return fmt.Errorf("conntrack events: %w", linux.Privileged(err))
		}
		msgs, err := syscall.ParseNetlinkMessage(s.buf[:n])
		if err != nil {
			return fmt.Errorf("conntrack events: %w", err)
		}
		for _, m := range msgs {
			delta := -1 // a destroy event
			if m.Header.Type&0xff == ipctnlMsgCtNew {
				delta = 1
			}
			if decodeEntry(m, s.label, &e) && e.Natpool && e.Translated {
				c := Change{Connection: e.Connection, Delta: delta, Port: e.Port, At: read}
				if at := e.Start; delta < 0 {
					c.At = cmp.Or(e.Stop, read)
				} else if !at.IsZero() {
					c.At = at
				}
				fn(c)
			}
		}
	}
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.netns != nil {
		return s.netns.Close()
	}
	return nil
}
