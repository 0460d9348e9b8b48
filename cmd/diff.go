package cmd

import (
	"bytes"
	"fmt"
	"io"

	"github.com/spf13/cobra"

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
	choiceFlag(cmd, &o.format, "format", "", "ruleset format to diff", render.Formats...)
	nodeFlag(cmd, &o.node)
	cmd.Flags().IntVar(&o.maxLines, "max-lines", 10000, "print at most this many lines of the ruleset diff, then only how many lines it removes and adds (0: all)")
	outputFlag(cmd, &o.output, "text", "json")
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
			if err := checkNode(p, o.node); err != nil {
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
	d.Churn, d.Chunks = churn(oldPlan, newPlan), pool.ChunkChurn(oldPlan, newPlan)
	var text bytes.Buffer // the diff, for JSON; text goes straight out
	out := io.Writer(&text)
	if o.output == "text" {
		out = stdout
	}
	oldText, newText := renderPipe(o.oldFile, oldPlan, o.format, o.node), renderPipe(o.newFile, newPlan, o.format, o.node)
	res, err := render.StreamDiff(out, o.oldFile, o.newFile, oldText, newText, o.maxLines)
	oldText.Close() // stop a renderer the diff did not read to the end
	newText.Close()
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

// renderPipe renders the ruleset of the plan of a file in format, for node
// when set, as it is read.
func renderPipe(path string, plan *pool.Plan, format, node string) io.ReadCloser {
	r, w := io.Pipe()
	go func() {
		if err := render.Ruleset(w, io.Discard, plan, format, render.Options{Version: Version, Node: node}); err != nil {
			w.CloseWithError(fmt.Errorf("%s: %w", path, err))
		}
		w.Close()
	}()
	return r
}

// churnCount is how many hosts a change of plan moves, of how many.
type churnCount struct{ moved, portsMoved, hosts uint64 }

// count counts the hosts that change public address from oldPlan to
// newPlan (and, in block mode, those that keep it and change port block),
// of those both map, over the egress entries both have.
func count(oldPlan, newPlan *pool.Plan) churnCount {
	var n churnCount
	for _, c := range churn(oldPlan, newPlan) {
		n.moved, n.portsMoved, n.hosts = n.moved+c.Report.Moved, n.portsMoved+c.Report.PortsMoved, n.hosts+c.Report.Hosts
	}
	return n
}

// churn compares the plans entry by entry, by name.
func churn(oldPlan, newPlan *pool.Plan) []render.EgressChurn {
	var out []render.EgressChurn
	old := map[string]*pool.Egress{}
	for _, e := range oldPlan.Egress {
		old[e.Name] = e
	}
	for _, e := range newPlan.Egress {
		c := render.EgressChurn{Egress: e.Name, Change: "added"}
		if oe, ok := old[e.Name]; ok {
			c = render.EgressChurn{Egress: e.Name, Report: pool.Churn(oe, e)}
			delete(old, e.Name)
		}
		out = append(out, c)
	}
	for _, e := range oldPlan.Egress {
		if _, gone := old[e.Name]; gone {
			out = append(out, render.EgressChurn{Egress: e.Name, Change: "removed"})
		}
	}
	return out
}
