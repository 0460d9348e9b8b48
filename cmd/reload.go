package cmd

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/daemon"
	"github.com/natpool/natpool/cmd/internal/flags"
)

type reloadOptions struct {
	spec   specOptions
	netns  string
	output string
}

func newReloadCmd(stdout io.Writer) *cobra.Command {
	o := &reloadOptions{}
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Have natpool watch apply its edited spec, and wait for the outcome",
		Long: `Reload asks the natpool watch that keeps the spec's table (in this network
namespace, or --netns) to re-read its spec file, apply it and flush the
entries it made stale, as SIGHUP does, and waits until that is over. It is
natpool.service's ExecReload, so that systemctl reload reports a spec that
does not plan or apply instead of returning before the reload ends.

The spec given here only names the table; watch reads its own spec file.

Exit status: 0 the edited plan (or the same one) is in force; 2 the reload
failed, the plan before stays in force (or the stale entries could not all
be flushed), or no watch keeps the table.`,
		Example: `  natpool reload -f /etc/natpool/natpool.yaml
  natpool reload --table natpool --netns nat0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runReload(o, stdout) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Netns(cmd, &o.netns)
	flags.Output(cmd, &o.output, "text", "json")
	return cmd
}

func runReload(o *reloadOptions, stdout io.Writer) error {
	table, _, err := o.spec.unplanned()
	if err != nil {
		return err
	}
	out, err := daemon.RequestReload(box.New(o.netns, box.LinuxKernels, nil), table)
	if err != nil {
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Failed  bool   `json:"failed"`
			Outcome string `json:"outcome"`
		}{out.Failed, out.Line}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, out.Line)
	}
	if out.Failed {
		return &exitError{code: exitTrouble} // the outcome said why
	}
	return nil
}
