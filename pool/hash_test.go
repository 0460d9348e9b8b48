package pool

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestHashMeetsItsBalanceGoals(t *testing.T) {
	campus, err := PlanFile("../testdata/campus.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		egress *Egress
		active bool // the bound is on the hosts of the hosts file
		want   float64
	}{
		{"campus example", campus.Egress[0], false, 1.02},
		{"a /22 onto 16 addresses", mustPlan(t, EgressSpec{Private: []string{"10.0.0.0/22"}, Pool: []string{"192.0.2.0/28"}, Strategy: "hash"}), false, 1.05},
		{"a skewed lease file", mustPlan(t, EgressSpec{Private: []string{"10.0.0.0/16"}, Pool: []string{"192.0.2.0/27"}, Strategy: "hash", Hosts: skewedLeases(t)}), true, 1.05},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.egress.report()
			got := r.Imbalance
			if tt.active {
				got = r.ActiveImbalance
			}
			t.Logf("imbalance %.4f", got)
			if got > tt.want {
				t.Errorf("imbalance %.4f, want at most %g", got, tt.want)
			}
		})
	}
}

// skewedLeases writes a lease file whose active hosts crowd into a few
// subnets: 90% of 10.0.0.0/20 and one host in a hundred elsewhere, some
// with several leases.
func skewedLeases(t *testing.T) string {
	rng := rand.New(rand.NewPCG(9, 10))
	var b strings.Builder
	for x := uint32(0x0a000000); x < 0x0a010000; x++ {
		dense := x < 0x0a001000
		if dense && rng.IntN(10) < 9 || !dense && rng.IntN(100) == 0 {
			fmt.Fprintf(&b, "%s,%d\n", AddrFromUint32(x), 1+rng.IntN(3))
		}
	}
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomHashSpec is a hash spec over n random public addresses, of random
// weights when weighted, and an inside range of hosts per unit of weight,
// with random holes excluded.
func randomHashSpec(rng *rand.Rand, n, hostsPerWeight int, weighted bool) EgressSpec {
	es := EgressSpec{Strategy: "hash", Seed: fmt.Sprint(rng.Uint32())}
	seen := map[uint32]bool{}
	weights := 0
	for len(es.Pool) < n {
		a := 0xc6120000 + rng.Uint32N(1<<16)
		if seen[a] {
			continue
		}
		seen[a] = true
		w := 1
		if weighted {
			w = 1 + rng.IntN(3)
		}
		weights += w
		es.Pool = append(es.Pool, fmt.Sprintf("%s=%d", AddrFromUint32(a), w))
	}
	hosts := uint32(weights * hostsPerWeight)
	es.Private = []string{fmt.Sprintf("10.0.0.0-%s", AddrFromUint32(0x0a000000+hosts-1))}
	for range 3 {
		lo := 0x0a000000 + rng.Uint32N(hosts)
		es.Exclude = append(es.Exclude, fmt.Sprintf("%s-%s", AddrFromUint32(lo), AddrFromUint32(lo+rng.Uint32N(64))))
	}
	return es
}

func TestHashBoundHoldsWheneverThePlanSaysItCan(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 12 {
		n := 2 + rng.IntN(999)
		es := randomHashSpec(rng, n, 16+rng.IntN(512), true)
		e := mustPlan(t, es)
		m := e.Mapping.(*HashMapping)
		if got := e.report().Imbalance; !m.Unbalanced && got > m.MaxImbalance+1e-9 {
			t.Errorf("%d addresses: imbalance %.4f above the bound %g, and no warning", n, got, m.MaxImbalance)
		}
		again := mustPlan(t, es)
		if !slices.Equal(m.Owners, again.Mapping.(*HashMapping).Owners) {
			t.Errorf("%d addresses: the same spec gave two mappings", n)
		}
	}
}

// The hosts a change must move are those the addresses that lose hosts
// lose; a change may move at most 1.15 times as many. This holds where the
// ring has enough arcs per address for the bound to trim little: pools of
// up to 64 addresses with 16,384 hosts per unit of weight (the campus
// example's scale). Larger pools move more (see the README).
func TestHashChurnStaysNearTheMinimum(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for range 4 {
		n := 2 + rng.IntN(63)
		es := randomHashSpec(rng, n+1, 16384, false)
		all := es.Pool
		es.Pool = all[:n]
		old := mustPlan(t, es)
		k := rng.IntN(n)
		for _, c := range []struct {
			what string
			pool []string
		}{
			{"adding one address", all},
			{"removing one address", slices.Delete(slices.Clone(all[:n]), k, k+1)},
			{"weight 1 -> 2 on one address", slices.Replace(slices.Clone(all[:n]), k, k+1, strings.TrimSuffix(all[k], "=1")+"=2")},
		} {
			es.Pool = c.pool
			changed := mustPlan(t, es)
			moved, least := Churn(old, changed).Moved, mustMove(old, changed)
			t.Logf("%s, %d addresses: %.3f times the minimum", c.what, n, float64(moved)/float64(least))
			if float64(moved) > 1.15*float64(least) {
				t.Errorf("%s, %d addresses: %d hosts moved, %.3f times the %d that must", c.what, n, moved, float64(moved)/float64(least), least)
			}
		}
	}
}

// mustMove is the fewest hosts any mapping could move from old to new given
// their loads: what the addresses that lose hosts lose.
func mustMove(old, new *Egress) uint64 {
	after := map[string]uint64{}
	for _, p := range new.report().Public {
		after[p.Addr.String()] = p.Hosts
	}
	var n uint64
	for _, p := range old.report().Public {
		n += p.Hosts - min(p.Hosts, after[p.Addr.String()])
	}
	return n
}

func TestHashWarnsWithWhatWouldMeetTheBound(t *testing.T) {
	tests := []struct {
		name    string
		es      EgressSpec
		warning string
	}{
		{"buckets too coarse", EgressSpec{Private: []string{"10.0.0.0/16"}, Pool: []string{"192.0.2.0/26"}, Buckets: "1024"}, "2048 buckets would (--buckets 2048)"},
		{"too few hosts", EgressSpec{Private: []string{"10.0.0.0/28"}, Pool: []string{"192.0.2.1-192.0.2.5"}}, "too few hosts per address; the plan is within 1.25 (--max-imbalance 1.25)"},
		{"within the bound", EgressSpec{Private: []string{"10.0.0.0/16"}, Pool: []string{"192.0.2.0/26"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.es.Strategy = "hash"
			p, err := NewPlan(Spec{Egress: []EgressSpec{tt.es}})
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(p.Warnings, "\n")
			if tt.warning == "" && got != "" || !strings.Contains(got, tt.warning) {
				t.Errorf("warnings %q, want %q", got, tt.warning)
			}
		})
	}
}
