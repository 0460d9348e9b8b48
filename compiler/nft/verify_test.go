package nft_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/pooltest"
)

// verified compiles p for node in the encoding, and runs every inside
// address's packets through the kernel objects apply would send, as the
// kernel would: each must leave as natpool lookup says.
func verified(t *testing.T, name string, p *pool.Plan, enc compiler.Encoding, node string) {
	t.Helper()
	rs := compiler.Compile(p, compiler.Options{Encoding: enc, Node: node})
	st, err := nft.Expected(rs)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var routes []compiler.PolicyRule
	if rs.Steering != nil {
		routes = rs.Steering.Routes
	}
	v, err := nft.Verify(st.Program(), p, node, routes)
	switch {
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	case v.Wrong > 0:
		t.Errorf("%s: %d of %d packets leave otherwise than lookup says, e.g. %+v", name, v.Wrong, v.Packets, v.Examples[0])
	case v.Packets == 0:
		t.Errorf("%s: no packet checked", name)
	}
}

// Random specs of every strategy, in both port-block encodings, with and
// without a cluster: the compiled table translates every inside host as
// natpool lookup says, and nothing else.
func TestCompiledTableTranslatesEveryHostAsLookupSays(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 1))
	planned := map[pool.Strategy]int{}
	for _, s := range []pool.Strategy{pool.Octet, pool.Hash, pool.Persistent, pool.Block} {
		for i := range 60 {
			es := pooltest.RandomSpec(rng, s, 1<<13)
			spec := pool.Spec{Egress: []pool.EgressSpec{es}}
			clustered := s != pool.Persistent && i%4 == 3
			if clustered {
				spec.Nodes = []pool.NodeSpec{{Name: "a", Address: "10.255.0.1"}, {Name: "b", Address: "10.255.0.2"}, {Name: "c", Address: "10.255.0.3", Weight: "2"}}
				spec.Cluster = pool.ClusterSpec{Chunk: "31", BGP: pool.BGPSpec{AS: "64512", Neighbor: "192.0.2.254", NeighborAS: "64500"}}
			}
			p, err := pool.NewPlan(spec)
			if err != nil {
				continue // a pool too small for its hosts, and the like
			}
			planned[s]++
			name := fmt.Sprintf("%s %+v", s, es)
			nodes := []string{""}
			if clustered {
				nodes = []string{"a", "b", "c"}
			}
			for _, node := range nodes {
				verified(t, name+" node "+node, p, compiler.Compact, node)
				if s == pool.Block {
					verified(t, name+" per-host node "+node, p, compiler.PerHost, node)
				}
			}
		}
	}
	for s, n := range planned {
		if n < 30 {
			t.Errorf("only %d random %s specs planned: the test proves little", n, s)
		}
	}
}

// The sizes at which block mode's compact maps gave hosts another host's
// ports (every window cut by the second pattern), and the shapes around
// them.
func TestBlockDefaultsTranslateAsLookupSays(t *testing.T) {
	for _, es := range []pool.EgressSpec{
		{Private: []string{"100.64.0.0/10"}, Pool: []string{"198.18.0.0/20"}},
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.0/25"}},
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.0/30"}},
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.1-198.18.0.3"}},
		{Private: []string{"10.77.0.0/22"}, Pool: []string{"198.18.0.0/31"}},
		{Private: []string{"10.77.0.0/20"}, Pool: []string{"198.18.0.1-198.18.0.5"}},
		{Private: []string{"10.77.0.0/16"}, Pool: []string{"198.18.0.1-198.18.0.100"}},
		{Private: []string{"10.77.0.0/17"}, Pool: []string{"198.18.0.1"}},
	} {
		es.Strategy = "block"
		verified(t, fmt.Sprint(es.Private, es.Pool), plan(t, es), compiler.Compact, "")
	}
}

// Verify judges the table by the plan, not by the compiler: a port map
// with one element changed, a map of another layout, an address map
// pointing elsewhere, or a rule without natpool's label is found, with
// the hosts it affects.
func TestVerifyFindsWhatTheCompilerGotWrong(t *testing.T) {
	p := plan(t, pool.EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/22"}, Pool: []string{"198.18.0.0/30"}})
	tests := []struct {
		name   string
		change func(rs *compiler.Ruleset)
		wrong  int    // packets
		first  string // the first mismatch's packet
	}{
		{"one port element", func(rs *compiler.Ruleset) {
			m := mapNamed(rs, "default_pmin")
			elements := m.Elements
			m.Elements = func(yield func(compiler.Element) bool) {
				for e := range elements {
					if e.From == pool.AddrFromUint32(1) {
						e.Ports.Lo += 7
					}
					if !yield(e) {
						return
					}
				}
			}
		}, 4, "tcp from 100.64.0.1 out any0"},
		{"an address element", func(rs *compiler.Ruleset) {
			m := mapNamed(rs, "default_addrs")
			elements := m.Elements
			m.Elements = func(yield func(compiler.Element) bool) {
				for e := range elements {
					e.Addr = pool.AddrFromUint32(pool.Uint32(e.Addr) ^ 1)
					if !yield(e) {
						return
					}
				}
			}
		}, 2048, "tcp from 100.64.0.0 out any0"},
		{"no label", func(rs *compiler.Ruleset) { rs.Label = 3 }, 2048, "tcp from 100.64.0.0 out any0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := compiler.Compile(p, compiler.Options{})
			tt.change(rs)
			st, err := nft.Expected(rs)
			if err != nil {
				t.Fatal(err)
			}
			v, err := nft.Verify(st.Program(), p, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.Wrong != tt.wrong || len(v.Examples) == 0 || v.Examples[0].Packet != tt.first {
				t.Errorf("%d wrong, examples %+v; want %d, the first %s", v.Wrong, v.Examples, tt.wrong, tt.first)
			}
		})
	}
}

func mapNamed(rs *compiler.Ruleset, name string) *compiler.Map {
	for i := range rs.Maps {
		if rs.Maps[i].Name == name {
			return &rs.Maps[i]
		}
	}
	panic("no map " + name)
}
