package cmd

import (
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

type applyOptions struct {
	spec     specOptions
	netns    string
	encoding string
	dryRun   bool
	delete   bool
	output   string
}

func newApplyCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Load the plan into the kernel, replacing natpool's table atomically",
		Long: `Apply compiles the plan and replaces natpool's nftables table with it in one
netlink transaction: the kernel takes all of it or none, so on any error the
previous table stays in force exactly as it was. No other table, chain or
rule is touched.

--dry-run prints what would change against the live table and changes
nothing; --delete removes natpool's table. Port blocks go to the kernel in the
compact encoding (an address per group of hosts, ports by the host's low
bits) unless --encoding per-host.`,
		Example: `  natpool apply -f campus.yaml
  natpool apply -f campus.yaml --dry-run
  natpool apply -f cgnat.yaml --netns nat0
  natpool apply --delete`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runApply(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	netnsFlag(cmd, &o.netns)
	encodingFlag(cmd, &o.encoding)
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would change and change nothing")
	cmd.Flags().BoolVar(&o.delete, "delete", false, "remove natpool's table")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runApply(o *applyOptions, stdout, stderr io.Writer) error {
	if err := checkChoice("output", o.output, "text", "json"); err != nil {
		return err
	}
	encoding, err := encodingOf(o.encoding)
	if err != nil {
		return err
	}
	if o.delete {
		return runDelete(o, stdout)
	}
	plan, err := o.spec.plan()
	if err != nil {
		return err
	}
	for _, w := range plan.Warnings {
		fmt.Fprintf(stderr, "natpool: warning: %s\n", w)
	}
	rs := compiler.Compile(plan, compiler.Options{Encoding: encoding})
	k, err := compiler.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	if o.dryRun {
		return dryRun(k, rs, o, stdout)
	}
	if err := k.Apply(rs); err != nil {
		return err
	}
	warnMissingInterfaces(plan, o.netns, stderr)
	if o.output == "json" {
		return writeJSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "digest": rs.Digest,
			"rules": len(rs.Rules), "maps": len(rs.Maps), "elements": rs.Elements()})
	}
	fmt.Fprintf(stdout, "applied table ip %s (plan %s) in %s: %d rules, %d maps, %d elements\n",
		rs.Table, rs.Digest, where(o.netns), len(rs.Rules), len(rs.Maps), rs.Elements())
	return nil
}

// warnMissingInterfaces reports oif names the namespace does not have: the
// rules load and will match once such an interface appears.
func warnMissingInterfaces(plan *pool.Plan, netns string, stderr io.Writer) {
	names, err := compiler.Interfaces(netns)
	if err != nil {
		return
	}
	for _, e := range plan.Egress {
		if e.OIF != "" && !slices.ContainsFunc(names, func(name string) bool { return pool.MatchesInterface(e.OIF, name) }) {
			fmt.Fprintf(stderr, "natpool: warning: egress %s: no interface %s in %s yet; its rule matches once it exists\n", e.Name, e.OIF, where(netns))
		}
	}
}

func dryRun(k *compiler.Kernel, rs *compiler.Ruleset, o *applyOptions, stdout io.Writer) error {
	want, err := compiler.Expected(rs)
	if err != nil {
		return err
	}
	st, err := k.Stamp(rs.Table)
	if err != nil {
		return err
	}
	if st.Exists && !st.Natpool {
		return &compiler.NotNatpoolsError{Table: rs.Table}
	}
	if !st.Exists {
		if o.output == "json" {
			return writeJSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "create": true,
				"rules": len(rs.Rules), "maps": len(rs.Maps), "elements": rs.Elements()})
		}
		fmt.Fprintf(stdout, "no table ip %s in %s yet: would create it with %d rules, %d maps, %d elements\n",
			rs.Table, where(o.netns), len(rs.Rules), len(rs.Maps), rs.Elements())
		return nil
	}
	have, err := k.Read(rs.Table)
	if err != nil {
		return err
	}
	// What the live table lacks is added; what the plan lacks is removed.
	changes := compiler.Compare(have, want)
	if o.output == "json" {
		return writeJSON(stdout, map[string]any{"table": rs.Table, "netns": o.netns, "changes": differencesJSON(changes, "remove", "add")})
	}
	if len(changes) == 0 {
		fmt.Fprintf(stdout, "table ip %s in %s already holds the plan: nothing to change\n", rs.Table, where(o.netns))
		return nil
	}
	fmt.Fprintf(stdout, "would change table ip %s in %s:\n", rs.Table, where(o.netns))
	writeDifferences(stdout, changes, "to remove", "to add")
	return nil
}

func runDelete(o *applyOptions, stdout io.Writer) error {
	table, err := o.spec.table()
	if err != nil {
		return err
	}
	k, err := compiler.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	if o.dryRun {
		st, err := k.Stamp(table)
		switch {
		case err != nil:
			return err
		case st.Exists && !st.Natpool:
			return &compiler.NotNatpoolsError{Table: table}
		case o.output == "json":
			return writeJSON(stdout, map[string]any{"table": table, "netns": o.netns, "delete": st.Exists, "dry_run": true})
		case st.Exists:
			fmt.Fprintf(stdout, "would delete table ip %s in %s\n", table, where(o.netns))
		default:
			fmt.Fprintf(stdout, "no table ip %s in %s: nothing to delete\n", table, where(o.netns))
		}
		return nil
	}
	deleted, err := k.Delete(table)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(stdout, map[string]any{"table": table, "netns": o.netns, "deleted": deleted})
	}
	if deleted {
		fmt.Fprintf(stdout, "deleted table ip %s in %s\n", table, where(o.netns))
	} else {
		fmt.Fprintf(stdout, "no table ip %s in %s: nothing to delete\n", table, where(o.netns))
	}
	return nil
}
