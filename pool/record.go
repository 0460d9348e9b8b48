package pool

import (
	"encoding/binary"
	"fmt"

	"go4.org/netipx"
)

// Record is a plan as the journal keeps it: what every mapping decided, not
// how it was decided. A plan rebuilt from its record looks up exactly as the
// plan did, without its spec or hosts file, and after natpool's strategies
// have changed.
type Record struct {
	Table   string         `json:"table"`
	CTLabel int            `json:"ct_label"`
	Egress  []EgressRecord `json:"egress"`
	Cluster *ClusterRecord `json:"cluster,omitempty"`
}

// ClusterRecord is the cluster of a Record: its settings, its nodes, and
// the order of the nodes for each chunk of the pool, ascending.
type ClusterRecord struct {
	Chunk    int          `json:"chunk"`
	Table    int          `json:"table"`
	Priority int          `json:"priority"`
	Mark     uint32       `json:"mark"`
	Nodes    []NodeRecord `json:"nodes"`
	Orders   [][]int      `json:"orders"`
}

// NodeRecord is one node of a ClusterRecord.
type NodeRecord struct {
	Name       string `json:"name"`
	Weight     int    `json:"weight"`
	Address    string `json:"address"`
	AS         uint32 `json:"as"`
	Neighbor   string `json:"neighbor"`
	NeighborAS uint32 `json:"neighbor_as"`
	Source     string `json:"source,omitempty"`
	Hold       int    `json:"hold"`
}

// EgressRecord is one egress entry of a Record.
type EgressRecord struct {
	Name     string   `json:"name"`
	OIF      string   `json:"oif,omitempty"`
	Strategy Strategy `json:"strategy"`
	Ports    string   `json:"ports"`
	Private  []string `json:"private"` // the inside ranges as given: block numbers hosts over them
	Inside   []string `json:"inside"`  // the mapped inside hosts, exclusions removed
	Pool     []string `json:"pool"`    // the usable public addresses, "ADDR" or "ADDR=WEIGHT"

	Octet *OctetPins `json:"octet,omitempty"`
	Hash  *HashPins  `json:"hash,omitempty"`
	Block *BlockPins `json:"block,omitempty"`
	// persistent needs nothing more: the kernel spreads the hosts over the
	// pool, First to Last.
}

// OctetPins are the value ranges of an octet mapping, one per pool address.
type OctetPins struct {
	Bits   int      `json:"bits"`
	Values []string `json:"values"`
}

// HashPins are the bucket owners of a hash mapping, a run at a time from
// bucket 0 on. Runs holds two unsigned varints a run, its length in buckets
// and its owner's pool index: a ring of 2^20 buckets is some 100,000 runs,
// which this keeps to 2-3 bytes each (base64 in JSON), quick to read back.
type HashPins struct {
	Seed    uint32 `json:"seed"`
	Buckets int    `json:"buckets"`
	Runs    []byte `json:"runs"`
}

// BlockPins are the window and its cuts of a block mapping: each group is
// [offset, size, block size].
type BlockPins struct {
	Window   uint64         `json:"window"`
	Split    uint64         `json:"split"`
	Patterns [2][][3]uint64 `json:"patterns"`
}

// Record returns what the plan decided, for the journal.
func (p *Plan) Record() Record {
	r := Record{Table: p.Table, CTLabel: p.CTLabel}
	for _, e := range p.Egress {
		er := EgressRecord{Name: e.Name, OIF: e.OIF, Strategy: e.Strategy, Ports: e.Ports.String()}
		for _, x := range e.Private {
			er.Private = append(er.Private, x.String())
		}
		for _, x := range e.Inside.Ranges() {
			er.Inside = append(er.Inside, x.String())
		}
		for _, a := range e.Pool {
			er.Pool = append(er.Pool, fmt.Sprintf("%s=%d", a.Addr, a.Weight))
		}
		switch m := e.Mapping.(type) {
		case *OctetMapping:
			er.Octet = &OctetPins{Bits: m.Bits}
			for _, v := range m.Values {
				er.Octet.Values = append(er.Octet.Values, v.String())
			}
		case *HashMapping:
			er.Hash = &HashPins{Seed: m.Seed, Buckets: len(m.Owners)}
			runs := m.Runs()
			for i, run := range runs {
				end := uint32(len(m.Owners))
				if i+1 < len(runs) {
					end = runs[i+1].Lo
				}
				er.Hash.Runs = binary.AppendUvarint(er.Hash.Runs, uint64(end-run.Lo))
				er.Hash.Runs = binary.AppendUvarint(er.Hash.Runs, uint64(run.Owner))
			}
		case *BlockMapping:
			er.Block = &BlockPins{Window: m.Window, Split: m.Split}
			for i, p := range m.Patterns {
				for _, g := range p {
					er.Block.Patterns[i] = append(er.Block.Patterns[i], [3]uint64{g.Offset, g.Size, uint64(g.BlockSize)})
				}
			}
		}
		r.Egress = append(r.Egress, er)
	}
	if c := p.Cluster; c != nil {
		cr := &ClusterRecord{Chunk: c.ChunkBits, Table: c.Table, Priority: c.Priority, Mark: c.Mark}
		for _, n := range c.Nodes {
			nr := NodeRecord{Name: n.Name, Weight: n.Weight, Address: n.Address.String(), AS: n.BGP.AS,
				Neighbor: n.BGP.Neighbor.String(), NeighborAS: n.BGP.NeighborAS, Hold: n.BGP.Hold}
			if n.BGP.Source.IsValid() {
				nr.Source = n.BGP.Source.String()
			}
			cr.Nodes = append(cr.Nodes, nr)
		}
		for _, ch := range c.Chunks {
			cr.Orders = append(cr.Orders, ch.Order)
		}
		r.Cluster = cr
	}
	return r
}

// cluster rebuilds the cluster of a record over the plan's pools.
func (cr *ClusterRecord) cluster(pools []*Egress) (*Cluster, error) {
	c := &Cluster{ChunkBits: cr.Chunk, Table: cr.Table, Priority: cr.Priority, Mark: cr.Mark}
	if c.ChunkBits < 8 || c.ChunkBits > 32 || len(cr.Nodes) == 0 {
		return nil, fmt.Errorf("cluster: chunk /%d, %d nodes", c.ChunkBits, len(cr.Nodes))
	}
	for _, nr := range cr.Nodes {
		n := Node{Name: nr.Name, Weight: nr.Weight, BGP: BGP{AS: nr.AS, NeighborAS: nr.NeighborAS, Hold: nr.Hold}}
		var err error
		if n.Address, err = ParseAddr(nr.Address); err == nil {
			n.BGP.Neighbor, err = ParseAddr(nr.Neighbor)
		}
		if err == nil && nr.Source != "" {
			n.BGP.Source, err = ParseAddr(nr.Source)
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: node %s: %w", nr.Name, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	c.cut(pools)
	if len(cr.Orders) != len(c.Chunks) {
		return nil, fmt.Errorf("cluster: %d orders for %d chunks", len(cr.Orders), len(c.Chunks))
	}
	for i, order := range cr.Orders {
		for _, n := range order {
			if n < 0 || n >= len(c.Nodes) {
				return nil, fmt.Errorf("cluster: chunk %s: node %d of %d", c.Chunks[i].Block, n, len(c.Nodes))
			}
		}
		c.Chunks[i].Order = order
	}
	return c, nil
}

// Plan rebuilds the plan the record was made of. It checks what it reads,
// but not that the record is the one a digest names: compiler.Digest of the
// plan does that.
func (r Record) Plan() (*Plan, error) {
	p := &Plan{Table: r.Table, CTLabel: r.CTLabel}
	for _, er := range r.Egress {
		e, err := er.egress()
		if err != nil {
			return nil, fmt.Errorf("egress %s: %w", er.Name, err)
		}
		p.Egress = append(p.Egress, e)
	}
	if r.Cluster != nil {
		var err error
		if p.Cluster, err = r.Cluster.cluster(p.Egress); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (er EgressRecord) egress() (*Egress, error) {
	e := &Egress{Name: er.Name, OIF: er.OIF, Strategy: er.Strategy}
	var err error
	if e.Ports, err = ParsePortRange(er.Ports); err != nil {
		return nil, err
	}
	for _, s := range er.Private {
		x, err := ParseRange(s)
		if err != nil {
			return nil, fmt.Errorf("private %w", err)
		}
		e.Private = append(e.Private, x)
	}
	var inside netipx.IPSetBuilder
	for _, s := range er.Inside {
		x, err := ParseRange(s)
		if err != nil {
			return nil, fmt.Errorf("inside %w", err)
		}
		inside.AddRange(x)
	}
	e.Inside, _ = inside.IPSet()
	e.inside = spansOf(e.Inside)
	entries, err := parseDisjoint("pool", er.Pool)
	if err != nil {
		return nil, err
	}
	for _, x := range entries {
		if x.From() != x.To() {
			return nil, fmt.Errorf("pool %q is not one address", x.text)
		}
		e.Pool = append(e.Pool, Public{x.From(), x.weight})
	}
	if len(e.inside) == 0 || len(e.Pool) == 0 || len(e.Pool) > MaxPool {
		return nil, fmt.Errorf("%d inside ranges and %d public addresses", len(e.inside), len(e.Pool))
	}
	e.indexPool()
	switch {
	case e.Strategy == Octet && er.Octet != nil:
		e.Mapping, err = er.Octet.mapping(len(e.Pool))
	case e.Strategy == Hash && er.Hash != nil:
		e.Mapping, err = er.Hash.mapping(len(e.Pool))
	case e.Strategy == Persistent:
		e.Mapping, err = newPersistentMapping(e)
	case e.Strategy == Block && er.Block != nil:
		e.Mapping, err = er.Block.mapping(e)
	default:
		err = fmt.Errorf("strategy %q without its pins", e.Strategy)
	}
	return e, err
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

func (h *HashPins) mapping(n int) (*HashMapping, error) {
	if h.Buckets < 1 || h.Buckets > MaxBuckets {
		return nil, fmt.Errorf("hash: %d buckets", h.Buckets)
	}
	m := &HashMapping{Seed: h.Seed, Owners: make([]uint16, h.Buckets)}
	next, buf := 0, h.Runs
	for i := 0; next < h.Buckets; i++ {
		size, k := binary.Uvarint(buf)
		if k <= 0 {
			return nil, fmt.Errorf("hash: run %d is cut short at bucket %d of %d", i, next, h.Buckets)
		}
		owner, l := binary.Uvarint(buf[k:])
		if l <= 0 || size == 0 || size > uint64(h.Buckets-next) || owner >= uint64(n) {
			return nil, fmt.Errorf("hash: run %d (from bucket %d) does not fit %d buckets and %d addresses", i, next, h.Buckets, n)
		}
		buf = buf[k+l:]
		for b := range int(size) {
			m.Owners[next+b] = uint16(owner)
		}
		next += int(size)
	}
	if len(buf) > 0 {
		return nil, fmt.Errorf("hash: %d bytes after the last run", len(buf))
	}
	return m, nil
}

func (bp *BlockPins) mapping(e *Egress) (*BlockMapping, error) {
	m := &BlockMapping{Ports: e.Ports}
	m.setPrivate(e.Private)
	var p [2]Pattern
	for i, groups := range bp.Patterns {
		next := uint64(0)
		for _, g := range groups {
			if g[0] != next || g[1] == 0 || g[2] == 0 || g[1]*g[2] > uint64(e.Ports.Len()) {
				return nil, fmt.Errorf("block: group %v of pattern %d", g, i)
			}
			p[i] = append(p[i], Group{Offset: g[0], Size: g[1], BlockSize: int(g[2])})
			next = g[0] + g[1]
		}
		if next != bp.Window {
			return nil, fmt.Errorf("block: pattern %d covers %d of a window of %d", i, next, bp.Window)
		}
	}
	if bp.Window == 0 || bp.Window > maxWindow {
		return nil, fmt.Errorf("block: window %d", bp.Window)
	}
	m.setWindow(bp.Window, bp.Split, p[0], p[1])
	if need := m.GroupCount(); need > len(e.Pool) {
		return nil, fmt.Errorf("block: %d groups for %d addresses", need, len(e.Pool))
	}
	return m, nil
}
