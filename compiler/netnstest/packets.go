//go:build linux

package netnstest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
)

// The uplink every packet test uses: the namespace's default route leaves
// through Uplink via Gateway, whose neighbour entry is permanent so that no
// ARP resolution holds the sender back.
const (
	Uplink = "uplink0"
	// Destination is where test packets go, a documentation address.
	Destination = "198.51.100.7"
)

// AddUplink gives the namespace a veth uplink to a peer namespace, a default
// route through it and a permanent neighbour entry for the gateway.
func (ns *NS) AddUplink() {
	ns.t.Helper()
	ns.AddUplinks(1)
}

// AddUplinks gives the namespace n uplinks, uplink0 to uplinkN-1, each a
// veth to a peer namespace of its own with a default route through it:
// uplink i is 192.0.(2+i).1/24, its gateway .254, its route metric i, so
// that uplink0 is preferred while it is up. The namespace forwards, as a NAT
// box does.
func (ns *NS) AddUplinks(n int) {
	ns.t.Helper()
	ns.MustRun("", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i := range n {
		peer := New(ns.t)
		if out, err := runIP("link", "add", UplinkName(i), "netns", ns.Name, "type", "veth", "peer", "name", "down0", "netns", peer.Name); err != nil {
			ns.t.Fatalf("ip link add %s: %v: %s", UplinkName(i), err, out)
		}
		if out, err := runIP("-n", peer.Name, "link", "set", "down0", "up"); err != nil {
			ns.t.Fatalf("ip link set down0 up: %v: %s", err, out)
		}
		ns.SetUplink(i, true)
	}
}

// UplinkName is the name of uplink i.
func UplinkName(i int) string { return fmt.Sprintf("uplink%d", i) }

// SetUplink takes uplink i down, which takes its routes with it, or brings
// it up with its address, default route and gateway, as ifupdown would.
func (ns *NS) SetUplink(i int, up bool) {
	ns.t.Helper()
	name, gw := UplinkName(i), fmt.Sprintf("192.0.%d.254", 2+i)
	steps := [][]string{{"-n", ns.Name, "link", "set", name, "down"}}
	if up {
		steps = [][]string{
			{"-n", ns.Name, "link", "set", "lo", "up"},
			{"-n", ns.Name, "link", "set", name, "up"},
			{"-n", ns.Name, "addr", "replace", fmt.Sprintf("192.0.%d.1/24", 2+i), "dev", name},
			{"-n", ns.Name, "route", "replace", "default", "via", gw, "metric", fmt.Sprint(i)},
			{"-n", ns.Name, "neigh", "replace", gw, "lladdr", "02:00:00:00:00:01", "dev", name, "nud", "permanent"},
		}
	}
	for _, args := range steps {
		if out, err := runIP(args...); err != nil {
			ns.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// Dropped are the sources whose packet the namespace's own netfilter
// dropped on its way out: the kernel refused the send with EPERM.
type Dropped map[netip.Addr]bool

// SendUDP sends one UDP packet to Destination:53 from each source address,
// all from source port sport, through a raw socket made inside the namespace.
func (ns *NS) SendUDP(srcs []netip.Addr, sport uint16) Dropped {
	ns.t.Helper()
	from := make([]netip.AddrPort, len(srcs))
	for i, s := range srcs {
		from[i] = netip.AddrPortFrom(s, sport)
	}
	return ns.SendUDPFrom(from)
}

// SendUDPFrom sends one UDP packet to Destination:53 from each source
// address and port.
func (ns *NS) SendUDPFrom(srcs []netip.AddrPort) Dropped {
	ns.t.Helper()
	return ns.SendUDPTo(netip.AddrPortFrom(netip.MustParseAddr(Destination), 53), srcs)
}

// WriteUDP sends one UDP packet to Destination:53 from each source address
// and port through fd, a raw IPPROTO_RAW socket (which implies IP_HDRINCL).
func WriteUDP(fd int, srcs []netip.AddrPort) (Dropped, error) {
	return WriteUDPTo(fd, netip.AddrPortFrom(netip.MustParseAddr(Destination), 53), srcs)
}

// WriteUDPTo sends one UDP packet to dst from each source address and port
// through fd, a raw IPPROTO_RAW socket. The payload is the source address,
// so that an echo tells whose packet it answers.
func WriteUDPTo(fd int, dst netip.AddrPort, srcs []netip.AddrPort) (Dropped, error) {
	to4 := dst.Addr().As4()
	pkt := make([]byte, 32)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP // version 4, header 20 bytes; TTL; protocol
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	copy(pkt[16:20], to4[:])
	binary.BigEndian.PutUint16(pkt[22:], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(len(pkt)-20)) // UDP length; checksum 0: none
	to := &unix.SockaddrInet4{Addr: to4}
	dropped := Dropped{}
	for _, src := range srcs {
		s := src.Addr().As4()
		copy(pkt[12:16], s[:]) // the kernel fills in the header checksum
		binary.BigEndian.PutUint16(pkt[20:], src.Port())
		copy(pkt[28:], s[:])
		switch err := unix.Sendto(fd, pkt, 0, to); err {
		case nil:
		case unix.EPERM:
			dropped[src.Addr()] = true
		default:
			return dropped, fmt.Errorf("send from %s: %w", src, err)
		}
	}
	return dropped, nil
}

// SendUDPTo sends one UDP packet to dst from each source address and port,
// its payload the source address.
func (ns *NS) SendUDPTo(dst netip.AddrPort, srcs []netip.AddrPort) Dropped {
	ns.t.Helper()
	fd, err := ns.rawSocket()
	if err != nil {
		ns.t.Fatalf("raw socket in %s: %v", ns.Name, err)
	}
	defer unix.Close(fd)
	dropped, err := WriteUDPTo(fd, dst, srcs)
	if err != nil {
		ns.t.Fatal(err)
	}
	return dropped
}

// ListenUDP opens a UDP socket bound to addr inside the namespace; it is
// closed when the test ends.
func (ns *NS) ListenUDP(addr netip.AddrPort) *net.UDPConn {
	ns.t.Helper()
	var conn *net.UDPConn
	err := linux.Within(ns.Name, func() (err error) {
		network := "udp4"
		if addr.Addr().Is6() {
			network = "udp6"
		}
		conn, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		ns.t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	ns.t.Cleanup(func() { conn.Close() })
	return conn
}

// rawSocket opens an IPPROTO_RAW socket (which implies IP_HDRINCL) inside
// the namespace.
func (ns *NS) rawSocket() (int, error) {
	fd := -1
	err := linux.Within(ns.Name, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	return fd, err
}

// Flow is one UDP conntrack entry: the original source and where the reply
// goes, which is the source it was translated to.
type Flow struct {
	Src        netip.AddrPort
	Translated netip.AddrPort
}

// Flows lists the namespace's UDP conntrack entries, by original source address.
func (ns *NS) Flows() map[netip.Addr]Flow {
	ns.t.Helper()
	flows := map[netip.Addr]Flow{}
	for _, f := range ns.AllFlows() {
		flows[f.Src.Addr()] = f
	}
	return flows
}

// AllFlows lists the namespace's UDP conntrack entries.
func (ns *NS) AllFlows() []Flow {
	ns.t.Helper()
	out := ns.MustRun("", "conntrack", "-L", "-p", "udp")
	var flows []Flow
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f, ok := ParseFlow(sc.Text()); ok {
			flows = append(flows, f)
		}
	}
	return flows
}

// ParseFlow reads an entry as conntrack -L or -E prints it: its original
// source, and the destination of its replies (its translated source);
// false for a line that is not one.
func ParseFlow(line string) (Flow, bool) {
	var src, dst, sport, dport []string
	for _, field := range strings.Fields(line) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "src":
			src = append(src, v)
		case "dst":
			dst = append(dst, v)
		case "sport":
			sport = append(sport, v)
		case "dport":
			dport = append(dport, v)
		}
	}
	if len(src) != 2 || len(dst) != 2 || len(sport) != 2 || len(dport) != 2 {
		return Flow{}, false
	}
	from, errFrom := netip.ParseAddrPort(joinHostPort(src[0], sport[0]))
	to, errTo := netip.ParseAddrPort(joinHostPort(dst[1], dport[1]))
	return Flow{Src: from, Translated: to}, errFrom == nil && errTo == nil
}

// joinHostPort writes ADDR:PORT, [ADDR]:PORT for IPv6.
func joinHostPort(addr, port string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:" + port
	}
	return addr + ":" + port
}

func runIP(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	return string(out), err
}
