package cmd

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

type lookupOptions struct {
	spec    specOptions
	queries []string
	egress  string
	all     bool
	output  string
}

func newLookupCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &lookupOptions{}
	cmd := &cobra.Command{
		Use:   "lookup ADDR[:PORT]...",
		Short: "Tell which public address an inside host uses, or who used a public address",
		Long: `Lookup answers from the plan:
  inside address     its public address and port range
  public address     the inside hosts it carries, as ranges (--all: every host)
  public:port        the one inside host that owns that port (block strategy)

With several egress entries each entry that knows the address answers, unless
--egress picks one. Every address is answered, one without a mapping (excluded,
unmapped, unknown) saying why. Exit status: 0 all mapped, 1 an address without
a mapping or a port no host owns, 2 trouble (a bad address, a port lookup of an
inside host).`,
		Example: `  natpool lookup -f campus.yaml 10.16.3.7
  natpool lookup -f campus.yaml 192.76.8.48 -o json
  natpool lookup -f cgnat.yaml 198.18.3.1:40001`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o.queries = args
			return runLookup(o, stdout, stderr)
		},
	}
	addSpecFlags(cmd, &o.spec)
	egressFlag(cmd, &o.egress, "answer from this egress entry only")
	cmd.Flags().BoolVar(&o.all, "all", false, "list every host of a public address, not ranges")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runLookup(o *lookupOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	var answers []pool.Answer
	for _, q := range o.queries {
		a, err := plan.Lookup(q, o.egress)
		if err != nil {
			return err
		}
		answers = append(answers, a...)
	}
	ro := render.LookupOptions{Egress: len(plan.Egress) > 1 && o.egress == "", All: o.all}
	if o.output == "json" {
		err = render.LookupJSON(stdout, answers, ro)
	} else {
		err = render.LookupText(stdout, answers, ro)
	}
	if err != nil {
		return err
	}
	for _, a := range answers {
		if a.Kind == pool.NoMapping || a.Kind == pool.PortOwner && !a.Private.IsValid() {
			return &exitError{code: exitFound}
		}
	}
	return nil
}
