//go:build linux

// Package conntrack reads, counts and deletes the connection tracking
// entries natpool's rules made, in constant memory. It builds on Linux only.
package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/pool"
)

// Conntrack reads and deletes entries of one namespace's connection
// tracking table.
type Conntrack struct {
	netns *os.File // held open for the connections' life, as in Kernel
	dump  *netlink.Conn
	conn  *ct.Conn // deletes while a dump runs on the other socket
	buf   []byte
}

// Dial connects to the conntrack table of the named network
// namespace, or of the current one when netns is empty.
func Dial(netns string) (_ *Conntrack, err error) {
	defer func() { err = linux.Privileged(err) }()
	c := &Conntrack{buf: make([]byte, linux.DumpBuffer)}
	cfg := &netlink.Config{}
	if netns != "" {
		f, err := linux.OpenNetNS(netns)
		if err != nil {
			return nil, err
		}
		c.netns, cfg.NetNS = f, int(f.Fd())
	}
	if c.dump, err = netlink.Dial(unix.NETLINK_NETFILTER, cfg); err == nil {
		c.conn, err = ct.Dial(cfg)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the connections and the namespace.
func (c *Conntrack) Close() error {
	if c.dump != nil {
		c.dump.Close()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.netns != nil {
		return c.netns.Close()
	}
	return nil
}

// Entry is an IPv4 conntrack entry: the connection as natpool sees it, and
// whether natpool's rules made it.
type Entry struct {
	// Connection is the entry's connection; Public is where replies go:
	// the inside host's own address and port when it is not translated.
	pool.Connection
	// Natpool reports whether the entry carries the label natpool's rules
	// set (compiler.Ruleset.Label): natpool's rules made it, not another
	// rule's.
	Natpool bool
	// Translated reports whether source NAT translated the connection. A
	// cluster node's natpool entries that are not were steered to a peer.
	Translated bool
	// Port is the inside host's source port.
	Port uint16
	// Start and Stop are the kernel's times of the connection's beginning
	// and end, when it keeps them (net.netfilter.nf_conntrack_timestamp);
	// zero otherwise.
	Start, Stop time.Time
	// msg is the entry as dumped, decoded whole only to delete it; it
	// points into the dump buffer and is valid during Scan's callback.
	msg netlink.Message
}

// Scan dumps the IPv4 conntrack table and calls fn with each entry as it
// is decoded, label being the conntrack label bit natpool's rules set. fn
// may Delete the entry; it must not keep it. Scan returns how many IPv4
// entries the table held; nothing of the dump outlives it, so a scan of
// millions of entries runs in constant memory.
//
// The dump runs on a socket of its own, read 32 KiB at a time, and decodes
// only the fields natpool needs: the kernel sizes each round of a dump by
// the reader's buffer.
func (c *Conntrack) Scan(label int, fn func(*Entry) error) (_ int, err error) {
	defer func() { err = linux.Privileged(err) }()
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtGet), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, // nfgenmsg: IPv4 entries only
	}
	if _, err := c.dump.Send(req); err != nil {
		return 0, err
	}
	raw, err := c.dump.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	var e Entry
	for {
		n, err := linux.Recv(raw, c.buf)
		if err != nil {
			return total, fmt.Errorf("conntrack dump: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return total, fmt.Errorf("conntrack dump: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return total, nil
			case unix.NLMSG_ERROR:
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return total, fmt.Errorf("conntrack dump: %w", syscall.Errno(-errno))
				}
				continue
			}
			total++
			if decodeEntry(m, label, &e) {
				if err := fn(&e); err != nil {
					return total, err
				}
			}
		}
	}
}

// ctnetlink message and attribute types (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGet           = 1
	ipctnlMsgCtDelete        = 2
	ctaTupleOrig             = 1
	ctaTupleReply            = 2
	ctaStatus                = 3
	ctaZone                  = 18
	ctaLabels                = 22
	ctaTupleIP               = 1
	ctaTupleProto            = 2
	ctaIPv4Src               = 1
	ctaIPv4Dst               = 2
	ctaProtoNum              = 1
	ctaProtoSrcPort          = 2
	ctaProtoDstPort          = 3
	ctaTimestamp             = 20
	ctaTimestampStart        = 1
	ctaTimestampStop         = 2
	ipsSrcNAT         uint32 = 1 << 4 // IPS_SRC_NAT
)

// decodeEntry reads an entry's status, labels, timestamps, original tuple
// and the reply's destination address and port into e; false unless it is
// an IPv4 entry. It walks the attributes in place and allocates nothing:
// it runs for every event of a busy NAT box, twice.
func decodeEntry(m syscall.NetlinkMessage, label int, e *Entry) bool {
	*e = Entry{msg: netlink.Message{Header: netlink.Header{Length: m.Header.Len, Type: netlink.HeaderType(m.Header.Type),
		Flags: netlink.HeaderFlags(m.Header.Flags), Sequence: m.Header.Seq, PID: m.Header.Pid}, Data: m.Data}}
	if len(m.Data) < 4 { // nfgenmsg
		return false
	}
	var status uint32
	var orig, reply tuple
	attrs(m.Data[4:], func(typ uint16, v []byte) {
		switch typ {
		case ctaTupleOrig:
			orig.decode(v)
		case ctaTupleReply:
			reply.decode(v)
		case ctaStatus:
			if len(v) == 4 {
				status = binary.BigEndian.Uint32(v)
			}
		case ctaLabels:
			e.Natpool = hasLabel(v, label)
		case ctaTimestamp:
			attrs(v, func(typ uint16, v []byte) {
				if len(v) != 8 {
					return
				}
				switch typ {
				case ctaTimestampStart:
					e.Start = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
				case ctaTimestampStop:
					e.Stop = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
				}
			})
		}
	})
	if !orig.src.Is4() {
		return false
	}
	e.Translated = status&ipsSrcNAT != 0
	e.Port = orig.sport
	e.Connection = pool.Connection{
		Host:   orig.src,
		Public: netip.AddrPortFrom(reply.dst, reply.dport),
		Dest:   pool.Destination{Addr: netip.AddrPortFrom(orig.dst, orig.dport), Proto: orig.proto},
	}
	return true
}

// attrs calls fn with the type (its flags cleared) and payload of each
// netlink attribute of b, in order; a malformed one ends the walk.
func attrs(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b))
		if n < 4 || n > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&nlaTypeMask, b[4:n])
		b = b[min(len(b), (n+3)&^3):]
	}
}

// nlaTypeMask clears an attribute type's nested and byte-order flags.
const nlaTypeMask = 0x3fff

// hasLabel reports whether the conntrack labels carry bit label (see
// compiler.LabelBits).
func hasLabel(labels []byte, label int) bool {
	return label/8 < len(labels) && labels[label/8]&(1<<(label%8)) != 0
}

// tuple is the part of a conntrack tuple natpool reads.
type tuple struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
}

func (t *tuple) decode(b []byte) {
	attrs(b, func(typ uint16, v []byte) {
		switch typ {
		case ctaTupleIP:
			attrs(v, func(typ uint16, v []byte) {
				if len(v) != 4 {
					return
				}
				switch typ {
				case ctaIPv4Src:
					t.src = netip.AddrFrom4([4]byte(v))
				case ctaIPv4Dst:
					t.dst = netip.AddrFrom4([4]byte(v))
				}
			})
		case ctaTupleProto:
			attrs(v, func(typ uint16, v []byte) {
				switch {
				case typ == ctaProtoNum && len(v) == 1:
					t.proto = v[0]
				case typ == ctaProtoSrcPort && len(v) == 2:
					t.sport = binary.BigEndian.Uint16(v)
				case typ == ctaProtoDstPort && len(v) == 2:
					t.dport = binary.BigEndian.Uint16(v)
				}
			})
		}
	})
}

// Delete removes the entry Scan passed to its callback; an entry that has
// gone meanwhile is no error.
func (c *Conntrack) Delete(e *Entry) (err error) {
	defer func() { err = linux.Privileged(err) }()
	var ev ct.Event
	if err := ev.Unmarshal(e.msg); err != nil {
		return err
	}
	err = c.conn.Delete(*ev.Flow)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Selector decides which of natpool's entries a flush deletes. Entries
// without natpool's label are never selected: other rules made them.
type Selector func(*Entry) bool

// StaleIn selects natpool's translated entries whose translation the plan
// no longer gives: after a pool change, the hosts that moved, and every
// entry through an address the change removed.
func StaleIn(p *pool.Plan) Selector {
	return func(e *Entry) bool { return e.Translated && !p.Gives(e.Host, e.Public.Addr(), e.Public.Port()) }
}

// TranslatedTo selects natpool's entries translated to one of addrs.
func TranslatedTo(addrs []netip.Addr) Selector {
	return func(e *Entry) bool { return e.Translated && slices.Contains(addrs, e.Public.Addr()) }
}

// Of selects the translated entries of one egress entry: its inside hosts
// leaving through its pool.
func Of(eg *pool.Egress) Selector {
	return func(e *Entry) bool { return e.Translated && eg.Inside.Contains(e.Host) && eg.Carries(e.Public.Addr()) }
}

// Rerouted selects, on a site whose uplinks are in states, natpool's
// entries of flows left on an uplink their host no longer leaves by: those
// on an uplink that is down (their host has another now), and, unless the
// uplinks are sticky, those failed over to a backup whose host's own
// uplink is back. Deleted, each flow's next packet is a new connection,
// which leaves by its host's uplink now with that uplink's address.
func Rerouted(p *pool.Plan, states []pool.UplinkState) Selector {
	u := p.Uplinks
	return func(e *Entry) bool {
		if !e.Translated || u == nil {
			return false
		}
		for i, m := range u.Members {
			if eg := p.Egress[m.Egress]; eg.Inside.Contains(e.Host) && eg.Carries(e.Public.Addr()) {
				return u.MemberOf(e.Host, states) != i && (states[i] == pool.UplinkDown || !u.Sticky)
			}
		}
		return false
	}
}

// Misplaced selects, on node self of a cluster whose live nodes are those
// live says, natpool's entries of the flows that now take another path than
// their entry: those translated here of hosts a live peer now serves, and
// those steered to a peer (untranslated) of hosts this node now serves.
// Left alone, the first leave through a node their replies no longer
// reach, and the second would leave untranslated (the guard drops them):
// deleted, each flow's next packet is a new connection that goes where
// its host's public address is served now, and is translated there.
func Misplaced(p *pool.Plan, self int, live func(node int) bool) Selector {
	return func(e *Entry) bool {
		for _, eg := range p.Egress {
			h, ok := eg.Host(e.Host)
			if !ok || e.Translated && !eg.Carries(e.Public.Addr()) {
				continue
			}
			here := p.Cluster.FirstLive(h.Public, live) == self
			return here != e.Translated
		}
		return false
	}
}

// DeletePrefix6 deletes the IPv6 entries an IPv6 prefix translation from
// inside to public made: connections from inside translated into public,
// and connections to public translated into inside. It is for a public
// prefix that is gone (an uplink's delegated prefix changed): their
// replies would go to addresses no longer routed to the box. A small
// site's IPv6 table is dumped whole.
func (c *Conntrack) DeletePrefix6(inside, public netip.Prefix) (_ int, err error) {
	defer func() { err = linux.Privileged(err) }()
	flows, err := c.conn.Dump(nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range flows {
		orig, reply := f.TupleOrig.IP, f.TupleReply.IP
		if !orig.SourceAddress.Is6() {
			continue
		}
		out := inside.Contains(orig.SourceAddress) && public.Contains(reply.DestinationAddress)
		in := public.Contains(orig.DestinationAddress) && inside.Contains(reply.SourceAddress)
		if !out && !in {
			continue
		}
		if err := c.conn.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, err
		}
		n++
	}
	return n, nil
}
