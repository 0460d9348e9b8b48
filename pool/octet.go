package pool

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// OctetMapping is the eduroam u32 scheme, generalised: the low Bits bits of an
// inside address are its value, and Pool[i] carries the hosts whose value
// lies in Values[i]. The ranges are contiguous and ascending in pool order;
// hosts whose value lies outside all of them are not mapped.
type OctetMapping struct {
	Bits   int
	Values []ValueRange
	owners []int32 // value -> Pool index, -1 outside every range
}

// ValueRange is an inclusive range of low-bit values.
type ValueRange struct{ Lo, Hi uint32 }

// Len returns the number of values in the range.
func (v ValueRange) Len() uint32 { return v.Hi - v.Lo + 1 }

// String formats the range as "LO-HI".
func (v ValueRange) String() string { return fmt.Sprintf("%d-%d", v.Lo, v.Hi) }

// parseValueRange reads LO-HI, or one value, within 0-max.
func parseValueRange(s string, max uint32) (ValueRange, bool) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		hi = lo
	}
	a, errA := strconv.ParseUint(lo, 10, 32)
	b, errB := strconv.ParseUint(hi, 10, 32)
	if errA != nil || errB != nil || a > b || b > uint64(max) {
		return ValueRange{}, false
	}
	return ValueRange{uint32(a), uint32(b)}, true
}

// Mask returns the mask that extracts the value from an address.
func (m *OctetMapping) Mask() uint32 { return 1<<m.Bits - 1 }

func (m *OctetMapping) owner(x uint32) int { return int(m.owners[x&m.Mask()]) }

func (m *OctetMapping) describe(n int) []string {
	out := make([]string, n)
	for i, v := range m.Values {
		out[i] = "values " + v.String()
	}
	return out
}

// Span returns the whole value range the mapping covers.
func (m *OctetMapping) Span() ValueRange {
	return ValueRange{m.Values[0].Lo, m.Values[len(m.Values)-1].Hi}
}

// newOctetMapping cuts the value range by weight or, given a hosts file, so
// that the active hosts of each address per unit of weight are as even as
// contiguous cuts allow; it then counts the active hosts of each address.
func newOctetMapping(e *Egress, bitsOpt, octetsOpt string, warnings *[]string) (*OctetMapping, error) {
	m := &OctetMapping{Bits: 8}
	if bitsOpt != "" {
		n, err := strconv.Atoi(bitsOpt)
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("bits %q must be 1-16", bitsOpt)
		}
		m.Bits = n
	}
	span := ValueRange{0, m.Mask()}
	if octetsOpt != "" {
		v, ok := parseValueRange(octetsOpt, m.Mask())
		if !ok {
			return nil, fmt.Errorf("octets %q must be LO-HI within %s", octetsOpt, span)
		}
		span = v
	}
	if uint64(len(e.Pool)) > uint64(span.Len()) {
		return nil, fmt.Errorf("a pool of %d addresses is larger than the %d values of octets %s", len(e.Pool), span.Len(), span)
	}
	weights := make([]uint64, len(e.Pool))
	for i, p := range e.Pool {
		weights[i] = uint64(p.Weight)
	}
	var sizes []uint64
	var active []uint64 // active hosts per value
	if e.hosts != nil {
		active = e.hosts.countBy(int(m.Mask())+1, func(x uint32) int { return int(x & m.Mask()) })
		sizes = balancedCuts(active[span.Lo:span.Hi+1], weights)
	} else {
		sizes = apportion(uint64(span.Len()), weights)
	}
	lo := span.Lo
	for _, n := range sizes {
		m.Values = append(m.Values, ValueRange{lo, lo + uint32(n) - 1})
		lo += uint32(n)
	}
	m.setOwners()
	if err := m.checkCoverage(e, warnings); err != nil {
		return nil, err
	}
	if active != nil {
		e.Active = make([]uint64, len(e.Pool))
		for v, n := range active {
			if i := m.owners[v]; i >= 0 {
				e.Active[i] += n
			}
		}
	}
	return m, nil
}

// setOwners indexes the value ranges by value.
func (m *OctetMapping) setOwners() {
	m.owners = make([]int32, m.Mask()+1)
	for i := range m.owners {
		m.owners[i] = -1
	}
	for i, v := range m.Values {
		for x := v.Lo; x <= v.Hi; x++ {
			m.owners[x] = int32(i)
		}
	}
}

// checkCoverage refuses a mapping that maps no inside host, and warns of
// public addresses whose values no inside host has (--bits 16 on a /24).
func (m *OctetMapping) checkCoverage(e *Egress, warnings *[]string) error {
	values := uint64(m.Mask()) + 1
	hosts := make([]uint64, values) // inside hosts per value
	for _, s := range e.inside {
		whole := s.size() / values // full cycles of every value
		for v := range hosts {
			hosts[v] += whole
		}
		for x := s.lo + uint32(whole*values); whole*values < s.size(); x++ {
			hosts[x&m.Mask()]++
			if x == s.hi {
				break
			}
		}
	}
	idle, mapped := 0, uint64(0)
	for _, v := range m.Values {
		n := uint64(0)
		for x := v.Lo; x <= v.Hi; x++ {
			n += hosts[x]
		}
		if n == 0 {
			idle++
		}
		mapped += n
	}
	switch {
	case mapped == 0:
		return fmt.Errorf("octets %s match no inside host: with bits %d, the inside hosts' values lie elsewhere", m.Span(), m.Bits)
	case idle > 0:
		*warnings = append(*warnings, fmt.Sprintf("egress %s: %d of %d public addresses carry no inside host: no inside host has their values (bits %d, octets %s)",
			e.Name, idle, len(e.Pool), m.Bits, m.Span()))
	}
	return nil
}

// apportion splits total into len(weights) parts proportional to the weights
// by largest remainder (ties to the earlier part), every part at least 1:
// with equal weights the parts differ by at most one. total >= len(weights).
func apportion(total uint64, weights []uint64) []uint64 {
	var sum uint64
	for _, w := range weights {
		sum += w
	}
	parts := make([]uint64, len(weights))
	order := make([]int, len(weights))
	given := uint64(0)
	for i, w := range weights {
		parts[i] = total * w / sum
		given += parts[i]
		order[i] = i
	}
	rem := func(i int) uint64 { return total * weights[i] % sum }
	slices.SortStableFunc(order, func(a, b int) int {
		ra, rb := rem(a), rem(b)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	for _, i := range order[:total-given] {
		parts[i]++
	}
	for i := range parts {
		if parts[i] == 0 { // a tiny weight still gets one value
			parts[slices.Index(parts, slices.Max(parts))]--
			parts[i] = 1
		}
	}
	return parts
}

// balancedCuts cuts loads, in order, into len(weights) non-empty contiguous
// parts so that the largest load per unit of weight is as small as possible.
func balancedCuts(loads, weights []uint64) []uint64 {
	var total uint64
	for _, l := range loads {
		total += l
	}
	minW := slices.Min(weights)
	lo, hi := 0.0, float64(total)/float64(minW)
	for range 100 { // bisection on the largest load per weight
		mid := (lo + hi) / 2
		if cutAt(loads, weights, mid) != nil {
			hi = mid
		} else {
			lo = mid
		}
		if hi-lo < 1e-9*hi {
			break
		}
	}
	return cutAt(loads, weights, hi)
}

// cutAt cuts greedily, each part as long as its load stays within limit times
// its weight while leaving a value for every later part; nil if it cannot.
func cutAt(loads, weights []uint64, limit float64) []uint64 {
	sizes := make([]uint64, len(weights))
	pos := 0
	for i, w := range weights {
		capacity := limit * float64(w)
		last := len(loads) - (len(weights) - i - 1) // values this part may reach
		load := float64(loads[pos])
		if load > capacity {
			return nil
		}
		end := pos + 1
		for end < last && load+float64(loads[end]) <= capacity {
			load += float64(loads[end])
			end++
		}
		sizes[i] = uint64(end - pos)
		pos = end
	}
	if pos != len(loads) {
		return nil
	}
	return sizes
}

var octetKind = StrategyKind{
	Name:    Octet,
	Options: []string{"hosts", "bits", "octets"},
	plan: func(e *Egress, es EgressSpec, warnings *[]string) (Mapping, error) {
		return newOctetMapping(e, es.Bits, es.Octets, warnings)
	},
	restore: func(e *Egress, er EgressRecord) (Mapping, error) {
		if er.Octet == nil {
			return nil, fmt.Errorf("strategy octet without its pins")
		}
		return er.Octet.mapping(len(e.Pool))
	},
}

func (m *OctetMapping) settings() []Setting {
	return []Setting{{"bits", fmt.Sprint(m.Bits)}, {"octets", m.Span().String()}}
}

func (m *OctetMapping) pin(er *EgressRecord) {
	er.Octet = &OctetPins{Bits: m.Bits}
	for _, v := range m.Values {
		er.Octet.Values = append(er.Octet.Values, v.String())
	}
}

func (m *OctetMapping) canonical(e *Egress, c *Canonical) {
	c.Line("octet", m.Bits)
	for i, v := range m.Values {
		c.Line("values", v, e.Pool[i].Addr)
	}
}

// OctetPins are the value ranges of an octet mapping, one per pool address.
type OctetPins struct {
	Bits   int      `json:"bits"`
	Values []string `json:"values"`
}

func (o *OctetPins) mapping(n int) (*OctetMapping, error) {
	if o.Bits < 1 || o.Bits > 16 || len(o.Values) != n {
		return nil, fmt.Errorf("octet: %d bits and %d value ranges for %d addresses", o.Bits, len(o.Values), n)
	}
	m := &OctetMapping{Bits: o.Bits}
	for _, s := range o.Values {
		v, ok := parseValueRange(s, m.Mask())
		if !ok {
			return nil, fmt.Errorf("octet: value range %q", s)
		}
		m.Values = append(m.Values, v)
	}
	m.setOwners()
	return m, nil
}
