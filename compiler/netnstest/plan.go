//go:build linux

package netnstest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/natpool/natpool/pool"
)

// Hosts returns every address of the plan's inside ranges, excluded and
// unmapped ones included: the edges of every range and block among them.
func Hosts(p *pool.Plan) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var hosts []netip.Addr
	for _, e := range p.Egress {
		for _, r := range e.Private {
			for h := r.From(); r.Contains(h); h = h.Next() {
				if !seen[h] {
					seen[h] = true
					hosts = append(hosts, h)
				}
			}
		}
	}
	return hosts
}

// CheckFlows asserts that each host's flow left as natpool lookup says: with
// the public address it predicts and a source port in the range it gives.
// An excluded host leaves untranslated; an inside host the plan maps
// nowhere (a value outside the octets) too, unless guarded, when natpool's
// guard must have dropped it. It returns how many flows it checked.
func CheckFlows(t *testing.T, p *pool.Plan, hosts []netip.Addr, flows map[netip.Addr]Flow, dropped Dropped, guarded bool) int {
	t.Helper()
	checked := 0
	for _, h := range hosts {
		answers, err := p.Lookup(h.String(), "")
		if err != nil {
			t.Fatal(err)
		}
		a := answers[0]
		inside := slices.ContainsFunc(p.Egress, func(e *pool.Egress) bool { return e.Inside.Contains(h) })
		f, ok := flows[h]
		switch {
		case guarded && inside && a.Kind == pool.NoMapping:
			if !dropped[h] || ok {
				t.Errorf("%s is inside but not mapped (%s): natpool's guard let it leave (dropped %v, conntrack entry %v)", h, a.Reason, dropped[h], ok)
			}
			checked++
			continue
		case dropped[h]:
			t.Errorf("%s: its packet was dropped on the way out", h)
			continue
		case !ok:
			t.Errorf("%s: no conntrack entry", h)
			continue
		}
		checked++
		if a.Kind == pool.NoMapping { // excluded, or a value outside the octet range
			if f.Translated.Addr() != h {
				t.Errorf("%s is not mapped (%s) but left as %s", h, a.Reason, f.Translated)
			}
			continue
		}
		if f.Translated.Addr() != a.Public || !a.Ports.Contains(f.Translated.Port()) {
			t.Errorf("%s left as %s; natpool lookup says %s ports %s", h, f.Translated, a.Public, a.Ports)
		}
	}
	return checked
}
