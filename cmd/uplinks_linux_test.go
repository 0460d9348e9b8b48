package cmd

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// The pools of the ISPs of a test site, ISP i's at index i.
var sitePools = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/29"), netip.MustParsePrefix("198.51.100.0/29"), netip.MustParsePrefix("192.0.9.0/29")}

// siteSpec writes the spec of a site of n uplinks, with uplinks settings,
// each probed as its probe says (YAML flow mappings; the last for the
// rest), and returns its path.
func siteSpec(t *testing.T, n int, uplinks string, probes ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("egress:\n")
	for i := range n {
		probe := probes[min(i, len(probes)-1)]
		fmt.Fprintf(&b, "  - name: isp%d\n    oif: wan%d\n    private: [10.0.0.0/24]\n    pool: [%s]\n    probe: %s\n", i, i, sitePools[i], probe)
	}
	fmt.Fprintf(&b, "uplinks: %s\n", uplinks)
	path := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, path, b.String())
	return path
}

// sent sends a packet to the sink from every host from sport and returns
// the uplink each arrived through, and from where, by host.
func sent(t *testing.T, s *netnstest.Site, hosts []netip.Addr, sport uint16) map[netip.Addr]netnstest.Arrival {
	t.Helper()
	var srcs []netip.AddrPort
	for _, h := range hosts {
		srcs = append(srcs, netip.AddrPortFrom(h, sport))
	}
	s.Arrivals()
	s.Send(srcs)
	got := map[netip.Addr]netnstest.Arrival{}
	waitFor(t, 5*time.Second, "the packets to arrive", func() bool {
		for _, a := range s.Arrivals() {
			got[a.Host] = a
		}
		return len(got) == len(hosts)
	})
	return got
}

// checkUplinks checks that each host's packet arrived through the uplink
// the plan gives it in states, with that uplink's address for it.
func checkUplinks(t *testing.T, p *pool.Plan, states []pool.UplinkState, got map[netip.Addr]netnstest.Arrival) {
	t.Helper()
	u := p.Uplinks
	bad, by := 0, map[int]int{}
	for h, a := range got {
		by[a.ISP]++
		m := u.MemberOf(h, states)
		want, _ := p.Egress[u.Members[m].Egress].Host(h)
		if a.ISP != m || a.From.Addr() != want.Public {
			if bad++; bad <= 5 {
				t.Errorf("%s arrived through ISP %d from %s; the plan says ISP %d from %s", h, a.ISP, a.From, m, want.Public)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d hosts in all left otherwise than the plan says", bad)
	}
	t.Logf("states %v: hosts by ISP %v", states, by)
}

// A site's uplink that breaks beyond its router, its link still up, is
// seen by its probes within interval x down + 1 s: its hosts' flows are
// cut, their new ones leave by the others with those uplinks' addresses,
// and the other uplinks' hosts keep theirs. Back, it takes its hosts back.
// The box's own packets leave by the uplink of their source address. No
// ISP ever sees a source that is not its pool's or the box's own.
func TestABrokenUplinkFailsOverAndBackWithRealPackets(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d ISPs", n), func(t *testing.T) {
			keepHostState(t)
			netnstest.Require(t, "conntrack")
			s := netnstest.NewSite(t, sitePools[:n]...)
			const interval, down = 500 * time.Millisecond, 4
			spec := siteSpec(t, n, "{policy: balance}", fmt.Sprintf(`{targets: ["icmp:%s", "tcp:%s:443", "dns:%s"], interval: %s, down: %d, up: %d}`,
				netnstest.Target, netnstest.Target, netnstest.DNSServer, interval, down, down))
			p := loadPlan(t, spec)
			w := startWatch(t, "-f", spec, "--netns", s.Box.Name)
			hosts := hostRange("10.0.0.1", 200)
			up := p.Uplinks.AllUp()
			checkUplinks(t, p, up, sent(t, s, hosts, 40000))

			// The box's own packets leave by the uplink of their address.
			for i := range n {
				s.Arrivals()
				src := netip.AddrFrom4([4]byte{192, 0, byte(2 + i), 1})
				s.SendFromBox(src)
				waitFor(t, 5*time.Second, "the box's packet", func() bool {
					for _, a := range s.Arrivals() {
						if a.Host == src {
							if a.ISP != i {
								t.Errorf("the box's packet from %s came through ISP %d", src, a.ISP)
							}
							return true
						}
					}
					return false
				})
			}

			// ISP 1 breaks beyond its router.
			dead := 1
			broke := time.Now()
			s.Blackhole(dead, true)
			w.waitLog(t, 10*time.Second, fmt.Sprintf("uplink isp%d (wan%d) is down", dead, dead))
			took := time.Since(broke)
			t.Logf("ISP %d down after %v (interval %v x down %d + 1 s = %v)", dead, took.Round(time.Millisecond), interval, down, time.Duration(down)*interval+time.Second)
			if took > time.Duration(down)*interval+time.Second {
				t.Errorf("detected after %v, more than interval x down + 1 s", took)
			}
			w.waitLog(t, 5*time.Second, "uplinks: flushed")
			flows := s.Box.Flows()
			states := slices.Repeat([]pool.UplinkState{pool.UplinkUp}, n)
			states[dead] = pool.UplinkDown
			for _, h := range hosts {
				f, ok := flows[h]
				mine := p.Uplinks.MemberOf(h, up) == dead
				if mine == ok {
					t.Errorf("%s (uplink %d): entry %v after the failover", h, p.Uplinks.MemberOf(h, up), f)
				}
			}
			checkUplinks(t, p, states, sent(t, s, hosts, 40001))

			// Back: its hosts return, and their flows on the backups go.
			s.Blackhole(dead, false)
			w.waitLog(t, 10*time.Second, fmt.Sprintf("uplink isp%d (wan%d) is up", dead, dead))
			waitFor(t, 5*time.Second, "the failback's flush", func() bool {
				return strings.Count(w.log.String(), "uplinks: flushed") >= 2
			})
			checkUplinks(t, p, up, sent(t, s, hosts, 40002))
			if wrong := s.WrongSources(); fmt.Sprint(wrong) != fmt.Sprint(make([]int, n)) {
				t.Errorf("packets with a source not the ISP's, by ISP: %v", wrong)
			}
			j, err := journal.Open(w.journal)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := j.Read()
			if len(c.Uplinks) != 2 || c.Uplinks[0].State != "down" || c.Uplinks[1].State != "up" {
				t.Errorf("uplink events %+v", c.Uplinks)
			}
			// Every uplink down: nowhere is better, nothing is cut.
			before := s.Box.Flows()
			for i := range n {
				s.Blackhole(i, true)
			}
			w.waitLog(t, 10*time.Second, "uplinks: every uplink is down")
			if after := s.Box.Flows(); len(after) != len(before) {
				t.Errorf("with every uplink down, %d of %d entries are left", len(after), len(before))
			}
			for i := range n {
				s.Blackhole(i, false)
			}
			// lookup --at names the uplink each host used then.
			h := hosts[slices.IndexFunc(hosts, func(h netip.Addr) bool { return p.Uplinks.MemberOf(h, up) == dead })]
			mid := c.Uplinks[0].Time.Add(c.Uplinks[1].Time.Sub(c.Uplinks[0].Time) / 2)
			out := must(t, 0, "lookup", "--journal", w.journal, "--at", mid.Format(time.RFC3339Nano), h.String())
			if !strings.Contains(out, fmt.Sprintf("[isp%d] %s", dead, h)) || !strings.Contains(out, "(not in use)") {
				t.Errorf("lookup --at during the failover:\n%s", out)
			}
		})
	}
}

// With the default probe settings, an ISP that loses 30% of what the box
// sends, one that drops ICMP, and one that loses 30% with a single ICMP
// target stay up: in two minutes (120 rounds) none changes state.
func TestProbesDoNotFlapOnALossyLinkOrOneWithoutICMP(t *testing.T) {
	keepHostState(t)
	s := netnstest.NewSite(t, sitePools...)
	three := fmt.Sprintf(`{targets: ["icmp:%s", "tcp:%s:443", "dns:%s"]}`, netnstest.Target, netnstest.Target, netnstest.DNSServer)
	spec := siteSpec(t, 3, "{policy: balance}", three, three, fmt.Sprintf(`{targets: ["icmp:%s"]}`, netnstest.Target))
	s.Lose(0, 30, true)
	s.DropICMP(1, true)
	s.Lose(2, 30, true)
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--metrics", "127.0.0.1:0")
	addr := w.metricsAddr(t)
	time.Sleep(2 * time.Minute)
	if strings.Contains(w.log.String(), "uplink isp") {
		t.Errorf("an uplink changed state:\n%s", w.log)
	}
	families := scrape(t, addr)
	for _, m := range families["natpool_probe_loss_ratio"].GetMetric() {
		t.Logf("natpool_probe_loss_ratio{egress=%q} %.2f", label(m, "egress"), m.GetGauge().GetValue())
	}
	for _, m := range families["natpool_probe_rtt_seconds"].GetMetric() {
		t.Logf("natpool_probe_rtt_seconds{egress=%q}: %d answered", label(m, "egress"), m.GetHistogram().GetSampleCount())
	}
	// Both kinds of trouble were real.
	for i, rule := range []string{"loss", "icmp", "loss"} {
		if out := s.ISPs[i].MustRun("", "nft", "list", "chain", "ip", "isp", "forward"); !strings.Contains(out, rule) || strings.Contains(out, "packets 0 bytes 0 drop comment \""+rule+"\"") {
			t.Errorf("ISP %d dropped nothing:\n%s", i, out)
		}
	}
}
