// Package cmd holds natpool's commands: one file per command, each with an
// options struct and a run function that takes its inputs and writers.
package cmd

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is natpool's version, printed by --version and stamped on
// output; a release build sets it (-ldflags -X), as it may Commit.
var (
	Version = "0.2.0-dev"
	Commit  = ""
)

// commit is the commit natpool was built from: Commit, else what the Go
// toolchain recorded of the checkout ("+dirty" when it had changes).
func commit() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	return rev + dirty
}

// Exit statuses scripts can rely on.
const (
	exitOK      = 0
	exitFound   = 1 // a difference, drift or an unanswered lookup: not an error
	exitTrouble = 2 // bad input or a failure
)

// exitError carries an exit status other than exitTrouble; an empty message
// prints nothing (the command has already said what it found).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Execute runs natpool with args and returns the exit status.
func Execute(args []string, stdout, stderr io.Writer) int {
	return execute(realWorld(), args, stdout, stderr)
}

// execute runs natpool with args in world w.
func execute(w *world, args []string, stdout, stderr io.Writer) int {
	root := commands(w, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	code := exitTrouble
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if err.Error() != "" {
		fmt.Fprintf(stderr, "natpool: %v\n", err)
	}
	return code
}

// Root returns natpool's command tree, writing to stdout and stderr: what
// Execute runs, and what natpool-docs writes manual pages and shell
// completions of.
func Root(stdout, stderr io.Writer) *cobra.Command { return commands(realWorld(), stdout, stderr) }

// commands returns natpool's command tree in world w.
func commands(w *world, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "natpool",
		Short: "Deterministic source NAT pools for Linux NAT boxes",
		Long: `natpool maps private hosts onto a pool of public addresses so that every
host always leaves through the same address, the load is spread evenly and
each host has enough source ports. It plans the mapping, reports the load and
answers who had which address.

Exit status: 0 success; 1 a finding that is not an error (a difference, drift,
a port no host owns); 2 trouble (bad input, no namespace, no table).`,
		Example: `  # plan a campus, look up a host, load the rules into the kernel
  natpool plan -f campus.yaml
  natpool lookup -f campus.yaml 10.16.3.7
  natpool apply -f campus.yaml && natpool status -f campus.yaml

  # review a change in CI
  natpool diff main/campus.yaml campus.yaml`,
		Version:       Version + " (commit " + commit() + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(newPlanCmd(stdout, stderr), newLookupCmd(w, stdout, stderr), newRenderCmd(stdout, stderr), newDiffCmd(stdout),
		newApplyCmd(w, stdout, stderr), newStatusCmd(w, stdout, stderr), newHistoryCmd(w, stdout, stderr), newFlushCmd(stdout, stderr),
		newCapacityCmd(stdout, stderr), newWatchCmd(w, stdout, stderr), newReloadCmd(stdout))
	// cobra's completion command prints its help, exit 0, for a shell it
	// does not know: name the shells and fail instead.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Args = cobra.NoArgs
			c.RunE = func(*cobra.Command, []string) error {
				return fmt.Errorf("name a shell: natpool completion bash, zsh, fish or powershell")
			}
		}
	}
	return root
}
