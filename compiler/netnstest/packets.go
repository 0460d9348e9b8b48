//go:build linux

package netnstest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
)

// The uplink every packet test uses: the namespace's default route leaves
// through Uplink via Gateway, whose neighbour entry is permanent so that no
// ARP resolution holds the sender back.
const (
	Uplink  = "uplink0"
	gateway = "192.0.2.254"
	// Destination is where test packets go, a documentation address.
	Destination = "198.51.100.7"
)

// AddUplink gives the namespace a veth uplink to a peer namespace, a default
// route through it and a permanent neighbour entry for the gateway.
func (ns *NS) AddUplink() {
	ns.t.Helper()
	peer := New(ns.t)
	for _, args := range [][]string{
		{"link", "add", Uplink, "netns", ns.Name, "type", "veth", "peer", "name", "down0", "netns", peer.Name},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"-n", ns.Name, "link", "set", Uplink, "up"},
		{"-n", peer.Name, "link", "set", "down0", "up"},
		{"-n", ns.Name, "addr", "add", "192.0.2.1/24", "dev", Uplink},
		{"-n", ns.Name, "route", "add", "default", "via", gateway},
		{"-n", ns.Name, "neigh", "add", gateway, "lladdr", "02:00:00:00:00:01", "dev", Uplink, "nud", "permanent"},
	} {
		if out, err := runIP(args...); err != nil {
			ns.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// SendUDP sends one UDP packet to Destination:53 from each source address,
// all from source port sport, through a raw socket made inside the namespace.
func (ns *NS) SendUDP(srcs []netip.Addr, sport uint16) {
	ns.t.Helper()
	from := make([]netip.AddrPort, len(srcs))
	for i, s := range srcs {
		from[i] = netip.AddrPortFrom(s, sport)
	}
	ns.SendUDPFrom(from)
}

// SendUDPFrom sends one UDP packet to Destination:53 from each source
// address and port.
func (ns *NS) SendUDPFrom(srcs []netip.AddrPort) {
	ns.t.Helper()
	fd, err := ns.rawSocket()
	if err != nil {
		ns.t.Fatalf("raw socket in %s: %v", ns.Name, err)
	}
	defer unix.Close(fd)
	if err := WriteUDP(fd, srcs); err != nil {
		ns.t.Fatal(err)
	}
}

// WriteUDP sends one UDP packet to Destination:53 from each source address
// and port through fd, a raw IPPROTO_RAW socket (which implies IP_HDRINCL).
func WriteUDP(fd int, srcs []netip.AddrPort) error {
	dst := netip.MustParseAddr(Destination).As4()
	pkt := make([]byte, 28)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP // version 4, header 20 bytes; TTL; protocol
	binary.BigEndian.PutUint16(pkt[2:], 28)
	copy(pkt[16:20], dst[:])
	binary.BigEndian.PutUint16(pkt[22:], 53)
	binary.BigEndian.PutUint16(pkt[24:], 8) // UDP length; checksum 0: none
	to := &unix.SockaddrInet4{Addr: dst}
	for _, src := range srcs {
		s := src.Addr().As4()
		copy(pkt[12:16], s[:]) // the kernel fills in the header checksum
		binary.BigEndian.PutUint16(pkt[20:], src.Port())
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			return fmt.Errorf("send from %s: %w", src, err)
		}
	}
	return nil
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
	out := ns.MustRun("", "conntrack", "-L", "-p", "udp")
	flows := map[netip.Addr]Flow{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var src, dst []string
		var sport, dport []string
		for _, field := range strings.Fields(sc.Text()) {
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
			continue
		}
		f := Flow{Src: addrPort(ns.t, src[0], sport[0]), Translated: addrPort(ns.t, dst[1], dport[1])}
		flows[f.Src.Addr()] = f
	}
	return flows
}

func addrPort(t testing.TB, addr, port string) netip.AddrPort {
	a, err := netip.ParseAddr(addr)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		t.Fatalf("conntrack printed %s port %s", addr, port)
	}
	return netip.AddrPortFrom(a, uint16(p))
}

func runIP(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	return string(out), err
}
