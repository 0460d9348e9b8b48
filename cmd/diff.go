package cmd

import (
	"bytes"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

type diffOptions struct {
	oldFile, newFile string
	format           string
	node             string
	output           string
	maxLines         int
}

func newDiffCmd(stdout io.Writer) *cobra.Command {
	o := &diffOptions{}
	cmd := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Show how a spec change changes the ruleset and which hosts move",
		Long: `Diff plans OLD and NEW (spec files, or the JSON of natpool plan -o json),
prints the unified diff of their rendered rulesets and, per egress entry, how
many inside hosts change public address (and, in block mode, port block),
with the largest ranges of moved hosts; for specs with nodes, the chunks of
the pool that change owner. This is what CI runs on a spec change.

Specs with nodes render without a node's steering unless --node names one
(needed for --format bird), which both specs must list.

Plans with equal digests are identical, and answer at once. Otherwise both
rulesets are rendered and compared as they are written, never held, so a
CGNAT plan of millions of lines diffs in seconds; --max-lines (10,000)
caps what is printed of a large change and says how much was left out and
how many lines the change removes and adds (0 prints it all). The churn comes
from the two plans, not from the text.

Exit status as diff(1): 0 identical, 1 different, 2 trouble.`,
		Example: `  natpool diff main/campus.yaml campus.yaml
  natpool diff --format iptables old.yaml new.yaml
  natpool diff --format bird --node nat1 main/cluster.yaml cluster.yaml
  natpool diff --max-lines 200 -o json old.yaml new.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			o.oldFile, o.newFile = args[0], args[1]
			return runDiff(o, stdout)
		},
	}
	flags.Choice(cmd, &o.format, "format", "", "ruleset format to diff", render.Formats...)
	flags.Node(cmd, &o.node)
	cmd.Flags().IntVar(&o.maxLines, "max-lines", 10000, "print at most this many lines of the ruleset diff, then only how many lines it removes and adds (0: all)")
	flags.Output(cmd, &o.output, "text", "json")
	return cmd
}

func runDiff(o *diffOptions, stdout io.Writer) error {
	if o.maxLines < 0 {
		return fmt.Errorf("--max-lines %d: want 0 (all) or more", o.maxLines)
	}
	oldPlan, err := pool.PlanFile(o.oldFile)
	if err != nil {
		return err
	}
	newPlan, err := pool.PlanFile(o.newFile)
	if err != nil {
		return err
	}
	if o.node != "" {
		for _, p := range []*pool.Plan{oldPlan, newPlan} {
			if err := box.CheckNode(p, o.node); err != nil {
				return err
			}
		}
	}
	d := render.DiffReport{Format: o.format, Identical: compiler.Digest(oldPlan) == compiler.Digest(newPlan)}
	if d.Identical {
		if o.output == "json" {
			return render.DiffJSON(stdout, d)
		}
		return nil
	}
	d.Churn, d.Chunks, d.Uplinks = render.Churn(oldPlan, newPlan), pool.ChunkChurn(oldPlan, newPlan), pool.UplinkChurn(oldPlan, newPlan)
	d.Services = pool.ServiceChurn(oldPlan, newPlan)
	var text bytes.Buffer // the diff, for JSON; text goes straight out
	out := io.Writer(&text)
	if o.output == "text" {
		out = stdout
	}
	res, err := render.DiffRulesets(out, [2]string{o.oldFile, o.newFile}, [2]*pool.Plan{oldPlan, newPlan}, o.format, render.Options{Version: Version, Node: o.node}, o.maxLines)
	if err != nil {
		return err
	}
	d.Diff, d.LeftOut, d.Removed, d.Added = text.String(), res.LeftOut, res.Removed, res.Added
	if o.output == "json" {
		err = render.DiffJSON(stdout, d)
	} else {
		err = render.DiffText(stdout, d)
	}
	if err != nil {
		return err
	}
	return &exitError{code: exitFound}
}
