package compiler

import (
	"fmt"
	"net/netip"
	"slices"

	"go4.org/netipx"

	"github.com/natpool/natpool/pool"
)

// ServiceChain is the chain of natpool's table that sends connections to a
// service's public address and ports on to its server.
const ServiceChain = "services"

// Forward is a rule of the services chain: a new TCP or UDP connection to
// Public at PublicPorts is sent on to Inside, at Port when set (a single
// port reaching another), else at the same port. A Mark, set when the
// entry is an uplink of a site, is kept on the connection (its ct mark):
// the uplink chain puts it on the server's replies, and natpool's policy
// rules send them out by the uplink the connection came through.
type Forward struct {
	Service  string
	Egress   string
	Protocol string // "tcp" or "udp"
	Public   ServicePort
	Inside   ServicePort
	Mark     uint32
}

// ServicePort is an address and a range of ports of a service.
type ServicePort struct {
	Addr  netip.Addr
	Ports pool.PortRange
}

// Hairpin is a rule of the NAT chain, before the egress entries', for
// inside hosts that reach a service by its public address: their
// connection, sent on to the server, leaves with the box's own address on
// the server's side, so that the server answers through the box, which
// turns the answer back, instead of straight to a host it believes is a
// neighbour (which drops it).
type Hairpin struct {
	Service  string
	Sources  []netipx.IPRange // every inside host of the plan
	Protocol string
	Inside   ServicePort
}

// Port returns the server's port a forward sends to, 0 for the same.
func (f Forward) Port() uint16 {
	if f.Inside.Ports == f.Public.Ports {
		return 0
	}
	return f.Inside.Ports.Lo
}

// services compiles the plan's services into rs.
func services(rs *Ruleset, p *pool.Plan) {
	if len(p.Services) == 0 {
		return
	}
	var inside netipx.IPSetBuilder
	for _, e := range p.Egress {
		inside.AddSet(e.Inside)
	}
	sources, _ := inside.IPSet()
	for _, s := range p.Services {
		server := ServicePort{s.Inside, s.Ports}
		for _, pub := range s.Public {
			f := Forward{Service: s.Name, Egress: pub.Egress, Protocol: s.Protocol,
				Public: ServicePort{pub.Addr, pub.Ports}, Inside: server}
			if u := p.Uplinks; u != nil {
				if m := u.MemberNamed(pub.Egress); m >= 0 {
					f.Mark = u.MemberMark(m)
				}
			}
			rs.Forwards = append(rs.Forwards, f)
		}
		rs.Hairpins = append(rs.Hairpins, Hairpin{Service: s.Name, Sources: sources.Ranges(), Protocol: s.Protocol, Inside: server})
	}
}

// ReplyMarks returns the marks of the uplinks some service is reached
// through, ascending: the uplink chain marks the replies of their
// connections.
func (rs *Ruleset) ReplyMarks() []uint32 {
	var marks []uint32
	for _, f := range rs.Forwards {
		marks = append(marks, f.Mark)
	}
	return uniqueMarks(marks)
}

// uniqueMarks returns the marks that are set (not 0), ascending, once each.
func uniqueMarks(marks []uint32) []uint32 {
	slices.Sort(marks)
	return slices.DeleteFunc(slices.Compact(marks), func(m uint32) bool { return m == 0 })
}

// ServiceComment is the stamp on a rule of the services chain.
func (rs *Ruleset) ServiceComment(f Forward) string {
	return fmt.Sprintf("%s%s service %s %s", stampPrefix, rs.Digest, f.Service, f.Egress)
}

// ServicesComment is the stamp on the steer chain's rule that leaves the
// services' replies unsteered.
func (rs *Ruleset) ServicesComment() string {
	return fmt.Sprintf("%s%s service replies", stampPrefix, rs.Digest)
}

// HairpinComment is the stamp on a hairpin rule of the NAT chain.
func (rs *Ruleset) HairpinComment(h Hairpin) string {
	return fmt.Sprintf("%s%s hairpin %s", stampPrefix, rs.Digest, h.Service)
}
