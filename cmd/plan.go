package cmd

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/render"
)

type planOptions struct {
	spec   specOptions
	output string
}

func newPlanCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &planOptions{}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Compute the mapping and report the load per public address",
		Long: `Plan maps the inside hosts onto the public pool with the chosen strategy and
reports, per public address, the hosts it carries, their share and the source
ports per host, then the imbalance (largest load over mean load; 1 is even).

Strategies:
  octet       the low bits of the inside address pick the address (eduroam's u32 rules)
  hash        nft's jhash of the source into buckets, buckets spread over the pool
              by a consistent-hashing ring, each address within --max-imbalance of
              its share: adding one address of N moves about 1/N of the hosts
  persistent  the kernel's own "snat to A-B persistent", modelled exactly
  block       RFC 7422 port blocks: each host gets an address and its own ports`,
		Example: `  # Campus: a /12 of wireless clients behind a /26, last octet picks the address
  natpool plan --private 10.16.0.0/12 --pool 192.76.8.0/26 --exclude 192.76.8.0,192.76.8.63 --strategy octet

  # CGNAT: port blocks of 63 ports, 1024 hosts per public address
  natpool plan --private 100.64.0.0/10 --pool 198.18.0.0/20 --strategy block --hosts-per-ip 1024

  # Two ISPs from a spec file, as JSON
  natpool plan -f site.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runPlan(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	flags.Output(cmd, &o.output, "table", "json")
	return cmd
}

func runPlan(o *planOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	report := plan.Report()
	if o.output == "json" {
		return render.PlanJSON(stdout, report, plan.SavedSpec())
	}
	return render.PlanTable(stdout, report)
}
