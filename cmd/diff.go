package cmd

import (
	"bytes"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

type diffOptions struct {
	oldFile, newFile string
	format           string
	output           string
}

func newDiffCmd(stdout io.Writer) *cobra.Command {
	o := &diffOptions{}
	cmd := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Show how a spec change changes the ruleset and which hosts move",
		Long: `Diff plans OLD and NEW (spec files, or the JSON of natpool plan -o json),
prints the unified diff of their rendered rulesets and, per egress entry, how
many inside hosts change public address (and, in block mode, port block),
with the largest ranges of moved hosts. This is what CI runs on a spec change.

Exit status as diff(1): 0 identical, 1 different, 2 trouble.`,
		Example: `  natpool diff main/campus.yaml campus.yaml
  natpool diff --format iptables old.yaml new.yaml
  natpool diff -o json old.yaml new.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			o.oldFile, o.newFile = args[0], args[1]
			return runDiff(o, stdout)
		},
	}
	choiceFlag(cmd, &o.format, "format", "", "ruleset format to diff", render.Formats...)
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runDiff(o *diffOptions, stdout io.Writer) error {
	oldPlan, oldText, err := renderFile(o.oldFile, o.format)
	if err != nil {
		return err
	}
	newPlan, newText, err := renderFile(o.newFile, o.format)
	if err != nil {
		return err
	}
	d := render.DiffReport{Format: o.format, Diff: render.UnifiedDiff(o.oldFile, o.newFile, oldText, newText)}
	if d.Diff == "" {
		if o.output == "json" {
			return render.DiffJSON(stdout, d)
		}
		return nil
	}
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
		d.Churn = append(d.Churn, c)
	}
	for _, e := range oldPlan.Egress {
		if _, gone := old[e.Name]; gone {
			d.Churn = append(d.Churn, render.EgressChurn{Egress: e.Name, Change: "removed"})
		}
	}
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

// renderFile plans a spec file and renders its ruleset in format; warnings
// are dropped, since both sides are shown whole.
func renderFile(path, format string) (*pool.Plan, string, error) {
	plan, err := pool.PlanFile(path)
	if err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	if err := render.Ruleset(&out, io.Discard, plan, format, render.Options{Version: Version}); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return plan, out.String(), nil
}
