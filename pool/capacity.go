package pool

import (
	"fmt"
	"math"
	"net/netip"

	"go4.org/netipx"
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
	// Blocks are the smallest and largest port block of a host, zero
	// outside block mode.
	Blocks [2]int
	Public []PublicCapacity
	// MaxUtilisation is the highest utilisation of any public address.
	MaxUtilisation float64
	// AddressesNeeded is how many public addresses keep every address at
	// or below the target utilisation, found by planning the entry again
	// with a pool of that size (the pool, then the addresses after it), so
	// that the strategy's real spread and block layout count; -1 when no
	// pool can (a block cannot hold the demand).
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
		out = append(out, e.capacity(d, true))
	}
	return out
}

// NodeCapacity shares the port budgets caps, of this plan under d, among
// the nodes of its cluster; nil for a single box.
func (p *Plan) NodeCapacity(caps []Capacity, d Demand) []NodeLoad {
	if p.Cluster == nil {
		return nil
	}
	addrs := map[netip.Addr]served{}
	for _, c := range caps {
		for _, pc := range c.Public {
			addServed(addrs, pc.Addr, pc.Hosts, pc.Utilisation)
		}
	}
	return p.Cluster.loads(addrs, d.SessionsPerHost)
}

// capacity reports the entry's port budget; with recommend, how many
// addresses would meet the target too.
func (e *Egress) capacity(d Demand, recommend bool) Capacity {
	r := e.report()
	c := Capacity{Egress: e.Name, Strategy: e.Strategy, Ports: e.Ports}
	block, isBlock := e.Mapping.(*BlockMapping)
	if isBlock {
		c.Blocks[0], c.Blocks[1] = block.BlockSizes()
	}
	for i, pl := range r.Public {
		pc := PublicCapacity{PublicLoad: pl, Budget: e.Ports.Len(), Demand: float64(pl.Hosts) * d.perHost()}
		if isBlock {
			// Each host's connections to one destination share its block.
			pc.Budget, pc.Demand = block.PortBlock(i), 0
			if pl.Hosts > 0 {
				pc.Demand = d.perHost()
			}
		}
		pc.Utilisation = pc.Demand / float64(pc.Budget)
		pc.Headroom = float64(pc.Budget) - pc.Demand
		c.MaxUtilisation = max(c.MaxUtilisation, pc.Utilisation)
		c.Public = append(c.Public, pc)
	}
	if recommend {
		c.AddressesNeeded = e.addressesNeeded(d, c.MaxUtilisation)
	}
	return c
}

// CheckDemand refuses a demand no pool of public addresses can meet for
// some egress entry, naming the most connections per host that one can.
func (p *Plan) CheckDemand(d Demand) error {
	for _, e := range p.Egress {
		if most := e.mostSessions(d); d.SessionsPerHost > most {
			why := fmt.Sprintf("a pool has %d addresses at most", MaxPool)
			if e.Strategy == Block {
				why = "a host's block is at most the port range"
			}
			return fmt.Errorf("sessions-per-host %v: no pool of public addresses can hold it for egress %s at target %v (%s): the most any pool can hold is %.4g",
				d.SessionsPerHost, e.Name, d.Target, why, most)
		}
	}
	return nil
}

// mostSessions is the most connections per host any pool can hold at d's
// target and share: a host alone on its address in block mode, the hosts
// spread evenly over the largest pool otherwise.
func (e *Egress) mostSessions(d Demand) float64 {
	budget := d.Target * float64(e.Ports.Len()) / d.SameDestinationShare
	if e.Strategy == Block {
		return budget
	}
	return budget * float64(MaxPool) / float64(e.InsideHosts())
}

// maxSearch bounds the plans addressesNeeded makes: halving the gap finds
// the answer among 65,536 sizes in 17 steps.
const maxSearch = 40

// addressesNeeded plans the entry again with pools of other sizes until it
// finds a size that meets the target where one address fewer does not. It
// keeps the largest size known to miss and the smallest known to meet. Until
// it knows both it scales the size by how far off the target the busiest
// address is, which lands near the answer; then it halves the gap. It
// starts no lower than an even spread allows, and gives up (-1) when no
// pool can meet the target.
func (e *Egress) addressesNeeded(d Demand, utilisation float64) int {
	if d.SessionsPerHost > e.mostSessions(d) {
		return -1 // not even the best spread over the largest pool can hold it
	}
	util := func(n int) (float64, bool) {
		if n == len(e.Pool) {
			return utilisation, true
		}
		other, err := e.withPool(n)
		if err != nil {
			return 0, false
		}
		return other.capacity(d, false).MaxUtilisation, true
	}
	miss, meet := 0, MaxPool+1 // pool sizes known to miss and to meet the target
	if e.Strategy != Block {
		// An even spread is the best any strategy does.
		even := float64(e.InsideHosts()) * d.perHost() / (d.Target * float64(e.Ports.Len()))
		miss = max(0, int(math.Ceil(even))-1)
	}
	for n, steps := len(e.Pool), 0; ; steps++ {
		u, ok := util(n)
		if ok && u <= d.Target {
			meet = n
		} else {
			miss = max(miss, n)
		}
		switch {
		case meet == miss+1 && meet <= MaxPool:
			return meet
		case miss >= MaxPool || !ok && meet > MaxPool || steps == maxSearch:
			return -1 // no pool can, or none larger can be planned
		}
		if ok && (miss == 0 || meet > MaxPool) {
			n = min(max(int(math.Ceil(float64(n)*u/d.Target)), miss+1), meet-1)
		} else {
			n = (miss + meet) / 2
		}
	}
}

// withPool plans the entry again with a pool of n addresses: the first n of
// its pool, then the addresses after its last one that are no inside host.
func (e *Egress) withPool(n int) (*Egress, error) {
	es := e.spec
	es.Pool, es.Exclude = nil, nil
	for _, s := range e.spec.Exclude { // keep excluded inside hosts excluded
		if r, err := ParseRange(s); err == nil && e.insideRange(r) {
			es.Exclude = append(es.Exclude, s)
		}
	}
	for _, p := range e.Pool[:min(n, len(e.Pool))] {
		es.Pool = append(es.Pool, fmt.Sprintf("%s=%d", p.Addr, p.Weight))
	}
	for a := e.Pool[len(e.Pool)-1].Addr.Next(); len(es.Pool) < n && a.IsValid(); a = a.Next() {
		if !e.insideRange(netipx.IPRangeFrom(a, a)) {
			es.Pool = append(es.Pool, a.String())
		}
	}
	var warnings []string
	return newEgress(es, &warnings)
}

// insideRange reports whether r overlaps the entry's inside ranges as given.
func (e *Egress) insideRange(r netipx.IPRange) bool {
	for _, p := range e.Private {
		if p.Overlaps(r) {
			return true
		}
	}
	return false
}
