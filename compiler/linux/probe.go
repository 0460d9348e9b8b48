//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/pool"
)

// Via is how a probe leaves: by one interface only, from the uplink's own
// address, with the uplink's packet mark, so that it proves that uplink and
// not whichever route is up.
type Via struct {
	OIF    string
	Source netip.Addr // invalid: the kernel picks
	Mark   uint32
}

// Probe sends one probe of t through via, in the named network namespace
// (the current one when empty), and returns its round trip; an error when
// no answer came before ctx's deadline. A TCP connection refused is an
// answer: the path to the target works.
func Probe(ctx context.Context, netns string, t pool.ProbeTarget, via Via) (rtt time.Duration, err error) {
	err = Within(netns, func() error {
		start := time.Now()
		var err error
		switch t.Kind {
		case pool.ICMP:
			err = probeICMP(ctx, t.Addr.Addr(), via)
		case pool.TCP:
			err = probeTCP(ctx, t.Addr, via)
		case pool.DNS:
			err = probeDNS(ctx, t.Addr, via)
		default:
			err = fmt.Errorf("no probe of kind %q", t.Kind)
		}
		rtt = time.Since(start)
		return err
	})
	return rtt, err
}

// bind returns a socket option setter that keeps a socket to via's
// interface and gives its packets via's mark.
func bind(via Via) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			if err = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, via.OIF); err == nil && via.Mark != 0 {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(via.Mark))
			}
		})
		return errors.Join(cerr, err)
	}
}

func probeTCP(ctx context.Context, to netip.AddrPort, via Via) error {
	d := net.Dialer{Control: bind(via)}
	if via.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: via.Source.AsSlice()}
	}
	c, err := d.DialContext(ctx, "tcp4", to.String())
	if errors.Is(err, unix.ECONNREFUSED) {
		return nil
	}
	if err != nil {
		return err
	}
	// A reset, not a close: no socket lingers in TIME_WAIT per probe.
	c.(*net.TCPConn).SetLinger(0)
	return c.Close()
}

func probeDNS(ctx context.Context, to netip.AddrPort, via Via) error {
	d := net.Dialer{Control: bind(via)}
	if via.Source.IsValid() {
		d.LocalAddr = &net.UDPAddr{IP: via.Source.AsSlice()}
	}
	c, err := d.DialContext(ctx, "udp4", to.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeNS, Class: dnsmessage.ClassINET})
	query, err := b.Finish()
	if err != nil {
		return err
	}
	if _, err := c.Write(query); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		// Any answer to the query counts, a refusal too: it came back.
		var p dnsmessage.Parser
		if h, err := p.Start(buf[:n]); err == nil && h.ID == id && h.Response {
			return nil
		}
	}
}

func probeICMP(ctx context.Context, to netip.Addr, via Via) error {
	src := "0.0.0.0"
	if via.Source.IsValid() {
		src = via.Source.String()
	}
	lc := net.ListenConfig{Control: bind(via)}
	c, err := lc.ListenPacket(ctx, "ip4:icmp", src)
	if err != nil {
		return err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	id, seq := int(rand.Uint32()&0xffff), int(rand.Uint32()&0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("natpool probe")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		// A raw socket sees every ICMP message for its address: only the
		// reply to this echo counts.
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && from.String() == to.String() {
			return nil
		}
	}
}
