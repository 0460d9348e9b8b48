package cmd

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/render"
)

type renderOptions struct {
	spec   specOptions
	format string
	noJump bool
	node   string
}

func newRenderCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &renderOptions{}
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Write the plan as an nftables or iptables ruleset",
		Long: `Render compiles the plan into natpool's ruleset and writes it for the kernel's
own tools. The output is byte-stable: the same spec gives the same bytes, and
the first line names natpool's version and the plan's digest.

Formats:
  nft        a file for nft -f that atomically replaces natpool's table, and only it
  nft-json   the same ruleset as nft JSON, for nft -j -f
  iptables   iptables-restore --noflush input for the nat table: natpool's chain
             is declared, flushed and refilled, and POSTROUTING jumps to it
             (first in the chain); a restore file cannot add the jump only when
             it is missing, so render reloads with --no-jump
  ip6tables  ip6tables-restore --noflush input: the IPv6 prefix translations
             (private6, pool6) as NETMAP, both ways
  ipset      ipset restore input: the hash strategy's per-address sets
  ip         ip -batch input: natpool's policy rules and routes (uplinks, a node)
  ip6        ip -6 -batch input: the IPv6 ones of uplinks with private6 and pool6
  bird       a node's BIRD 2 configuration (with --node): its chunks of the
             pool announced to the upstream ranked for the node, and the
             sessions to its peers that fill the routing tables steering uses

A spec that lists nodes is rendered for one of them, named with --node: nft
then adds the steering apply --node installs.`,
		Example: `  natpool render -f campus.yaml > natpool.nft && nft -c -f natpool.nft
  # iptables: the hash strategy matches ipset sets, which load first
  natpool render -f campus.yaml --format ipset | ipset restore
  natpool render -f campus.yaml --format iptables | iptables-restore --noflush
  # a node of a cluster: its table and its BIRD configuration
  natpool render -f cluster.yaml --node nat1 > natpool.nft
  natpool render -f cluster.yaml --node nat1 --format bird > /etc/bird/natpool.conf`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runRender(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Choice(cmd, &o.format, "format", "", "ruleset format", render.Formats...)
	flags.Node(cmd, &o.node)
	cmd.Flags().BoolVar(&o.noJump, "no-jump", false, "iptables: leave out the POSTROUTING jump (for reloads, when it is in place)")
	return cmd
}

func runRender(o *renderOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	if err := box.CheckNode(plan, o.node); err != nil {
		return err
	}
	return render.Ruleset(stdout, stderr, plan, o.format, render.Options{Version: Version, NoJump: o.noJump, Node: o.node})
}
