package pool

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// ClusterSpec says how the nodes of a cluster share the pool, as written.
// Every value is text, parsed by NewPlan; empty means the default.
type ClusterSpec struct {
	// Chunk is the prefix length of the aligned pieces of the pool that
	// nodes own and announce (default 29).
	Chunk string `yaml:"chunk" json:"chunk,omitempty"`
	// Table is the routing table of a node's first peer; peer i (in spec
	// order, the node itself skipped) uses Table+i (default 7350).
	Table string `yaml:"table" json:"table,omitempty"`
	// Priority is the priority of the first policy-routing rule natpool
	// adds; a chunk's next backup is tried at the priority after it
	// (default 7350).
	Priority string `yaml:"priority" json:"priority,omitempty"`
	// Mark is the first packet mark natpool sets on packets it steers to a
	// peer (default 0x4e500000).
	Mark string `yaml:"mark" json:"mark,omitempty"`
	// BGP holds the BGP settings every node shares; a node's own override
	// them.
	BGP BGPSpec `yaml:"bgp" json:"bgp,omitzero"`
}

// NodeSpec is one NAT box of a cluster as written.
type NodeSpec struct {
	Name string `yaml:"name" json:"name"`
	// Weight is the node's share of the chunks (default 1).
	Weight string `yaml:"weight" json:"weight,omitempty"`
	// Address is the node's address on the inter-node link: where its
	// peers steer its hosts' packets and hold their BGP session with it.
	Address string  `yaml:"address" json:"address"`
	BGP     BGPSpec `yaml:"bgp" json:"bgp,omitzero"`
}

// BGPSpec is a node's BGP session to its upstream router, as written.
type BGPSpec struct {
	AS         string `yaml:"as" json:"as,omitempty"`                   // the cluster's AS
	Neighbor   string `yaml:"neighbor" json:"neighbor,omitempty"`       // the upstream router's address
	NeighborAS string `yaml:"neighbor-as" json:"neighbor-as,omitempty"` // the upstream's AS
	// Source is the node's address for the upstream session; empty lets
	// BIRD choose.
	Source string `yaml:"source" json:"source,omitempty"`
	// Hold is the BGP hold time in seconds (default 9): how long a dead
	// node keeps its chunks.
	Hold string `yaml:"hold" json:"hold,omitempty"`
}

// Cluster is a checked cluster: the nodes, and which of them own each chunk
// of the pool. The host to public address mapping does not depend on it.
type Cluster struct {
	Nodes     []Node
	ChunkBits int
	Table     int    // routing table of the first peer
	Priority  int    // priority of the first policy rule
	Mark      uint32 // the first packet mark
	// Chunks are the aligned pieces of the pool, ascending.
	Chunks []Chunk
}

// Node is one checked node of a cluster.
type Node struct {
	Name    string
	Weight  int
	Address netip.Addr
	BGP     BGP
}

// BGP is a node's checked session to its upstream.
type BGP struct {
	AS, NeighborAS uint32
	Neighbor       netip.Addr
	Source         netip.Addr // invalid when BIRD chooses
	Hold           int        // seconds
}

// Chunk is an aligned piece of the pool: its public addresses, announced as
// Prefixes, and the nodes that serve it, owner first.
type Chunk struct {
	Block    netip.Prefix   // the aligned block
	Prefixes []netip.Prefix // the pool's addresses in it, as few prefixes as cover exactly them
	Order    []int          // node indexes: the owner, then the backups in turn
}

// Defaults of a cluster.
const (
	DefaultChunk        = 29
	DefaultRoutingTable = 7350
	DefaultPriority     = 7350
	DefaultMark         = 0x4e500000
	DefaultHold         = 9
)

var nodeName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// newCluster checks the nodes of a spec and shares the pools' addresses
// among them.
func newCluster(cs ClusterSpec, nodes []NodeSpec, pools []*Egress) (*Cluster, error) {
	c := &Cluster{}
	var err error
	if c.ChunkBits, err = number("cluster chunk", cs.Chunk, DefaultChunk, 8, 32); err != nil {
		return nil, err
	}
	if c.Table, err = number("cluster table", cs.Table, DefaultRoutingTable, 1, 1<<31-len(nodes)); err != nil {
		return nil, err
	}
	for _, kernel := range []int{253, 254, 255} { // default, main and local
		if c.Table <= kernel && kernel < c.Table+len(nodes) {
			return nil, fmt.Errorf("cluster table %q: natpool's routing tables %d-%d would take the kernel's own table %d; pick tables of natpool's alone", cs.Table, c.Table, c.Table+len(nodes)-1, kernel)
		}
	}
	if c.Priority, err = number("cluster priority", cs.Priority, DefaultPriority, 1, 32766-len(nodes)); err != nil {
		return nil, err
	}
	mark, err := strconv.ParseUint(cmp.Or(cs.Mark, strconv.Itoa(DefaultMark)), 0, 32)
	if err != nil || mark == 0 {
		return nil, fmt.Errorf("cluster mark %q must be a packet mark, 1-0xffffffff", cs.Mark)
	}
	c.Mark = uint32(mark)
	names, addrs := map[string]bool{}, map[netip.Addr]bool{}
	for i, ns := range nodes {
		if !nodeName.MatchString(ns.Name) || len(ns.Name) > 32 {
			return nil, fmt.Errorf("node %d: name %q: use up to 32 letters, digits and '_', starting with a letter (it names BIRD protocols)", i+1, ns.Name)
		}
		// BIRD's protocol names ignore case.
		if names[strings.ToLower(ns.Name)] {
			return nil, fmt.Errorf("node name %q is used twice (names are told apart without regard to case)", ns.Name)
		}
		names[strings.ToLower(ns.Name)] = true
		n, err := newNode(ns, cs.BGP)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", ns.Name, err)
		}
		if addrs[n.Address] {
			return nil, fmt.Errorf("node %s: address %s is another node's too", ns.Name, n.Address)
		}
		addrs[n.Address] = true
		c.Nodes = append(c.Nodes, n)
	}
	for _, e := range pools {
		for _, n := range c.Nodes {
			if e.Carries(n.Address) {
				return nil, fmt.Errorf("node %s: address %s is a public address of egress %s; a node's address is its own, on the inter-node link", n.Name, n.Address, e.Name)
			}
		}
		if _, ok := e.Mapping.(*PersistentMapping); ok {
			return nil, fmt.Errorf("egress %s: strategy persistent cannot be shared by nodes: the kernel picks its address only as it translates, too late to steer the packet to the address's node; use hash", e.Name)
		}
	}
	c.cut(pools)
	for i := range c.Chunks {
		c.Chunks[i].Order = c.order(c.Chunks[i].Block)
	}
	// A node numbers its marks from Mark up, at most one per chunk.
	if uint64(c.Mark)+uint64(len(c.Chunks)) > 1<<32 {
		return nil, fmt.Errorf("cluster mark %q leaves too few marks above it for %d chunks", cs.Mark, len(c.Chunks))
	}
	return c, nil
}

// cut cuts the public addresses of the pools into Chunks, without owners.
func (c *Cluster) cut(pools []*Egress) {
	var b netipx.IPSetBuilder
	for _, e := range pools {
		for _, p := range e.Pool {
			b.Add(p.Addr)
		}
	}
	public, _ := b.IPSet()
	for _, r := range public.Ranges() {
		for _, p := range r.Prefixes() {
			c.addPrefix(p)
		}
	}
}

// addPrefix adds a prefix of pool addresses, split at chunk boundaries.
func (c *Cluster) addPrefix(p netip.Prefix) {
	if p.Bits() < c.ChunkBits {
		r := netipx.RangeOfPrefix(p)
		step := uint64(1) << (32 - c.ChunkBits)
		for x := uint64(Uint32(r.From())); x <= uint64(Uint32(r.To())); x += step {
			c.addPrefix(netip.PrefixFrom(AddrFromUint32(uint32(x)), c.ChunkBits))
		}
		return
	}
	block := netip.PrefixFrom(p.Addr(), c.ChunkBits).Masked()
	if n := len(c.Chunks); n > 0 && c.Chunks[n-1].Block == block {
		c.Chunks[n-1].Prefixes = append(c.Chunks[n-1].Prefixes, p)
		return
	}
	c.Chunks = append(c.Chunks, Chunk{Block: block, Prefixes: []netip.Prefix{p}})
}

func newNode(ns NodeSpec, shared BGPSpec) (Node, error) {
	n := Node{Name: ns.Name}
	var err error
	if n.Weight, err = number("weight", ns.Weight, 1, 1, 1000); err != nil {
		return n, err
	}
	if n.Address, err = ParseAddr(ns.Address); err != nil {
		return n, fmt.Errorf("address: %w", err)
	}
	if n.Address.IsUnspecified() || n.Address == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || n.Address.IsMulticast() || n.Address.IsLoopback() {
		return n, fmt.Errorf("address %s cannot be a node's address on the inter-node link", n.Address)
	}
	b := ns.BGP
	b.AS, b.Neighbor, b.NeighborAS = cmp.Or(b.AS, shared.AS), cmp.Or(b.Neighbor, shared.Neighbor), cmp.Or(b.NeighborAS, shared.NeighborAS)
	b.Source, b.Hold = cmp.Or(b.Source, shared.Source), cmp.Or(b.Hold, shared.Hold)
	for _, as := range []struct {
		name, text string
		to         *uint32
	}{{"bgp as", b.AS, &n.BGP.AS}, {"bgp neighbor-as", b.NeighborAS, &n.BGP.NeighborAS}} {
		v, err := strconv.ParseUint(as.text, 10, 32)
		if err != nil || v == 0 {
			return n, fmt.Errorf("%s %q must be an AS number, 1-4294967295", as.name, as.text)
		}
		*as.to = uint32(v)
	}
	if n.BGP.Neighbor, err = ParseAddr(b.Neighbor); err != nil {
		return n, fmt.Errorf("bgp neighbor: %w", err)
	}
	if b.Source != "" {
		if n.BGP.Source, err = ParseAddr(b.Source); err != nil {
			return n, fmt.Errorf("bgp source: %w", err)
		}
	}
	// BGP's smallest hold time is 3 s (RFC 4271).
	if n.BGP.Hold, err = number("bgp hold", b.Hold, DefaultHold, 3, 65535); err != nil {
		return n, err
	}
	return n, nil
}

// number parses a whole number option within [lo, hi], def when empty.
func number(what, s string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q must be a whole number %d-%d", what, s, lo, hi)
	}
	return n, nil
}

// order ranks the nodes for a chunk by weighted rendezvous hashing, keyed
// by the chunk's first address.
func (c *Cluster) order(block netip.Prefix) []int {
	names, weights := make([]string, len(c.Nodes)), make([]int, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i], weights[i] = n.Name, n.Weight
	}
	return rendezvous(names, weights, uint64(Uint32(block.Addr())))
}

// rendezvous ranks candidates for key by weighted rendezvous hashing: each
// scores -weight/ln(u) for a uniform u drawn from its name and key, the
// highest first. Removing a candidate moves only what it ranked first, each
// to the one it ranked next.
func rendezvous(names []string, weights []int, key uint64) []int {
	scores := make([]float64, len(names))
	order := make([]int, len(names))
	for i, name := range names {
		h := fnv.New64a()
		h.Write([]byte(name))
		u := mix64(h.Sum64() ^ key)
		// u's top 53 bits as a float in (0, 1).
		x := (float64(u>>11) + 0.5) / (1 << 53)
		scores[i], order[i] = -float64(weights[i])/math.Log(x), i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	return order
}

// ChunkIndex returns the index in Chunks of the chunk holding public
// address a, or -1.
func (c *Cluster) ChunkIndex(a netip.Addr) int {
	i, found := slices.BinarySearchFunc(c.Chunks, a, func(ch Chunk, a netip.Addr) int {
		if ch.Block.Contains(a) {
			return 0
		}
		return ch.Block.Addr().Compare(a)
	})
	if !found {
		return -1
	}
	return i
}

// SessionHold returns the hold time, in seconds, of the BGP session
// between nodes a and b: the shorter of theirs, as BGP negotiates it. A
// node learns that its peer died at most this long after it went silent.
func (c *Cluster) SessionHold(a, b int) int {
	return min(c.Nodes[a].BGP.Hold, c.Nodes[b].BGP.Hold)
}

// Idle returns the names of the nodes that own no chunk, in spec order.
func (c *Cluster) Idle() []string {
	owns := make([]bool, len(c.Nodes))
	for _, ch := range c.Chunks {
		owns[ch.Order[0]] = true
	}
	var idle []string
	for i, n := range c.Nodes {
		if !owns[i] {
			idle = append(idle, n.Name)
		}
	}
	return idle
}

// Order returns the nodes serving public address a, owner first; nil for
// an address outside the pool.
func (c *Cluster) Order(a netip.Addr) []int {
	if i := c.ChunkIndex(a); i >= 0 {
		return c.Chunks[i].Order
	}
	return nil
}

// NodeNames returns the names of nodes by index.
func (c *Cluster) NodeNames(order []int) []string {
	names := make([]string, len(order))
	for i, n := range order {
		names[i] = c.Nodes[n].Name
	}
	return names
}

// Names returns the names of every node, in spec order.
func (c *Cluster) Names() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}

// NodeIndex returns the index of the named node, or -1.
func (c *Cluster) NodeIndex(name string) int {
	return slices.IndexFunc(c.Nodes, func(n Node) bool { return n.Name == name })
}

// NodeLoad is what one node of a cluster serves: with every node up, and
// with down the one other node whose addresses would add most to it.
type NodeLoad struct {
	Node   string
	Weight int
	Owned  NodeShare
	// Failover is what the node serves while node FailoverOf is down; with
	// no other node, FailoverOf is "" and Failover equals Owned.
	Failover   NodeShare
	FailoverOf string
}

// NodeShare is the public addresses a node serves and what they carry.
type NodeShare struct {
	Addresses int
	Hosts     uint64
	// Connections is what the hosts open under a capacity report's demand
	// (the connections the node translates and tracks); 0 in plan reports.
	Connections float64
	// MaxUtilisation is the port utilisation of the busiest of the
	// addresses, in capacity reports; 0 in plan reports.
	MaxUtilisation float64
}

// plus returns both shares together.
func (s NodeShare) plus(o NodeShare) NodeShare {
	return NodeShare{Addresses: s.Addresses + o.Addresses, Hosts: s.Hosts + o.Hosts,
		Connections: s.Connections + o.Connections, MaxUtilisation: max(s.MaxUtilisation, o.MaxUtilisation)}
}

// served is one public address's load, summed over the egress entries that
// use it.
type served struct {
	hosts uint64
	util  float64
}

// add counts one egress entry's use of a.
func addServed(m map[netip.Addr]served, a netip.Addr, hosts uint64, util float64) {
	s := m[a]
	m[a] = served{hosts: s.hosts + hosts, util: max(s.util, util)}
}

// loads shares the addresses' loads among the nodes, each host opening
// perHost connections. When one node is down each of its addresses goes to
// the address's next node, so what a node gains from a failure is the
// addresses it is first backup of.
func (c *Cluster) loads(addrs map[netip.Addr]served, perHost float64) []NodeLoad {
	n := len(c.Nodes)
	owned := make([]NodeShare, n)
	gained := make([][]NodeShare, n) // gained[down][backup]
	for i := range gained {
		gained[i] = make([]NodeShare, n)
	}
	for a, s := range addrs {
		order := c.Order(a)
		if order == nil {
			continue
		}
		one := NodeShare{Addresses: 1, Hosts: s.hosts, Connections: float64(s.hosts) * perHost, MaxUtilisation: s.util}
		owned[order[0]] = owned[order[0]].plus(one)
		if len(order) > 1 {
			gained[order[0]][order[1]] = gained[order[0]][order[1]].plus(one)
		}
	}
	out := make([]NodeLoad, n)
	for i, node := range c.Nodes {
		l := NodeLoad{Node: node.Name, Weight: node.Weight, Owned: owned[i], Failover: owned[i]}
		for down := range n {
			if down == i {
				continue
			}
			f := owned[i].plus(gained[down][i])
			// The most hosts, then the most addresses; the first such node.
			if l.FailoverOf == "" || cmp.Or(cmp.Compare(f.Hosts, l.Failover.Hosts), cmp.Compare(f.Addresses, l.Failover.Addresses)) > 0 {
				l.FailoverOf, l.Failover = c.Nodes[down].Name, f
			}
		}
		out[i] = l
	}
	return out
}

// FirstLive returns the node that serves public while the nodes live says
// are up: the first of its order that is.
func (c *Cluster) FirstLive(public netip.Addr, live func(node int) bool) int {
	order := c.Order(public)
	if i := slices.IndexFunc(order, live); i >= 0 {
		return order[i]
	}
	return -1
}
