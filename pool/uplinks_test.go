package pool

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

// site is a spec of a site with an uplink per pool, the same inside hosts
// on each.
func site(private string, uplinks UplinksSpec, pools ...string) Spec {
	s := Spec{Uplinks: uplinks}
	for i, p := range pools {
		s.Egress = append(s.Egress, EgressSpec{Name: "isp" + string(rune('a'+i)), OIF: "wan" + string(rune('0'+i)),
			Private: []string{private}, Pool: []string{p}})
	}
	return s
}

// share counts the hosts of p's uplinks' members given the states.
func share(p *Plan, states []UplinkState) []int {
	n := make([]int, len(p.Uplinks.Members))
	for h := range p.Egress[0].Hosts() {
		n[p.Uplinks.MemberOf(h.Addr, states)]++
	}
	return n
}

// Balance splits the hosts by weight within 2%, and a dead uplink moves its
// own hosts alone, over the others by weight, and gets them back.
func TestBalancedUplinksSplitByWeightAndMoveOnlyTheDeadOnesHosts(t *testing.T) {
	for _, c := range []struct {
		private string
		members []string
		weights []float64
	}{
		{"10.0.0.0/22", []string{"ispa=2", "ispb"}, []float64{2, 1}},
		{"10.0.0.0/16", []string{"ispa=2", "ispb", "ispc"}, []float64{2, 1, 1}},
		{"192.168.0.0/24", []string{"ispa", "ispb", "ispc"}, []float64{1, 1, 1}},
	} {
		pools := []string{"192.0.2.0/29", "198.51.100.0/29", "203.0.113.0/29"}[:len(c.members)]
		p, err := NewPlan(site(c.private, UplinksSpec{Members: c.members}, pools...))
		if err != nil {
			t.Fatal(err)
		}
		u := p.Uplinks
		all := share(p, u.AllUp())
		total, weights := 0, 0.0
		for i := range all {
			total += all[i]
			weights += c.weights[i]
		}
		for i, n := range all {
			want := float64(total) * c.weights[i] / weights
			if math.Abs(float64(n)-want) > 0.02*want {
				t.Errorf("%s %v: member %d has %d hosts, want %.0f within 2%%", c.private, c.members, i, n, want)
			}
		}
		for dead := range u.Members {
			states := u.AllUp()
			states[dead] = UplinkDown
			for h := range p.Egress[0].Hosts() {
				before, after := u.MemberOf(h.Addr, u.AllUp()), u.MemberOf(h.Addr, states)
				if before != dead && after != before || after == dead {
					t.Fatalf("%s: with %d down, %s moved from %d to %d", c.private, dead, h.Addr, before, after)
				}
			}
		}
	}
}

// Priority sends every host through the first member up, a degraded one
// only when none is up, and its primary when all are down: nowhere better.
func TestPriorityTakesTheFirstUplinkThatIsUp(t *testing.T) {
	p, err := NewPlan(site("10.0.0.0/24", UplinksSpec{Policy: "priority", Members: []string{"ispb", "ispa"}}, "192.0.2.0/29", "198.51.100.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	u := p.Uplinks
	h := p.Egress[0].Inside.Ranges()[0].From()
	for _, c := range []struct {
		states []UplinkState
		want   string
	}{
		{[]UplinkState{UplinkUp, UplinkUp}, "ispb"},
		{[]UplinkState{UplinkDown, UplinkUp}, "ispa"},
		{[]UplinkState{UplinkDegraded, UplinkUp}, "ispa"},
		{[]UplinkState{UplinkDegraded, UplinkDown}, "ispb"},
		{[]UplinkState{UplinkDown, UplinkDown}, "ispb"},
	} {
		if got := u.Members[u.MemberOf(h, c.states)].Name; got != c.want {
			t.Errorf("states %v: %s, want %s", c.states, got, c.want)
		}
	}
	if runs := u.Choose(u.AllUp()); len(runs) != 1 {
		t.Errorf("priority has %d runs, want 1", len(runs))
	}
}

// A plan rebuilt from its record leaves every host by the same uplink.
func TestUplinksComeBackFromTheRecord(t *testing.T) {
	p, err := NewPlan(site("10.0.0.0/20", UplinksSpec{Members: []string{"ispa=3", "ispb"}, Sticky: true}, "192.0.2.0/29", "198.51.100.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	p.Egress[0].Probe = &Probe{Targets: []ProbeTarget{{ICMP, mustAddrPort("192.0.2.254:0")}}, Reliability: 1, Interval: 1e9, Timeout: 1e9, Down: 8, Up: 8}
	q, err := p.Record().Plan()
	if err != nil {
		t.Fatal(err)
	}
	states := []UplinkState{UplinkDown, UplinkUp}
	for h := range p.Egress[0].Hosts() {
		for _, s := range [][]UplinkState{p.Uplinks.AllUp(), states} {
			if a, b := p.Uplinks.MemberOf(h.Addr, s), q.Uplinks.MemberOf(h.Addr, s); a != b {
				t.Fatalf("%s: member %d, from the record %d", h.Addr, a, b)
			}
		}
	}
	if !q.Uplinks.Sticky || q.Egress[0].Probe == nil || q.Egress[0].Probe.Targets[0].String() != "icmp:192.0.2.254" {
		t.Errorf("record lost settings: %+v, probe %+v", q.Uplinks, q.Egress[0].Probe)
	}
}

func TestUplinkSpecErrorsNameTheValue(t *testing.T) {
	two := func(mod func(*Spec)) Spec {
		s := site("10.0.0.0/24", UplinksSpec{Policy: "balance"}, "192.0.2.0/29", "198.51.100.0/29")
		mod(&s)
		return s
	}
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{two(func(s *Spec) { s.Uplinks.Policy = "random" }), `uplinks policy "random"`},
		{two(func(s *Spec) { s.Uplinks.Members = []string{"ispa", "nope"} }), `member "nope" is no egress entry`},
		{two(func(s *Spec) { s.Uplinks.Members = []string{"ispa"} }), "1 member"},
		{two(func(s *Spec) { s.Uplinks.Members = []string{"ispa=0", "ispb"} }), `"ispa=0": weight must be 1-100`},
		{two(func(s *Spec) { s.Uplinks.Policy = "priority"; s.Uplinks.Members = []string{"ispa=2", "ispb"} }), "without weights"},
		{two(func(s *Spec) { s.Egress[1].Private = []string{"10.0.1.0/24"} }), "other inside hosts"},
		{two(func(s *Spec) { s.Egress[1].OIF = "wan*" }), `oif "wan*" must name one interface`},
		{two(func(s *Spec) { s.Uplinks.Table = "252" }), "kernel's own table 253"},
		{two(func(s *Spec) { s.Uplinks.Mark = "0" }), `uplinks mark "0"`},
		{two(func(s *Spec) { s.CTLabel = "0" }), "ct-label 0 leaves no label bit"},
		{two(func(s *Spec) { s.Egress[0].Gateway = "fe80::1" }), `gateway "fe80::1"`},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{} }), "no targets"},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"ping:1.1.1.1"}} }), `probe target "ping:1.1.1.1"`},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"tcp:192.0.2.9"}} }), "tcp:ADDR:PORT"},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"icmp:127.0.0.1"}} }), "beyond the uplink"},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"icmp:192.0.2.9"}, Reliability: "2"} }), `probe reliability "2"`},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"dns:192.0.2.9"}, Timeout: "2s"} }), `probe timeout "2s"`},
		{two(func(s *Spec) { s.Egress[0].Probe = &ProbeSpec{Targets: []string{"dns:192.0.2.9"}, Loss: "130%"} }), `probe loss "130%"`},
	} {
		if _, err := NewPlan(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
