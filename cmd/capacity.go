package cmd

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

type capacityOptions struct {
	spec   specOptions
	demand pool.Demand
	live   bool
	netns  string
	output string
}

func newCapacityCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &capacityOptions{demand: pool.DefaultDemand}
	cmd := &cobra.Command{
		Use:   "capacity",
		Short: "Show how close each public address is to running out of source ports",
		Long: `Capacity reports the port budget of each public address.

From the plan: Linux picks source ports so that every connection's 5-tuple
is unique, so the connections of all hosts behind one public address to one
destination (address, port, protocol) share that address's port range; in
block mode each host's block holds its own. Given the connections per host
and the share of them that go to one destination, capacity shows the
utilisation per address, the headroom, and how many public addresses keep
every one at or below the target. For a spec with nodes it reports per node
the addresses it owns, their hosts and the connections it translates, with
every node up and with the peer down that adds most to it.

--live instead reads conntrack: per public address the connections, the
distinct inside hosts, the busiest destination and its share of the port
range; the busiest inside hosts; in block mode the hosts using more than 80%
of their block.`,
		Example: `  natpool capacity -f campus.yaml --sessions-per-host 200 --same-destination-share 0.2
  natpool capacity -f cluster.yaml -o json
  natpool capacity -f cgnat.yaml --live --netns nat0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runCapacity(o, stdout, stderr) },
	}
	addSpecFlags(cmd, &o.spec)
	f := cmd.Flags()
	f.Float64Var(&o.demand.SessionsPerHost, "sessions-per-host", o.demand.SessionsPerHost, "concurrent connections of one inside host")
	f.Float64Var(&o.demand.SameDestinationShare, "same-destination-share", o.demand.SameDestinationShare, "share of a host's connections to its busiest destination")
	f.Float64Var(&o.demand.Target, "target", o.demand.Target, "utilisation to plan for, at most 1")
	f.BoolVar(&o.live, "live", false, "report the port use of conntrack's connections instead")
	flags.Netns(cmd, &o.netns)
	flags.Output(cmd, &o.output, "table", "json")
	return cmd
}

func runCapacity(o *capacityOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	if !o.live {
		if err := o.demand.Check(); err != nil {
			return err
		}
		if err := plan.CheckDemand(o.demand); err != nil {
			return err
		}
		caps := plan.Capacity(o.demand)
		nodes := plan.NodeCapacity(caps, o.demand)
		if o.output == "json" {
			return render.CapacityJSON(stdout, caps, nodes, o.demand)
		}
		return render.CapacityTable(stdout, caps, nodes, o.demand)
	}
	return runLiveCapacity(o, plan, stdout)
}

// runLiveCapacity reports the port use of the connections natpool's rules
// translated, counted from a conntrack dump as it is read.
func runLiveCapacity(o *capacityOptions, plan *pool.Plan, stdout io.Writer) error {
	b := box.New(o.netns, box.LinuxKernels, nil)
	if err := b.TableLoaded(plan.Table); err != nil {
		return err
	}
	counter, err := b.CountLive(plan)
	if err != nil {
		return err
	}
	caps := counter.Capacity()
	if o.output == "json" {
		return render.LiveCapacityJSON(stdout, caps)
	}
	return render.LiveCapacityTable(stdout, caps)
}
