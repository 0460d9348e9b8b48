package cmd

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
)

// The cluster test's addresses, as testdata/cluster.yaml has them.
var (
	echoAddr = netip.MustParseAddrPort("203.0.113.1:7")
	// upstreamAS is the upstream router's; the nodes are AS 64512.
	upstreamAS = 64500
)

// cluster is the test's network: an inside host sending from many
// addresses, an inside router spreading them over the nodes by ECMP, the
// nodes (each running natpool's table and BIRD with natpool's
// configuration, on an inter-node link of their own), and an upstream
// running BIRD that peers with every node and answers UDP echo.
type cluster struct {
	t        *testing.T
	spec     string
	plan     *pool.Plan
	dir      string
	host     *netnstest.NS
	router   *netnstest.NS
	upstream *netnstest.NS
	mesh     *netnstest.NS // the inter-node link's switch
	nodes    []*netnstest.NS
	birds    map[string]*exec.Cmd // by namespace name
}

func ipIn(t *testing.T, ns *netnstest.NS, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
}

// veth links a's interface an to b's bn.
func veth(t *testing.T, a *netnstest.NS, an string, b *netnstest.NS, bn string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", an, "netns", a.Name, "type", "veth", "peer", "name", bn, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip link add %s: %v: %s", an, err, out)
	}
	ipIn(t, a, "link", "set", an, "up")
	ipIn(t, b, "link", "set", bn, "up")
}

func sysctl(t *testing.T, ns *netnstest.NS, settings ...string) {
	t.Helper()
	for _, s := range settings {
		ns.MustRun("", "sysctl", "-qw", s)
	}
}

func newCluster(t *testing.T, spec string) *cluster {
	// A short directory: BIRD's control socket path must fit a sockaddr_un.
	dir, err := os.MkdirTemp("", "natpool-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &cluster{t: t, spec: spec, dir: dir, birds: map[string]*exec.Cmd{}}
	c.plan = loadPlan(t, c.spec)
	c.host = netnstest.New(t, "bird", "birdc", "conntrack", "nft")
	c.router, c.upstream, c.mesh = netnstest.New(t), netnstest.New(t), netnstest.New(t)
	for _, ns := range []*netnstest.NS{c.host, c.router, c.upstream, c.mesh} {
		ipIn(t, ns, "link", "set", "lo", "up")
	}
	// The host owns every inside address, so that an echo to any of them
	// reaches the test's socket.
	veth(t, c.host, "h0", c.router, "r0")
	ipIn(t, c.host, "addr", "add", "10.0.0.2/30", "dev", "h0")
	ipIn(t, c.host, "route", "add", "default", "via", "10.0.0.1")
	ipIn(t, c.host, "route", "add", "local", "100.64.0.0/20", "dev", "lo")
	ipIn(t, c.router, "addr", "add", "10.0.0.1/30", "dev", "r0")
	ipIn(t, c.router, "route", "add", "100.64.0.0/20", "via", "10.0.0.2")
	// A nexthop whose link is down is skipped, as a router with BFD would.
	sysctl(t, c.router, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
		"net.ipv4.conf.default.ignore_routes_with_linkdown=1", "net.ipv4.fib_multipath_hash_policy=1")
	ipIn(t, c.mesh, "link", "add", "sw", "type", "bridge")
	ipIn(t, c.mesh, "link", "set", "sw", "up")
	ipIn(t, c.upstream, "link", "add", "ubr", "type", "bridge")
	ipIn(t, c.upstream, "link", "set", "ubr", "up")
	ipIn(t, c.upstream, "addr", "add", "192.0.2.254/24", "dev", "ubr")
	ipIn(t, c.upstream, "addr", "add", echoAddr.Addr().String()+"/32", "dev", "lo")
	var ecmp []string
	for i, n := range c.plan.Cluster.Nodes {
		ns := netnstest.New(t)
		c.nodes = append(c.nodes, ns)
		ipIn(t, ns, "link", "set", "lo", "up")
		sysctl(t, ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
		veth(t, ns, "in", c.router, fmt.Sprintf("r%d", i+1))
		ipIn(t, c.router, "addr", "add", fmt.Sprintf("10.1.%d.1/24", i+1), "dev", fmt.Sprintf("r%d", i+1))
		ipIn(t, ns, "addr", "add", fmt.Sprintf("10.1.%d.2/24", i+1), "dev", "in")
		ipIn(t, ns, "route", "add", "100.64.0.0/20", "via", fmt.Sprintf("10.1.%d.1", i+1))
		ecmp = append(ecmp, "nexthop", "via", fmt.Sprintf("10.1.%d.2", i+1), "dev", fmt.Sprintf("r%d", i+1))
		veth(t, ns, "mesh", c.mesh, fmt.Sprintf("m%d", i+1))
		ipIn(t, c.mesh, "link", "set", fmt.Sprintf("m%d", i+1), "master", "sw")
		ipIn(t, ns, "addr", "add", n.Address.String()+"/24", "dev", "mesh")
		veth(t, ns, "wan", c.upstream, fmt.Sprintf("u%d", i+1))
		ipIn(t, c.upstream, "link", "set", fmt.Sprintf("u%d", i+1), "master", "ubr")
		ipIn(t, ns, "addr", "add", n.BGP.Source.String()+"/24", "dev", "wan")
		ipIn(t, ns, "route", "add", "default", "via", n.BGP.Neighbor.String())
		// Another tool's table, which must stay exactly as it is.
		ns.MustRun("table inet other {\n chain c {\n type filter hook forward priority 0; policy accept;\n counter\n }\n}\n", "nft", "-f", "-")
	}
	ipIn(t, c.router, append([]string{"route", "add", "default"}, ecmp...)...)
	c.startUpstreamBIRD()
	return c
}

// bird starts BIRD in ns with its own configuration and control socket,
// stopped by its own pid when the test ends.
func (c *cluster) bird(ns *netnstest.NS, config string) {
	t := c.t
	conf := filepath.Join(c.dir, ns.Name+".conf")
	writeFile(t, conf, config)
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "bird", "-f", "-c", conf, "-s", c.socket(ns), "-P", filepath.Join(c.dir, ns.Name+".pid"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("bird in %s: %v", ns.Name, err)
	}
	c.birds[ns.Name] = cmd
	t.Cleanup(func() { c.stopBIRD(ns) })
}

func (c *cluster) socket(ns *netnstest.NS) string { return filepath.Join(c.dir, ns.Name+".ctl") }

// stopBIRD kills ns's BIRD, as a crash would: no goodbye to its peers.
func (c *cluster) stopBIRD(ns *netnstest.NS) {
	if cmd := c.birds[ns.Name]; cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		delete(c.birds, ns.Name)
	}
}

func (c *cluster) startUpstreamBIRD() {
	var b strings.Builder
	fmt.Fprintf(&b, "router id 192.0.2.254;\nprotocol device {}\nprotocol kernel {\n\tipv4 { export all; import none; };\n}\n")
	for _, n := range c.plan.Cluster.Nodes {
		fmt.Fprintf(&b, "protocol bgp %s {\n\tlocal 192.0.2.254 as %d;\n\tneighbor %s as %d;\n\thold time %d;\n\tkeepalive time 1;\n\tconnect delay time 1;\n\tconnect retry time 2;\n\terror wait time 1, 5;\n\tipv4 { import all; export none; };\n}\n",
			n.Name, upstreamAS, n.BGP.Source, n.BGP.AS, n.BGP.Hold)
	}
	c.bird(c.upstream, b.String())
}

// startNode applies natpool's table to node i and starts its BIRD with
// natpool's configuration.
func (c *cluster) startNode(i int) {
	name := c.plan.Cluster.Nodes[i].Name
	must(c.t, 0, "apply", "-f", c.spec, "--node", name, "--netns", c.nodes[i].Name, "--journal", filepath.Join(c.dir, name+".journal"))
	c.bird(c.nodes[i], must(c.t, 0, "render", "-f", c.spec, "--node", name, "--format", "bird"))
}

// setNode takes node i's links down or up.
func (c *cluster) setNode(i int, up bool) {
	state := map[bool]string{true: "up", false: "down"}[up]
	for _, link := range []string{"in", "mesh", "wan"} {
		ipIn(c.t, c.nodes[i], "link", "set", link, state)
	}
	if up {
		ipIn(c.t, c.nodes[i], "route", "replace", "100.64.0.0/20", "via", fmt.Sprintf("10.1.%d.1", i+1))
		ipIn(c.t, c.nodes[i], "route", "replace", "default", "via", c.plan.Cluster.Nodes[i].BGP.Neighbor.String())
	}
}

var birdRoute = regexp.MustCompile(`^(\d+\.\d+\.\d+\.\d+/\d+)\s+unicast \[(\w+) [^]]*\] \*`)

// upstreamRoutes returns the node the upstream's BIRD prefers for each
// prefix, from birdc show route.
func (c *cluster) upstreamRoutes() (map[netip.Prefix]string, string) {
	out, _ := exec.Command("birdc", "-s", c.socket(c.upstream), "show", "route").CombinedOutput()
	routes := map[netip.Prefix]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := birdRoute.FindStringSubmatch(line); m != nil {
			routes[netip.MustParsePrefix(m[1])] = m[2]
		}
	}
	return routes, string(out)
}

// eventually polls check until it says nothing is wrong, failing the test
// with what it said last once within has passed; it returns how long it
// took.
func eventually(t *testing.T, within time.Duration, check func() (wrong string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		wrong := check()
		if wrong == "" {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: %s", within, wrong)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRoutes waits until the upstream routes each chunk via the first of
// its nodes that is alive, and returns how long that took.
func (c *cluster) waitRoutes(alive func(int) bool, within time.Duration) time.Duration {
	return eventually(c.t, within, func() string {
		routes, out := c.upstreamRoutes()
		for _, ch := range c.plan.Cluster.Chunks {
			first := c.plan.Cluster.Nodes[ch.Order[slices.IndexFunc(ch.Order, alive)]].Name
			for _, p := range ch.Prefixes {
				if routes[p] != first {
					return fmt.Sprintf("the upstream routes %s via %q, want %s:\n%s", p, routes[p], first, out)
				}
			}
		}
		return ""
	})
}

// waitPeers waits until every live node's routing table for every other
// live node holds a route through it, and those for dead nodes none.
func (c *cluster) waitPeers(alive func(int) bool, within time.Duration) {
	eventually(c.t, within, func() string {
		for i, ns := range c.nodes {
			for j := range c.nodes {
				if j == i || !alive(i) {
					continue
				}
				out, _ := ns.Run("", "ip", "route", "show", "table", fmt.Sprint(c.plan.Cluster.Table+j))
				if has := strings.Contains(out, "via"); has != alive(j) {
					return fmt.Sprintf("node %d's table for node %d: %q", i, j, out)
				}
			}
		}
		return ""
	})
}

// roundTrip sends a packet from each host to the echo service from port
// sport and returns, per host, the public address the echo saw, for the
// hosts whose echo came back. Packets go 50 at a time, and a host whose
// echo did not come back sends again (its same flow), up to three times:
// UDP may drop a burst in a queue, which says nothing of the NAT.
func (c *cluster) roundTrip(hosts []netip.Addr, sport uint16) map[netip.Addr]netip.Addr {
	echo := c.upstream.ListenUDP(echoAddr)
	back := c.host.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), sport))
	var mu sync.Mutex
	seen := map[netip.Addr]netip.Addr{}
	got := map[netip.Addr]netip.Addr{}
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n == 4 {
				mu.Lock()
				seen[netip.AddrFrom4([4]byte(buf[:4]))] = from.Addr()
				mu.Unlock()
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := back.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n == 4 {
				host := netip.AddrFrom4([4]byte(buf[:4]))
				mu.Lock()
				got[host] = seen[host]
				mu.Unlock()
			}
		}
	}()
	missing := hosts
	for range 3 {
		for chunk := range slices.Chunk(missing, 50) {
			srcs := make([]netip.AddrPort, len(chunk))
			for i, h := range chunk {
				srcs[i] = netip.AddrPortFrom(h, sport)
			}
			c.host.SendUDPTo(echoAddr, srcs)
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Second)
		mu.Lock()
		missing = slices.DeleteFunc(slices.Clone(missing), func(h netip.Addr) bool { _, ok := got[h]; return ok })
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
	}
	echo.Close()
	back.Close()
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(got)
}

// checkRoundTrips asserts every host's echo came back, sent from the plan's
// public address for it.
func (c *cluster) checkRoundTrips(what string, want map[netip.Addr]netip.Addr, got map[netip.Addr]netip.Addr) {
	t := c.t
	bad := 0
	for host, public := range want {
		if got[host] != public {
			if bad++; bad <= 5 {
				t.Errorf("%s: host %s: echo seen from %v, want a round trip from %s", what, host, got[host], public)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d hosts did not round-trip with the plan's address", what, bad, len(want))
	}
	t.Logf("%s: %d hosts round-tripped through NAT with the plan's public address", what, len(want))
}

// outside returns what a node holds outside natpool's table, routing
// tables and rules: other tables, the main routing table, other rules.
func (c *cluster) outside(ns *netnstest.NS) string {
	var b strings.Builder
	tables := ns.MustRun("", "nft", "list", "tables")
	for _, line := range strings.Split(strings.TrimSpace(tables), "\n") {
		if line != "table ip natpool" {
			fields := strings.Fields(line)
			b.WriteString(ns.MustRun("", "nft", "-s", "list", "table", fields[1], fields[2]))
		}
	}
	b.WriteString(ns.MustRun("", "ip", "route", "show", "table", "main"))
	for _, line := range strings.Split(ns.MustRun("", "ip", "rule", "show"), "\n") {
		if !strings.Contains(line, "fwmark 0x4e5") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// conntrackOf returns a node's UDP conntrack entries by original source.
func conntrackOf(ns *netnstest.NS) map[netip.AddrPort]netnstest.Flow {
	out := map[netip.AddrPort]netnstest.Flow{}
	for _, f := range ns.AllFlows() {
		out[f.Src] = f
	}
	return out
}

// inFlight keeps one UDP flow per host going to the upstream's discard
// port, a packet each 100 ms, and looks at every packet the upstream gets:
// its source must be the plan's public address for the host, never the
// host's inside address or another.
type inFlight struct {
	t     *testing.T
	want  map[netip.Addr]netip.Addr
	conn  *net.UDPConn
	stop  chan struct{}
	done  sync.WaitGroup
	ended sync.Once
	mu    sync.Mutex
	seen  map[netip.Addr]time.Time // the last packet from each host with its address
	wrong []string
	n     int
}

var discardAddr = netip.MustParseAddrPort("203.0.113.1:9")

func (c *cluster) startInFlight(want map[netip.Addr]netip.Addr, hosts []netip.Addr, sport uint16) *inFlight {
	f := &inFlight{t: c.t, want: want, conn: c.upstream.ListenUDP(discardAddr), stop: make(chan struct{}), seen: map[netip.Addr]time.Time{}}
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		buf := make([]byte, 64)
		for {
			n, from, err := f.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n != 4 {
				continue
			}
			host := netip.AddrFrom4([4]byte(buf[:4]))
			f.mu.Lock()
			f.n++
			if from.Addr() == f.want[host] {
				f.seen[host] = time.Now()
			} else if len(f.wrong) < 1000 {
				f.wrong = append(f.wrong, fmt.Sprintf("%s's packet reached the upstream from %s, not %s", host, from, f.want[host]))
			}
			f.mu.Unlock()
		}
	}()
	srcs := make([]netip.AddrPort, len(hosts))
	for i, h := range hosts {
		srcs[i] = netip.AddrPortFrom(h, sport)
	}
	go func() {
		defer f.done.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for chunk := range slices.Chunk(srcs, 100) {
				c.host.SendUDPTo(discardAddr, chunk)
			}
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return f
}

// flowing waits until every host's flow has reached the upstream, with its
// address, since from.
func (f *inFlight) flowing(what string, from time.Time, within time.Duration) {
	f.t.Helper()
	took := eventually(f.t, within, func() string {
		f.mu.Lock()
		defer f.mu.Unlock()
		late := 0
		var example netip.Addr
		for h := range f.want {
			if f.seen[h].Before(from) {
				late++
				example = h
			}
		}
		if late > 0 {
			return fmt.Sprintf("%s: %d flows in flight not through since %s, %s among them", what, late, from.Format(time.TimeOnly), example)
		}
		return ""
	})
	f.t.Logf("%s: every host's flow in flight reached the upstream with the plan's address %v later", what, took.Round(time.Millisecond))
}

// end stops the flows and fails the test for every packet the upstream saw
// with another source than the plan's address.
func (f *inFlight) end() {
	f.ended.Do(f.report)
}

func (f *inFlight) report() {
	close(f.stop)
	f.conn.Close()
	f.done.Wait()
	for i, w := range f.wrong {
		if i == 10 {
			f.t.Errorf("... %d more", len(f.wrong)-i)
			break
		}
		f.t.Error(w)
	}
	f.t.Logf("the upstream saw %d packets of the flows in flight, %d with a source other than the plan's", f.n, len(f.wrong))
}

// octetCluster is four nodes sharing an octet pool in /28 chunks.
const octetCluster = `egress:
  - name: isp
    private: [100.64.0.0/20]
    pool: [198.51.100.0/25]
    strategy: octet
nodes:
  - {name: nat1, address: 10.255.0.1, bgp: {source: 192.0.2.1}}
  - {name: nat2, address: 10.255.0.2, bgp: {source: 192.0.2.2}}
  - {name: nat3, address: 10.255.0.3, bgp: {source: 192.0.2.3}}
  - {name: nat4, address: 10.255.0.4, bgp: {source: 192.0.2.4}}
cluster:
  chunk: 28
  bgp: {as: 64512, neighbor: 192.0.2.254, neighbor-as: 64500, hold: 3}
`

// Three nodes sharing a hash pool (testdata/cluster.yaml), and four an
// octet one: every host keeps its public address through a node's death
// and return, and no packet reaches the upstream untranslated.
func TestClusterKeepsEveryHostsPublicAddressThroughANodeFailure(t *testing.T) {
	octet := filepath.Join(t.TempDir(), "octet.yaml")
	writeFile(t, octet, octetCluster)
	for name, spec := range map[string]string{"hash": "../testdata/cluster.yaml", "octet": octet} {
		t.Run(name, func(t *testing.T) { testNodeFailure(t, newCluster(t, spec)) })
	}
}

func testNodeFailure(t *testing.T, c *cluster) {
	cl := c.plan.Cluster
	before := make([]string, len(c.nodes))
	for i, ns := range c.nodes {
		before[i] = c.outside(ns)
	}
	for i := range c.nodes {
		c.startNode(i)
	}
	for i, ns := range c.nodes {
		must(t, 0, "status", "-f", c.spec, "--node", cl.Nodes[i].Name, "--netns", ns.Name, "--journal", filepath.Join(c.dir, cl.Nodes[i].Name+".journal"))
	}
	all := func(int) bool { return true }
	took := c.waitRoutes(all, 30*time.Second)
	t.Logf("the upstream holds every chunk via its owner %v after the nodes started", took.Round(time.Millisecond))
	c.waitPeers(all, 30*time.Second)

	// status names the peers that are up, and a policy rule of natpool's
	// gone is drift.
	first := []string{"-f", c.spec, "--node", cl.Nodes[0].Name, "--netns", c.nodes[0].Name, "--journal", filepath.Join(c.dir, cl.Nodes[0].Name+".journal")}
	status := must(t, 0, append([]string{"status"}, first...)...)
	for i := 1; i < len(cl.Nodes); i++ {
		if want := fmt.Sprintf("peer %s up: its routing table %d holds its routes", cl.Nodes[i].Name, cl.Table+i); !strings.Contains(status, want) {
			t.Errorf("status of %s does not say %q:\n%s", cl.Nodes[0].Name, want, status)
		}
	}
	ipIn(t, c.nodes[0], "rule", "del", "priority", fmt.Sprint(cl.Priority))
	if status := must(t, 1, append([]string{"status"}, first...)...); !strings.Contains(status, "policy routing: 1 missing, 0 extra") {
		t.Errorf("status with a policy rule deleted:\n%s", status)
	}
	must(t, 0, append([]string{"apply"}, first...)...)
	must(t, 0, append([]string{"status"}, first...)...)

	// Every node runs watch. The first's follows its peers: a log line and
	// a gauge for each failover.
	watches := make([]*watchProcess, len(c.nodes))
	startNodeWatch := func(i int) {
		args := []string{"-f", c.spec, "--node", cl.Nodes[i].Name, "--netns", c.nodes[i].Name, "--hold-down", "100ms"}
		if i == 0 {
			args = append(args, "--metrics", "127.0.0.1:0")
		}
		watches[i] = startWatch(t, args...)
	}
	for i := range c.nodes {
		startNodeWatch(i)
	}
	w := watches[0]
	peersSeen := func(want string, times int, gauges map[string]float64) {
		t.Helper()
		waitFor(t, 5*time.Second, fmt.Sprintf("watch to log %q %d times", want, times), func() bool { return strings.Count(w.log.String(), want) == times })
		got := map[string]float64{}
		for _, m := range scrape(t, w.metricsAddr(t))["natpool_peer_up"].GetMetric() {
			got[label(m, "node")] = m.GetGauge().GetValue()
		}
		if !maps.Equal(got, gauges) {
			t.Errorf("natpool_peer_up %v, want %v", got, gauges)
		}
	}
	// up is node 0's view of its peers, the dead one as deadUp says.
	const dead = 1
	up := func(deadUp float64) map[string]float64 {
		out := map[string]float64{}
		for _, n := range cl.Nodes[1:] {
			out[n.Name] = 1
		}
		out[cl.Nodes[dead].Name] = deadUp
		return out
	}
	peersSeen("peer "+cl.Nodes[dead].Name+" went down", 0, up(1))

	// 1,200 hosts spread over the inside /20, each with the public address
	// the plan gives it.
	want := map[netip.Addr]netip.Addr{}
	owned := make([][]netip.Addr, len(c.nodes)) // the hosts each node serves
	var hosts []netip.Addr
	k := 0
	for h := range c.plan.Egress[0].Hosts() {
		if k++; k%3 != 0 || len(hosts) == 1200 {
			continue
		}
		hosts = append(hosts, h.Addr)
		want[h.Addr] = h.Public
		owner := cl.Order(h.Public)[0]
		owned[owner] = append(owned[owner], h.Addr)
	}
	c.checkRoundTrips("all nodes up", want, c.roundTrip(hosts, 40000))
	// From here on every host keeps a flow going, through the failure and
	// the return: not one packet may reach the upstream untranslated.
	flows := c.startInFlight(want, hosts, 41000)
	t.Cleanup(flows.end)
	flows.flowing("all nodes up", time.Now(), 10*time.Second)

	// Node 1 dies: links down, BIRD killed, and its watch with it.
	alive := func(i int) bool { return i != dead }
	entries := map[int]map[netip.AddrPort]netnstest.Flow{}
	for i, ns := range c.nodes {
		if alive(i) {
			entries[i] = conntrackOf(ns)
		}
	}
	// Links first: a BIRD killed on a live box says goodbye through its
	// kernel's TCP, and a dead box does not.
	watches[dead].stop()
	c.setNode(dead, false)
	c.stopBIRD(c.nodes[dead])
	died := time.Now()
	hold := time.Duration(cl.Nodes[dead].BGP.Hold) * time.Second
	took = c.waitRoutes(alive, hold+3*time.Second)
	t.Logf("node %s died: the upstream routes its chunks via their backups after %v (hold time %v)", cl.Nodes[dead].Name, took.Round(time.Millisecond), hold)
	c.waitPeers(alive, hold+3*time.Second)
	peersSeen("peer "+cl.Nodes[dead].Name+" went down", 1, up(0))
	flows.flowing("node "+cl.Nodes[dead].Name+" dead", time.Now(), 10*time.Second)
	t.Logf("node %s dead: flows in flight through again %v after it died", cl.Nodes[dead].Name, time.Since(died).Round(time.Millisecond))
	c.checkRoundTrips("node "+cl.Nodes[dead].Name+" dead", want, c.roundTrip(hosts, 40001))
	if len(owned[dead]) == 0 {
		t.Fatalf("node %s serves none of the hosts: the test proves nothing about its failover", cl.Nodes[dead].Name)
	}
	// The survivors kept every connection of the first round trip they
	// translated, and those they steered to a live peer; watch deleted
	// those they had steered to the dead node, which they now translate.
	for i, had := range entries {
		now := conntrackOf(c.nodes[i])
		for src, f := range had {
			if src.Port() != 40000 {
				continue
			}
			steered := f.Translated == f.Src
			deleted := steered && cl.FirstLive(want[src.Addr()], alive) == i
			if _, kept := now[src]; kept == deleted {
				t.Errorf("node %s, flow of %s (steered %v): kept %v, want %v", cl.Nodes[i].Name, src, steered, kept, !deleted)
			}
		}
	}

	// It comes back, with its watch, and takes its chunks back.
	c.setNode(dead, true)
	c.bird(c.nodes[dead], must(t, 0, "render", "-f", c.spec, "--node", cl.Nodes[dead].Name, "--format", "bird"))
	startNodeWatch(dead)
	took = c.waitRoutes(all, 30*time.Second)
	t.Logf("node %s came back: its chunks are routed to it again after %v", cl.Nodes[dead].Name, took.Round(time.Millisecond))
	c.waitPeers(all, 30*time.Second)
	peersSeen("peer "+cl.Nodes[dead].Name+" came up", 1, up(1))
	flows.flowing("node "+cl.Nodes[dead].Name+" back", time.Now(), 10*time.Second)
	// Both failovers are in the journal of the node that saw them.
	history := must(t, 0, "history", "--journal", w.journal)
	for _, want := range []string{"peer " + cl.Nodes[dead].Name + " went down (silent since ", " at the earliest): " + cl.Nodes[0].Name + " translates", "peer " + cl.Nodes[dead].Name + " came up: " + cl.Nodes[0].Name + " steers"} {
		if !strings.Contains(history, want) {
			t.Errorf("history of %s does not say %q:\n%s", cl.Nodes[0].Name, want, history)
		}
	}
	c.checkRoundTrips("node "+cl.Nodes[dead].Name+" back", want, c.roundTrip(hosts, 40002))

	// Nothing outside natpool's own changed; --delete removes all of it.
	flows.end()
	for _, w := range watches {
		w.stop()
	}
	for i, ns := range c.nodes {
		if got := c.outside(ns); got != before[i] {
			t.Errorf("node %s: outside natpool's table, routing tables and rules:\nbefore:\n%s\nafter:\n%s", cl.Nodes[i].Name, before[i], got)
		}
		c.stopBIRD(ns)
		must(t, 0, "apply", "--delete", "-f", c.spec, "--node", cl.Nodes[i].Name, "--netns", ns.Name, "--journal", filepath.Join(c.dir, cl.Nodes[i].Name+".journal"))
		if rules := ns.MustRun("", "ip", "rule", "show"); strings.Contains(rules, "fwmark") {
			t.Errorf("node %s: policy rules left after apply --delete:\n%s", cl.Nodes[i].Name, rules)
		}
	}
}

func TestRenderOfANodeLoadsIntoItsTools(t *testing.T) {
	for _, node := range []string{"nat1", "nat2", "nat3"} {
		dir := t.TempDir()
		conf := filepath.Join(dir, "bird.conf")
		writeFile(t, conf, must(t, 0, "render", "-f", "../testdata/cluster.yaml", "--node", node, "--format", "bird"))
		netnstest.Require(t, "bird")
		if out, err := exec.Command("bird", "-p", "-c", conf).CombinedOutput(); err != nil {
			t.Errorf("%s: bird -p rejects natpool's configuration: %v: %s", node, err, out)
		}
	}
	for _, bad := range []struct{ args, want string }{
		{"--node nat1 --format iptables", "format iptables cannot carry a node's steering"},
		{"--node nat9", `--node "nat9" is not a node of the spec (nat1, nat2, nat3)`},
		{"", "the spec lists nodes (nat1, nat2, nat3): say which this box is with --node"},
		{"--format bird", "say which this box is with --node"},
	} {
		code, _, stderr := run(append([]string{"render", "-f", "../testdata/cluster.yaml"}, strings.Fields(bad.args)...)...)
		if code != 2 || !strings.Contains(stderr, bad.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("render %s: exit %d, %q; want exit 2 and one line saying %q", bad.args, code, stderr, bad.want)
		}
	}
}

// A cluster of one node has no peer to steer to: its render loads with
// nft, and apply and status work, with no steer chain and no policy rule.
func TestAOneNodeClusterLoads(t *testing.T) {
	keepHostState(t)
	spec := filepath.Join(t.TempDir(), "one.yaml")
	writeFile(t, spec, `egress:
  - name: isp
    private: [100.64.0.0/24]
    pool: [198.51.100.0/29]
    strategy: octet
nodes:
  - {name: nat1, address: 10.255.0.1}
cluster:
  bgp: {as: 64512, neighbor: 192.0.2.254, neighbor-as: 64500}
`)
	ns := netnstest.New(t, "nft")
	text := must(t, 0, "render", "-f", spec, "--node", "nat1")
	if strings.Contains(text, "nexthop") || strings.Contains(text, "steer") {
		t.Errorf("the render of a lone node steers:\n%s", text)
	}
	ns.MustRun(text, "nft", "-c", "-f", "-")
	args := []string{"-f", spec, "--node", "nat1", "--netns", ns.Name, "--journal", filepath.Join(t.TempDir(), "journal")}
	must(t, 0, append([]string{"apply"}, args...)...)
	must(t, 0, append([]string{"status"}, args...)...)
	if rules := ns.MustRun("", "ip", "rule", "show"); strings.Contains(rules, "fwmark") {
		t.Errorf("a lone node has policy rules:\n%s", rules)
	}
}

// natpool tells its policy rules by their protocol, not by where they sit:
// an admin's rule or route in the cluster's priorities, tables or marks is
// refused, named, and left as it was, and a route another put in a peer's
// table does not make the peer up.
func TestForeignRulesAndRoutesAreRefusedAndLeftAlone(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t, "nft")
	ipIn(t, ns, "link", "set", "lo", "up")
	args := []string{"-f", "../testdata/cluster.yaml", "--node", "nat1", "--netns", ns.Name, "--journal", filepath.Join(t.TempDir(), "journal")}
	must(t, 0, append([]string{"apply"}, args...)...)
	if rules := ns.MustRun("", "ip", "rule", "show"); !strings.Contains(rules, "proto 78") {
		t.Errorf("natpool's policy rules carry no protocol of natpool's:\n%s", rules)
	}
	for _, foreign := range []struct {
		add, del []string
		want     string
	}{
		{[]string{"rule", "add", "fwmark", "0x4e500000", "lookup", "7351", "priority", "7350"}, []string{"rule", "del", "priority", "7350", "fwmark", "0x4e500000", "lookup", "7351", "protocol", "unspec"},
			"policy rule 7350: from all fwmark 0x4e500000 lookup 7351 proto 0 sits in natpool's policy-routing ranges"},
		{[]string{"rule", "add", "from", "10.9.0.0/16", "lookup", "7352", "priority", "100"}, []string{"rule", "del", "priority", "100"},
			"policy rule 100: from 10.9.0.0/16 lookup 7352 proto 0 sits in natpool's"},
		{[]string{"route", "add", "blackhole", "0.0.0.0/0", "table", "7351"}, []string{"route", "del", "blackhole", "0.0.0.0/0", "table", "7351"},
			"route 0.0.0.0/0 in routing table 7351 (proto 3) sits in natpool's"},
	} {
		ipIn(t, ns, foreign.add...)
		before := ns.MustRun("", "ip", "rule", "show") + ns.MustRun("", "ip", "route", "show", "table", "all")
		code, _, stderr := run(append([]string{"apply"}, args...)...)
		if code != exitTrouble || !strings.Contains(stderr, foreign.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("apply beside %v: exit %d, %q; want exit 2 naming %q", foreign.add, code, stderr, foreign.want)
		}
		if after := ns.MustRun("", "ip", "rule", "show") + ns.MustRun("", "ip", "route", "show", "table", "all"); after != before {
			t.Errorf("beside %v, natpool changed the routing:\nbefore:\n%s\nafter:\n%s", foreign.add, before, after)
		}
		status := must(t, 1, append([]string{"status"}, args...)...)
		if !strings.Contains(status, "(not natpool's, in its ranges)") || !strings.Contains(status, "peer nat2 down") {
			t.Errorf("status beside %v:\n%s", foreign.add, status)
		}
		ipIn(t, ns, foreign.del...)
		must(t, 0, append([]string{"status"}, args...)...)
	}
	// apply --delete takes natpool's rules, and only them: without the
	// spec's nodes, beside a foreign rule in natpool's ranges.
	ipIn(t, ns, "rule", "add", "fwmark", "0x4e500000", "lookup", "7351", "priority", "7350")
	out := must(t, 0, "apply", "--delete", "--netns", ns.Name, "--journal", args[len(args)-1])
	if !strings.Contains(out, "deleted table ip natpool in network namespace "+ns.Name+"; removed 4 policy rules of natpool's") {
		t.Errorf("apply --delete: %s", out)
	}
	rules := ns.MustRun("", "ip", "rule", "show")
	if strings.Contains(rules, "proto 78") || !strings.Contains(rules, "7350:	from all fwmark 0x4e500000 lookup 7351") {
		t.Errorf("apply --delete left natpool's rules or took another's:\n%s", rules)
	}
}
