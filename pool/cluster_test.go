package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func clusterSpec(pool string, nodes ...string) Spec {
	s := Spec{Egress: []EgressSpec{{Private: []string{"10.0.0.0/16"}, Pool: []string{pool}, Strategy: "hash"}},
		Cluster: ClusterSpec{BGP: BGPSpec{AS: "64512", Neighbor: "192.0.2.254", NeighborAS: "64500"}}}
	for i, n := range nodes {
		name, weight, _ := strings.Cut(n, "=")
		s.Nodes = append(s.Nodes, NodeSpec{Name: name, Weight: weight, Address: fmt.Sprintf("10.255.0.%d", i+1)})
	}
	return s
}

// A node that owns no chunk serves only as a backup: the plan says so.
func TestNodesThatOwnNoChunkAreNamedInAWarning(t *testing.T) {
	for _, c := range []struct {
		pool, want string
	}{
		{"198.51.100.0/29", "(1 chunk of /29 for 3 nodes): "},
		{"198.51.100.0/24", ""},
	} {
		p, err := NewPlan(clusterSpec(c.pool, "a", "b", "c"))
		if err != nil {
			t.Fatal(err)
		}
		idle := p.Cluster.Idle()
		var got string
		for _, w := range p.Warnings {
			if strings.HasPrefix(w, "nodes that own no chunk") {
				got = w
			}
		}
		switch {
		case c.want == "" && (got != "" || len(idle) > 0):
			t.Errorf("%s: every node owns a chunk, yet %q (idle %v)", c.pool, got, idle)
		case c.want != "" && (len(idle) != 2 || !strings.Contains(got, c.want+strings.Join(idle, ", ")+";")):
			t.Errorf("%s: warning %q, idle %v", c.pool, got, idle)
		}
	}
}

func TestClusterChunksAreAlignedAndCoverExactlyThePool(t *testing.T) {
	p, err := NewPlan(clusterSpec("198.51.100.5-198.51.100.21", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range p.Cluster.Chunks {
		got = append(got, fmt.Sprint(ch.Block, ch.Prefixes))
	}
	want := []string{"198.51.100.0/29 [198.51.100.5/32 198.51.100.6/31]", "198.51.100.8/29 [198.51.100.8/29]",
		"198.51.100.16/29 [198.51.100.16/30 198.51.100.20/31]"}
	if !slices.Equal(got, want) {
		t.Errorf("chunks %q, want %q", got, want)
	}
}

func TestRemovingANodeMovesOnlyItsChunksToTheirNextNode(t *testing.T) {
	all, err := NewPlan(clusterSpec("198.51.96.0/20", "a", "b=2", "c", "d"))
	if err != nil {
		t.Fatal(err)
	}
	less, err := NewPlan(clusterSpec("198.51.96.0/20", "a", "b=2", "d"))
	if err != nil {
		t.Fatal(err)
	}
	owned := map[string]int{}
	for i, ch := range all.Cluster.Chunks {
		names := all.Cluster.NodeNames(ch.Order)
		owned[names[0]]++
		without := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "c" })
		if got := less.Cluster.NodeNames(less.Cluster.Chunks[i].Order); !slices.Equal(got, without) {
			t.Fatalf("chunk %s: order %v without c, want %v", ch.Block, got, without)
		}
	}
	// 512 chunks by weight 1:2:1:1: b owns about twice a's share.
	if owned["b"] < 3*owned["a"]/2 || owned["b"] > 5*owned["a"]/2 {
		t.Errorf("chunks owned %v: b's weight 2 is not about twice a's share", owned)
	}
}

func TestClusterSpecErrorsNameTheValue(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Nodes[1].Name = "a" }, `node name "a" is used twice`},
		{func(s *Spec) { s.Nodes[0].Name = "nat-1" }, `name "nat-1"`},
		{func(s *Spec) { s.Nodes[1].Address = "10.255.0.1" }, "address 10.255.0.1 is another node's too"},
		{func(s *Spec) { s.Nodes[0].BGP.Hold = "1" }, `bgp hold "1" must be a whole number 3-65535`},
		{func(s *Spec) { s.Cluster.BGP.AS = "x" }, `bgp as "x" must be an AS number`},
		{func(s *Spec) { s.Cluster.Chunk = "33" }, `cluster chunk "33"`},
		{func(s *Spec) { s.Egress[0].Strategy = "persistent" }, "strategy persistent cannot be shared by nodes"},
		{func(s *Spec) { s.Nodes = nil }, "cluster settings without nodes"},
		{func(s *Spec) { s.Nodes[1].Name = "A" }, `node name "A" is used twice (names are told apart without regard to case)`},
		{func(s *Spec) { s.Nodes[0].Address = "0.0.0.0" }, "address 0.0.0.0 cannot be a node's address"},
		{func(s *Spec) { s.Nodes[0].Address = "255.255.255.255" }, "address 255.255.255.255 cannot be a node's address"},
		{func(s *Spec) { s.Nodes[0].Address = "198.51.100.7" }, "node a: address 198.51.100.7 is a public address of egress"},
		{func(s *Spec) { s.Cluster.Table = "253" }, `cluster table "253": natpool's routing tables 253-254 would take the kernel's own table 253`},
		{func(s *Spec) { s.Cluster.Table = "252" }, "would take the kernel's own table 253"},
	} {
		s := clusterSpec("198.51.100.0/26", "a", "b")
		tc.edit(&s)
		_, err := NewPlan(s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one saying %q", err, tc.want)
		}
	}
}

func TestClusterOrderIsTheSameForTheSameSpec(t *testing.T) {
	a, _ := NewPlan(clusterSpec("198.51.100.0/24", "a", "b", "c"))
	b, _ := NewPlan(clusterSpec("198.51.100.0/24", "a", "b", "c"))
	for i := range a.Cluster.Chunks {
		if !slices.Equal(a.Cluster.Chunks[i].Order, b.Cluster.Chunks[i].Order) {
			t.Fatalf("chunk %d ordered %v and %v", i, a.Cluster.Chunks[i].Order, b.Cluster.Chunks[i].Order)
		}
	}
	if got := a.Cluster.Order(netip.MustParseAddr("198.51.101.0")); got != nil {
		t.Errorf("an address outside the pool has nodes %v", got)
	}
}

// What a node serves with a peer down is what it owns in the plan without
// that peer; the failover a node reports is the worst such peer.
func TestNodeFailoverIsWhatItOwnsWithoutTheWorstPeer(t *testing.T) {
	nodes := []string{"a", "b=2", "c", "d"}
	all, err := NewPlan(clusterSpec("198.51.96.0/22", nodes...))
	if err != nil {
		t.Fatal(err)
	}
	loads := all.Report().Nodes
	var addrs, hosts uint64
	for _, l := range loads {
		addrs, hosts = addrs+uint64(l.Owned.Addresses), hosts+l.Owned.Hosts
	}
	if addrs != 1024 || hosts != 1<<16 {
		t.Errorf("nodes own %d addresses and %d hosts, want the pool's 1024 and 65536", addrs, hosts)
	}
	worst := map[string]NodeShare{}
	for _, down := range nodes {
		less, err := NewPlan(clusterSpec("198.51.96.0/22", slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == down })...))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range less.Report().Nodes {
			if w, ok := worst[l.Node]; !ok || l.Owned.Hosts > w.Hosts {
				worst[l.Node] = l.Owned
			}
		}
	}
	for _, l := range loads {
		if l.FailoverOf == "" || l.FailoverOf == l.Node || l.Failover != worst[l.Node] {
			t.Errorf("node %s: with %s down %+v, want %+v", l.Node, l.FailoverOf, l.Failover, worst[l.Node])
		}
	}
}

func TestASingleNodeHasNoFailover(t *testing.T) {
	p, err := NewPlan(clusterSpec("198.51.100.0/26", "a"))
	if err != nil {
		t.Fatal(err)
	}
	l := p.Report().Nodes[0]
	if l.FailoverOf != "" || l.Owned.Addresses != 64 || l.Failover != l.Owned {
		t.Errorf("single node: %+v", l)
	}
}
