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
	"unsafe"

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
	batch *linux.Batch
}

// Subscribe joins the conntrack event groups of the named namespace (the
// current one when empty); label is the conntrack label bit natpool's rules
// set. Events queue from here on: a dump taken after Subscribe misses none.
func Subscribe(netns string, label int) (_ *Subscription, err error) {
	defer func() { err = linux.Privileged(err) }()
	s := &Subscription{label: label, batch: linux.NewBatch(eventBatch, 4096)}
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

// batchWait is how long Run lets events gather in the socket once it has
// read all there were: at thousands a second, a wakeup per event costs
// more than the event. eventBatch is how many it reads in one system call.
const (
	batchWait  = 100 * time.Millisecond
	eventBatch = 128
)

// Run calls fn with each change of natpool's IPv4 source-NATed connections,
// in the order the kernel reports them, until ctx ends (nil) or the
// subscription fails: an error wrapping ErrEventsLost when the kernel
// dropped events. Changes reach fn within batchWait of the event. Run
// closes the subscription's socket when ctx ends.
func (s *Subscription) Run(ctx context.Context, fn func(Change)) error {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	var e Entry
	for {
		datagrams, err := s.batch.Recv(s.raw)
		read := time.Now()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("%w: %v", ErrEventsLost, err)
		}
		if err != nil {
			return fmt.Errorf("conntrack events: %w", linux.Privileged(err))
		}
		for _, d := range datagrams {
			for len(d) >= unix.NLMSG_HDRLEN {
				// The header as syscall.ParseNetlinkMessage reads it,
				// without a slice of messages for each datagram.
				var m syscall.NetlinkMessage
				m.Header = *(*syscall.NlMsghdr)(unsafe.Pointer(&d[0]))
				n := int(m.Header.Len)
				if n < unix.NLMSG_HDRLEN || n > len(d) {
					return fmt.Errorf("conntrack events: a message of %d bytes in %d", n, len(d))
				}
				m.Data = d[unix.NLMSG_HDRLEN:n]
				d = d[min(len(d), (n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
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
		if len(datagrams) < eventBatch { // all read: let more gather
			time.Sleep(batchWait)
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
