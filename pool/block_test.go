package pool

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// poolLessEdges is a /20 less the .0 and .255 of every /24: 4,064 addresses.
func poolLessEdges() (pool, exclude []string) {
	pool = []string{"198.18.0.0/20"}
	for i := range 16 {
		exclude = append(exclude, fmt.Sprintf("198.18.%d.0", i), fmt.Sprintf("198.18.%d.255", i))
	}
	return pool, exclude
}

// The default layout uses every public address and gives nearly every host
// nearly the ideal share of ports: every usable port of every address,
// spread evenly over the hosts.
func TestBlockLayoutUsesEveryAddress(t *testing.T) {
	p, x := poolLessEdges()
	tests := []struct {
		name string
		spec EgressSpec
	}{
		{"a /10 onto a /20 less its edges", EgressSpec{Private: []string{"100.64.0.0/10"}, Pool: p, Exclude: x}},
		{"a /10 onto a /20 less one", EgressSpec{Private: []string{"100.64.0.0/10"}, Pool: []string{"198.18.0.0/20"}, Exclude: []string{"198.18.0.0"}}},
		{"1,100 hosts per address", EgressSpec{Private: []string{"100.64.0.0/12"}, Pool: []string{"198.18.0.0-198.18.3.185"}}},
		{"three ranges and a narrow port range", EgressSpec{Private: []string{"100.64.0.0/16", "100.66.0.0/17", "100.70.0.0/20"}, Pool: []string{"198.18.0.0/25"}, Ports: "20000-40000"}},
		{"more addresses than hosts", EgressSpec{Private: []string{"100.64.0.0/28"}, Pool: []string{"198.18.0.0/24"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Strategy = "block"
			e := mustPlan(t, tt.spec)
			m := e.Mapping.(*BlockMapping)
			hosts := countOf(e.inside)
			if m.GroupCount() != min(len(e.Pool), int(hosts)) {
				t.Errorf("%d of %d addresses carry hosts", m.GroupCount(), len(e.Pool))
			}
			ideal := float64(e.Ports.Len()) * float64(len(e.Pool)) / float64(m.space)
			if share := m.fairShare(ideal); share < Fair && len(e.Pool) < int(hosts) {
				t.Errorf("%.1f%% of hosts get %.0f%% of the ideal %.1f ports; want at least %.0f%%", 100*share, 100*Fair, ideal, 100*Fair)
			}
			checkLayout(t, e, m)
		})
	}
}

// checkLayout checks the first and last host of every group, and every
// port of some addresses, forward and back.
func checkLayout(t *testing.T, e *Egress, m *BlockMapping) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	for g := range m.GroupCount() {
		c, gr, _ := m.groupAt(uint64(g))
		first := c*m.Window + gr.Offset
		for _, n := range []uint64{first, min(first+gr.Size, m.space) - 1} {
			host := AddrFromUint32(m.host(n))
			if !e.Inside.Contains(host) {
				continue
			}
			a := forward(t, e, host.String())
			if a.Public != e.Pool[g].Addr || a.Ports.Len() != gr.BlockSize {
				t.Fatalf("%s -> %s ports %s; its group is %s's, blocks of %d", host, a.Public, a.Ports, e.Pool[g].Addr, gr.BlockSize)
			}
			if owner, _ := m.Owner(g, a.Ports.Lo); owner != host {
				t.Fatalf("%s:%d names %s, not %s", a.Public, a.Ports.Lo, owner, host)
			}
		}
	}
	for range 3 {
		g := rng.IntN(m.GroupCount())
		owners := map[netip.Addr]int{}
		for port := int(e.Ports.Lo); port <= int(e.Ports.Hi); port++ {
			if h, ok := m.Owner(g, uint16(port)); ok {
				owners[h]++
				if !m.HostPorts(Uint32(h)).Contains(uint16(port)) {
					t.Fatalf("%s:%d names %s, whose block is %s", e.Pool[g].Addr, port, h, m.HostPorts(Uint32(h)))
				}
			}
		}
		for h, n := range owners {
			if n != m.PortBlock(g) {
				t.Fatalf("%s owns %d ports of %s, want its block of %d", h, n, e.Pool[g].Addr, m.PortBlock(g))
			}
		}
	}
}

// --hosts-per-ip and --block-size mean exactly what they say, powers of two
// or not, and the compact encoding still applies.
func TestBlockOptionsAreTakenAsGiven(t *testing.T) {
	tests := []struct {
		option, value string
		hosts, block  uint64 // hosts per address (full groups) and ports per host
		aligned       bool
		pool          string
		private       string
		windowAtMost  uint64
	}{
		{"hosts-per-ip", "1024", 1024, 63, true, "198.18.0.0/20", "100.64.0.0/10", 1024},
		{"hosts-per-ip", "1000", 1000, 64, true, "198.18.0.0/19", "100.64.0.0/10", 1 << 16},
		{"block-size", "700", 92, 700, true, "198.18.0.0/16", "100.64.0.0/14", 1 << 16},
		{"block-size", "63", 1024, 63, true, "198.18.0.0/20", "100.64.0.0/10", 1024},
	}
	for _, tt := range tests {
		t.Run(tt.option+" "+tt.value, func(t *testing.T) {
			es := EgressSpec{Strategy: "block", Private: []string{tt.private}, Pool: []string{tt.pool}}
			if tt.option == "hosts-per-ip" {
				es.HostsPerIP = tt.value
			} else {
				es.BlockSize = tt.value
			}
			e := mustPlan(t, es)
			m := e.Mapping.(*BlockMapping)
			for _, p := range m.Patterns {
				for _, g := range p[:len(p)-1] {
					if g.Size != tt.hosts || uint64(g.BlockSize) != tt.block {
						t.Fatalf("a group of %d hosts with %d-port blocks, want %d and %d", g.Size, g.BlockSize, tt.hosts, tt.block)
					}
				}
			}
			if m.Aligned() != tt.aligned || m.Window > tt.windowAtMost {
				t.Errorf("window %d, aligned %v", m.Window, m.Aligned())
			}
			checkLayout(t, e, m)
		})
	}
}

// A pool of blocks has holes where addresses are excluded: the layout goes
// round them, and one more address changes the plan.
func TestBlockLayoutFollowsThePool(t *testing.T) {
	p, x := poolLessEdges()
	es := EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/12"}, Pool: p, Exclude: x}
	e := mustPlan(t, es)
	for _, a := range e.Pool {
		if last := a.Addr.As4()[3]; last == 0 || last == 255 {
			t.Fatalf("%s is excluded but carries hosts", a.Addr)
		}
	}
	es.Exclude = x[1:] // 198.18.0.0 joins
	grown := mustPlan(t, es)
	c := Churn(e, grown)
	if c.Moved+c.PortsMoved == 0 {
		t.Errorf("one more address changed no host's block")
	}
}

// Hosts walks the groups and gives every host what lookup gives it.
func TestHostsAgreeWithLookup(t *testing.T) {
	for _, es := range []EgressSpec{
		{Strategy: "block", Private: []string{"100.64.0.0/18", "100.65.0.5-100.65.3.200"}, Pool: []string{"198.18.0.0/27"}, Exclude: []string{"100.64.1.0/28", "100.65.0.9"}},
		{Strategy: "block", BlockSize: "700", Private: []string{"100.64.0.0/20"}, Pool: []string{"198.18.0.0/24"}},
		{Strategy: "hash", Private: []string{"10.16.0.0/22"}, Pool: []string{"192.76.8.0/28"}, Exclude: []string{"10.16.2.0/24"}},
	} {
		e := mustPlan(t, es)
		n := 0
		for h := range e.Hosts() {
			a := forward(t, e, h.Addr.String())
			if a.Public != h.Public || a.Ports != h.Ports {
				t.Fatalf("%v: Hosts gives %s -> %s %s, lookup %s %s", es.Private, h.Addr, h.Public, h.Ports, a.Public, a.Ports)
			}
			n++
		}
		if n != e.InsideHosts() {
			t.Errorf("%v: %d hosts, want %d", es.Private, n, e.InsideHosts())
		}
	}
}

// The live counter counts connections as they come and go: after every
// connection added is removed, nothing is left, whatever addresses the
// hosts used (a change leaves some on old ones).
func TestLiveCounterComesBackToZero(t *testing.T) {
	p, err := NewPlan(Spec{Egress: []EgressSpec{{Strategy: "block", Private: []string{"100.64.0.0/22"}, Pool: []string{"198.18.0.0/30"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var conns []Connection
	for range 2000 {
		host := AddrFromUint32(Uint32(netip.MustParseAddr("100.64.0.0")) + rng.Uint32N(1024))
		public := AddrFromUint32(Uint32(netip.MustParseAddr("198.18.0.0")) + rng.Uint32N(4))
		conns = append(conns, Connection{Host: host, Public: netip.AddrPortFrom(public, 1024),
			Dest: Destination{netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(rng.IntN(3))), 17}})
	}
	c := p.NewLiveCounter()
	for _, conn := range conns {
		c.Count(conn, 1)
	}
	distinct := map[netip.Addr]map[netip.Addr]bool{}
	for _, conn := range conns {
		if distinct[conn.Public.Addr()] == nil {
			distinct[conn.Public.Addr()] = map[netip.Addr]bool{}
		}
		distinct[conn.Public.Addr()][conn.Host] = true
	}
	for _, lp := range c.Capacity()[0].Public {
		if lp.Hosts != len(distinct[lp.Addr]) {
			t.Errorf("%s: %d distinct hosts, want %d", lp.Addr, lp.Hosts, len(distinct[lp.Addr]))
		}
	}
	rng.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	for _, conn := range conns {
		c.Count(conn, -1)
	}
	le := c.egress[0]
	if len(le.host)+len(le.other)+len(le.publicDest)+len(le.atCount)+len(le.hostDest)+len(le.hostDests)+len(le.blockUse) != 0 ||
		slices.ContainsFunc(le.hosts, func(n int) bool { return n != 0 }) || slices.ContainsFunc(le.busiest, func(n int32) bool { return n != 0 }) {
		t.Errorf("left: %d hosts, %d others, %d destinations, %d counts, %d+%d host destinations, %d block uses, hosts per address %v, busiest %v",
			len(le.host), len(le.other), len(le.publicDest), len(le.atCount), len(le.hostDest), len(le.hostDests), len(le.blockUse), le.hosts, le.busiest)
	}
}

// The figures the counter keeps as connections come and go (each address's
// busiest destination, each host's block use) are those a recount of the
// connections left gives, at every step of adding and removing them.
func TestLiveCounterUsageIsARecount(t *testing.T) {
	p, err := NewPlan(Spec{Egress: []EgressSpec{{Strategy: "block", Private: []string{"100.64.0.0/24"}, Pool: []string{"198.18.0.0/30"}, Ports: "1024-1151"}}})
	if err != nil {
		t.Fatal(err)
	}
	e := p.Egress[0]
	block := e.Mapping.(*BlockMapping)
	rng := rand.New(rand.NewPCG(7, 7))
	c := p.NewLiveCounter()
	var live []Connection
	for step := range 3000 {
		if len(live) > 0 && rng.IntN(3) == 0 { // end one
			k := rng.IntN(len(live))
			c.Count(live[k], -1)
			live = slices.Delete(live, k, k+1)
		} else {
			host := AddrFromUint32(Uint32(netip.MustParseAddr("100.64.0.0")) + rng.Uint32N(16))
			a, _ := p.Lookup(host.String(), "")
			conn := Connection{Host: host, Public: netip.AddrPortFrom(a[0].Public, a[0].Ports.Lo),
				Dest: Destination{netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(rng.IntN(4))), 17}}
			c.Count(conn, 1)
			live = append(live, conn)
		}
		if step%100 != 0 {
			continue
		}
		perPublic, perHost := map[pubDest]int{}, map[uint32]map[destKey]int{}
		for _, conn := range live {
			perPublic[pubDest{int32(e.index[Uint32(conn.Public.Addr())]), keyOf(conn.Dest)}]++
			h := Uint32(conn.Host)
			if perHost[h] == nil {
				perHost[h] = map[destKey]int{}
			}
			perHost[h][keyOf(conn.Dest)]++
		}
		busiest := make([]int, len(e.Pool))
		for k, n := range perPublic {
			busiest[k.public] = max(busiest[k.public], n)
		}
		use := map[BlockUse]int{}
		for h, ds := range perHost {
			most := 0
			for _, n := range ds {
				most = max(most, n)
			}
			use[BlockUse{Busiest: most, BlockSize: block.HostPorts(h).Len()}]++
		}
		u := c.Usage()[0]
		for i, lp := range u.Public {
			if lp.BusiestEntries != busiest[i] {
				t.Fatalf("step %d: %s busiest %d, a recount says %d", step, lp.Addr, lp.BusiestEntries, busiest[i])
			}
		}
		got := map[BlockUse]int{}
		for _, bu := range u.BlockUse {
			got[BlockUse{Busiest: bu.Busiest, BlockSize: bu.BlockSize}] = bu.Hosts
		}
		if !maps.Equal(got, use) {
			t.Fatalf("step %d: block use %v, a recount says %v", step, got, use)
		}
	}
}

// The block sizes and hosts per address a plan reports are those of the
// groups that hold hosts: a pattern no window is cut by counts for nothing
// (with Split 0, every window is cut by Patterns[1]).
func TestBlockSizesAreThoseTheHostsGet(t *testing.T) {
	for _, spec := range []EgressSpec{
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.0/25"}},
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.1-198.18.0.3"}},
		{Private: []string{"10.77.0.0/20"}, Pool: []string{"198.18.0.1-198.18.0.5"}},
		{Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/26"}, Exclude: []string{"198.18.0.0"}},
		{Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/25"}, HostsPerIP: "1000"},
	} {
		spec.Strategy = "block"
		e := mustPlan(t, spec)
		m := e.Mapping.(*BlockMapping)
		lo, hi := math.MaxInt, 0
		for h := range e.Hosts() {
			lo, hi = min(lo, h.Ports.Len()), max(hi, h.Ports.Len())
		}
		if blo, bhi := m.BlockSizes(); blo != lo || bhi != hi {
			t.Errorf("%v onto %v: block sizes %d-%d, but the hosts get %d-%d", spec.Private, spec.Pool, blo, bhi, lo, hi)
		}
		if len(m.Cuts()) == 0 || len(m.Cuts()) > 2 {
			t.Errorf("%v onto %v: cuts %v", spec.Private, spec.Pool, m.Cuts())
		}
	}
}

// When no layout gives 95% of the hosts 95% of the ideal ports, the plan
// says so, and takes the layout whose smallest block is largest: 65,536
// hosts on 3 addresses get 2 ports each, not 1 for half of them.
func TestBlockLayoutShortOfTheTargetWarnsAndKeepsTheSmallestBlockLargest(t *testing.T) {
	p, err := NewPlan(Spec{Egress: []EgressSpec{{Private: []string{"10.0.0.0/16"}, Pool: []string{"198.18.0.1-198.18.0.3"}, Strategy: "block"}}})
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi := p.Egress[0].Mapping.(*BlockMapping).BlockSizes(); lo != 2 || hi != 2 {
		t.Errorf("blocks of %d-%d ports, want 2 for every host", lo, hi)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "0% of hosts get 95% of the ideal 2.95 ports per host") {
		t.Errorf("warnings %q", p.Warnings)
	}
	// A layout that meets the target warns of nothing.
	p, err = NewPlan(Spec{Egress: []EgressSpec{{Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/26"}, Strategy: "block"}}})
	if err != nil || len(p.Warnings) > 0 {
		t.Errorf("%v, warnings %q", err, p.Warnings)
	}
}
