package render

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// Formats are the ruleset formats, the first the default.
var Formats = []string{"nft", "nft-json", "iptables", "ipset"}

// Options say how a ruleset is written.
type Options struct {
	Version string // natpool's version, stamped on the output
	// NoJump leaves the POSTROUTING jump out of iptables output, for
	// reloads: a restore file cannot add a rule only when it is missing,
	// so the jump is written for the first load and left out on later ones.
	NoJump bool
}

// Ruleset compiles the plan and writes it in format. Port blocks are
// compiled one element per host, the only encoding nft text and iptables can
// carry (the compact one travels over netlink). Warnings go to stderr.
func Ruleset(w, stderr io.Writer, p *pool.Plan, format string, o Options) error {
	rs := compiler.Compile(p, compiler.Options{Encoding: compiler.PerHost})
	switch format {
	case "nft":
		return NFT(w, rs, o.Version)
	case "nft-json":
		return NFTJSON(w, rs, o.Version)
	case "iptables":
		return IPTables(w, stderr, rs, o)
	case "ipset":
		return IPSet(w, rs, o.Version)
	}
	return fmt.Errorf("format %q: want one of %v", format, Formats)
}
