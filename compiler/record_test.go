package compiler

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/natpool/natpool/pool"
)

// A plan rebuilt from its record is the same plan: the same digest, and
// the same answer for every lookup, with the hosts file gone.
func TestRecordRebuildsThePlan(t *testing.T) {
	leases := filepath.Join(t.TempDir(), "leases")
	os.WriteFile(leases, []byte("10.16.0.7,3\n10.16.1.0/28\n10.16.9.9\n"), 0o644)
	plans := map[string]*pool.Plan{
		"campus":  loadPlan(t, "../testdata/campus.yaml"),
		"cgnat":   loadPlan(t, "../testdata/cgnat.yaml"),
		"two-isp": loadPlan(t, "../testdata/two-isp.yaml"),
		"cluster": loadPlan(t, "../testdata/cluster.yaml"),
	}
	for _, es := range []pool.EgressSpec{
		{Strategy: "octet", Hosts: leases, Exclude: []string{"10.16.3.0/24"}},
		{Strategy: "hash", Hosts: leases, Pool: []string{"192.76.8.0/29", "192.76.9.1=3"}},
		{Strategy: "persistent"},
		{Strategy: "block", Private: []string{"10.16.0.0/16", "10.99.0.0/23"}, Exclude: []string{"10.16.4.0/22"}},
	} {
		if es.Private == nil {
			es.Private = []string{"10.16.0.0/16"}
		}
		if es.Pool == nil {
			es.Pool = []string{"192.76.8.0/28"}
		}
		p, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{es}})
		if err != nil {
			t.Fatal(err)
		}
		plans[es.Strategy] = p
	}
	os.Remove(leases)
	for name, p := range plans {
		t.Run(name, func(t *testing.T) {
			data, err := json.Marshal(p.Record())
			if err != nil {
				t.Fatal(err)
			}
			var r pool.Record
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			back, err := r.Plan()
			if err != nil {
				t.Fatal(err)
			}
			if a, b := Digest(p), Digest(back); a != b {
				t.Fatalf("digest %s rebuilt as %s", a, b)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for _, e := range p.Egress {
				ranges := e.Inside.Ranges()
				for range 20 {
					x := ranges[rng.IntN(len(ranges))]
					host := pool.AddrFromUint32(pool.Uint32(x.From()) + rng.Uint32N(pool.Uint32(x.To())-pool.Uint32(x.From())+1))
					a := e.Pool[rng.IntN(len(e.Pool))].Addr
					for _, q := range []netip.Addr{host, a} {
						want, errA := p.Lookup(q.String(), e.Name)
						got, errB := back.Lookup(q.String(), e.Name)
						if jsonOf(t, want) != jsonOf(t, got) || (errA == nil) != (errB == nil) {
							t.Fatalf("lookup %s: %v, rebuilt %v", q, want, got)
						}
					}
				}
			}
		})
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
