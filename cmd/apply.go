package cmd

import (
	"io"

	"github.com/spf13/cobra"
)

type applyOptions struct {
	spec     specOptions
	netns    string
	node     string
	encoding string
	dryRun   bool
	delete   bool
	output   string
	journal  []string
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
	netnsFlag(cmd, &o.netns)
	nodeFlag(cmd, &o.node)
	encodingFlag(cmd, &o.encoding)
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would change and change nothing")
	cmd.Flags().BoolVar(&o.delete, "delete", false, "remove natpool's table")
	outputFlag(cmd, &o.output, "text", "json")
	journalFlag(cmd, &o.journal, false)
	return cmd
}
