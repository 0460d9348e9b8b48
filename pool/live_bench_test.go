package pool

import (
	"net/netip"
	"testing"
)

// liveCounter counts a million connections of a CGNAT block plan: 65,536
// subscribers on 64 addresses, 16 connections each to 4,096 destinations.
func liveCounter(b *testing.B) *LiveCounter {
	p, err := NewPlan(Spec{Egress: []EgressSpec{{Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/26"}, Strategy: "block"}}})
	if err != nil {
		b.Fatal(err)
	}
	c := p.NewLiveCounter()
	for h := range 1 << 16 {
		host := AddrFromUint32(0x64400000 + uint32(h))
		a, _ := p.Lookup(host.String(), "")
		for k := range 16 {
			d := uint32(h*16+k) % 4096
			c.Count(Connection{Host: host, Public: netip.AddrPortFrom(a[0].Public, a[0].Ports.Lo+uint16(k)),
				Dest: Destination{Addr: netip.AddrPortFrom(AddrFromUint32(0x08080000+d), 443), Proto: 6}}, 1)
		}
	}
	return c
}

// BenchmarkLiveCapacity is what capacity --live reports of a million
// connections, once they are counted.
func BenchmarkLiveCapacity(b *testing.B) {
	c := liveCounter(b)
	b.ReportAllocs()
	for b.Loop() {
		c.Capacity()
	}
}

// BenchmarkLiveUsage is what natpool watch's figures cost at a million
// connections: nothing that grows with them.
func BenchmarkLiveUsage(b *testing.B) {
	c := liveCounter(b)
	b.ReportAllocs()
	for b.Loop() {
		c.Usage()
	}
}
