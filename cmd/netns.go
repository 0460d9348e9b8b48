package cmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// netnsFlag adds --netns, completed from the namespaces ip netns knows.
// An empty name is refused rather than taken as this namespace: a script
// whose variable is unset must not act on the host.
func netnsFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().Var((*netnsName)(dst), "netns", "act inside this named network namespace (/run/netns/NAME)")
	_ = cmd.RegisterFlagCompletionFunc("netns", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		entries, _ := os.ReadDir("/run/netns")
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
}

// netnsName is the value of --netns.
type netnsName string

func (n *netnsName) String() string { return string(*n) }

func (n *netnsName) Type() string { return "NAME" }

func (n *netnsName) Set(s string) error {
	if s == "" {
		return fmt.Errorf("an empty name: leave --netns out to act in this network namespace")
	}
	*n = netnsName(s)
	return nil
}

// encodings are the kernel encodings of port blocks, by flag value.
var encodings = map[string]compiler.Encoding{"compact": compiler.Compact, "per-host": compiler.PerHost}

// encodingFlag adds --encoding.
func encodingFlag(cmd *cobra.Command, dst *string) {
	choiceFlag(cmd, dst, "encoding", "", "block strategy: port blocks as compact (per group) or per-host maps", "compact", "per-host")
}

// nodeFlag adds --node: which node of the spec's cluster this box is.
func nodeFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "node", "", "the node of the spec's cluster this box is (needed when the spec lists nodes)")
	_ = cmd.RegisterFlagCompletionFunc("node", specCompletion(func(s pool.Spec) (names []string) {
		for _, n := range s.Nodes {
			names = append(names, n.Name)
		}
		return names
	}))
}
