package cmd

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/netnstest"
)

// site6 gives a test site IPv6: a ULA /64 on the LAN, the box's uplinks
// and the ISPs joined by link-local addresses, each ISP routing its
// delegated prefixes to the box, and the internet routing each prefix to
// its ISP. The box's default route is ISP 0's; upstreams[i] is routed
// through ISP i. It returns the upstreams and what reaches them.
func site6(t *testing.T, s *netnstest.Site, delegated [][]string) ([]netip.Addr, *arrivals6) {
	t.Helper()
	for _, ns := range append([]*netnstest.NS{s.Box, s.LAN, s.Net}, s.ISPs...) {
		ns.MustRun("", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	}
	s.Box.MustRun("", "ip", "-6", "addr", "add", "fd00:1::fe/64", "dev", "lan0", "nodad")
	s.LAN.MustRun("", "ip", "-6", "addr", "add", "fd00:1::1/64", "dev", "host0", "nodad")
	s.LAN.MustRun("", "ip", "-6", "route", "add", "default", "via", "fd00:1::fe")
	var upstreams []netip.Addr
	for i, isp := range s.ISPs {
		wan, net := fmt.Sprintf("wan%d", i), fmt.Sprintf("isp%d", i)
		s.Box.MustRun("", "ip", "-6", "addr", "add", "fe80::1/64", "dev", wan, "nodad")
		isp.MustRun("", "ip", "-6", "addr", "add", "fe80::2/64", "dev", "box", "nodad")
		isp.MustRun("", "ip", "-6", "addr", "add", "fe80::1/64", "dev", "net", "nodad")
		s.Net.MustRun("", "ip", "-6", "addr", "add", "fe80::2/64", "dev", net, "nodad")
		isp.MustRun("", "ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", "net")
		for _, p := range delegated[i] {
			isp.MustRun("", "ip", "-6", "route", "add", p, "via", "fe80::1", "dev", "box")
			s.Net.MustRun("", "ip", "-6", "route", "add", p, "via", "fe80::1", "dev", net)
		}
		u := netip.MustParseAddr(fmt.Sprintf("2001:db8:10%d::1", i))
		s.Net.MustRun("", "ip", "-6", "addr", "add", u.String()+"/128", "dev", "lo", "nodad")
		upstreams = append(upstreams, u)
		// Default routes by every ISP, ISP 0's preferred; upstream i by
		// ISP i.
		s.Box.MustRun("", "ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", wan, "metric", fmt.Sprint(1024+i))
		if i > 0 {
			s.Box.MustRun("", "ip", "-6", "route", "add", u.String(), "via", "fe80::2", "dev", wan)
		}
	}
	a := &arrivals6{}
	for _, u := range upstreams {
		a.listen(t, s.Net, netip.AddrPortFrom(u, 9))
	}
	return upstreams, a
}

// arrivals6 records the sources of what reaches the upstreams' port 9,
// and the interface it came in by.
type arrivals6 struct {
	mu   sync.Mutex
	seen map[netip.Addr]string // source -> interface
}

func (a *arrivals6) listen(t *testing.T, ns *netnstest.NS, at netip.AddrPort) {
	c := ipv6.NewPacketConn(ns.ListenUDP(at))
	if err := c.SetControlMessage(ipv6.FlagInterface, true); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			_, cm, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			ifname := ""
			linux.Within(ns.Name, func() error {
				if ifc, err := net.InterfaceByIndex(cm.IfIndex); err == nil {
					ifname = ifc.Name
				}
				return nil
			})
			a.mu.Lock()
			if a.seen == nil {
				a.seen = map[netip.Addr]string{}
			}
			a.seen[from.(*net.UDPAddr).AddrPort().Addr().Unmap()] = ifname
			a.mu.Unlock()
		}
	}()
}

// reset forgets what arrived.
func (a *arrivals6) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = nil
}

// from returns the interface what came from src arrived by, "" if nothing.
func (a *arrivals6) from(src netip.Addr) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[src]
}

// send6 sends a datagram from src in ns to dst, port 9, from a new port.
func send6(t *testing.T, ns *netnstest.NS, src, dst netip.Addr) {
	t.Helper()
	if err := linux.Within(ns.Name, func() error {
		c, err := net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}); err != nil {
		t.Fatalf("from %s to %s: %v", src, dst, err)
	}
}

// Hosts on a ULA /64 reach an upstream through each ISP with that ISP's
// prefix and their own interface identifier: ISP 0's prefix given,
// ISP 1's read from its uplink's address. When ISP 1 delegates another
// prefix (the address on the uplink moves), watch puts it in force within
// 2 s and deletes the entries of the old prefix; ISP 0's stay. lookup
// answers both ways for both prefixes.
func TestIPv6HostsLeaveByEachISPsPrefixAndFollowANewDelegation(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	s := netnstest.NewSite(t, sitePools[:2]...)
	upstreams, got := site6(t, s, [][]string{{"2001:db8:a::/64"}, {"2001:db8:b::/64", "2001:db8:c::/64"}})
	s.Box.MustRun("", "ip", "-6", "addr", "add", "2001:db8:b::1/128", "dev", "wan1", "nodad")
	var hosts []netip.Addr
	for i := range 10 {
		h := netip.MustParseAddr(fmt.Sprintf("fd00:1::%x", 0xa0+i))
		s.LAN.MustRun("", "ip", "-6", "addr", "add", h.String()+"/128", "dev", "host0", "nodad")
		hosts = append(hosts, h)
	}
	spec := filepath.Join(t.TempDir(), "site6.yaml")
	writeFile(t, spec, fmt.Sprintf(`egress:
  - name: isp0
    oif: wan0
    private: [10.0.0.0/24]
    pool: [%s]
    private6: [fd00:1::/64]
    pool6: [2001:db8:a::/64]
  - name: isp1
    oif: wan1
    private: [10.0.0.0/24]
    pool: [%s]
    private6: [fd00:1::/64]
    pool6: [from-interface]
uplinks: {policy: balance}
`, sitePools[0], sitePools[1]))
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name)
	if out := must(t, 0, "status", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal); !strings.Contains(out, "in sync") {
		t.Errorf("status:\n%s", out)
	}

	// public returns host h's address in a prefix.
	public := func(h netip.Addr, prefix string) netip.Addr {
		p := netip.MustParsePrefix(prefix)
		b, a := h.As16(), p.Addr().As16()
		copy(b[:8], a[:8])
		return netip.AddrFrom16(b)
	}
	reach := func(prefixes []string, within time.Duration) {
		t.Helper()
		got.reset()
		for i, u := range upstreams {
			for _, h := range hosts {
				want := public(h, prefixes[i])
				ok := false
				for deadline := time.Now().Add(within); !ok && time.Now().Before(deadline); {
					send6(t, s.LAN, h, u)
					for range 10 {
						if ok = got.from(want) == fmt.Sprintf("isp%d", i); ok {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
				if !ok {
					t.Errorf("from %s to %s: nothing from %s through ISP %d (it came by %q)", h, u, want, i, got.from(want))
				}
			}
		}
	}
	reach([]string{"2001:db8:a::/64", "2001:db8:b::/64"}, 3*time.Second)

	// A client of the internet reaches an inside host at ISP 1's prefix,
	// and the answers leave through ISP 1, though the box's default route
	// is ISP 0's.
	client, server := netip.MustParseAddr("2001:db8:200::1"), hosts[3]
	s.Net.MustRun("", "ip", "-6", "addr", "add", client.String()+"/128", "dev", "lo", "nodad")
	s.Net.MustRun(`table ip6 seen {
	chain input {
		type filter hook input priority 0; policy accept;
		iifname "isp0" ip6 saddr 2001:db8:b::/64 counter comment "isp0"
		iifname "isp1" ip6 saddr 2001:db8:b::/64 counter comment "isp1"
	}
}
`, "nft", "-f", "-")
	serveUDPEcho(t, s.LAN, netip.AddrPortFrom(server, 7))
	echoUDP(t, s.Net, client, netip.AddrPortFrom(public(server, "2001:db8:b::/64"), 7))
	if seen := nftCounters(t, s.Net, "ip6", "seen"); seen["isp1"] == 0 || seen["isp0"] != 0 {
		t.Errorf("answers from ISP 1's prefix, by the ISP they came through: %v", seen)
	}
	entries := func(prefix string) int {
		return strings.Count(s.Box.MustRun("", "conntrack", "-L", "-f", "ipv6"), "dst="+strings.TrimSuffix(prefix, "/64"))
	}
	a0 := entries("2001:db8:a::/64")
	if a0 < len(hosts) || entries("2001:db8:b::/64") < len(hosts) {
		t.Fatalf("entries before the new delegation: %d of ISP 0's prefix, %d of ISP 1's", a0, entries("2001:db8:b::/64"))
	}

	// ISP 1 delegates another prefix.
	moved := time.Now()
	s.Box.MustRun("", "ip", "-6", "addr", "del", "2001:db8:b::1/128", "dev", "wan1")
	s.Box.MustRun("", "ip", "-6", "addr", "add", "2001:db8:c::1/128", "dev", "wan1", "nodad")
	h := hosts[0]
	want := public(h, "2001:db8:c::/64")
	for got.from(want) == "" && time.Since(moved) < 5*time.Second {
		send6(t, s.LAN, h, upstreams[1])
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(moved)
	t.Logf("new flows left with the new prefix %v after the address moved", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("the new prefix took %v, more than 2 s", took)
	}
	w.waitLog(t, 5*time.Second, "flushed")
	if n := entries("2001:db8:b::/64"); n != 0 {
		t.Errorf("%d entries of the old prefix are left", n)
	}
	if n := entries("2001:db8:a::/64"); n != a0 {
		t.Errorf("ISP 0's entries: %d, were %d", n, a0)
	}
	reach([]string{"2001:db8:a::/64", "2001:db8:c::/64"}, 3*time.Second)

	// lookup, both ways, for both prefixes.
	out := must(t, 0, "lookup", "-f", spec, "--netns", s.Box.Name, "fd00:1::a5", "2001:db8:a::a5", "2001:db8:c::a5")
	for _, line := range []string{
		"[isp0] fd00:1::a5 <-> 2001:db8:a::a5 (prefix fd00:1::/64 <-> 2001:db8:a::/64)",
		"[isp1] fd00:1::a5 <-> 2001:db8:c::a5 (prefix fd00:1::/64 <-> 2001:db8:c::/64)",
	} {
		if strings.Count(out, line) != 2 {
			t.Errorf("lookup: want %q for the inside host and its public address:\n%s", line, out)
		}
	}
	// The journal answers for a given prefix at a time past.
	if out := must(t, 0, "lookup", "--journal", w.journal, "--at", "now", "2001:db8:a::a5"); !strings.Contains(out, "[isp0] fd00:1::a5 <-> 2001:db8:a::a5") {
		t.Errorf("lookup --at:\n%s", out)
	}
	if out := must(t, 0, "status", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal); !strings.Contains(out, "in sync") {
		t.Errorf("status after the new delegation:\n%s", out)
	}

	// watch puts back an ip6 table someone deleted.
	s.Box.MustRun("", "nft", "delete", "table", "ip6", "natpool")
	w.waitLog(t, 5*time.Second, "has lost its ip6 table: restored plan")
	reach([]string{"2001:db8:a::/64", "2001:db8:c::/64"}, 3*time.Second)

	// A translation that is gone is drift; apply --delete takes both tables.
	w.stop()
	s.Box.MustRun("", "nft", "flush", "chain", "ip6", "natpool", "postrouting")
	if out := must(t, 1, "status", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal); !strings.Contains(out, "chain ip6 postrouting") ||
		!strings.Contains(out, `ip6 saddr fd00:1::/64 oifname "wan1" snat ip6 prefix to 2001:db8:c::-2001:db8:c:0:ffff:ffff:ffff:ffff`) {
		t.Errorf("status with the ip6 postrouting chain flushed:\n%s", out)
	}
	must(t, 0, "apply", "--delete", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal)
	if tables := s.Box.MustRun("", "nft", "list", "tables"); strings.Contains(tables, "natpool") {
		t.Errorf("after apply --delete:\n%s", tables)
	}

	// ip6tables: the given prefix (render reads no interface).
	s.Box.MustRun(must(t, 0, "render", "-f", spec, "--format", "ip6tables"), "ip6tables-restore", "--noflush")
	got.reset()
	for _, h := range hosts {
		send6(t, s.LAN, h, upstreams[0])
	}
	for _, h := range hosts {
		want := public(h, "2001:db8:a::/64")
		waitFor(t, 3*time.Second, "a packet translated by ip6tables", func() bool { return got.from(want) == "isp0" })
	}
}
