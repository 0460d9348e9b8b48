package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// FromInterface is the pool6 value that takes an uplink's public IPv6
// prefix from the global address on its interface, where DHCPv6-PD clients
// put the prefix they are delegated.
const FromInterface = "from-interface"

// NPT is one IPv6 prefix translation of an egress entry: the inside prefix
// is mapped 1:1 to a public prefix of the same length, each host keeping
// its interface identifier (NPTv6, as the kernel's `snat ip6 prefix to`
// does it: statefully, without RFC 6296's checksum neutrality).
type NPT struct {
	Inside netip.Prefix
	// Public is the public prefix; with FromInterface, the one read from
	// the uplink (invalid until it is known).
	Public        netip.Prefix
	FromInterface bool
}

// Out returns the public address of inside host a.
func (n NPT) Out(a netip.Addr) netip.Addr { return mapPrefix(a, n.Public) }

// In returns the inside host of public address a.
func (n NPT) In(a netip.Addr) netip.Addr { return mapPrefix(a, n.Inside) }

// String writes the translation as a spec and record give it:
// INSIDE=PUBLIC, or INSIDE=from-interface.
func (n NPT) String() string {
	if n.FromInterface {
		return n.Inside.String() + "=" + FromInterface
	}
	return n.Inside.String() + "=" + n.Public.String()
}

// mapPrefix returns a with its first to.Bits() bits those of to.
func mapPrefix(a netip.Addr, to netip.Prefix) netip.Addr {
	b, p := a.As16(), to.Addr().As16()
	for i := range 16 {
		keep := byte(0xff) // the bits of a kept in byte i
		switch bits := to.Bits() - 8*i; {
		case bits >= 8:
			keep = 0
		case bits > 0:
			keep = 0xff >> bits
		}
		b[i] = b[i]&keep | p[i]&^keep
	}
	return netip.AddrFrom16(b)
}

// WithPublic returns n with the public prefix of the global address a on
// its uplink: a masked to the inside prefix's length.
func (n NPT) WithPublic(a netip.Addr) NPT {
	n.Public = netip.PrefixFrom(a, n.Inside.Bits()).Masked()
	return n
}

// NPTWith returns the entry's prefix translations with the public prefix
// of a from-interface one taken from its uplink's global IPv6 address in
// addrs (by interface), when there is one.
func (e *Egress) NPTWith(addrs map[string]netip.Addr) []NPT {
	out := slices.Clone(e.NPT)
	for i, n := range out {
		if a, ok := addrs[e.OIF]; ok && n.FromInterface {
			out[i] = n.WithPublic(a)
		}
	}
	return out
}

// setNPT checks the entry's IPv6 prefixes: private6, and pool6, a prefix
// of the same length for each (or from-interface for one).
func (e *Egress) setNPT(es EgressSpec) error {
	if len(es.Private6) == 0 && len(es.Pool6) == 0 {
		return nil
	}
	var inside []netip.Prefix
	for _, s := range es.Private6 {
		p, err := parsePrefix6("private6", s)
		if err != nil {
			return err
		}
		for _, q := range inside {
			if q.Overlaps(p) {
				return fmt.Errorf("private6 %q overlaps %s", s, q)
			}
		}
		inside = append(inside, p)
	}
	if len(inside) == 0 {
		return fmt.Errorf("pool6 without private6: give the inside IPv6 prefixes")
	}
	if len(es.Pool6) == 1 && es.Pool6[0] == FromInterface {
		if e.OIF == "" || strings.HasSuffix(e.OIF, "*") {
			return fmt.Errorf("pool6 %s reads the uplink's address: give oif, one interface", FromInterface)
		}
		if len(inside) > 1 {
			return fmt.Errorf("pool6 %s takes one prefix from the uplink: give one private6 prefix, not %d", FromInterface, len(inside))
		}
		e.NPT = []NPT{{Inside: inside[0], FromInterface: true}}
		return nil
	}
	if len(es.Pool6) != len(inside) {
		return fmt.Errorf("%d private6 prefixes and %d pool6 prefixes: give one public prefix for each (or pool6: %s)", len(inside), len(es.Pool6), FromInterface)
	}
	for i, s := range es.Pool6 {
		p, err := parsePrefix6("pool6", s)
		if err != nil {
			return err
		}
		if p.Bits() != inside[i].Bits() {
			return fmt.Errorf("pool6 %q is a /%d for private6 %s, a /%d: a prefix maps 1:1 to one of the same length", s, p.Bits(), inside[i], inside[i].Bits())
		}
		for _, q := range inside {
			if q.Overlaps(p) {
				return fmt.Errorf("pool6 %q overlaps private6 %s", s, q)
			}
		}
		e.NPT = append(e.NPT, NPT{Inside: inside[i], Public: p})
	}
	return nil
}

// parsePrefix6 parses an IPv6 prefix of a list named what.
func parsePrefix6(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, fmt.Errorf("%s %q is not an IPv6 prefix", what, s)
	case p.Addr().Is4():
		return p, fmt.Errorf("%s %q is IPv4 in a list of IPv6 prefixes: IPv4 goes in %s", what, s, strings.TrimSuffix(what, "6"))
	case p != p.Masked():
		return p, fmt.Errorf("%s %q has host bits set: the prefix is %s", what, s, p.Masked())
	case p.Bits() == 0 || p.Bits() > 64:
		return p, fmt.Errorf("%s %q: a prefix of /1 to /64 keeps each host's interface identifier", what, s)
	}
	return p, nil
}

// NPTAnswers answers for an IPv6 address: the hosts of entries whose inside
// or (known) public prefix holds it, both ways.
func (p *Plan) NPTAnswers(a netip.Addr, egress string) []Answer {
	var out []Answer
	for _, e := range p.Egress {
		if egress != "" && e.Name != egress {
			continue
		}
		for _, n := range e.NPT {
			ans := Answer{Kind: PrefixAnswer, Egress: e.Name, NPT: n}
			switch {
			case n.Inside.Contains(a):
				ans.Private = a
				if n.Public.IsValid() {
					ans.Public = n.Out(a)
				}
			case n.Public.IsValid() && n.Public.Contains(a):
				ans.Private, ans.Public = n.In(a), a
			default:
				continue
			}
			out = append(out, ans)
		}
	}
	return out
}
