package render

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/natpool/natpool/pool"
)

// barWidth is the cells of a utilisation bar.
const barWidth = 10

// bar draws a share (clipped to 0-1) in eighths of unicode block cells on
// a light-shade track, so the hot addresses of a long table stand out.
func bar(share float64) string {
	eighths := int(math.Round(min(max(share, 0), 1) * barWidth * 8))
	partial := []string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}
	b := strings.Repeat("█", eighths/8) + partial[eighths%8]
	return b + strings.Repeat("░", barWidth-len([]rune(b)))
}

func utilisation(share float64) string { return fmt.Sprintf("%s %5.1f%%", bar(share), 100*share) }

// CapacityTable writes the static port budget per egress entry, then, for a
// cluster, per node.
func CapacityTable(w io.Writer, caps []pool.Capacity, nodes []pool.NodeLoad, d pool.Demand) error {
	for i, c := range caps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		budget := fmt.Sprintf("the port range %s per destination", c.Ports)
		if c.Blocks[0] > 0 {
			budget = fmt.Sprintf("a block of %s ports per host", blocksText(c.Blocks))
		}
		fmt.Fprintf(w, "egress %s (%s): %g connections per host, %g%% to one destination, against %s\n",
			c.Egress, c.Strategy, d.SessionsPerHost, 100*d.SameDestinationShare, budget)
		var rows [][]string
		for _, p := range c.Public {
			rows = append(rows, []string{p.Addr.String(), fmt.Sprint(p.Hosts), portsPerHost(p.PortsPerHost),
				fmt.Sprintf("%.0f", p.Demand), fmt.Sprint(p.Budget), utilisation(p.Utilisation), fmt.Sprintf("%.0f", p.Headroom)})
		}
		if err := Table(w, []string{"PUBLIC", "HOSTS", "PORTS/HOST", "DEMAND", "BUDGET", "UTILISATION", "HEADROOM"}, rows, 1, 2, 3, 4, 6); err != nil {
			return err
		}
		fmt.Fprintf(w, "busiest address at %.1f%%; ", 100*c.MaxUtilisation)
		switch {
		case c.AddressesNeeded >= 0:
			verb := map[bool]string{true: "keeps", false: "keep"}[c.AddressesNeeded == 1]
			fmt.Fprintf(w, "%s %s every one at or below %g%% (the pool has %d)\n",
				Plural(uint64(c.AddressesNeeded), "public address"), verb, 100*d.Target, len(c.Public))
		case c.Blocks[0] > 0:
			fmt.Fprintf(w, "no block of the port range %s holds %g connections to one destination at %g%%\n",
				c.Ports, d.SessionsPerHost*d.SameDestinationShare, 100*d.Target)
		default:
			fmt.Fprintf(w, "no pool of up to %d addresses keeps every one at or below %g%%\n", pool.MaxPool, 100*d.Target)
		}
	}
	return nodeCapacityTable(w, nodes)
}

// nodeCapacityTable writes what each node of a cluster translates with
// every node up, and with the peer down whose addresses add most to it.
func nodeCapacityTable(w io.Writer, nodes []pool.NodeLoad) error {
	if nodes == nil {
		return nil
	}
	share := func(s pool.NodeShare) []string {
		return []string{fmt.Sprint(s.Addresses), fmt.Sprint(s.Hosts), fmt.Sprintf("%.0f", s.Connections), utilisation(s.MaxUtilisation)}
	}
	var up, down [][]string
	most := 0.0
	for _, n := range nodes {
		up = append(up, append([]string{n.Node, fmt.Sprint(n.Weight)}, share(n.Owned)...))
		down = append(down, append([]string{n.Node, cmp.Or(n.FailoverOf, "-")}, share(n.Failover)...))
		most = max(most, n.Failover.Connections)
	}
	fmt.Fprintln(w, "\nnodes, every node up:")
	if err := Table(w, []string{"NODE", "WEIGHT", "ADDRESSES", "HOSTS", "CONNECTIONS", "BUSIEST ADDRESS"}, up, 1, 2, 3, 4); err != nil {
		return err
	}
	fmt.Fprintln(w, "nodes, each with the peer down whose addresses add most to it:")
	if err := Table(w, []string{"NODE", "PEER DOWN", "ADDRESSES", "HOSTS", "CONNECTIONS", "BUSIEST ADDRESS"}, down, 2, 3, 4); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "with one node down a node translates up to %.0f connections: size nf_conntrack_max on every node for them and the flows it steers to peers\n", most)
	return err
}

type capacityJSON struct {
	Demand struct {
		SessionsPerHost      float64 `json:"sessions_per_host"`
		SameDestinationShare float64 `json:"same_destination_share"`
		Target               float64 `json:"target"`
	} `json:"demand"`
	Egress []egressCapacityJSON `json:"egress"`
	Nodes  []nodeLoadJSON       `json:"nodes,omitempty"` // a cluster's only
}

type egressCapacityJSON struct {
	Name            string               `json:"name"`
	Strategy        pool.Strategy        `json:"strategy"`
	Ports           string               `json:"ports"`
	BlockSizeMin    int                  `json:"block_size_min,omitempty"`
	BlockSizeMax    int                  `json:"block_size_max,omitempty"`
	MaxUtilisation  float64              `json:"max_utilisation"`
	AddressesNeeded int                  `json:"addresses_needed"`
	Public          []publicCapacityJSON `json:"public"`
}

type publicCapacityJSON struct {
	Addr         string  `json:"addr"`
	Hosts        uint64  `json:"hosts"`
	PortsPerHost float64 `json:"ports_per_host"`
	Demand       float64 `json:"demand"`
	Budget       int     `json:"budget"`
	Utilisation  float64 `json:"utilisation"`
	Headroom     float64 `json:"headroom"`
}

// CapacityJSON writes the static port budget as JSON; addresses_needed is
// -1 when no block can hold the demand.
func CapacityJSON(w io.Writer, caps []pool.Capacity, nodes []pool.NodeLoad, d pool.Demand) error {
	out := capacityJSON{Nodes: nodeLoadsJSON(nodes, true)}
	out.Demand.SessionsPerHost, out.Demand.SameDestinationShare, out.Demand.Target = d.SessionsPerHost, d.SameDestinationShare, d.Target
	out.Egress = []egressCapacityJSON{}
	for _, c := range caps {
		ej := egressCapacityJSON{Name: c.Egress, Strategy: c.Strategy, Ports: c.Ports.String(), BlockSizeMin: c.Blocks[0], BlockSizeMax: c.Blocks[1],
			MaxUtilisation: c.MaxUtilisation, AddressesNeeded: c.AddressesNeeded}
		for _, p := range c.Public {
			ej.Public = append(ej.Public, publicCapacityJSON{Addr: p.Addr.String(), Hosts: p.Hosts, PortsPerHost: p.PortsPerHost,
				Demand: p.Demand, Budget: p.Budget, Utilisation: p.Utilisation, Headroom: p.Headroom})
		}
		out.Egress = append(out.Egress, ej)
	}
	return JSON(w, out)
}

// LiveCapacityTable writes the port use per egress entry: per public
// address, then the busiest hosts, then (block mode) the hosts near the end
// of their block.
func LiveCapacityTable(w io.Writer, caps []pool.LiveCapacity) error {
	for i, c := range caps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "egress %s (%s): connections per public address; the busiest destination's share of the port range %s\n", c.Egress, c.Strategy, c.Ports)
		// The hottest addresses first; idle ones are only counted.
		busy := slices.DeleteFunc(slices.Clone(c.Public), func(p pool.LivePublic) bool { return p.Entries == 0 })
		slices.SortStableFunc(busy, func(a, b pool.LivePublic) int { return cmp.Compare(b.BusiestEntries, a.BusiestEntries) })
		var rows [][]string
		for _, p := range busy {
			rows = append(rows, []string{p.Addr.String(), fmt.Sprint(p.Entries), fmt.Sprint(p.Hosts),
				fmt.Sprintf("%s (%d)", p.Busiest, p.BusiestEntries), utilisation(p.Utilisation)})
		}
		if len(rows) > 0 {
			if err := Table(w, []string{"PUBLIC", "ENTRIES", "HOSTS", "BUSIEST DESTINATION", "UTILISATION"}, rows, 1, 2); err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "%d of %d public addresses have no connections\n", len(c.Public)-len(busy), len(c.Public))
		if len(c.TopHosts) == 0 {
			continue
		}
		fmt.Fprintln(w, "busiest inside hosts:")
		if err := hostTable(w, c, c.TopHosts); err != nil {
			return err
		}
		if c.Blocks[0] > 0 {
			fmt.Fprintf(w, "hosts using more than %.0f%% of their %s-port block: %d\n", 100*pool.FullBlock, blocksText(c.Blocks), len(c.FullBlocks))
			if len(c.FullBlocks) > 0 {
				if err := hostTable(w, c, c.FullBlocks); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// hostTable writes hosts and their connections, in block mode with the
// share of the block they use.
func hostTable(w io.Writer, c pool.LiveCapacity, hosts []pool.HostUse) error {
	header := []string{"HOST", "PUBLIC", "ENTRIES"}
	if c.Blocks[0] > 0 {
		header = append(header, "BLOCK USE")
	}
	var rows [][]string
	for _, h := range hosts {
		row := []string{h.Host.String(), h.Public.String(), fmt.Sprint(h.Entries)}
		if c.Blocks[0] > 0 {
			row = append(row, utilisation(h.BlockUse))
		}
		rows = append(rows, row)
	}
	return Table(w, header, rows, 2)
}

type liveJSON struct {
	Egress []liveEgressJSON `json:"egress"`
}

type liveEgressJSON struct {
	Name         string           `json:"name"`
	Strategy     pool.Strategy    `json:"strategy"`
	Ports        string           `json:"ports"`
	BlockSizeMin int              `json:"block_size_min,omitempty"`
	BlockSizeMax int              `json:"block_size_max,omitempty"`
	Public       []livePublicJSON `json:"public"`
	TopHosts     []hostUseJSON    `json:"top_hosts"`
	FullBlocks   []hostUseJSON    `json:"full_blocks,omitempty"`
}

type livePublicJSON struct {
	Addr           string  `json:"addr"`
	Entries        int     `json:"entries"`
	Hosts          int     `json:"hosts"`
	Busiest        string  `json:"busiest_destination,omitempty"`
	BusiestEntries int     `json:"busiest_entries"`
	Utilisation    float64 `json:"utilisation"`
}

type hostUseJSON struct {
	Host     string   `json:"host"`
	Public   string   `json:"public"`
	Entries  int      `json:"entries"`
	BlockUse *float64 `json:"block_use,omitempty"`
}

// LiveCapacityJSON writes the port use as JSON, for monitoring.
func LiveCapacityJSON(w io.Writer, caps []pool.LiveCapacity) error {
	out := liveJSON{Egress: []liveEgressJSON{}}
	hostsJSON := func(c pool.LiveCapacity, hs []pool.HostUse) []hostUseJSON {
		list := []hostUseJSON{}
		for _, h := range hs {
			hj := hostUseJSON{Host: h.Host.String(), Public: h.Public.String(), Entries: h.Entries}
			if c.Blocks[0] > 0 {
				hj.BlockUse = &h.BlockUse
			}
			list = append(list, hj)
		}
		return list
	}
	for _, c := range caps {
		ej := liveEgressJSON{Name: c.Egress, Strategy: c.Strategy, Ports: c.Ports.String(), BlockSizeMin: c.Blocks[0], BlockSizeMax: c.Blocks[1],
			TopHosts: hostsJSON(c, c.TopHosts)}
		if c.Blocks[0] > 0 {
			ej.FullBlocks = hostsJSON(c, c.FullBlocks)
		}
		for _, p := range c.Public {
			pj := livePublicJSON{Addr: p.Addr.String(), Entries: p.Entries, Hosts: p.Hosts, BusiestEntries: p.BusiestEntries, Utilisation: p.Utilisation}
			if p.BusiestEntries > 0 {
				pj.Busiest = p.Busiest.String()
			}
			ej.Public = append(ej.Public, pj)
		}
		out.Egress = append(out.Egress, ej)
	}
	return JSON(w, out)
}

// blocksText writes a layout's block sizes: "63", or "31-63" when groups
// of two sizes give blocks of two.
func blocksText(b [2]int) string {
	if b[0] == b[1] {
		return fmt.Sprint(b[0])
	}
	return fmt.Sprintf("%d-%d", b[0], b[1])
}
