package pool

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// span is an inclusive range of IPv4 addresses held as integers: the planner's
// per-host loops run over these rather than over netip.Addr values.
type span struct{ lo, hi uint32 }

func (s span) size() uint64 { return uint64(s.hi-s.lo) + 1 }

func (s span) ipRange() netipx.IPRange {
	return netipx.IPRangeFrom(AddrFromUint32(s.lo), AddrFromUint32(s.hi))
}

func spanOf(r netipx.IPRange) span { return span{Uint32(r.From()), Uint32(r.To())} }

// spansOf converts the ranges of an IPv4 set.
func spansOf(s *netipx.IPSet) []span {
	rs := s.Ranges()
	out := make([]span, len(rs))
	for i, r := range rs {
		out[i] = spanOf(r)
	}
	return out
}

// each calls fn for every address of the spans, in order.
func each(spans []span, fn func(x uint32)) {
	for _, s := range spans {
		for x := s.lo; ; x++ {
			fn(x)
			if x == s.hi {
				break
			}
		}
	}
}

// rangeList gathers ascending addresses into ranges of consecutive ones.
type rangeList struct {
	ranges []netipx.IPRange
	cur    span
	open   bool
}

func (l *rangeList) add(x uint32) {
	if l.open && x == l.cur.hi+1 {
		l.cur.hi = x
		return
	}
	l.close()
	l.cur, l.open = span{x, x}, true
}

// close ends the open range; call it before reading ranges.
func (l *rangeList) close() {
	if l.open {
		l.ranges = append(l.ranges, l.cur.ipRange())
		l.open = false
	}
}

func countOf(spans []span) uint64 {
	var n uint64
	for _, s := range spans {
		n += s.size()
	}
	return n
}

// Uint32 returns an IPv4 address as a number, for arithmetic on addresses.
func Uint32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// AddrFromUint32 returns the IPv4 address of a number; see Uint32.
func AddrFromUint32(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// ParseAddr parses one IPv4 address, refusing IPv6 with a message that says so.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", s)
	case !a.Is4():
		return netip.Addr{}, fmt.Errorf("%q is IPv6: natpool maps IPv4 only", s)
	}
	return a, nil
}

// ParseRange parses an IPv4 address, prefix ("10.16.0.0/12") or range
// ("10.16.0.1-10.16.0.9") into the range of addresses it covers.
func ParseRange(s string) (netipx.IPRange, error) {
	r, why := parseRange(s)
	if why != "" {
		return netipx.IPRange{}, fmt.Errorf("%q %s", s, why)
	}
	return r, nil
}

// parseRange returns the range, or why s is not one.
func parseRange(s string) (netipx.IPRange, string) {
	addr := func(s string) (netip.Addr, string) {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			return a, "is not an IPv4 address, prefix or range"
		case !a.Is4():
			return a, "is IPv6 in a list of IPv4: IPv6 prefixes go in private6 and pool6"
		}
		return a, ""
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, why := addr(from)
		if why != "" {
			return netipx.IPRange{}, why
		}
		b, why := addr(to)
		if why != "" {
			return netipx.IPRange{}, why
		}
		if b.Less(a) {
			return netipx.IPRange{}, "ends before it starts"
		}
		return netipx.IPRangeFrom(a, b), ""
	}
	host, bits, isPrefix := strings.Cut(s, "/")
	a, why := addr(host)
	if why != "" {
		return netipx.IPRange{}, why
	}
	if !isPrefix {
		return netipx.IPRangeFrom(a, a), ""
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > 32 {
		return netipx.IPRange{}, "has a prefix length outside 0-32"
	}
	p := netip.PrefixFrom(a, n)
	if p.Masked() != p {
		return netipx.IPRange{}, fmt.Sprintf("has host bits set (did you mean %s?)", p.Masked())
	}
	return netipx.RangeOfPrefix(p), ""
}

// PortRange is an inclusive range of transport ports.
type PortRange struct{ Lo, Hi uint16 }

// DefaultPorts is the range Linux itself uses for unprivileged source ports.
var DefaultPorts = PortRange{1024, 65535}

// Len returns the number of ports in the range.
func (p PortRange) Len() int { return int(p.Hi) - int(p.Lo) + 1 }

// Contains reports whether port lies in the range.
func (p PortRange) Contains(port uint16) bool { return p.Lo <= port && port <= p.Hi }

// String formats the range as "LO-HI".
func (p PortRange) String() string { return fmt.Sprintf("%d-%d", p.Lo, p.Hi) }

// Spec writes the range as a spec gives it: a single port alone, else
// "LO-HI".
func (p PortRange) Spec() string {
	if p.Lo == p.Hi {
		return strconv.Itoa(int(p.Lo))
	}
	return p.String()
}

// ParsePortRange parses "LO-HI" (or a single port) within 1-65535.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		hi = lo
	}
	a, okA := parsePort(lo)
	b, okB := parsePort(hi)
	if !okA || !okB {
		return PortRange{}, fmt.Errorf("port range %q is not LO-HI within 1-65535", s)
	}
	if b < a {
		return PortRange{}, fmt.Errorf("port range %q is empty", s)
	}
	return PortRange{a, b}, nil
}

// parsePort parses a port, 1-65535, in decimal without a leading zero
// (which some tools read as octal).
func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil && n > 0 && s[0] != '0'
}

// ParseQuery parses a lookup argument: "ADDR" or "ADDR:PORT" (IPv4), or
// an IPv6 address, which IPv6 prefix translations answer.
func ParseQuery(s string) (addr netip.Addr, port uint16, hasPort bool, err error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		return a, 0, false, nil
	}
	host, p, ok := strings.Cut(s, ":")
	if addr, err = ParseAddr(host); err != nil {
		return netip.Addr{}, 0, false, err
	}
	if !ok {
		return addr, 0, false, nil
	}
	port, ok = parsePort(p)
	if !ok {
		return netip.Addr{}, 0, false, fmt.Errorf("port %q in %q is not 1-65535", p, s)
	}
	return addr, port, true, nil
}
