package pool

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"

	"go4.org/netipx"
)

// AnswerKind tells which question an Answer answers.
type AnswerKind int

// The kinds of lookup.
const (
	Forward   AnswerKind = iota // inside host -> public address (and ports)
	Reverse                     // public address -> the inside hosts it carries
	PortOwner                   // public address and port -> the one inside host (block strategy)
	NoMapping                   // the address has no mapping: Reason says why
	// ServiceAnswer is a service with the address as its public (and the
	// port among its ports) or inside address.
	ServiceAnswer
	// PrefixAnswer is an IPv6 host of an entry's prefix translation, NPT:
	// Private inside and Public (invalid while the prefix is not known).
	PrefixAnswer
)

// Answer is what one egress entry says about a looked-up address.
type Answer struct {
	Egress  string
	Kind    AnswerKind
	Private netip.Addr // Forward: the host asked; PortOwner: the owner, invalid if none
	Public  netip.Addr
	Ports   PortRange        // Forward: the ports the host's connections leave from
	Port    uint16           // PortOwner: the port asked
	Hosts   uint64           // Reverse: how many hosts
	Ranges  []netipx.IPRange // Reverse: the hosts, as ascending ranges
	Query   netip.Addr       // NoMapping: the address asked
	Reason  string           // NoMapping: why it has none
	// Nodes are the nodes of the plan's cluster that serve Public, owner
	// first, then the backups in turn; nil for a single box.
	Nodes []string
	// Uplink is, for a forward answer of a site's uplink, its rank among
	// the host's uplinks (1: the first), and InUse whether the host leaves
	// by it (by its first while all are up; see UplinksIn); 0 otherwise.
	Uplink int
	InUse  bool
	// Service names the service of a ServiceAnswer, with its Protocol and
	// PublicPorts (Public is its address, Private and Ports the server's).
	Service     string
	Protocol    string
	PublicPorts PortRange
	// NPT is the prefix translation of a PrefixAnswer.
	NPT NPT
}

// Lookup answers for "ADDR" or "ADDR:PORT" from every egress entry that knows
// the address, or only from the entry named egress when it is not empty. An
// address the plan maps nowhere gets one NoMapping answer saying why; an
// error is a question that cannot be asked (a bad address, a port lookup
// of an inside host or outside block mode).
func (p *Plan) Lookup(query, egress string) ([]Answer, error) {
	addr, port, hasPort, err := ParseQuery(query)
	if err != nil {
		return nil, err
	}
	if addr.Is6() {
		if egress != "" {
			if _, err := p.EgressNamed(egress); err != nil {
				return nil, err
			}
		}
		if answers := p.NPTAnswers(addr, egress); len(answers) > 0 {
			return answers, nil
		}
		return []Answer{{Kind: NoMapping, Query: addr, Reason: "in no private6 or pool6 prefix of the plan"}}, nil
	}
	var firstErr error
	reason := "neither an inside host nor a public address of the plan"
	if egress != "" {
		if _, err := p.EgressNamed(egress); err != nil {
			return nil, err
		}
	}
	answers := slices.DeleteFunc(p.serviceAnswers(addr, port, hasPort), func(a Answer) bool { return egress != "" && a.Egress != egress })
	if hasPort && len(answers) > 0 {
		// A service's port: the server, whatever the strategy says of
		// the address's other ports.
		return answers, nil
	}
	for _, e := range p.Egress {
		if egress != "" && e.Name != egress {
			continue
		}
		a, ok, err := e.lookup(addr, port, hasPort)
		switch {
		case err != nil && firstErr == nil:
			firstErr = err
		case ok && a.Kind == NoMapping:
			reason = a.Reason
		case ok:
			if p.Cluster != nil && a.Public.IsValid() {
				a.Nodes = p.Cluster.NodeNames(p.Cluster.Order(a.Public))
			}
			if u := p.Uplinks; u != nil && a.Kind == Forward {
				if m := u.MemberNamed(e.Name); m >= 0 {
					a.Uplink = slices.Index(u.OrderOf(a.Private), m) + 1
					a.InUse = u.MemberOf(a.Private, u.AllUp()) == m
				}
			}
			answers = append(answers, a)
		}
	}
	switch {
	case len(answers) > 0:
		return answers, nil
	case firstErr != nil:
		return nil, firstErr
	}
	return []Answer{{Kind: NoMapping, Query: addr, Reason: reason}}, nil
}

// EgressNamed returns the egress entry of that name.
func (p *Plan) EgressNamed(name string) (*Egress, error) {
	for _, e := range p.Egress {
		if e.Name == name {
			return e, nil
		}
	}
	return nil, fmt.Errorf("no egress entry is named %q", name)
}

// lookup answers for addr (and port) if this entry knows addr; ok is false
// when addr is none of its business.
func (e *Egress) lookup(addr netip.Addr, port uint16, hasPort bool) (Answer, bool, error) {
	x := Uint32(addr)
	a := Answer{Egress: e.Name}
	if i, public := e.index[x]; public {
		a.Public = addr
		if hasPort {
			return e.portOwner(a, port)
		}
		a.Kind = Reverse
		a.Ranges, a.Hosts = e.hostsOf(i)
		return a, true, nil
	}
	if e.Inside.Contains(addr) {
		if hasPort {
			return a, false, fmt.Errorf("%s is an inside host: a port lookup takes a public address", addr)
		}
		h, ok := e.Host(addr)
		if !ok {
			m := e.Mapping.(*OctetMapping)
			a.Kind, a.Reason = NoMapping, fmt.Sprintf("its value %d lies outside octets %s", x&m.Mask(), m.Span())
			return a, true, nil
		}
		a.Kind, a.Private, a.Public, a.Ports = Forward, addr, h.Public, h.Ports
		return a, true, nil
	}
	for _, r := range e.Private {
		if r.Contains(addr) {
			a.Kind, a.Reason = NoMapping, "an excluded inside host"
			return a, true, nil
		}
	}
	return a, false, nil
}

func (e *Egress) portOwner(a Answer, port uint16) (Answer, bool, error) {
	b, ok := e.Mapping.(*BlockMapping)
	if !ok {
		return a, false, fmt.Errorf("%s:%d: port lookups need the block strategy (egress %s uses %s)", a.Public, port, e.Name, e.Strategy)
	}
	a.Kind, a.Port = PortOwner, port
	if h, ok := b.Owner(e.index[Uint32(a.Public)], port); ok && e.Inside.Contains(h) {
		a.Private = h
	}
	return a, true, nil
}

// hostsOf returns the inside hosts carried by Pool[i], as ascending ranges,
// and how many there are.
func (e *Egress) hostsOf(i int) ([]netipx.IPRange, uint64) {
	var list rangeList
	var n uint64
	e.eachMapped(func(x uint32, owner int) {
		if owner == i {
			n++
			list.add(x)
		}
	})
	list.close()
	return list.ranges, n
}

// Host is a mapped inside host with the public address and the ports its
// connections leave from.
type Host struct {
	Addr, Public netip.Addr
	Ports        PortRange
}

// Hosts returns every mapped inside host, ascending. They are made as they
// are read: a /8 is never held.
func (e *Egress) Hosts() iter.Seq[Host] {
	return func(yield func(Host) bool) {
		b, isBlock := e.Mapping.(*BlockMapping)
		if !isBlock {
			for _, s := range e.inside {
				for x := s.lo; ; x++ {
					if i := e.Mapping.owner(x); i >= 0 && !yield(Host{AddrFromUint32(x), e.Pool[i].Addr, e.Ports}) {
						return
					}
					if x == s.hi {
						break
					}
				}
			}
			return
		}
		// Block mode: along a group's addresses each host's block follows
		// the one before; the inside spans leave out excluded hosts.
		k := 0
		for r, g := range b.GroupRanges() {
			lo, hi := Uint32(r.From()), Uint32(r.To())
			first := b.HostPorts(lo)
			size := uint32(first.Len())
			for ; k < len(e.inside) && e.inside[k].hi < lo; k++ {
			}
			for j := k; j < len(e.inside) && e.inside[j].lo <= hi; j++ {
				for x := max(lo, e.inside[j].lo); ; x++ {
					port := uint32(first.Lo) + (x-lo)*size
					if !yield(Host{AddrFromUint32(x), e.Pool[g].Addr, PortRange{uint16(port), uint16(port + size - 1)}}) {
						return
					}
					if x == min(hi, e.inside[j].hi) {
						break
					}
				}
			}
		}
	}
}

// Gives reports whether the plan translates host to public (and, in block
// mode, to a port of host's block): whether a connection that left so is one
// the plan still makes. A host may leave through several egress entries (two
// uplinks); any of them may give it.
func (p *Plan) Gives(host, public netip.Addr, port uint16) bool {
	for _, e := range p.Egress {
		h, ok := e.Host(host)
		if !ok || h.Public != public {
			continue
		}
		if _, block := e.Mapping.(*BlockMapping); block && !h.Ports.Contains(port) {
			continue
		}
		return true
	}
	return false
}

// Host returns the mapping of inside address addr: its public address and
// the ports its connections leave from; false if the entry maps no such
// host (not inside, excluded, or for octet a value outside the octets).
func (e *Egress) Host(addr netip.Addr) (Host, bool) {
	if !e.Inside.Contains(addr) {
		return Host{}, false
	}
	x := Uint32(addr)
	i := e.Mapping.owner(x)
	if i < 0 {
		return Host{}, false
	}
	h := Host{addr, e.Pool[i].Addr, e.Ports}
	if b, ok := e.Mapping.(*BlockMapping); ok {
		h.Ports = b.HostPorts(x)
	}
	return h, true
}

// Carries reports whether public is an address of the entry's pool.
func (e *Egress) Carries(public netip.Addr) bool {
	_, ok := e.index[Uint32(public)]
	return ok
}
