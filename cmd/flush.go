package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
	"github.com/spf13/cobra"
)

type flushOptions struct {
	spec   specOptions
	netns  string
	stale  bool
	public []string
	egress string
	dryRun bool
	output string
}

func newFlushCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &flushOptions{}
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Delete the conntrack entries a change made stale, or those of an address or egress entry",
		Long: `Flush deletes conntrack entries that natpool's rules translated (they carry
natpool's conntrack label, --ct-label), and only those selected:

  --stale         entries whose public address (or, in block mode, port
                  block) the plan no longer gives their host: after a pool
                  change only the hosts that moved lose their connections,
                  and so do all connections through an address the change
                  removed
  --public ADDR   entries translated to ADDR (repeatable): when one uplink's
                  address is gone
  --egress NAME   only entries of that egress entry: its inside hosts through
                  its pool (with neither of the above: all of them)

Entries other rules made (masquerade, another tool's NAT) carry no natpool
label and are never touched, even for hosts inside the plan. --dry-run
counts per public address and deletes nothing.`,
		Example: `  natpool apply -f campus.yaml && natpool flush -f campus.yaml --stale
  natpool flush -f site.yaml --public 203.0.113.9 --netns nat0
  natpool flush -f site.yaml --egress isp-b --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runFlush(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Netns(cmd, &o.netns)
	cmd.Flags().BoolVar(&o.stale, "stale", false, "delete entries the plan no longer gives")
	cmd.Flags().StringSliceVar(&o.public, "public", nil, "delete entries translated to this public address (repeatable)")
	flags.Egress(cmd, &o.egress, "only entries of this egress entry")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "count what would be deleted, per public address")
	flags.Output(cmd, &o.output, "text", "json")
	return cmd
}

func runFlush(o *flushOptions, stdout, stderr io.Writer) error {
	sel := box.Selection{Stale: o.stale, Egress: o.egress}
	for _, s := range o.public {
		a, err := pool.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--public %w", err)
		}
		sel.Public = append(sel.Public, a)
	}
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	r, err := box.New(o.netns, box.LinuxKernels, nil).Flush(plan, sel, o.dryRun)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return render.JSON(stdout, r)
	}
	return r.Text(stdout)
}
