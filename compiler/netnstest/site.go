//go:build linux

package netnstest

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/ipv4"

	"github.com/natpool/natpool/compiler/linux"
)

// Site is a NAT box with several uplinks, each to an ISP's router of its
// own, every router to one internet beyond; and a LAN before the box whose
// hosts may be any address of LANHosts. Every address is the test's: the
// internet is a namespace.
//
//	LAN (10.0.255.1/16) -- lan0 BOX wanI (192.0.(2+I).1/24, gateway .254, metric I)
//	  -- ISP I (192.0.(2+I).254; 10.(100+I).0.1/30) -- NET (10.(100+I).0.2/30)
//
// The internet holds Target (answering ICMP echo and, a closed port, TCP
// with a reset), DNSServer (answering every query) and Sink (UDP port 9,
// whose arrivals Arrivals records). It routes each ISP's pool, and the
// box's uplink network, back through that ISP.
type Site struct {
	Box, LAN, Net *NS
	ISPs          []*NS
	t             testing.TB
	mu            sync.Mutex
	arrivals      []Arrival
	fromISP       map[int]int // the internet's interface index -> ISP
}

// The internet's addresses.
var (
	Target    = netip.MustParseAddr("198.18.0.1")
	DNSServer = netip.MustParseAddrPort("198.18.0.53:53")
	Sink      = netip.AddrPortFrom(Target, 9)
)

// Arrival is a UDP packet that reached the sink: its source, the inside
// host that sent it (its payload) and the ISP it came through.
type Arrival struct {
	From netip.AddrPort
	Host netip.Addr
	ISP  int
}

// NewSite builds a site of isps uplinks, routing pools[i] through ISP i.
func NewSite(t testing.TB, pools ...netip.Prefix) *Site {
	t.Helper()
	s := &Site{Box: New(t, "nft"), LAN: New(t), Net: New(t), t: t, fromISP: map[int]int{}}
	for _, ns := range []*NS{s.Box, s.Net} {
		ns.MustRun("", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	s.link(s.LAN, "host0", "10.0.255.1/16", s.Box, "lan0", "10.0.255.254/16")
	s.LAN.MustRun("", "ip", "route", "add", "default", "via", "10.0.255.254")
	s.Net.MustRun("", "ip", "link", "set", "lo", "up")
	s.Net.MustRun("", "ip", "addr", "add", Target.String()+"/32", "dev", "lo")
	s.Net.MustRun("", "ip", "addr", "add", DNSServer.Addr().String()+"/32", "dev", "lo")
	for i, pool := range pools {
		isp := New(t)
		isp.MustRun("", "sysctl", "-qw", "net.ipv4.ip_forward=1")
		s.ISPs = append(s.ISPs, isp)
		s.link(s.Box, fmt.Sprintf("wan%d", i), fmt.Sprintf("192.0.%d.1/24", 2+i), isp, "box", fmt.Sprintf("192.0.%d.254/24", 2+i))
		s.Box.MustRun("", "ip", "route", "add", "default", "via", fmt.Sprintf("192.0.%d.254", 2+i), "metric", fmt.Sprint(i))
		s.link(isp, "net", fmt.Sprintf("10.%d.0.1/30", 100+i), s.Net, fmt.Sprintf("isp%d", i), fmt.Sprintf("10.%d.0.2/30", 100+i))
		isp.MustRun("", "ip", "route", "add", "default", "via", fmt.Sprintf("10.%d.0.2", 100+i))
		isp.MustRun("", "ip", "route", "add", pool.String(), "via", fmt.Sprintf("192.0.%d.1", 2+i))
		for _, dst := range []string{pool.String(), fmt.Sprintf("192.0.%d.0/24", 2+i)} {
			s.Net.MustRun("", "ip", "route", "add", dst, "via", fmt.Sprintf("10.%d.0.1", 100+i))
		}
		// Each ISP counts what reaches it from the box with a source
		// that is neither its pool's nor the box's address on it.
		isp.MustRun(fmt.Sprintf(`table ip isp {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname "box" ip saddr != { %s, 192.0.%d.1 } counter comment "wrong source"
	}
}
`, pool, 2+i), "nft", "-f", "-")
		var index int
		linux.Within(s.Net.Name, func() error {
			ifc, err := net.InterfaceByName(fmt.Sprintf("isp%d", i))
			if err == nil {
				index = ifc.Index
			}
			return err
		})
		s.fromISP[index] = i
	}
	s.serve()
	return s
}

// link joins two namespaces with a veth pair, addressed and up.
func (s *Site) link(a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	s.t.Helper()
	if out, err := runIP("link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name); err != nil {
		s.t.Fatalf("ip link add %s: %v: %s", aName, err, out)
	}
	for _, end := range []struct {
		ns         *NS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		end.ns.MustRun("", "ip", "addr", "add", end.addr, "dev", end.name)
		end.ns.MustRun("", "ip", "link", "set", end.name, "up")
	}
}

// serve answers DNS queries and records what reaches the sink, until the
// test ends.
func (s *Site) serve() {
	sink := s.Net.ListenUDP(Sink)
	pc := ipv4.NewPacketConn(sink)
	if err := pc.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, cm, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			a := Arrival{From: from.(*net.UDPAddr).AddrPort(), ISP: -1}
			if cm != nil {
				if isp, ok := s.fromISP[cm.IfIndex]; ok {
					a.ISP = isp
				}
			}
			if n >= 4 {
				a.Host = netip.AddrFrom4([4]byte(buf[:4]))
			}
			s.mu.Lock()
			s.arrivals = append(s.arrivals, a)
			s.mu.Unlock()
		}
	}()
	go AnswerDNS(s.Net.ListenUDP(DNSServer))
}

// AnswerDNS answers every DNS query c receives, refused (an answer, which
// a probe counts), until c is closed.
func AnswerDNS(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		h.Response, h.RCode = true, dnsmessage.RCodeRefused
		reply := dnsmessage.NewBuilder(nil, h)
		if out, err := reply.Finish(); err == nil {
			c.WriteTo(out, from)
		}
	}
}

// Send sends one UDP packet to the sink from each inside source, from the
// LAN through the box.
func (s *Site) Send(srcs []netip.AddrPort) { s.LAN.SendUDPTo(Sink, srcs) }

// Arrivals returns what reached the sink since the last call.
func (s *Site) Arrivals() []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.arrivals
	s.arrivals = nil
	return out
}

// Blackhole makes ISP i drop everything it would forward (its link to the
// box stays up, and it still answers for itself), or stops that.
func (s *Site) Blackhole(i int, on bool) { s.rule(i, "blackhole", on, "counter drop") }

// DropICMP makes ISP i drop the ICMP it would forward, or stops that.
func (s *Site) DropICMP(i int, on bool) { s.rule(i, "icmp", on, "meta l4proto icmp counter drop") }

// Lose makes ISP i drop percent of what the box sends through it, at
// random, or stops that.
func (s *Site) Lose(i, percent int, on bool) {
	s.rule(i, "loss", on, fmt.Sprintf(`iifname "box" numgen random mod 100 < %d counter drop`, percent))
}

// rule adds or deletes a forward rule of ISP i named by comment.
func (s *Site) rule(i int, comment string, on bool, stmt string) {
	s.t.Helper()
	isp := s.ISPs[i]
	if on {
		isp.MustRun("", "nft", "insert", "rule", "ip", "isp", "forward", stmt, "comment", fmt.Sprintf("%q", comment))
		return
	}
	out := isp.MustRun("", "nft", "-a", "list", "chain", "ip", "isp", "forward")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, fmt.Sprintf("comment %q", comment)) {
			_, handle, _ := strings.Cut(line, "# handle ")
			isp.MustRun("", "nft", "delete", "rule", "ip", "isp", "forward", "handle", strings.TrimSpace(handle))
		}
	}
}

// WrongSources returns the packets each ISP saw from the box with a source
// neither its pool's nor the box's address on it.
func (s *Site) WrongSources() []int {
	out := make([]int, len(s.ISPs))
	for i, isp := range s.ISPs {
		list := isp.MustRun("", "nft", "list", "chain", "ip", "isp", "forward")
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, `"wrong source"`) {
				fmt.Sscanf(line[strings.Index(line, "packets "):], "packets %d", &out[i])
			}
		}
	}
	return out
}

// SendFromBox sends a UDP packet to the sink from the box itself, from
// its address src: the payload is src.
func (s *Site) SendFromBox(src netip.Addr) {
	s.t.Helper()
	err := linux.Within(s.Box.Name, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(Sink))
		if err != nil {
			return err
		}
		defer c.Close()
		a := src.As4()
		_, err = c.Write(a[:])
		return err
	})
	if err != nil {
		s.t.Fatalf("send from the box's %s: %v", src, err)
	}
}
