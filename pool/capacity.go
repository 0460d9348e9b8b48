package pool

import (
	"fmt"
	"math"
)

// Demand is the traffic a capacity report plans for.
type Demand struct {
	// SessionsPerHost is the concurrent connections of one inside host.
	SessionsPerHost float64
	// SameDestinationShare is the share of a host's connections that go to
	// one destination (address, port, protocol): the busiest one, which is
	// what exhausts ports first.
	SameDestinationShare float64
	// Target is the utilisation to plan for, above 0 and at most 1.
	Target float64
}

// DefaultDemand is a planning figure for a NAT of client hosts: 100
// concurrent connections each, a tenth of them to one destination, at most
// 80% of the ports in use.
var DefaultDemand = Demand{SessionsPerHost: 100, SameDestinationShare: 0.1, Target: 0.8}

// Check refuses a demand that means nothing.
func (d Demand) Check() error {
	switch {
	case math.IsInf(d.SessionsPerHost, 0):
		return fmt.Errorf("sessions-per-host %v must be a finite number", d.SessionsPerHost)
	case !(d.SessionsPerHost > 0):
		return fmt.Errorf("sessions-per-host %v must be above 0", d.SessionsPerHost)
	case !(d.SameDestinationShare > 0 && d.SameDestinationShare <= 1):
		return fmt.Errorf("same-destination-share %v must be above 0 and at most 1", d.SameDestinationShare)
	case !(d.Target > 0 && d.Target <= 1):
		return fmt.Errorf("target %v must be above 0 and at most 1", d.Target)
	}
	return nil
}

// perHost is the connections of one host to its busiest destination.
func (d Demand) perHost() float64 { return d.SessionsPerHost * d.SameDestinationShare }

// Capacity is the port budget of one egress entry under a demand.
//
// Linux picks a source port so that the whole 5-tuple stays unique: the
// connections of all hosts behind one public address to one destination
// share the address's port range. In block mode each host has its block to
// itself, for every destination.
type Capacity struct {
	Egress   string
	Strategy Strategy
	Ports    PortRange
	// BlockSize is the ports of each host's block, 0 outside block mode.
	BlockSize int
	Public    []PublicCapacity
	// MaxUtilisation is the highest utilisation of any public address.
	MaxUtilisation float64
	// AddressesNeeded is how many public addresses keep every address at
	// or below the target utilisation.
	AddressesNeeded int
}

// PublicCapacity is one public address's port budget.
type PublicCapacity struct {
	PublicLoad
	Demand      float64 // connections to one destination that share a port range
	Budget      int     // ports that range holds
	Utilisation float64 // Demand / Budget
	Headroom    float64 // Budget - Demand
}

// Capacity reports the port budget of every egress entry under d.
func (p *Plan) Capacity(d Demand) []Capacity {
	var out []Capacity
	for _, e := range p.Egress {
		out = append(out, e.capacity(d))
	}
	return out
}

func (e *Egress) capacity(d Demand) Capacity {
	r := e.report()
	c := Capacity{Egress: e.Name, Strategy: e.Strategy, Ports: e.Ports}
	block, isBlock := e.Mapping.(*BlockMapping)
	if isBlock {
		c.BlockSize = block.BlockSize
	}
	for _, pl := range r.Public {
		pc := PublicCapacity{PublicLoad: pl, Budget: e.Ports.Len(), Demand: float64(pl.Hosts) * d.perHost()}
		if isBlock {
			// Each host's connections to one destination share its block.
			pc.Budget, pc.Demand = block.BlockSize, 0
			if pl.Hosts > 0 {
				pc.Demand = d.perHost()
			}
		}
		pc.Utilisation = pc.Demand / float64(pc.Budget)
		pc.Headroom = float64(pc.Budget) - pc.Demand
		c.MaxUtilisation = max(c.MaxUtilisation, pc.Utilisation)
		c.Public = append(c.Public, pc)
	}
	usable := d.Target * float64(e.Ports.Len()) // ports one address may have in use per destination
	if isBlock {
		// Hosts per address such that each block still holds the demand.
		perAddr := math.Floor(usable / d.perHost())
		c.AddressesNeeded = -1 // no block size can carry it
		if perAddr >= 1 {
			c.AddressesNeeded = int(math.Ceil(float64(block.space()) / perAddr))
		}
	} else {
		c.AddressesNeeded = int(math.Ceil(float64(r.Hosts) * d.perHost() / usable))
	}
	return c
}
