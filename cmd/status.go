package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
)

type statusOptions struct {
	spec   specOptions
	netns  string
	output string
}

func newStatusCmd(stdout io.Writer) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Compare natpool's table in the kernel with the plan",
		Long: `Status reads natpool's table back over netlink and compares it with the plan:
the chain, every map and element, every rule. Port blocks are recognised in
either encoding.

Exit status: 0 in sync; 1 drift, printing what differs ("-" the plan has and
the kernel lacks, "+" the kernel has and the plan lacks); 2 trouble: no such
namespace, no permission, no table.`,
		Example: `  natpool status -f campus.yaml
  natpool status -f cgnat.yaml --netns nat0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runStatus(o, stdout) },
	}
	addSpecFlags(cmd, &o.spec)
	netnsFlag(cmd, &o.netns)
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runStatus(o *statusOptions, stdout io.Writer) error {
	if err := checkChoice("output", o.output, "text", "json"); err != nil {
		return err
	}
	plan, err := o.spec.plan()
	if err != nil {
		return err
	}
	k, err := compiler.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	stamp, err := k.Stamp(plan.Table)
	if err != nil {
		return err
	}
	if !stamp.Exists {
		return fmt.Errorf("no table ip %s in %s", plan.Table, where(o.netns))
	}
	have, err := k.Read(plan.Table)
	if err != nil {
		return err
	}
	// The table may hold either encoding of port blocks: compare with the
	// compact one and, if the table is not in sync with it, with the
	// per-host one too, and report against the closer.
	var diffs []compiler.Difference
	var rs *compiler.Ruleset
	for _, enc := range []compiler.Encoding{compiler.Compact, compiler.PerHost} {
		r := compiler.Compile(plan, compiler.Options{Encoding: enc})
		want, err := compiler.Expected(r)
		if err != nil {
			return err
		}
		if d := compiler.Compare(want, have); rs == nil || size(d) < size(diffs) {
			diffs, rs = d, r
		}
		if len(diffs) == 0 {
			break
		}
	}
	if o.output == "json" {
		err = writeJSON(stdout, map[string]any{"table": plan.Table, "netns": o.netns, "digest": rs.Digest, "stamped": stamp.Natpool,
			"in_sync": len(diffs) == 0, "drift": differencesJSON(diffs, "missing", "extra")})
	} else if len(diffs) == 0 {
		fmt.Fprintf(stdout, "table ip %s in %s is in sync with the plan (%s): %d rules, %d elements\n",
			plan.Table, where(o.netns), rs.Digest, len(rs.Rules), rs.Elements())
	} else {
		fmt.Fprintf(stdout, "table ip %s in %s has drifted from the plan (%s):\n", plan.Table, where(o.netns), rs.Digest)
		if !stamp.Natpool {
			fmt.Fprintf(stdout, "no rule of it carries natpool's stamp: another tool made it, or natpool's rules are gone (apply refuses such a table)\n")
		}
		writeDifferences(stdout, diffs, "missing", "extra")
	}
	if err != nil || len(diffs) == 0 {
		return err
	}
	return &exitError{code: exitFound}
}

// size counts the differing lines.
func size(diffs []compiler.Difference) int {
	n := 0
	for _, d := range diffs {
		n += len(d.Missing) + len(d.Extra)
	}
	return n
}
