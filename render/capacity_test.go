package render

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/natpool/natpool/pool"
)

// The live report prints as a table for every strategy, not only as JSON.
func TestLiveCapacityTableForEveryStrategy(t *testing.T) {
	for _, strategy := range []string{"octet", "hash", "persistent", "block"} {
		t.Run(strategy, func(t *testing.T) {
			p := plan(t, pool.EgressSpec{Strategy: strategy, Private: []string{"10.16.0.0/24"}, Pool: []string{"192.76.8.0/30"}})
			counter := p.NewLiveCounter()
			for i := range 20 {
				host := netip.AddrFrom4([4]byte{10, 16, 0, byte(i % 3)})
				a, err := p.Lookup(host.String(), "")
				if err != nil {
					t.Fatal(err)
				}
				counter.Count(pool.Connection{Host: host, Public: netip.AddrPortFrom(a[0].Public, a[0].Ports.Lo+uint16(i)),
					Dest: pool.Destination{Addr: netip.MustParseAddrPort("198.51.100.7:53"), Proto: 17}}, 1)
			}
			var b bytes.Buffer
			if err := LiveCapacityTable(&b, counter.Capacity()); err != nil {
				t.Fatal(err)
			}
			if out := b.String(); !strings.Contains(out, "busiest inside hosts:") || !strings.Contains(out, "10.16.0.0") {
				t.Errorf("table:\n%s", out)
			}
		})
	}
}
