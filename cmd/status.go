package cmd

import (
	"io"

	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/spf13/cobra"
)

type statusOptions struct {
	world   *world
	spec    specOptions
	netns   string
	node    string
	output  string
	journal []string
}

func newStatusCmd(w *world, stdout, stderr io.Writer) *cobra.Command {
	o := &statusOptions{world: w}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Compare natpool's table in the kernel with the plan",
		Long: `Status reads natpool's table back over netlink and compares it with the plan:
the chain, every map and element, every rule. Port blocks are recognised in
either encoding. It names the journal entry in force, and reports a table
whose plan the journal does not know as drift; it settles a change an
interruption left without an outcome, as apply does. With --node it
compares natpool's policy rules too, and says which peers are up: those
whose routing table holds the routes BIRD learned from them.

Exit status: 0 in sync; 1 drift, printing what differs ("-" the plan has and
the kernel lacks, "+" the kernel has and the plan lacks); 2 trouble: no such
namespace, no permission, no table.`,
		Example: `  natpool status -f campus.yaml
  natpool status -f cgnat.yaml --netns nat0 -o json
  natpool status -f cluster.yaml --node nat1`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runStatus(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Netns(cmd, &o.netns)
	flags.Node(cmd, &o.node)
	flags.Output(cmd, &o.output, "text", "json")
	journalFlag(cmd, &o.journal, false)
	return cmd
}

func runStatus(o *statusOptions, stdout, stderr io.Writer) error {
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
	r, err := b.Status(plan, o.node)
	if err != nil {
		return err
	}
	if o.output == "json" {
		err = r.JSON(stdout)
	} else {
		r.Text(stdout)
	}
	if err != nil || r.InSync() {
		return err
	}
	return &exitError{code: exitFound}
}
