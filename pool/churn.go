package pool

import (
	"cmp"
	"net/netip"
	"slices"

	"go4.org/netipx"
)

// ChurnReport is what a change from one egress plan to another does to the
// inside hosts both of them map.
type ChurnReport struct {
	Hosts      uint64           // hosts mapped by both plans
	Moved      uint64           // hosts whose public address changes
	PortsMoved uint64           // hosts that keep their address but change port block
	Ranges     []netipx.IPRange // the moved hosts (address or block), largest range first
}

// MovedShare is the share of the hosts whose public address changes.
func (r ChurnReport) MovedShare() float64 { return ratio(r.Moved, r.Hosts) }

// Churn compares the mapping of old with that of new over the hosts both map.
func Churn(old, new *Egress) ChurnReport {
	var r ChurnReport
	oldBlock, _ := old.Mapping.(*BlockMapping)
	newBlock, _ := new.Mapping.(*BlockMapping)
	var moved rangeList
	each(intersect(old.inside, new.inside), func(x uint32) {
		i, j := old.Mapping.owner(x), new.Mapping.owner(x)
		if i < 0 || j < 0 {
			return
		}
		r.Hosts++
		switch {
		case old.Pool[i].Addr != new.Pool[j].Addr:
			r.Moved++
		case oldBlock != nil && newBlock != nil && oldBlock.HostPorts(x) != newBlock.HostPorts(x):
			r.PortsMoved++
		default:
			return
		}
		moved.add(x)
	})
	moved.close()
	r.Ranges = moved.ranges
	slices.SortStableFunc(r.Ranges, func(a, b netipx.IPRange) int {
		return cmp.Compare(spanOf(b).size(), spanOf(a).size())
	})
	return r
}

// PlanChurn sums Churn over the egress entries both plans have, by name:
// the hosts a change of plan moves, without their ranges.
func PlanChurn(old, new *Plan) ChurnReport {
	var r ChurnReport
	for _, e := range new.Egress {
		if oe, err := old.EgressNamed(e.Name); err == nil {
			c := Churn(oe, e)
			r.Hosts, r.Moved, r.PortsMoved = r.Hosts+c.Hosts, r.Moved+c.Moved, r.PortsMoved+c.PortsMoved
		}
	}
	return r
}

// intersect returns the addresses in both a and b (each ascending, disjoint).
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].lo, b[j].lo), min(a[i].hi, b[j].hi)
		if lo <= hi {
			out = append(out, span{lo, hi})
		}
		if a[i].hi < b[j].hi {
			i++
		} else {
			j++
		}
	}
	return out
}

// ChunkMove is a chunk of the pool whose owner changes: From and To name
// the nodes ("" where a plan has no cluster, or no such chunk).
type ChunkMove struct {
	Block    netip.Prefix
	From, To string
}

// ClusterChurn is what a change does to the nodes' shares of the pool.
type ClusterChurn struct {
	Chunks int         // chunks of either plan
	Moves  []ChunkMove // the chunks whose owner changes, ascending
}

// ChunkChurn compares the chunk owners of two plans; nil when neither has
// nodes.
func ChunkChurn(old, new *Plan) *ClusterChurn {
	if old.Cluster == nil && new.Cluster == nil {
		return nil
	}
	owners := func(c *Cluster) map[netip.Prefix]string {
		out := map[netip.Prefix]string{}
		if c != nil {
			for _, ch := range c.Chunks {
				out[ch.Block] = c.Nodes[ch.Order[0]].Name
			}
		}
		return out
	}
	a, b := owners(old.Cluster), owners(new.Cluster)
	var blocks []netip.Prefix
	for p := range a {
		blocks = append(blocks, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			blocks = append(blocks, p)
		}
	}
	slices.SortFunc(blocks, func(x, y netip.Prefix) int {
		return cmp.Or(x.Addr().Compare(y.Addr()), cmp.Compare(x.Bits(), y.Bits()))
	})
	r := &ClusterChurn{Chunks: len(blocks)}
	for _, p := range blocks {
		if a[p] != b[p] {
			r.Moves = append(r.Moves, ChunkMove{p, a[p], b[p]})
		}
	}
	return r
}

// UplinkChurnReport is what a change does to which uplink a site's inside
// hosts leave by, all uplinks up.
type UplinkChurnReport struct {
	Hosts uint64 // hosts both plans give uplinks
	Moved uint64 // hosts whose uplink changes
}

// MovedShare is the share of the hosts whose uplink changes.
func (r UplinkChurnReport) MovedShare() float64 { return ratio(r.Moved, r.Hosts) }

// UplinkChurn compares the uplinks two plans give the inside hosts, by the
// uplinks' egress entry names, all up; nil when neither plan has uplinks.
// A plan without uplinks gives none: its routes decide.
func UplinkChurn(old, new *Plan) *UplinkChurnReport {
	if old.Uplinks == nil && new.Uplinks == nil {
		return nil
	}
	r := &UplinkChurnReport{}
	if old.Uplinks == nil || new.Uplinks == nil {
		return r
	}
	ou, nu := old.Uplinks, new.Uplinks
	oi, ni := old.Egress[ou.Members[0].Egress], new.Egress[nu.Members[0].Egress]
	each(intersect(oi.inside, ni.inside), func(x uint32) {
		a := AddrFromUint32(x)
		r.Hosts++
		if ou.Members[ou.MemberOf(a, ou.AllUp())].Name != nu.Members[nu.MemberOf(a, nu.AllUp())].Name {
			r.Moved++
		}
	})
	return r
}
