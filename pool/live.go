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

// destKey packs a destination into one word: address, port, protocol.
type destKey uint64

func keyOf(d Destination) destKey {
	return destKey(Uint32(d.Addr.Addr()))<<24 | destKey(d.Addr.Port())<<8 | destKey(d.Proto)
}

func (k destKey) destination() Destination {
	return Destination{netip.AddrPortFrom(AddrFromUint32(uint32(k>>24)), uint16(k>>8)), uint8(k)}
}

// FullBlock is the share of its block above which a host is reported.
const FullBlock = 0.8

// topHosts is how many of the busiest hosts a live report names.
const topHosts = 10

// LiveCapacity is one egress entry's port use, from its connections.
type LiveCapacity struct {
	Egress   string
	Strategy Strategy
	Ports    PortRange
	Blocks   [2]int // the smallest and largest port block; zero outside block mode
	Public   []LivePublic
	TopHosts []HostUse // the hosts with the most connections
	// FullBlocks are the hosts whose busiest destination takes more than
	// FullBlock of their port block (block mode).
	FullBlocks []HostUse
	// BlockUse is, in block mode, the share of its block each host with
	// connections uses towards its busiest destination.
	BlockUse []float64
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

// LiveCounter counts the connections of a plan's egress entries as they are
// added and removed, one at a time: a dump of millions of conntrack entries,
// or a stream of conntrack events, is never held. What it keeps grows with
// the distinct public addresses, hosts and destinations, not the
// connections.
type LiveCounter struct {
	egress []*liveEgress
}

type liveEgress struct {
	e          *Egress
	entries    []int                // per Pool index
	hosts      []int                // distinct hosts per Pool index
	publicDest map[pubDest]int32    // connections per public address and destination
	host       map[uint32]hostCount // connections per host, through its first address
	other      map[pubHost]int32    // connections of a host through another address (after a change)
	hostDest   map[hostDest]int32   // connections per host and destination (block mode)
}

// hostCount is a host's connections through one public address (a Pool
// index): a host's connections share one, but for those a change made
// stale.
type hostCount struct{ entries, public int32 }

type (
	pubDest struct {
		public int32
		dest   destKey
	}
	pubHost  struct{ public, host uint32 }
	hostDest struct {
		host uint32
		dest destKey
	}
)

// NewLiveCounter returns a counter of the plan's connections.
func (p *Plan) NewLiveCounter() *LiveCounter {
	c := &LiveCounter{}
	for _, e := range p.Egress {
		le := &liveEgress{e: e, entries: make([]int, len(e.Pool)), hosts: make([]int, len(e.Pool)),
			publicDest: map[pubDest]int32{}, host: map[uint32]hostCount{}, other: map[pubHost]int32{}}
		if _, ok := e.Mapping.(*BlockMapping); ok {
			le.hostDest = map[hostDest]int32{}
		}
		c.egress = append(c.egress, le)
	}
	return c
}

// Count adds (delta 1) or removes (delta -1) a connection. Connections of
// hosts outside an entry, or through addresses outside its pool, are not
// the entry's.
func (c *LiveCounter) Count(conn Connection, delta int) {
	for _, le := range c.egress {
		i, ok := le.e.index[Uint32(conn.Public.Addr())]
		if !ok || !le.e.Inside.Contains(conn.Host) {
			continue
		}
		h, d := Uint32(conn.Host), keyOf(conn.Dest)
		le.entries[i] += delta
		add(le.publicDest, pubDest{int32(i), d}, delta)
		if le.hostDest != nil {
			add(le.hostDest, hostDest{h, d}, delta)
		}
		key := pubHost{uint32(i), h}
		hc, seen := le.host[h]
		if _, twice := le.other[key]; twice || seen && hc.public != int32(i) {
			if add(le.other, key, delta) {
				le.hosts[i] += delta
			}
			continue
		}
		hc.public, hc.entries = int32(i), hc.entries+int32(delta)
		switch {
		case hc.entries <= 0:
			delete(le.host, h)
			if seen {
				le.hosts[i]--
			}
		default:
			le.host[h] = hc
			if !seen {
				le.hosts[i]++
			}
		}
	}
}

// add adds delta to m[k], deleting a key that drops to zero; it reports
// whether the key appeared or disappeared.
func add[K comparable](m map[K]int32, k K, delta int) bool {
	n := m[k] + int32(delta)
	if n <= 0 {
		delete(m, k)
		return n == 0 && delta < 0
	}
	m[k] = n
	return n == int32(delta)
}

// Capacity reports, per egress entry, the port use of the connections
// counted so far.
func (c *LiveCounter) Capacity() []LiveCapacity {
	out := make([]LiveCapacity, 0, len(c.egress))
	for _, le := range c.egress {
		out = append(out, le.capacity())
	}
	return out
}

func (le *liveEgress) capacity() LiveCapacity {
	e := le.e
	r := LiveCapacity{Egress: e.Name, Strategy: e.Strategy, Ports: e.Ports}
	busiest := make([]struct {
		dest destKey
		n    int
	}, len(e.Pool))
	for k, n := range le.publicDest {
		b := &busiest[k.public]
		if n := int(n); n > b.n || n == b.n && k.dest < b.dest {
			b.dest, b.n = k.dest, n
		}
	}
	for i, p := range e.Pool {
		lp := LivePublic{Addr: p.Addr, Entries: le.entries[i], Hosts: le.hosts[i], BusiestEntries: busiest[i].n,
			Utilisation: float64(busiest[i].n) / float64(e.Ports.Len())}
		if lp.BusiestEntries > 0 {
			lp.Busiest = busiest[i].dest.destination()
		}
		r.Public = append(r.Public, lp)
	}
	block, isBlock := e.Mapping.(*BlockMapping)
	use := map[uint32]float64{}
	if isBlock {
		r.Blocks[0], r.Blocks[1] = block.BlockSizes()
		for k, n := range le.hostDest {
			use[k.host] = max(use[k.host], float64(n)/float64(block.HostPorts(k.host).Len()))
		}
		r.BlockUse = make([]float64, 0, len(use))
		for _, u := range use {
			r.BlockUse = append(r.BlockUse, u)
		}
		slices.Sort(r.BlockUse)
	}
	order := func(a, b HostUse) int {
		if c := cmp.Compare(b.Entries, a.Entries); c != 0 {
			return c
		}
		return a.Host.Compare(b.Host)
	}
	other := make(map[uint32]int, len(le.other)) // connections through other addresses
	for k, n := range le.other {
		other[k.host] += int(n)
	}
	hosts := func(yield func(uint32) bool) { // every host once
		for h := range le.host {
			if !yield(h) {
				return
			}
		}
		for h := range other {
			if _, counted := le.host[h]; !counted && !yield(h) {
				return
			}
		}
	}
	for h := range hosts {
		hu := HostUse{Host: AddrFromUint32(h), Entries: int(le.host[h].entries) + other[h], BlockUse: use[h]}
		if i := e.Mapping.owner(h); i >= 0 {
			hu.Public = e.Pool[i].Addr
		}
		if isBlock && hu.BlockUse > FullBlock {
			r.FullBlocks = append(r.FullBlocks, hu)
		}
		// Keep the busiest few in order, not every host.
		if len(r.TopHosts) < topHosts || order(hu, r.TopHosts[len(r.TopHosts)-1]) < 0 {
			at, _ := slices.BinarySearchFunc(r.TopHosts, hu, order)
			r.TopHosts = slices.Insert(r.TopHosts, at, hu)[:min(topHosts, len(r.TopHosts)+1)]
		}
	}
	slices.SortFunc(r.FullBlocks, order)
	return r
}
