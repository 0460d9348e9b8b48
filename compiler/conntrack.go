package compiler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/pool"
)

// Conntrack reads and deletes entries of one namespace's connection
// tracking table.
type Conntrack struct {
	netns *os.File // held open for the connection's life, as in Kernel
	conn  *conntrack.Conn
	dump  *netlink.Conn
}

// DialConntrack connects to the conntrack table of the named network
// namespace, or of the current one when netns is empty.
func DialConntrack(netns string) (*Conntrack, error) {
	c := &Conntrack{}
	cfg := &netlink.Config{}
	if netns != "" {
		f, err := openNetNS(netns)
		if err != nil {
			return nil, err
		}
		c.netns, cfg.NetNS = f, int(f.Fd())
	}
	var err error
	if c.conn, err = conntrack.Dial(cfg); err == nil {
		c.dump, err = netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the connections and the namespace.
func (c *Conntrack) Close() error {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.dump != nil {
		c.dump.Close()
	}
	if c.netns != nil {
		return c.netns.Close()
	}
	return nil
}

// SNAT is an IPv4 source-NATed conntrack entry: the connection as natpool
// sees it.
type SNAT struct {
	pool.Connection
	msg netlink.Message // the entry as dumped, decoded whole only to delete it
}

// SNATs returns the IPv4 source-NATed entries, and how many IPv4 entries
// the table holds in all.
//
// The dump runs on a socket of its own, read 32 KiB at a time, and decodes
// only the fields natpool needs: the kernel sizes each round of a dump
// by the reader's buffer, and the library reads a page at a time and
// decodes every field, which takes most of a flush of 100,000 entries.
func (c *Conntrack) SNATs() ([]SNAT, int, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtGet), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, // nfgenmsg: IPv4 entries only
	}
	if _, err := c.dump.Send(req); err != nil {
		return nil, 0, err
	}
	raw, err := c.dump.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	var out []SNAT
	total := 0
	for {
		buf := make([]byte, dumpBuffer)
		var n int
		var recvErr error
		err := raw.Read(func(fd uintptr) bool {
			n, _, recvErr = unix.Recvfrom(int(fd), buf, 0)
			return recvErr != unix.EAGAIN
		})
		if err == nil {
			err = recvErr
		}
		if err != nil {
			return nil, 0, fmt.Errorf("conntrack dump: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, 0, fmt.Errorf("conntrack dump: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, total, nil
			case unix.NLMSG_ERROR:
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return nil, 0, fmt.Errorf("conntrack dump: %w", syscall.Errno(-errno))
				}
				continue
			}
			total++
			msg := netlink.Message{Header: netlink.Header{Length: m.Header.Len, Type: netlink.HeaderType(m.Header.Type),
				Flags: netlink.HeaderFlags(m.Header.Flags), Sequence: m.Header.Seq, PID: m.Header.Pid}, Data: m.Data}
			if s, ok := decodeSNAT(msg); ok {
				out = append(out, s)
			}
		}
	}
}

// ctnetlink message and attribute types (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGet         = 1
	ctaTupleOrig           = 1
	ctaTupleReply          = 2
	ctaStatus              = 3
	ctaTupleIP             = 1
	ctaTupleProto          = 2
	ctaIPv4Src             = 1
	ctaIPv4Dst             = 2
	ctaProtoNum            = 1
	ctaProtoDstPort        = 3
	ipsSrcNAT       uint32 = 1 << 4 // IPS_SRC_NAT
)

// decodeSNAT reads the status, the original tuple and the reply's
// destination address and port of an entry; false unless it is source-NATed.
func decodeSNAT(m netlink.Message) (SNAT, bool) {
	_, ad, err := netfilter.DecodeNetlink(m)
	if err != nil {
		return SNAT{}, false
	}
	var status uint32
	var orig, reply tuple
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			ad.Nested(orig.decode)
		case ctaTupleReply:
			ad.Nested(reply.decode)
		case ctaStatus:
			status = ad.Uint32()
		}
	}
	if ad.Err() != nil || status&ipsSrcNAT == 0 || !orig.src.Is4() {
		return SNAT{}, false
	}
	return SNAT{Connection: pool.Connection{
		Host:   orig.src,
		Public: netip.AddrPortFrom(reply.dst, reply.dport),
		Dest:   pool.Destination{Addr: netip.AddrPortFrom(orig.dst, orig.dport), Proto: orig.proto},
	}, msg: m}, true
}

// tuple is the part of a conntrack tuple natpool reads.
type tuple struct {
	src, dst netip.Addr
	dport    uint16
	proto    uint8
}

func (t *tuple) decode(ad *netlink.AttributeDecoder) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case ctaIPv4Src:
						t.src, _ = netip.AddrFromSlice(ad.Bytes())
					case ctaIPv4Dst:
						t.dst, _ = netip.AddrFromSlice(ad.Bytes())
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case ctaProtoNum:
						t.proto = ad.Uint8()
					case ctaProtoDstPort:
						t.dport = ad.Uint16()
					}
				}
				return nil
			})
		}
	}
	return nil
}

// Delete removes one entry; an entry that has gone meanwhile is no error.
func (c *Conntrack) Delete(s SNAT) error {
	var ev conntrack.Event
	if err := ev.Unmarshal(s.msg); err != nil {
		return err
	}
	err := c.conn.Delete(*ev.Flow)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Selector decides which source-NATed entries a flush deletes. Every
// selector keeps to natpool's own entries: those of the plan's inside hosts.
type Selector func(SNAT) bool

// StaleIn selects the entries of natpool's inside hosts whose translation
// the plan no longer gives: after a pool change, the hosts that moved.
func StaleIn(p *pool.Plan) Selector {
	return func(s SNAT) bool { return p.Classify(s.Host, s.Public.Addr(), s.Public.Port()) == pool.Stale }
}

// TranslatedTo selects the entries of natpool's inside hosts translated to
// one of addrs; entries others made to the same addresses stay.
func TranslatedTo(p *pool.Plan, addrs []netip.Addr) Selector {
	set := map[netip.Addr]bool{}
	for _, a := range addrs {
		set[a] = true
	}
	return func(s SNAT) bool {
		return set[s.Public.Addr()] && p.Classify(s.Host, s.Public.Addr(), s.Public.Port()) != pool.Foreign
	}
}

// Of selects the entries of one egress entry: its inside hosts leaving
// through its pool.
func Of(e *pool.Egress) Selector {
	return func(s SNAT) bool { return e.Inside.Contains(s.Host) && e.Carries(s.Public.Addr()) }
}
