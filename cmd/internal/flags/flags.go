// Package flags holds the flags several natpool commands take, each with
// one meaning and one completion wherever it appears: --netns, --node,
// --egress, --encoding, --output, --tz, and flags of a few fixed words.
package flags

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// Netns adds --netns, completed from the namespaces ip netns knows.
// An empty name is refused rather than taken as this namespace: a script
// whose variable is unset must not act on the host.
func Netns(cmd *cobra.Command, dst *string) {
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

// Encodings are the kernel encodings of port blocks, by flag value.
var Encodings = map[string]compiler.Encoding{"compact": compiler.Compact, "per-host": compiler.PerHost}

// Encoding adds --encoding.
func Encoding(cmd *cobra.Command, dst *string) {
	Choice(cmd, dst, "encoding", "", "block strategy: port blocks as compact (per group) or per-host maps", "compact", "per-host")
}

// Node adds --node: which node of the spec's cluster this box is.
func Node(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "node", "", "the node of the spec's cluster this box is (needed when the spec lists nodes)")
	_ = cmd.RegisterFlagCompletionFunc("node", specNames(func(s pool.Spec) (names []string) {
		for _, n := range s.Nodes {
			names = append(names, n.Name)
		}
		return names
	}))
}

// Output adds -o/--output with the formats given, the first the default.
func Output(cmd *cobra.Command, dst *string, formats ...string) {
	Choice(cmd, dst, "output", "o", "output format", formats...)
}

// Choice adds a flag that takes one of choices, the first the default,
// refusing any other value as it is parsed, and completes them.
func Choice(cmd *cobra.Command, dst *string, name, shorthand, usage string, choices ...string) {
	*dst = choices[0]
	cmd.Flags().VarP(&choice{dst, choices}, name, shorthand, fmt.Sprintf("%s: %s", usage, strings.Join(choices, ", ")))
	_ = cmd.RegisterFlagCompletionFunc(name, Fixed(choices...))
}

// choice is the value of a flag that takes one of a few words.
type choice struct {
	value   *string
	choices []string
}

func (c *choice) String() string { return *c.value }

func (c *choice) Type() string { return "string" }

func (c *choice) Set(s string) error {
	if !slices.Contains(c.choices, s) {
		return fmt.Errorf("want one of %s", strings.Join(c.choices, ", "))
	}
	*c.value = s
	return nil
}

// Egress adds --egress NAME, which picks one egress entry of the spec.
func Egress(cmd *cobra.Command, dst *string, usage string) {
	cmd.Flags().StringVar(dst, "egress", "", usage)
	_ = cmd.RegisterFlagCompletionFunc("egress", specNames(func(s pool.Spec) (names []string) {
		for _, e := range s.Egress {
			names = append(names, e.Name)
		}
		return names
	}))
}

// specNames completes a flag with names from the spec the command
// line gives so far: --file's, else the last argument that is a spec
// (diff's NEW). Without one it offers nothing, files neither.
func specNames(names func(pool.Spec) []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		paths := args
		if f := cmd.Flags().Lookup("file"); f != nil && f.Value.String() != "" {
			paths = []string{f.Value.String()}
		}
		for i := len(paths) - 1; i >= 0; i-- {
			if spec, err := pool.LoadSpec(paths[i]); err == nil {
				return slices.DeleteFunc(names(spec), func(n string) bool { return n == "" }), cobra.ShellCompDirectiveNoFileComp
			}
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// Fixed completes a flag with values.
func Fixed(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// TimeZone adds --tz, the zone of times given without a UTC offset.
func TimeZone(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "tz", "", "time zone of times given without a UTC offset (Europe/Berlin, UTC, Local)")
	_ = cmd.RegisterFlagCompletionFunc("tz", func(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return journal.Zones(prefix), cobra.ShellCompDirectiveNoFileComp
	})
}
