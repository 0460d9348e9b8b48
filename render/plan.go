// Package render writes natpool's plans, reports and rulesets as text.
package render

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/natpool/natpool/pool"
)

// PlanTable writes the load report as one table per egress entry, each
// followed by a summary line.
func PlanTable(w io.Writer, r *pool.Report) error {
	for i, e := range r.Egress {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "egress %s: %s\n", e.Name, egressSettings(e))
		header := []string{"PUBLIC", "WEIGHT", "HOSTS", "ACTIVE", "SHARE", "PORTS/HOST", "NODES", "CARRIES"}
		var rows [][]string
		for _, p := range e.Public {
			rows = append(rows, []string{p.Addr.String(), fmt.Sprint(p.Weight), fmt.Sprint(p.Hosts),
				fmt.Sprint(p.Active), percent(p.Share), portsPerHost(p.PortsPerHost), NodesText(p.Nodes), p.Detail})
		}
		drop := map[int]bool{1: !weighted(e), 3: !e.HasActive, 6: e.Public[0].Nodes == nil, 7: e.Public[0].Detail == ""}
		header, rows = dropColumns(header, rows, drop)
		right := []int{}
		for i, h := range header {
			if h != "PUBLIC" && h != "CARRIES" && h != "NODES" {
				right = append(right, i)
			}
		}
		if err := Table(w, header, rows, right...); err != nil {
			return err
		}
		fmt.Fprintln(w, summary(e))
		for _, n := range e.NPT {
			fmt.Fprintf(w, "IPv6: %s <-> %s, 1:1, each host keeping its interface identifier\n", n.Inside, prefixText6(n, e.OIF))
		}
	}
	if err := nodeSummary(w, r); err != nil {
		return err
	}
	if err := uplinkSummary(w, r); err != nil {
		return err
	}
	serviceSummary(w, r.Services)
	return nil
}

// serviceSummary writes where each service is reached.
func serviceSummary(w io.Writer, services []pool.Service) {
	if len(services) == 0 {
		return
	}
	fmt.Fprintf(w, "\nservices:\n")
	for _, s := range services {
		fmt.Fprintf(w, "  %s (%s %s:%s): ", s.Name, s.Protocol, s.Inside, s.Ports.Spec())
		for i, pub := range s.Public {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s:%s by %s", pub.Addr, pub.Ports.Spec(), pub.Egress)
		}
		fmt.Fprintln(w)
	}
}

// uplinkSummary writes, for a site's uplinks, the hosts each carries first
// and how it is probed.
func uplinkSummary(w io.Writer, r *pool.Report) error {
	u := r.Uplinks
	if u == nil {
		return nil
	}
	sticky := ""
	if u.Sticky {
		sticky = ", sticky"
	}
	fmt.Fprintf(w, "\nuplinks (%s%s):\n", u.Policy, sticky)
	for _, m := range u.Members {
		fmt.Fprintf(w, "  %s (%s): ", m.Name, m.OIF)
		if u.Policy == pool.Balance {
			fmt.Fprintf(w, "weight %d, ", m.Weight)
		}
		fmt.Fprintf(w, "first uplink of %s (%s); %s\n", Plural(m.Hosts, "host"), percent(m.Share), probeText(m.Probe))
	}
	return nil
}

// probeText says how an uplink is probed.
func probeText(p *pool.Probe) string {
	if p == nil {
		return "not probed: its link alone says whether it is up"
	}
	targets := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		targets[i] = t.String()
	}
	s := fmt.Sprintf("probes %s every %s (timeout %s), %d to answer; down after %d failed rounds, up after %d passed", strings.Join(targets, ", "),
		p.Interval, p.Timeout, p.Reliability, p.Down, p.Up)
	if p.Latency > 0 {
		s += fmt.Sprintf("; degraded above %s median round trip", p.Latency)
	}
	if p.Loss > 0 {
		s += fmt.Sprintf("; degraded above %s loss", percent(p.Loss))
	}
	return s
}

// nodeSummary writes, for a cluster's plan, what each node serves while
// every node is up, and with down the node that would add most to it.
func nodeSummary(w io.Writer, r *pool.Report) error {
	if r.Nodes == nil {
		return nil
	}
	fmt.Fprintln(w)
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "node %s owns %s carrying %s", n.Node, Plural(uint64(n.Owned.Addresses), "public address"), Plural(n.Owned.Hosts, "host"))
		if n.FailoverOf != "" {
			fmt.Fprintf(w, "; with %s down, %d carrying %d", n.FailoverOf, n.Failover.Addresses, n.Failover.Hosts)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func egressSettings(e pool.EgressReport) string {
	parts := []string{"strategy " + string(e.Strategy)}
	if e.OIF != "" {
		parts = append(parts, "oif "+e.OIF)
	}
	parts = append(parts, "ports "+e.Ports.String())
	for _, s := range e.Settings {
		parts = append(parts, s.Name+" "+s.Value)
	}
	return strings.Join(parts, ", ")
}

func summary(e pool.EgressReport) string {
	s := fmt.Sprintf("%d hosts on %d public addresses; imbalance %.3f (min %d, max %d hosts per address)",
		e.Hosts, len(e.Public), e.Imbalance, e.Min, e.Max)
	if e.HasActive {
		s += fmt.Sprintf("; %d active hosts, imbalance %.3f", e.Active, e.ActiveImbalance)
	}
	if e.Unmapped > 0 {
		s += fmt.Sprintf("; %d inside hosts unmapped (values outside the octet range)", e.Unmapped)
	}
	return s
}

func weighted(e pool.EgressReport) bool {
	for _, p := range e.Public {
		if p.Weight != 1 {
			return true
		}
	}
	return false
}

// NodesText writes the nodes serving an address: the owner, then its
// backups in turn ("nat1 > nat3 > nat2").
func NodesText(nodes []string) string { return strings.Join(nodes, " > ") }

func percent(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) }

// portsPerHost writes whole ports, or the fraction when hosts outnumber
// ports: 256 hosts sharing 77 ports have 0.30 each, not 1.
func portsPerHost(p float64) string {
	if p < 1 {
		return fmt.Sprintf("%.2f", p)
	}
	return fmt.Sprint(int(p))
}

// dropColumns removes the columns marked in drop from header and rows.
func dropColumns(header []string, rows [][]string, drop map[int]bool) ([]string, [][]string) {
	keep := func(cells []string) []string {
		var out []string
		for i, c := range cells {
			if !drop[i] {
				out = append(out, c)
			}
		}
		return out
	}
	for i := range rows {
		rows[i] = keep(rows[i])
	}
	return keep(header), rows
}

type planJSON struct {
	Table  string       `json:"table"`
	Egress []egressJSON `json:"egress"`
	// Nodes is what each node serves (a cluster's plan only).
	Nodes []nodeLoadJSON `json:"nodes,omitempty"`
	// Uplinks is how a site's uplinks share its hosts (with uplinks only).
	Uplinks *uplinksReportJSON `json:"uplinks,omitempty"`
	// Services are the services, every public entry in full.
	Services []pool.ServiceSpec `json:"services,omitempty"`
	Spec     pool.Spec          `json:"spec"`
}

type uplinksReportJSON struct {
	Policy  pool.UplinkPolicy `json:"policy"`
	Sticky  bool              `json:"sticky"`
	Members []uplinkLoadJSON  `json:"members"`
}

type uplinkLoadJSON struct {
	Name   string          `json:"name"`
	OIF    string          `json:"oif"`
	Weight int             `json:"weight"`
	Hosts  uint64          `json:"hosts"`
	Share  float64         `json:"share"`
	Probe  *pool.ProbeSpec `json:"probe"` // null: not probed
}

type nodeLoadJSON struct {
	Name     string        `json:"name"`
	Weight   int           `json:"weight"`
	Owned    nodeShareJSON `json:"owned"`
	Failover nodeShareJSON `json:"failover"`
	// FailoverOf is the other node whose failure adds most to this one;
	// omitted in a cluster of one node.
	FailoverOf string `json:"failover_of,omitempty"`
}

type nodeShareJSON struct {
	Addresses      int      `json:"addresses"`
	Hosts          uint64   `json:"hosts"`
	Connections    *float64 `json:"connections,omitempty"`     // capacity only
	MaxUtilisation *float64 `json:"max_utilisation,omitempty"` // capacity only
}

// nodeLoadsJSON converts node loads; those of a capacity report with their
// connections and utilisation.
func nodeLoadsJSON(nodes []pool.NodeLoad, capacity bool) []nodeLoadJSON {
	share := func(s pool.NodeShare) nodeShareJSON {
		sj := nodeShareJSON{Addresses: s.Addresses, Hosts: s.Hosts}
		if capacity {
			sj.Connections, sj.MaxUtilisation = &s.Connections, &s.MaxUtilisation
		}
		return sj
	}
	var out []nodeLoadJSON
	for _, n := range nodes {
		out = append(out, nodeLoadJSON{Name: n.Node, Weight: n.Weight, Owned: share(n.Owned), Failover: share(n.Failover), FailoverOf: n.FailoverOf})
	}
	return out
}

type egressJSON struct {
	Name            string            `json:"name"`
	NPT             []string          `json:"npt,omitempty"` // INSIDE=PUBLIC (or =from-interface)
	OIF             string            `json:"oif,omitempty"`
	Strategy        pool.Strategy     `json:"strategy"`
	Ports           string            `json:"ports"`
	Settings        map[string]string `json:"settings,omitempty"`
	Hosts           uint64            `json:"hosts"`
	Unmapped        uint64            `json:"unmapped"`
	Active          *uint64           `json:"active,omitempty"`
	PublicAddrs     int               `json:"public_addrs"`
	Imbalance       float64           `json:"imbalance"`
	ActiveImbalance *float64          `json:"active_imbalance,omitempty"`
	Min             uint64            `json:"min"`
	Max             uint64            `json:"max"`
	Public          []publicJSON      `json:"public"`
}

type publicJSON struct {
	Addr         string  `json:"addr"`
	Weight       int     `json:"weight"`
	Hosts        uint64  `json:"hosts"`
	Active       *uint64 `json:"active"` // null without a hosts file
	Share        float64 `json:"share"`
	PortsPerHost float64 `json:"ports_per_host"`
	Detail       string  `json:"detail,omitempty"`
	// Nodes serve the address, owner first (a cluster's plan only).
	Nodes []string `json:"nodes,omitempty"`
}

// PlanJSON writes the load report as JSON, with the spec it was planned
// from, so that the JSON can be planned again.
func PlanJSON(w io.Writer, r *pool.Report, spec pool.Spec) error {
	out := planJSON{Table: r.Table, Egress: []egressJSON{}, Nodes: nodeLoadsJSON(r.Nodes, false), Spec: spec}
	if u := r.Uplinks; u != nil {
		uj := &uplinksReportJSON{Policy: u.Policy, Sticky: u.Sticky}
		for _, m := range u.Members {
			uj.Members = append(uj.Members, uplinkLoadJSON{m.Name, m.OIF, m.Weight, m.Hosts, m.Share, m.Probe.Spec()})
		}
		out.Uplinks = uj
	}
	for _, s := range r.Services {
		out.Services = append(out.Services, s.Spec())
	}
	for _, e := range r.Egress {
		ej := egressJSON{Name: e.Name, OIF: e.OIF, Strategy: e.Strategy, Ports: e.Ports.String(),
			Hosts: e.Hosts, Unmapped: e.Unmapped, PublicAddrs: len(e.Public),
			Imbalance: e.Imbalance, Min: e.Min, Max: e.Max}
		for _, n := range e.NPT {
			ej.NPT = append(ej.NPT, n.String())
		}
		if len(e.Settings) > 0 {
			ej.Settings = map[string]string{}
			for _, s := range e.Settings {
				ej.Settings[s.Name] = s.Value
			}
		}
		if e.HasActive {
			ej.Active, ej.ActiveImbalance = &e.Active, &e.ActiveImbalance
		}
		for _, p := range e.Public {
			pj := publicJSON{Addr: p.Addr.String(), Weight: p.Weight, Hosts: p.Hosts, Share: p.Share,
				PortsPerHost: p.PortsPerHost, Detail: p.Detail, Nodes: p.Nodes}
			if e.HasActive {
				pj.Active = &p.Active
			}
			ej.Public = append(ej.Public, pj)
		}
		out.Egress = append(out.Egress, ej)
	}
	return JSON(w, out)
}

// JSON writes v as indented JSON, the form of every -o json.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
