package render

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// Formats are the ruleset formats, the first the default.
var Formats = []string{"nft", "nft-json", "iptables", "ip6tables", "ipset", "bird", "ip", "ip6"}

// Options say how a ruleset is written.
type Options struct {
	Version string // natpool's version, stamped on the output
	// NoJump leaves the POSTROUTING jump out of iptables output, for
	// reloads: a restore file cannot add a rule only when it is missing,
	// so the jump is written for the first load and left out on later ones.
	NoJump bool
	// Node names the node of the plan's cluster the output is for: nft
	// adds its steering, bird is its routing daemon's configuration.
	Node string
}

// Ruleset compiles the plan and writes it in format. Port blocks are
// compiled one element per host, the only encoding nft text and iptables can
// carry (the compact one travels over netlink). Warnings go to stderr.
func Ruleset(w, stderr io.Writer, p *pool.Plan, format string, o Options) error {
	if format == "bird" {
		if o.Node == "" {
			return fmt.Errorf("format bird is one node's configuration: name it with --node")
		}
		return BIRD(w, p, o.Node, o.Version)
	}
	rs := compiler.Compile(p, compiler.Options{Encoding: compiler.PerHost, Node: o.Node})
	if rs.Steering != nil && format != "nft" && format != "ip" && format != "ip6" {
		return fmt.Errorf("format %s cannot carry a node's steering: render nft, or apply --node", format)
	}
	if rs.Uplinks != nil && format != "nft" && format != "nft-json" && format != "ip" && format != "ip6" && format != "ip6tables" {
		return fmt.Errorf("format %s cannot carry the uplinks' marks: render nft or nft-json, and ip; or apply", format)
	}
	switch format {
	case "ip", "ip6":
		return IP(w, rs, o.Version, format == "ip6")
	case "nft":
		return NFT(w, rs, o.Version)
	case "nft-json":
		return NFTJSON(w, rs, o.Version)
	case "iptables":
		if len(rs.Prefixes6) > 0 {
			fmt.Fprintf(stderr, "natpool: warning: iptables carries IPv4 only: render the IPv6 prefix translations with --format ip6tables\n")
		}
		return IPTables(w, stderr, rs, o)
	case "ip6tables":
		return IP6Tables(w, rs, o)
	case "ipset":
		return IPSet(w, rs, o.Version)
	}
	return fmt.Errorf("format %q: want one of %v", format, Formats)
}
