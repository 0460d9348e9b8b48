package pool

import (
	"net/netip"
)

// Report is the load a plan puts on each public address.
type Report struct {
	Table  string
	Egress []EgressReport
	// Nodes is what each node of the plan's cluster serves; nil for a
	// single box.
	Nodes []NodeLoad
	// Uplinks is how a site's uplinks share its hosts; nil without.
	Uplinks *UplinksReport
	// Services are the plan's services.
	Services []Service
}

// UplinksReport is how a site's uplinks share its inside hosts, all up.
type UplinksReport struct {
	Policy  UplinkPolicy
	Sticky  bool
	Members []UplinkLoad
}

// UplinkLoad is one uplink: the hosts that leave by it first, and how it is
// probed.
type UplinkLoad struct {
	Name, OIF string
	Weight    int
	Hosts     uint64
	Share     float64
	Probe     *Probe // nil: its link alone says
}

// EgressReport is the load of one egress entry.
type EgressReport struct {
	Name     string
	OIF      string
	Strategy Strategy
	Ports    PortRange
	Settings []Setting // the strategy's settings, defaults included
	NPT      []NPT     // the IPv6 prefix translations

	Hosts     uint64 // mapped inside hosts
	Unmapped  uint64 // inside hosts no public address carries (octet values outside the range)
	HasActive bool   // a hosts file was given
	Active    uint64 // active hosts (weighted by their counts)

	// Imbalance is the largest load per unit of weight over the mean load
	// per unit of weight: 1 is perfectly even. ActiveImbalance is the same
	// for the active hosts.
	Imbalance       float64
	ActiveImbalance float64
	Min, Max        uint64 // fewest and most hosts on one public address

	Public []PublicLoad
}

// Setting is one strategy setting as it is in force.
type Setting struct {
	Name  string // the option's name, as in a spec file
	Value string
}

// PublicLoad is what one public address carries.
type PublicLoad struct {
	Addr   netip.Addr
	Weight int
	Hosts  uint64
	Active uint64
	Share  float64 // of the egress entry's hosts
	// PortsPerHost is the block size, or the port range over the hosts that
	// share it: below 1 when there are more hosts than ports.
	PortsPerHost float64
	Detail       string // what the strategy gives the address: values, buckets or hosts
	// Nodes are the nodes of the plan's cluster that serve the address,
	// owner first; nil for a single box.
	Nodes []string
}

// Report computes the load of every public address of the plan.
func (p *Plan) Report() *Report {
	r := &Report{Table: p.Table}
	c := p.Cluster
	addrs := map[netip.Addr]served{}
	for _, e := range p.Egress {
		er := e.report()
		if c != nil {
			for i, pl := range er.Public {
				er.Public[i].Nodes = c.NodeNames(c.Order(pl.Addr))
				addServed(addrs, pl.Addr, pl.Hosts, 0)
			}
		}
		r.Egress = append(r.Egress, er)
	}
	if c != nil {
		r.Nodes = c.loads(addrs, 0)
	}
	if u := p.Uplinks; u != nil {
		ur := &UplinksReport{Policy: u.Policy, Sticky: u.Sticky}
		hosts := make([]uint64, len(u.Members))
		var total uint64
		each(p.Egress[u.Members[0].Egress].inside, func(x uint32) {
			hosts[u.MemberOf(AddrFromUint32(x), u.AllUp())]++
			total++
		})
		for i, m := range u.Members {
			ur.Members = append(ur.Members, UplinkLoad{Name: m.Name, OIF: m.OIF, Weight: m.Weight, Hosts: hosts[i],
				Share: ratio(hosts[i], total), Probe: p.Egress[m.Egress].Probe})
		}
		r.Uplinks = ur
	}
	r.Services = p.Services
	return r
}

func (e *Egress) report() EgressReport {
	r := EgressReport{Name: e.Name, OIF: e.OIF, Strategy: e.Strategy, Ports: e.Ports, NPT: e.NPT,
		Settings: e.Mapping.settings(), HasActive: e.Active != nil}
	hosts := make([]uint64, len(e.Pool))
	e.eachMapped(func(_ uint32, i int) { hosts[i]++ })
	active := e.Active
	if active == nil {
		active = make([]uint64, len(e.Pool))
	}
	details := e.Mapping.describe(len(e.Pool))
	for i, p := range e.Pool {
		r.Hosts += hosts[i]
		r.Active += active[i]
		ports := float64(e.Ports.Len())
		if b, ok := e.Mapping.(*BlockMapping); ok {
			ports = float64(b.PortBlock(i))
		} else if hosts[i] > 0 {
			ports /= float64(hosts[i])
		}
		r.Public = append(r.Public, PublicLoad{Addr: p.Addr, Weight: p.Weight, Hosts: hosts[i],
			Active: active[i], PortsPerHost: ports, Detail: details[i]})
	}
	r.Unmapped = countOf(e.inside) - r.Hosts
	r.Min, r.Max = hosts[0], hosts[0]
	for i := range r.Public {
		r.Public[i].Share = ratio(hosts[i], r.Hosts)
		r.Min, r.Max = min(r.Min, hosts[i]), max(r.Max, hosts[i])
	}
	r.Imbalance = e.imbalance(hosts)
	if r.HasActive {
		r.ActiveImbalance = e.imbalance(active)
	}
	return r
}

// imbalance is max(load_i / weight_i) over sum(load) / sum(weight).
func (e *Egress) imbalance(load []uint64) float64 {
	var total, weights uint64
	worst := 0.0
	for i, p := range e.Pool {
		total += load[i]
		weights += uint64(p.Weight)
		worst = max(worst, float64(load[i])/float64(p.Weight))
	}
	if total == 0 {
		return 0
	}
	return worst / (float64(total) / float64(weights))
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
