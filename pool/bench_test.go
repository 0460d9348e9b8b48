package pool

import "testing"

// BenchmarkPlanSlash8OntoSlash20 plans and reports 10.0.0.0/8 onto a /20 pool
// per strategy: the target is under 2 s and 200 MB for `natpool plan -o json`.
func BenchmarkPlanSlash8OntoSlash20(b *testing.B) {
	for name, es := range map[string]EgressSpec{
		"octet":           {Strategy: "octet", Bits: "12"},
		"hash":            {Strategy: "hash"},
		"hash-buckets64k": {Strategy: "hash", Buckets: "65536"},
		"persistent":      {Strategy: "persistent"},
		"block":           {Strategy: "block"},
	} {
		es.Private, es.Pool = []string{"10.0.0.0/8"}, []string{"198.18.0.0/20"}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := NewPlan(Spec{Egress: []EgressSpec{es}})
				if err != nil {
					b.Fatal(err)
				}
				p.Report()
			}
		})
	}
}
