package render

import (
	"io"
	"testing"

	"github.com/natpool/natpool/pool"
)

// BenchmarkRender writes a campus /12 onto a /26 in each format, and the
// per-host port blocks of a /16 as nft text.
func BenchmarkRender(b *testing.B) {
	campus := pool.EgressSpec{Private: []string{"10.16.0.0/12"}, Pool: []string{"192.76.8.0/26"}, Strategy: "hash"}
	blocks := pool.EgressSpec{Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/24"}, Strategy: "block"}
	for _, bc := range []struct {
		name, format string
		spec         pool.EgressSpec
	}{
		{"hash-nft", "nft", campus},
		{"hash-nft-json", "nft-json", campus},
		{"hash-iptables", "iptables", campus},
		{"hash-ipset", "ipset", campus},
		{"block-nft", "nft", blocks},
	} {
		p, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{bc.spec}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := Ruleset(io.Discard, io.Discard, p, bc.format, Options{Version: "bench"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
