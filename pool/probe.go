package pool

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ProbeSpec is how watch tells whether an egress entry's uplink carries
// traffic beyond its first hop, as written: targets the operator names
// (natpool has none of its own), probed through that uplink alone.
type ProbeSpec struct {
	// Targets are "icmp:ADDR", "tcp:ADDR:PORT" and "dns:ADDR[:PORT]".
	Targets []string `yaml:"targets" json:"targets"`
	// Reliability is how many targets must answer for a round to pass.
	Reliability string `yaml:"reliability" json:"reliability,omitempty"`
	Interval    string `yaml:"interval" json:"interval,omitempty"` // between rounds
	Timeout     string `yaml:"timeout" json:"timeout,omitempty"`   // for an answer
	// Down and Up are the failed rounds in a row that take the uplink
	// down, and the passed ones that bring it back.
	Down string `yaml:"down" json:"down,omitempty"`
	Up   string `yaml:"up" json:"up,omitempty"`
	// Latency and Loss, when given, make an uplink degraded whose median
	// round trip or share of lost probes over the last Down rounds is above
	// them.
	Latency string `yaml:"latency" json:"latency,omitempty"`
	Loss    string `yaml:"loss" json:"loss,omitempty"`
}

// A probe's defaults. They do not flap: a round fails only when fewer than
// Reliability targets answer, and 8 failed rounds in a row take an uplink
// down, while a dead one is seen within 9 s. A healthy link losing 30% of
// its probes, independently, goes down by chance once in 1/0.3^8 rounds
// (4 hours) with one target, once in 1/0.027^8 (100,000 years) with three.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeDown     = 8
	DefaultProbeUp       = 8
)

// ProbeKind is how a target is probed.
type ProbeKind string

// The kinds of probe.
const (
	ICMP ProbeKind = "icmp" // an echo request, answered by an echo reply
	TCP  ProbeKind = "tcp"  // a connection: established or refused, the path works
	DNS  ProbeKind = "dns"  // a query for the root's NS: any answer counts
)

// ProbeTarget is one target of a probe.
type ProbeTarget struct {
	Kind ProbeKind
	Addr netip.AddrPort // port 0 for ICMP
}

// String writes the target as a spec gives it.
func (t ProbeTarget) String() string {
	if t.Kind == ICMP {
		return string(t.Kind) + ":" + t.Addr.Addr().String()
	}
	return string(t.Kind) + ":" + t.Addr.String()
}

// Probe is a checked probe of an uplink.
type Probe struct {
	Targets           []ProbeTarget
	Reliability       int
	Interval, Timeout time.Duration
	Down, Up          int
	Latency           time.Duration // 0: not judged
	Loss              float64       // 0: not judged; else a share of the probes, (0, 1]
}

// newProbe checks a probe spec.
func newProbe(ps *ProbeSpec) (*Probe, error) {
	if len(ps.Targets) == 0 {
		return nil, fmt.Errorf("probe: no targets: name them (icmp:ADDR, tcp:ADDR:PORT, dns:ADDR); natpool has none of its own")
	}
	p := &Probe{Interval: DefaultProbeInterval}
	seen := map[ProbeTarget]bool{}
	for _, s := range ps.Targets {
		t, err := parseProbeTarget(s)
		if err != nil {
			return nil, err
		}
		if seen[t] {
			return nil, fmt.Errorf("probe target %q is given twice", s)
		}
		seen[t] = true
		p.Targets = append(p.Targets, t)
	}
	var err error
	if p.Reliability, err = number("probe reliability", ps.Reliability, 1, 1, len(p.Targets)); err != nil {
		return nil, err
	}
	if p.Interval, err = duration("probe interval", ps.Interval, DefaultProbeInterval, 100*time.Millisecond, time.Hour); err != nil {
		return nil, err
	}
	if p.Timeout, err = duration("probe timeout", ps.Timeout, p.Interval, 10*time.Millisecond, p.Interval); err != nil {
		return nil, err
	}
	if p.Down, err = number("probe down", ps.Down, DefaultProbeDown, 1, 1000); err != nil {
		return nil, err
	}
	if p.Up, err = number("probe up", ps.Up, DefaultProbeUp, 1, 1000); err != nil {
		return nil, err
	}
	if p.Latency, err = duration("probe latency", ps.Latency, 0, time.Millisecond, time.Minute); err != nil {
		return nil, err
	}
	if ps.Loss != "" {
		v, isPercent := strings.CutSuffix(ps.Loss, "%")
		f, err := strconv.ParseFloat(v, 64)
		if isPercent {
			f /= 100
		}
		if err != nil || !(f > 0 && f <= 1) {
			return nil, fmt.Errorf("probe loss %q must be a share of the probes above 0 and at most 1 (0.2 or 20%%)", ps.Loss)
		}
		p.Loss = f
	}
	return p, nil
}

// parseProbeTarget reads "icmp:ADDR", "tcp:ADDR:PORT" or "dns:ADDR[:PORT]".
func parseProbeTarget(s string) (ProbeTarget, error) {
	kind, where, _ := strings.Cut(s, ":")
	t := ProbeTarget{Kind: ProbeKind(kind)}
	bad := func(want string) (ProbeTarget, error) {
		return ProbeTarget{}, fmt.Errorf("probe target %q: want %s", s, want)
	}
	switch t.Kind {
	case ICMP:
		a, err := netip.ParseAddr(where)
		if err != nil || !a.Is4() {
			return bad("icmp:ADDR, an IPv4 address")
		}
		t.Addr = netip.AddrPortFrom(a, 0)
	case TCP:
		ap, err := netip.ParseAddrPort(where)
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			return bad("tcp:ADDR:PORT, an IPv4 address and a port")
		}
		t.Addr = ap
	case DNS:
		ap, err := netip.ParseAddrPort(where)
		if err != nil {
			a, aerr := netip.ParseAddr(where)
			ap, err = netip.AddrPortFrom(a, 53), aerr
		}
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			return bad("dns:ADDR or dns:ADDR:PORT, an IPv4 address")
		}
		t.Addr = ap
	default:
		return bad("icmp:ADDR, tcp:ADDR:PORT or dns:ADDR")
	}
	if a := t.Addr.Addr(); a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return bad("an address a probe can reach beyond the uplink")
	}
	return t, nil
}

// duration reads a duration option in [lo, hi]; def when empty.
func duration(what, s string, def, lo, hi time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s %q must be a duration from %s to %s (1s, 500ms)", what, s, lo, hi)
	}
	return d, nil
}
