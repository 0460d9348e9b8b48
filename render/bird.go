package render

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// BIRD writes the BIRD 2 configuration of one node of the plan's cluster,
// a whole bird.conf:
//
//   - every chunk of the pool as a static route, announced to the upstream
//     with the node's rank for it: MED 0 and no prepending where it owns the
//     chunk, and for the k-th backup MED k and its AS prepended k times, so
//     the upstream sends each chunk's replies to its first live node;
//   - per peer, a routing table that BIRD fills from the BGP session with
//     that peer and exports to the kernel table natpool's policy rules look
//     up (compiler.NodeTable): a route through the peer while the session is
//     up, none once it is down. Each node announces to its peer a route
//     covering every destination: the node listed first announces 0.0.0.0/0,
//     the other 0.0.0.0/1 and 128.0.0.0/1, so that what a node announces and
//     what it learns never share a prefix in the table they share.
func BIRD(w io.Writer, p *pool.Plan, node, version string) error {
	c := p.Cluster
	self := c.NodeIndex(node)
	n := c.Nodes[self]
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(version, compiler.Digest(p)))
	fmt.Fprintf(&b, "# BIRD 2 configuration of node %s of the cluster.\n\n", n.Name)
	fmt.Fprintf(&b, "router id %s;\n\n", n.Address)
	b.WriteString("protocol device natpool_device {\n}\n\n")

	b.WriteString("# The pool's chunks. They are announced, never installed in the kernel:\n")
	b.WriteString("# replies to a public address are translated back by conntrack.\n")
	b.WriteString("protocol static natpool_chunks {\n\tipv4;\n")
	byRank := make([][]netip.Prefix, len(c.Nodes))
	for _, ch := range c.Chunks {
		rank := slices.Index(ch.Order, self)
		for _, pfx := range ch.Prefixes {
			fmt.Fprintf(&b, "\troute %s blackhole;\n", pfx)
			byRank[rank] = append(byRank[rank], pfx)
		}
	}
	b.WriteString("}\n\n")

	b.WriteString("# Each chunk goes to the upstream with this node's rank for it: the owner\n")
	b.WriteString("# (rank 0) is preferred, then the backups in turn.\n")
	b.WriteString("filter natpool_upstream_export {\n\tif proto != \"natpool_chunks\" then reject;\n")
	for rank, pfxs := range byRank {
		if len(pfxs) == 0 {
			continue
		}
		texts := make([]string, len(pfxs))
		for i, pfx := range pfxs {
			texts[i] = pfx.String()
		}
		fmt.Fprintf(&b, "\tif net ~ [ %s ] then {\n\t\tbgp_med = %d;\n", strings.Join(texts, ", "), rank)
		for range rank {
			fmt.Fprintf(&b, "\t\tbgp_path.prepend(%d);\n", n.BGP.AS)
		}
		b.WriteString("\t\taccept;\n\t}\n")
	}
	b.WriteString("\treject;\n}\n\n")

	b.WriteString("protocol bgp natpool_upstream {\n")
	if n.BGP.Source.IsValid() {
		fmt.Fprintf(&b, "\tlocal %s as %d;\n", n.BGP.Source, n.BGP.AS)
	} else {
		fmt.Fprintf(&b, "\tlocal as %d;\n", n.BGP.AS)
	}
	fmt.Fprintf(&b, "\tneighbor %s as %d;\n", n.BGP.Neighbor, n.BGP.NeighborAS)
	timers(&b, n.BGP.Hold)
	b.WriteString("\tipv4 {\n\t\timport none;\n\t\texport filter natpool_upstream_export;\n\t};\n}\n")

	for i, peer := range c.Nodes {
		if i == self {
			continue
		}
		table := "natpool_" + peer.Name
		fmt.Fprintf(&b, "\n# Peer %s: kernel table %d holds a route through it while its session is up.\n", peer.Name, compiler.NodeTable(c, i))
		fmt.Fprintf(&b, "ipv4 table %s;\n\n", table)
		fmt.Fprintf(&b, "protocol static natpool_steer_%s {\n\tipv4 { table %s; };\n", peer.Name, table)
		announce := []string{"0.0.0.0/0"}
		if self > i {
			announce = []string{"0.0.0.0/1", "128.0.0.0/1"}
		}
		for _, pfx := range announce {
			fmt.Fprintf(&b, "\troute %s blackhole;\n", pfx)
		}
		b.WriteString("}\n\n")
		fmt.Fprintf(&b, "protocol bgp natpool_peer_%s {\n", peer.Name)
		fmt.Fprintf(&b, "\tlocal %s as %d;\n\tneighbor %s as %d;\n\tdirect;\n", n.Address, n.BGP.AS, peer.Address, n.BGP.AS)
		timers(&b, c.SessionHold(self, i))
		fmt.Fprintf(&b, "\tipv4 {\n\t\ttable %s;\n\t\timport all;\n\t\texport where proto = \"natpool_steer_%s\";\n\t\tnext hop self;\n\t};\n}\n\n", table, peer.Name)
		fmt.Fprintf(&b, "protocol kernel natpool_kernel_%s {\n\tkernel table %d;\n", peer.Name, compiler.NodeTable(c, i))
		fmt.Fprintf(&b, "\tipv4 {\n\t\ttable %s;\n\t\timport none;\n\t\texport where proto = \"natpool_peer_%s\";\n\t};\n}\n", table, peer.Name)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// timers writes a BGP session's timers: the hold time, keepalives at a
// third of it, and quick reconnection, so a node that comes back takes its
// chunks back within seconds.
func timers(b *strings.Builder, hold int) {
	fmt.Fprintf(b, "\thold time %d;\n\tkeepalive time %d;\n\tconnect delay time 1;\n\tconnect retry time 5;\n\terror wait time 1, 10;\n", hold, max(1, hold/3))
}
