package cmd

import (
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

type flushOptions struct {
	spec   specOptions
	netns  string
	stale  bool
	public []string
	egress string
	dryRun bool
	output string
}

func newFlushCmd(stdout io.Writer) *cobra.Command {
	o := &flushOptions{}
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Delete the conntrack entries a change made stale, or those of an address or egress entry",
		Long: `Flush deletes conntrack entries that natpool's rules translated (they carry
natpool's conntrack label, --ct-label), and only those selected:

  --stale         entries whose public address (or, in block mode, port
                  block) the plan no longer gives their host: after a pool
                  change only the hosts that moved lose their connections,
                  and so do all connections through an address the change
                  removed
  --public ADDR   entries translated to ADDR (repeatable): when one uplink's
                  address is gone
  --egress NAME   only entries of that egress entry: its inside hosts through
                  its pool (with neither of the above: all of them)

Entries other rules made (masquerade, another tool's NAT) carry no natpool
label and are never touched, even for hosts inside the plan. --dry-run
counts per public address and deletes nothing.`,
		Example: `  natpool apply -f campus.yaml && natpool flush -f campus.yaml --stale
  natpool flush -f site.yaml --public 203.0.113.9 --netns nat0
  natpool flush -f site.yaml --egress isp-b --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runFlush(o, stdout) },
	}
	addSpecFlags(cmd, &o.spec)
	netnsFlag(cmd, &o.netns)
	cmd.Flags().BoolVar(&o.stale, "stale", false, "delete entries the plan no longer gives")
	cmd.Flags().StringSliceVar(&o.public, "public", nil, "delete entries translated to this public address (repeatable)")
	egressFlag(cmd, &o.egress, "only entries of this egress entry")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "count what would be deleted, per public address")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

// flushReport is what a flush scanned and deleted.
type flushReport struct {
	Scanned  int            `json:"scanned"`
	SNAT     int            `json:"snat"`
	Natpool  int            `json:"natpool"`
	Selected int            `json:"selected"`
	Deleted  int            `json:"deleted"`
	DryRun   bool           `json:"dry_run"`
	ByPublic map[string]int `json:"by_public"`
}

func runFlush(o *flushOptions, stdout io.Writer) error {
	if err := checkChoice("output", o.output, "text", "json"); err != nil {
		return err
	}
	plan, selector, err := o.selector()
	if err != nil {
		return err
	}
	c, err := compiler.DialConntrack(o.netns)
	if err != nil {
		return err
	}
	defer c.Close()
	r := flushReport{DryRun: o.dryRun, ByPublic: map[string]int{}}
	r.Scanned, err = c.Scan(plan.CTLabel, func(e *compiler.Entry) error {
		r.SNAT++
		if !e.Natpool {
			return nil
		}
		r.Natpool++
		if !selector(e) {
			return nil
		}
		r.Selected++
		r.ByPublic[e.Public.Addr().String()]++
		if o.dryRun {
			return nil
		}
		if err := c.Delete(e); err != nil {
			return fmt.Errorf("deleting the entry of %s as %s: %w (%d deleted before)", e.Host, e.Public, err, r.Deleted)
		}
		r.Deleted++
		return nil
	})
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(stdout, r)
	}
	verb := "deleted"
	if o.dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "scanned %d conntrack entries in %s, %d source-NATed, %d by natpool; %s %d\n", r.Scanned, where(o.netns), r.SNAT, r.Natpool, verb, r.Selected)
	publics := make([]string, 0, len(r.ByPublic))
	for p := range r.ByPublic {
		publics = append(publics, p)
	}
	slices.SortFunc(publics, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	rows := make([][]string, len(publics))
	for i, p := range publics {
		rows[i] = []string{p, fmt.Sprint(r.ByPublic[p])}
	}
	if len(rows) == 0 {
		return nil
	}
	return render.Table(stdout, []string{"PUBLIC", "ENTRIES"}, rows, 1)
}

// selector combines the flags: (--stale or --public) within --egress's entry.
func (o *flushOptions) selector() (*pool.Plan, compiler.Selector, error) {
	if !o.stale && len(o.public) == 0 && o.egress == "" {
		return nil, nil, fmt.Errorf("say what to flush: --stale, --public ADDR or --egress NAME")
	}
	plan, err := o.spec.plan()
	if err != nil {
		return nil, nil, err
	}
	var reasons []compiler.Selector
	if o.stale {
		reasons = append(reasons, compiler.StaleIn(plan))
	}
	if len(o.public) > 0 {
		addrs := make([]netip.Addr, len(o.public))
		for i, s := range o.public {
			a, err := pool.ParseAddr(s)
			if err != nil {
				return nil, nil, fmt.Errorf("--public %w", err)
			}
			addrs[i] = a
		}
		reasons = append(reasons, compiler.TranslatedTo(addrs))
	}
	scope := func(*compiler.Entry) bool { return true }
	if o.egress != "" {
		e, err := plan.EgressNamed(o.egress)
		if err != nil {
			return nil, nil, err
		}
		scope = compiler.Of(e)
	}
	return plan, func(e *compiler.Entry) bool {
		if !scope(e) {
			return false
		}
		if len(reasons) == 0 {
			return true
		}
		return slices.ContainsFunc(reasons, func(r compiler.Selector) bool { return r(e) })
	}, nil
}
