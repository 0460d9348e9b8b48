package pool

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
)

// ServiceSpec is an inside server reachable from outside, as written: its
// name, protocol, inside address and ports, and the public address and
// ports it has on each egress entry.
type ServiceSpec struct {
	Name     string `yaml:"name" json:"name"`
	Protocol string `yaml:"protocol" json:"protocol"` // tcp or udp
	// Inside is the server: ADDR:PORT or ADDR:LO-HI.
	Inside string `yaml:"inside" json:"inside"`
	// Public lists the egress entries it is reached through, each EGRESS,
	// EGRESS=ADDR, EGRESS=ADDR:PORTS or EGRESS=:PORTS; the address is by
	// default the entry's one pool address (a small site's uplink address),
	// the ports the inside ones. Empty: every egress entry so.
	Public []string `yaml:"public" json:"public,omitempty"`
}

// Service is a checked service: connections to one of its public
// addresses and ports are sent on to the server.
type Service struct {
	Name     string
	Protocol string // "tcp" or "udp"
	Inside   netip.Addr
	Ports    PortRange // the server's ports
	Public   []ServicePublic
}

// ServicePublic is where a service is reached through one egress entry. A
// range of ports reaches the same ports of the server; a single port may
// reach another.
type ServicePublic struct {
	Egress string
	Addr   netip.Addr
	Ports  PortRange
}

// InsidePort returns the server's port for public port p of pub.
func (s *Service) InsidePort(pub ServicePublic, p uint16) uint16 {
	return s.Ports.Lo + (p - pub.Ports.Lo)
}

// newServices checks the services of a spec against the plan's entries.
func newServices(specs []ServiceSpec, p *Plan) ([]Service, error) {
	var out []Service
	for i, ss := range specs {
		s, err := newService(ss, p)
		if err != nil {
			name := ss.Name
			if name == "" {
				name = fmt.Sprintf("%d", i+1)
			}
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		for _, o := range out {
			if o.Name == s.Name {
				return nil, fmt.Errorf("service name %q is used twice", s.Name)
			}
			if pub, ok := o.clash(s); ok {
				return nil, fmt.Errorf("services %s and %s both take %s %s:%s", o.Name, s.Name, s.Protocol, pub.Addr, pub.Ports.Spec())
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// clash returns where s takes a public port of o, if it does.
func (o *Service) clash(s Service) (ServicePublic, bool) {
	if o.Protocol != s.Protocol {
		return ServicePublic{}, false
	}
	for _, a := range o.Public {
		for _, b := range s.Public {
			if a.Addr == b.Addr && a.Ports.Lo <= b.Ports.Hi && b.Ports.Lo <= a.Ports.Hi {
				return b, true
			}
		}
	}
	return ServicePublic{}, false
}

func newService(ss ServiceSpec, p *Plan) (Service, error) {
	s := Service{Name: ss.Name, Protocol: ss.Protocol}
	if err := checkName("service name", ss.Name); err != nil {
		return s, err
	}
	if s.Protocol != "tcp" && s.Protocol != "udp" {
		return s, fmt.Errorf("protocol %q: want tcp or udp", ss.Protocol)
	}
	addr, ports, ok := strings.Cut(ss.Inside, ":")
	if !ok {
		return s, fmt.Errorf("inside %q: want ADDR:PORT or ADDR:LO-HI", ss.Inside)
	}
	var err error
	if s.Inside, err = ParseAddr(addr); err != nil {
		return s, fmt.Errorf("inside: %w", err)
	}
	if s.Ports, err = ParsePortRange(ports); err != nil {
		return s, fmt.Errorf("inside: %w", err)
	}
	public := ss.Public
	if len(public) == 0 {
		for _, e := range p.Egress {
			public = append(public, e.Name)
		}
	}
	for _, text := range public {
		pub, err := s.public(text, p)
		if err != nil {
			return s, err
		}
		if slices.ContainsFunc(s.Public, func(o ServicePublic) bool { return o.Egress == pub.Egress }) {
			return s, fmt.Errorf("public %q: egress %s is given twice", text, pub.Egress)
		}
		s.Public = append(s.Public, pub)
	}
	return s, nil
}

// public parses one public entry of the service.
func (s *Service) public(text string, p *Plan) (ServicePublic, error) {
	name, where, given := strings.Cut(text, "=")
	e, err := p.EgressNamed(name)
	if err != nil {
		return ServicePublic{}, fmt.Errorf("public %q: %w", text, err)
	}
	pub := ServicePublic{Egress: e.Name, Ports: s.Ports}
	addr, ports, hasPorts := strings.Cut(where, ":")
	if addr == "" {
		if len(e.Pool) != 1 {
			return pub, fmt.Errorf("public %q: egress %s has %d pool addresses: give the service's (%s=ADDR)", text, e.Name, len(e.Pool), e.Name)
		}
		pub.Addr = e.Pool[0].Addr
	} else if pub.Addr, err = ParseAddr(addr); err != nil {
		return pub, fmt.Errorf("public %q: %w", text, err)
	}
	if given && hasPorts {
		if pub.Ports, err = ParsePortRange(ports); err != nil {
			return pub, fmt.Errorf("public %q: %w", text, err)
		}
	}
	if pub.Ports != s.Ports && (pub.Ports.Len() > 1 || s.Ports.Len() > 1) {
		return pub, fmt.Errorf("public %q: ports %s reach inside ports %s: a range reaches the same ports; one port may reach another",
			text, pub.Ports.Spec(), s.Ports.Spec())
	}
	for _, o := range p.Egress {
		if o.Inside.Contains(pub.Addr) {
			return pub, fmt.Errorf("public %q: %s is an inside host of egress %s", text, pub.Addr, o.Name)
		}
	}
	return pub, nil
}

// Spec returns the service as a spec writes it, every public entry in
// full: what a record keeps of it.
func (s *Service) Spec() ServiceSpec {
	ss := ServiceSpec{Name: s.Name, Protocol: s.Protocol, Inside: s.Inside.String() + ":" + s.Ports.Spec()}
	for _, pub := range s.Public {
		ss.Public = append(ss.Public, pub.Egress+"="+pub.Addr.String()+":"+pub.Ports.Spec())
	}
	return ss
}

// Canonical writes the lines that decide the service, for the plan's
// digest.
func (s *Service) Canonical(c *Canonical) {
	c.Line("service", s.Name, s.Protocol, s.Inside, s.Ports)
	for _, pub := range s.Public {
		c.Line("service-public", pub.Egress, pub.Addr, pub.Ports)
	}
}

// serviceAnswers are the answers of the services that have addr as
// public or inside address, on port when hasPort.
func (p *Plan) serviceAnswers(addr netip.Addr, port uint16, hasPort bool) []Answer {
	var out []Answer
	for i := range p.Services {
		s := &p.Services[i]
		for _, pub := range s.Public {
			a := Answer{Kind: ServiceAnswer, Service: s.Name, Protocol: s.Protocol, Egress: pub.Egress,
				Public: pub.Addr, PublicPorts: pub.Ports, Private: s.Inside, Ports: s.Ports}
			switch {
			case addr == pub.Addr && (!hasPort || pub.Ports.Contains(port)):
				if hasPort {
					a.PublicPorts = PortRange{port, port}
					p := s.InsidePort(pub, port)
					a.Ports = PortRange{p, p}
				}
			case addr == s.Inside && (!hasPort || s.Ports.Contains(port)):
			default:
				continue
			}
			out = append(out, a)
		}
	}
	return out
}

// ServiceChange is a service that one plan has and another lacks or has
// otherwise: Change is "added", "removed" or "changed".
type ServiceChange struct {
	Service string
	Change  string
}

// ServiceChurn lists the services a change from old to new adds, removes
// or changes, in new's order and then the removed in old's.
func ServiceChurn(old, new *Plan) []ServiceChange {
	var out []ServiceChange
	named := func(p *Plan, name string) *Service {
		i := slices.IndexFunc(p.Services, func(s Service) bool { return s.Name == name })
		if i < 0 {
			return nil
		}
		return &p.Services[i]
	}
	for _, s := range new.Services {
		switch o := named(old, s.Name); {
		case o == nil:
			out = append(out, ServiceChange{s.Name, "added"})
		case !reflect.DeepEqual(o.Spec(), s.Spec()):
			out = append(out, ServiceChange{s.Name, "changed"})
		}
	}
	for _, s := range old.Services {
		if named(new, s.Name) == nil {
			out = append(out, ServiceChange{s.Name, "removed"})
		}
	}
	return out
}
