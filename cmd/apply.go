package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/render"
	"github.com/spf13/cobra"
)

type applyOptions struct {
	world    *world
	spec     specOptions
	netns    string
	node     string
	encoding string
	dryRun   bool
	delete   bool
	output   string
	journal  []string
}

func newApplyCmd(w *world, stdout, stderr io.Writer) *cobra.Command {
	o := &applyOptions{world: w}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Load the plan into the kernel, replacing natpool's table atomically",
		Long: `Apply compiles the plan and replaces natpool's nftables table with it in one
netlink transaction: the kernel takes all of it or none, so on any error the
previous table stays in force exactly as it was. No other table, chain or
rule is touched.

Every apply and delete is recorded in the journal (--journal, the spec's
journal key, or /var/lib/natpool/journal): the intent and the plan, synced to
disk before the kernel commit, then the outcome. natpool lookup --at and
natpool history answer from it. A change interrupted between the two is
settled by the next apply or status, from the digest natpool stamps on its
table.

--dry-run prints what would change against the live table and changes
nothing; --delete removes natpool's table. A spec that lists nodes is applied
with --node NAME: the table then also steers each host's packets to the node
serving its public address, through policy rules natpool owns (see README,
"Several NAT boxes"); the rules follow the table at once, and --delete
removes them too. Port blocks go to the kernel in the
compact encoding (an address per group of hosts, ports by the host's low
bits) unless --encoding per-host.`,
		Example: `  natpool apply -f campus.yaml
  natpool apply -f campus.yaml --dry-run
  natpool apply -f cgnat.yaml --netns nat0
  natpool apply -f cluster.yaml --node nat1
  natpool apply --delete`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runApply(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Netns(cmd, &o.netns)
	flags.Node(cmd, &o.node)
	flags.Encoding(cmd, &o.encoding)
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would change and change nothing")
	cmd.Flags().BoolVar(&o.delete, "delete", false, "remove natpool's table")
	flags.Output(cmd, &o.output, "text", "json")
	journalFlag(cmd, &o.journal, false)
	return cmd
}

func runApply(o *applyOptions, stdout, stderr io.Writer) error {
	if o.delete {
		return runDelete(o, stdout, stderr)
	}
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	path, err := o.world.onePath(o.journal, plan.Spec.Journal)
	if err != nil {
		return err
	}
	b, err := o.world.openBox(o.netns, path, stderr)
	if err != nil {
		return err
	}
	opts := box.Options{Node: o.node, Encoding: flags.Encodings[o.encoding]}
	if o.dryRun {
		r, err := b.DryRun(plan, opts)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return r.JSON(stdout)
		}
		r.Text(stdout)
		return nil
	}
	a, err := b.Apply(plan, opts)
	if err != nil {
		return err
	}
	for _, w := range a.Warnings {
		fmt.Fprintf(stderr, "natpool: warning: %s\n", w)
	}
	if o.output == "json" {
		return render.JSON(stdout, a.ApplyReport)
	}
	a.Text(stdout)
	return nil
}

func runDelete(o *applyOptions, stdout, stderr io.Writer) error {
	table, fromSpec, err := o.spec.unplanned()
	if err != nil {
		return err
	}
	path, err := o.world.onePath(o.journal, fromSpec)
	if err != nil {
		return err
	}
	b, err := o.world.openBox(o.netns, path, stderr)
	if err != nil {
		return err
	}
	r, err := b.Delete(table, o.dryRun)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return render.JSON(stdout, r)
	}
	r.Text(stdout)
	return nil
}
