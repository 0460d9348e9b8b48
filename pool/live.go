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
	return fmt.Sprintf("%s/%s", d.Addr, ProtoName(d.Proto))
}

// ProtoName names an IP protocol: tcp, udp, icmp, sctp, else its number.
func ProtoName(p uint8) string {
	if name := map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}[p]; name != "" {
		return name
	}
	return fmt.Sprint(p)
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
	// BlockUse is, in block mode, how the hosts with connections use their
	// blocks: how many hosts send how many connections to their busiest
	// destination, by block size, least used share first.
	BlockUse []BlockUse
}

// BlockUse is how many hosts with a block of BlockSize ports have Busiest
// connections to their busiest destination.
type BlockUse struct {
	Busiest, BlockSize, Hosts int
}

// Share is the share of the block the busiest destination takes.
func (u BlockUse) Share() float64 { return float64(u.Busiest) / float64(u.BlockSize) }

// LivePublic is one public address's port use.
type LivePublic struct {
	Addr    netip.Addr
	Entries int // connections
	Hosts   int // distinct inside hosts
	// Busiest is the destination with the most connections from this
	// address, BusiestEntries their number: they share the port range.
	// Usage leaves Busiest unset.
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
// connections; what the figures per public address and the block use need
// is kept up to date as connections come and go, so Usage costs nothing
// that grows with them.
type LiveCounter struct {
	egress []*liveEgress
}

type liveEgress struct {
	e          *Egress
	block      *BlockMapping          // nil outside block mode
	entries    []int                  // per Pool index
	hosts      []int                  // distinct hosts per Pool index
	publicDest map[pubDest]int32      // connections per public address and destination
	busiest    []int32                // per Pool index: the most connections to one destination
	atCount    map[pubCount]int32     // destinations per public address with that many connections
	host       map[uint32]hostCount   // connections per host, through its first address
	other      map[pubHost]int32      // connections of a host through another address (after a change)
	hostDest   map[uint32]destCount   // block mode: the connections of a host with one destination
	hostDests  map[uint32][]destCount // block mode: those of a host with several, by destination
	blockUse   map[BlockUse]int       // block mode: hosts by busiest count and block size (Hosts unused)
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
	pubCount  struct{ public, count int32 }
	pubHost   struct{ public, host uint32 }
	destCount struct {
		dest destKey
		n    int32
	}
)

// NewLiveCounter returns a counter of the plan's connections.
func (p *Plan) NewLiveCounter() *LiveCounter {
	c := &LiveCounter{}
	for _, e := range p.Egress {
		le := &liveEgress{e: e, entries: make([]int, len(e.Pool)), hosts: make([]int, len(e.Pool)), busiest: make([]int32, len(e.Pool)),
			publicDest: map[pubDest]int32{}, atCount: map[pubCount]int32{}, host: map[uint32]hostCount{}, other: map[pubHost]int32{}}
		if b, ok := e.Mapping.(*BlockMapping); ok {
			le.block, le.blockUse = b, map[BlockUse]int{}
			le.hostDest, le.hostDests = map[uint32]destCount{}, map[uint32][]destCount{}
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
		le.countDest(int32(i), d, delta)
		if le.block != nil {
			le.countHostDest(h, d, delta)
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

// countDest counts a connection from public address i to d, and keeps the
// address's busiest count: how many destinations have each count says
// what the largest is when a connection to the busiest one ends.
func (le *liveEgress) countDest(i int32, d destKey, delta int) {
	k := pubDest{i, d}
	n := le.publicDest[k]
	m := n + int32(delta)
	if n > 0 {
		add(le.atCount, pubCount{i, n}, -1)
	}
	if m > 0 {
		le.publicDest[k] = m
		add(le.atCount, pubCount{i, m}, 1)
	} else {
		delete(le.publicDest, k)
	}
	switch {
	case m > le.busiest[i]:
		le.busiest[i] = m
	case n == le.busiest[i] && le.atCount[pubCount{i, n}] == 0:
		le.busiest[i] = max(m, 0) // counts move by one: m is the next largest
	}
}

// countHostDest counts a connection of host h to d in block mode, and
// moves the host between the block-use counts when its busiest count
// changes. A host has few destinations: they are a short list, and most
// hosts' one destination is kept apart, in a map the garbage collector
// need not scan.
func (le *liveEgress) countHostDest(h uint32, d destKey, delta int) {
	var one [1]destCount
	ds := le.hostDests[h]
	if x, ok := le.hostDest[h]; ok {
		one[0], ds = x, one[:]
	}
	before := busiestOf(ds)
	j := slices.IndexFunc(ds, func(x destCount) bool { return x.dest == d })
	if j < 0 {
		if delta < 0 {
			return // a connection never counted
		}
		ds, j = append(ds, destCount{dest: d}), len(ds)
	}
	ds[j].n += int32(delta)
	if ds[j].n <= 0 {
		ds[j] = ds[len(ds)-1]
		ds = ds[:len(ds)-1]
	}
	delete(le.hostDest, h)
	switch len(ds) {
	case 0:
		delete(le.hostDests, h)
	case 1:
		delete(le.hostDests, h)
		le.hostDest[h] = ds[0]
	default:
		le.hostDests[h] = ds
	}
	if after := busiestOf(ds); after != before {
		size := le.block.HostPorts(h).Len()
		if before > 0 {
			addCount(le.blockUse, BlockUse{Busiest: before, BlockSize: size}, -1)
		}
		if after > 0 {
			addCount(le.blockUse, BlockUse{Busiest: after, BlockSize: size}, 1)
		}
	}
}

// destsOf is the connections of host h by destination (block mode).
func (le *liveEgress) destsOf(h uint32) []destCount {
	if x, ok := le.hostDest[h]; ok {
		return []destCount{x}
	}
	return le.hostDests[h]
}

// busiestOf is the most connections to one destination.
func busiestOf(ds []destCount) int {
	n := int32(0)
	for _, x := range ds {
		n = max(n, x.n)
	}
	return int(n)
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

func addCount[K comparable](m map[K]int, k K, delta int) {
	if m[k] += delta; m[k] <= 0 {
		delete(m, k)
	}
}

// Usage reports, per egress entry, the port use of the connections counted
// so far as the counter keeps it: per public address the connections,
// hosts and busiest count (not which destination that is), and the block
// use. It costs what the pool and the block sizes do, not the connections.
func (c *LiveCounter) Usage() []LiveCapacity { return c.report((*liveEgress).usage) }

// report is what f says of each egress entry.
func (c *LiveCounter) report(f func(*liveEgress) LiveCapacity) []LiveCapacity {
	out := make([]LiveCapacity, 0, len(c.egress))
	for _, le := range c.egress {
		out = append(out, f(le))
	}
	return out
}

func (le *liveEgress) usage() LiveCapacity {
	e := le.e
	r := LiveCapacity{Egress: e.Name, Strategy: e.Strategy, Ports: e.Ports}
	for i, p := range e.Pool {
		r.Public = append(r.Public, LivePublic{Addr: p.Addr, Entries: le.entries[i], Hosts: le.hosts[i], BusiestEntries: int(le.busiest[i]),
			Utilisation: float64(le.busiest[i]) / float64(e.Ports.Len())})
	}
	if le.block != nil {
		r.Blocks[0], r.Blocks[1] = le.block.BlockSizes()
		for u, n := range le.blockUse {
			u.Hosts = n
			r.BlockUse = append(r.BlockUse, u)
		}
		slices.SortFunc(r.BlockUse, func(a, b BlockUse) int {
			return cmp.Or(cmp.Compare(a.Share(), b.Share()), cmp.Compare(a.BlockSize, b.BlockSize))
		})
	}
	return r
}

// Capacity reports, per egress entry, the port use of the connections
// counted so far: Usage, with each address's busiest destination, the
// busiest hosts and, in block mode, those near the end of their block.
func (c *LiveCounter) Capacity() []LiveCapacity { return c.report((*liveEgress).capacity) }

func (le *liveEgress) capacity() LiveCapacity {
	e := le.e
	r := le.usage()
	busiest := make([]destKey, len(e.Pool))
	found := make([]bool, len(e.Pool))
	for k, n := range le.publicDest {
		if n == le.busiest[k.public] && (!found[k.public] || k.dest < busiest[k.public]) {
			busiest[k.public], found[k.public] = k.dest, true
		}
	}
	for i := range r.Public {
		if found[i] {
			r.Public[i].Busiest = busiest[i].destination()
		}
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
		hu := HostUse{Host: AddrFromUint32(h), Entries: int(le.host[h].entries) + other[h]}
		if i := e.Mapping.owner(h); i >= 0 {
			hu.Public = e.Pool[i].Addr
		}
		if le.block != nil {
			hu.BlockUse = float64(busiestOf(le.destsOf(h))) / float64(le.block.HostPorts(h).Len())
			if hu.BlockUse > FullBlock {
				r.FullBlocks = append(r.FullBlocks, hu)
			}
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
