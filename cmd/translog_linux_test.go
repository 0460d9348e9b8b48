package cmd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler/netnstest"
)

// seen is a packet as the upstream saw it: from the public address and
// port, to the destination, sent by the inside host its payload names.
type seen struct {
	public, dst netip.AddrPort
	host        netip.Addr
	at          time.Time
}

// 500 hosts of a /16 leave through a hash plan onto 8 addresses, each to 3
// destinations, half of them from one source port to all three, so that
// public ports are shared by hosts at once. Each of 200 packets, as the
// upstream saw it (public address and port, time, destination), is
// answered from watch's translation log with exactly the inside host and
// port that sent it; without the destination, every host that had the
// port then is listed.
func TestTheTranslationLogNamesTheHostOfEveryPublicPort(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	s := netnstest.NewSite(t, sitePools[0])
	spec := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, spec, fmt.Sprintf("egress:\n  - name: isp0\n    oif: wan0\n    private: [10.0.0.0/16]\n    pool: [%s]\n    strategy: hash\n", sitePools[0]))
	logDir := filepath.Join(t.TempDir(), "log")
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", logDir)
	w.waitLog(t, 5*time.Second, "logging translations in "+logDir)
	// The queries' slack (1s) must not reach back before the log began:
	// that would be a time it does not cover, and an incomplete answer.
	time.Sleep(1200 * time.Millisecond)

	dsts := []netip.AddrPort{netip.AddrPortFrom(netnstest.Target, 10), netip.AddrPortFrom(netnstest.Target, 11), netip.AddrPortFrom(netnstest.DNSServer.Addr(), 12)}
	var mu sync.Mutex
	var arrived []seen
	for _, d := range dsts {
		c := s.Net.ListenUDP(d)
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if n >= 4 {
					mu.Lock()
					arrived = append(arrived, seen{public: from, dst: d, host: netip.AddrFrom4([4]byte(buf[:4])), at: time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(7, 8))
	hosts := map[netip.Addr]bool{}
	for len(hosts) < 500 {
		hosts[netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(255)), byte(1 + r.IntN(254))})] = true
	}
	// port[host][destination] is the source port the host used to it: few
	// ports, so that hosts of one address collide on them.
	port := map[netip.Addr][]uint16{}
	for h := range hosts {
		if h == netip.MustParseAddr("10.0.255.1") { // the box's own LAN address
			continue
		}
		ps := make([]uint16, len(dsts))
		for i := range ps {
			ps[i] = uint16(40000 + r.IntN(8))
			if len(port)%2 == 0 {
				ps[i] = ps[0]
			}
		}
		port[h] = ps
	}
	for i, d := range dsts {
		var srcs []netip.AddrPort
		for h, ps := range port {
			srcs = append(srcs, netip.AddrPortFrom(h, ps[i]))
		}
		s.LAN.SendUDPTo(d, srcs)
	}
	want := len(port) * len(dsts)
	waitFor(t, 10*time.Second, "every packet upstream", func() bool { mu.Lock(); defer mu.Unlock(); return len(arrived) >= want })
	// The log covers up to its last flush, each second: a query's time
	// and slack must be behind it.
	time.Sleep(2500 * time.Millisecond)

	shared := 0
	byPublic := map[netip.AddrPort][]seen{}
	for _, a := range arrived {
		byPublic[a.public] = append(byPublic[a.public], a)
	}
	for _, ss := range byPublic {
		if len(ss) > 1 {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("no public port was shared: the test proves nothing")
	}
	t.Logf("%d packets upstream from %d public ports, %d of them shared by several flows", len(arrived), len(byPublic), shared)

	type answer struct {
		Private     string `json:"private"`
		PrivatePort uint16 `json:"private_port"`
		Public      string `json:"public"`
		PublicPort  uint16 `json:"public_port"`
		Protocol    string `json:"protocol"`
		Start, End  string
		Dst         string `json:"dst"`
		Incomplete  bool   `json:"incomplete"`
	}
	ask := func(a seen, dst bool) []answer {
		args := []string{"lookup", "--at", a.at.Format(time.RFC3339Nano), "--slack", "1s", a.public.String(), "--log", logDir, "-o", "json"}
		if dst {
			args = append(args, "--dst", a.dst.String())
		}
		var got []answer
		if err := json.Unmarshal([]byte(must(t, 0, args...)), &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, i := range r.Perm(len(arrived))[:200] {
		a := arrived[i]
		sent := netip.AddrPortFrom(a.host, port[a.host][slices.Index(dsts, a.dst)])
		got := ask(a, true)
		if len(got) != 1 || got[0].Private != sent.Addr().String() || got[0].PrivatePort != sent.Port() || got[0].Incomplete ||
			got[0].Protocol != "udp" || got[0].Dst != a.dst.Addr().String() {
			t.Errorf("%s at %s to %s, sent by %s: answered %+v", a.public, a.at.Format(time.RFC3339Nano), a.dst, sent, got)
		}
		var all, wantAll []string
		for _, g := range ask(a, false) {
			all = append(all, fmt.Sprintf("%s:%d", g.Private, g.PrivatePort))
		}
		for _, o := range byPublic[a.public] {
			wantAll = append(wantAll, netip.AddrPortFrom(o.host, port[o.host][slices.Index(dsts, o.dst)]).String())
		}
		slices.Sort(all)
		slices.Sort(wantAll)
		if !slices.Equal(all, wantAll) {
			t.Errorf("%s at %s: answered %v, want every flow that had it: %v", a.public, a.at.Format(time.RFC3339Nano), all, wantAll)
		}
	}
}
