package cmd

import (
	"cmp"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool"
)

// specOptions are the flags that describe a plan, shared by every command
// that takes one. Flags override the spec file, in every egress entry.
type specOptions struct {
	file    string
	overlay pool.Overlay
	own     *pflag.FlagSet // the spec flags alone
}

// addSpecFlags adds the spec flags to cmd: every command that takes a spec
// takes them all, with one meaning.
func addSpecFlags(cmd *cobra.Command, o *specOptions) {
	f := pflag.NewFlagSet(cmd.Name(), pflag.ContinueOnError)
	o.own, o.overlay.Given = f, cmd.Flags().Changed
	f.StringVarP(&o.file, "file", "f", "", "YAML spec file (flags override it)")
	f.StringVar(&o.overlay.Table, "table", "", "nftables table natpool owns (default natpool)")
	f.StringVar(&o.overlay.CTLabel, "ct-label", "", fmt.Sprintf("conntrack label bit natpool's rules set on the connections they translate, 0-127 (default %d)", pool.DefaultCTLabel))
	f.StringSliceVar(&o.overlay.Egress.Private, "private", nil, "inside hosts: PREFIX or A-B (repeatable)")
	f.StringSliceVar(&o.overlay.Egress.Pool, "pool", nil, "public addresses: PREFIX, A-B or ADDR, each with an optional =WEIGHT (repeatable)")
	f.StringSliceVar(&o.overlay.Egress.Exclude, "exclude", nil, "inside hosts or public addresses never mapped or used: PREFIX or ADDR (repeatable)")
	f.StringVar(&o.overlay.Egress.Strategy, "strategy", "", "octet, hash, persistent or block (default hash)")
	f.StringVar(&o.overlay.Egress.OIF, "oif", "", "output interface of the egress")
	f.StringVar(&o.overlay.Egress.Ports, "ports", "", "source port range LO-HI (default 1024-65535)")
	f.StringVar(&o.overlay.Egress.Hosts, "hosts", "", "file of active inside hosts, ADDR, RANGE or ADDR,COUNT per line (octet and hash balance them)")
	f.StringVar(&o.overlay.Egress.Bits, "bits", "", "octet: low bits of the inside address that select the public address (default 8)")
	f.StringVar(&o.overlay.Egress.Octets, "octets", "", "octet: value range LO-HI to use (default all values)")
	f.StringVar(&o.overlay.Egress.Buckets, "buckets", "", fmt.Sprintf("hash: number of jhash buckets (default %d)", pool.DefaultBuckets))
	f.StringVar(&o.overlay.Egress.Seed, "seed", "", fmt.Sprintf("hash: jhash seed (default %#x)", pool.DefaultSeed))
	f.StringVar(&o.overlay.Egress.MaxImbalance, "max-imbalance", "", fmt.Sprintf("hash: most hosts per address over the mean, per unit of weight (default %g)", pool.DefaultMaxImbalance))
	f.StringVar(&o.overlay.Egress.HostsPerIP, "hosts-per-ip", "", "block: inside hosts per public address (default: what spreads the hosts over every address)")
	f.StringVar(&o.overlay.Egress.BlockSize, "block-size", "", "block: ports per host, exactly")
	cmd.Flags().AddFlagSet(f)
	_ = cmd.RegisterFlagCompletionFunc("strategy", flags.Fixed("octet", "hash", "persistent", "block"))
	_ = cmd.MarkFlagFilename("file", "yaml", "yml", "json")
	_ = cmd.MarkFlagFilename("hosts")
}

// plan builds the plan from the spec file and the flags, and tells its
// warnings on stderr: the one way every command that takes a spec plans it.
func (o *specOptions) plan(stderr io.Writer) (*pool.Plan, error) {
	p, err := o.build()
	if err != nil {
		return nil, err
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(stderr, "natpool: warning: %s\n", w)
	}
	return p, nil
}

// build plans the spec file with the flags applied.
func (o *specOptions) build() (*pool.Plan, error) {
	spec := pool.Spec{Egress: []pool.EgressSpec{{}}}
	if o.file != "" {
		var err error
		if spec, err = pool.LoadSpec(o.file); err != nil {
			return nil, err
		}
	}
	return pool.NewPlan(o.overlay.Apply(spec))
}

// unplanned returns the table and the journal the spec names, without
// planning: what commands that only need those (apply --delete) read.
func (o *specOptions) unplanned() (table, journal string, err error) {
	spec := pool.Spec{Table: pool.DefaultTable}
	if o.file != "" {
		if spec, err = pool.LoadSpec(o.file); err != nil {
			return "", "", err
		}
	}
	spec = o.overlay.Apply(spec)
	return cmp.Or(spec.Table, pool.DefaultTable), spec.Journal, nil
}

// setFlags returns the spec flags given, but --file, as --NAME.
func (o *specOptions) setFlags() []string {
	var out []string
	o.own.VisitAll(func(f *pflag.Flag) {
		if f.Name != "file" && o.overlay.Given(f.Name) {
			out = append(out, "--"+f.Name)
		}
	})
	return out
}
