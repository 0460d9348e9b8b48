package pool

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Connection is one source-NATed connection as the kernel tracks it.
type Connection struct {
	Host   netip.Addr     // the inside host
	Public netip.AddrPort // the address and port it left as
	Dest   Destination
}

// Destination is where a connection goes: the tuple whose connections from
// one public address share its port range.
type Destination struct {
	Addr  netip.AddrPort
	Proto uint8
}

func (d Destination) String() string {
	name := map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}[d.Proto]
	if name == "" {
		name = fmt.Sprint(d.Proto)
	}
	return fmt.Sprintf("%s/%s", d.Addr, name)
}

// FullBlock is the share of its block above which a host is reported.
const FullBlock = 0.8

// topHosts is how many of the busiest hosts a live report names.
const topHosts = 10

// LiveCapacity is one egress entry's port use, from its connections.
type LiveCapacity struct {
	Egress    string
	Strategy  Strategy
	Ports     PortRange
	BlockSize int // 0 outside block mode
	Public    []LivePublic
	TopHosts  []HostUse // the hosts with the most connections
	// FullBlocks are the hosts whose busiest destination takes more than
	// FullBlock of their port block (block mode).
	FullBlocks []HostUse
}

// LivePublic is one public address's port use.
type LivePublic struct {
	Addr    netip.Addr
	Entries int // connections
	Hosts   int // distinct inside hosts
	// Busiest is the destination with the most connections from this
	// address, BusiestEntries their number: they share the port range.
	Busiest        Destination
	BusiestEntries int
	Utilisation    float64 // BusiestEntries over the port range
}

// HostUse is one inside host's connections.
type HostUse struct {
	Host    netip.Addr
	Public  netip.Addr
	Entries int
	// BlockUse is the share of the host's block its busiest destination
	// takes (block mode).
	BlockUse float64
}

// LiveCapacity reports, per egress entry, the port use of its connections:
// those of its inside hosts through its pool. Others' are left out.
func (p *Plan) LiveCapacity(conns []Connection) []LiveCapacity {
	var out []LiveCapacity
	for _, e := range p.Egress {
		out = append(out, e.liveCapacity(conns))
	}
	return out
}

func (e *Egress) liveCapacity(conns []Connection) LiveCapacity {
	type key struct {
		addr netip.Addr
		dest Destination
	}
	perPublic := map[netip.Addr]*LivePublic{}
	hostsOf := map[netip.Addr]map[netip.Addr]bool{}
	perDest := map[key]int{}  // public address and destination -> connections
	hostDest := map[key]int{} // host and destination -> connections
	hosts := map[netip.Addr]*HostUse{}
	for _, c := range conns {
		if !e.Inside.Contains(c.Host) || !e.Carries(c.Public.Addr()) {
			continue
		}
		pub := c.Public.Addr()
		lp := perPublic[pub]
		if lp == nil {
			lp = &LivePublic{Addr: pub}
			perPublic[pub], hostsOf[pub] = lp, map[netip.Addr]bool{}
		}
		lp.Entries++
		hostsOf[pub][c.Host] = true
		perDest[key{pub, c.Dest}]++
		hostDest[key{c.Host, c.Dest}]++
		h := hosts[c.Host]
		if h == nil {
			h = &HostUse{Host: c.Host, Public: pub}
			hosts[c.Host] = h
		}
		h.Entries++
	}
	r := LiveCapacity{Egress: e.Name, Strategy: e.Strategy, Ports: e.Ports}
	for k, n := range perDest {
		lp := perPublic[k.addr]
		if n > lp.BusiestEntries || n == lp.BusiestEntries && k.dest.String() < lp.Busiest.String() {
			lp.Busiest, lp.BusiestEntries = k.dest, n
		}
	}
	for _, pub := range e.Pool {
		lp := perPublic[pub.Addr]
		if lp == nil {
			lp = &LivePublic{Addr: pub.Addr}
		}
		lp.Hosts = len(hostsOf[pub.Addr])
		lp.Utilisation = float64(lp.BusiestEntries) / float64(e.Ports.Len())
		r.Public = append(r.Public, *lp)
	}
	block, isBlock := e.Mapping.(*BlockMapping)
	if isBlock {
		r.BlockSize = block.BlockSize
		for k, n := range hostDest {
			h := hosts[k.addr]
			h.BlockUse = max(h.BlockUse, float64(n)/float64(block.BlockSize))
		}
	}
	all := make([]HostUse, 0, len(hosts))
	for _, h := range hosts {
		all = append(all, *h)
		if isBlock && h.BlockUse > FullBlock {
			r.FullBlocks = append(r.FullBlocks, *h)
		}
	}
	busiest := func(a, b HostUse) int {
		if c := cmp.Compare(b.Entries, a.Entries); c != 0 {
			return c
		}
		return a.Host.Compare(b.Host)
	}
	slices.SortFunc(all, busiest)
	slices.SortFunc(r.FullBlocks, busiest)
	r.TopHosts = all[:min(topHosts, len(all))]
	return r
}
