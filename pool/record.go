package pool

import (
	"fmt"
	"strings"

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
	Uplinks *UplinksRecord `json:"uplinks,omitempty"`
	// Services are the plan's services, every public entry in full.
	Services []ServiceSpec `json:"services,omitempty"`
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

	Gateway string     `json:"gateway,omitempty"`
	Probe   *ProbeSpec `json:"probe,omitempty"`
	// NPT are the IPv6 prefix translations, INSIDE=PUBLIC or
	// INSIDE=from-interface.
	NPT []string `json:"npt,omitempty"`
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
		e.Mapping.pin(&er)
		if e.Gateway.IsValid() {
			er.Gateway = e.Gateway.String()
		}
		er.Probe = e.Probe.Spec()
		for _, n := range e.NPT {
			er.NPT = append(er.NPT, n.String())
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
	if u := p.Uplinks; u != nil {
		r.Uplinks = u.record()
	}
	for _, s := range p.Services {
		r.Services = append(r.Services, s.Spec())
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
	if r.Uplinks != nil {
		var err error
		if p.Uplinks, err = r.Uplinks.uplinks(p.Egress); err != nil {
			return nil, err
		}
	}
	var err error
	if p.Services, err = newServices(r.Services, p); err != nil {
		return nil, err
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
	kind := kindOf(e.Strategy)
	if kind == nil {
		return nil, fmt.Errorf("unknown strategy %q", e.Strategy)
	}
	if e.Mapping, err = kind.restore(e, er); err != nil {
		return e, err
	}
	if err = e.setUplink(EgressSpec{Gateway: er.Gateway, Probe: er.Probe}); err != nil {
		return e, err
	}
	var es EgressSpec
	for _, n := range er.NPT {
		inside, public, _ := strings.Cut(n, "=")
		es.Private6, es.Pool6 = append(es.Private6, inside), append(es.Pool6, public)
	}
	err = e.setNPT(es)
	return e, err
}
