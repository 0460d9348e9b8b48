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
	oif    string
	dryRun bool
	output string
}

func newFlushCmd(stdout io.Writer) *cobra.Command {
	o := &flushOptions{}
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Delete the conntrack entries a change made stale, or those of an address or uplink",
		Long: `Flush deletes IPv4 source-NATed conntrack entries, and only those selected:

  --stale         entries of the plan's inside hosts whose public address (or,
                  in block mode, port block) the plan no longer gives them:
                  after a pool change only the hosts that moved lose their
                  connections
  --public ADDR   entries of the plan's hosts translated to ADDR (repeatable):
                  when one uplink's address is gone
  --oif NAME      only entries of the egress entry on that interface (with
                  neither of the above: all of them)

Only entries of the plan's inside hosts are ever deleted, so flush needs the
spec even for --public; entries that are not source-NATed, or that the plan
still makes, never are. --dry-run counts per public address and deletes
nothing.`,
		Example: `  natpool apply -f campus.yaml && natpool flush -f campus.yaml --stale
  natpool flush -f site.yaml --public 203.0.113.9 --netns nat0
  natpool flush -f site.yaml --oif eth3 --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runFlush(o, stdout) },
	}
	addSpecFlags(cmd, &o.spec, "oif")
	netnsFlag(cmd, &o.netns)
	cmd.Flags().BoolVar(&o.stale, "stale", false, "delete entries the plan no longer gives")
	cmd.Flags().StringSliceVar(&o.public, "public", nil, "delete entries translated to this public address (repeatable)")
	cmd.Flags().StringVar(&o.oif, "oif", "", "only entries of the egress entry on this interface")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "count what would be deleted, per public address")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

// flushReport is what a flush scanned and deleted.
type flushReport struct {
	Scanned  int            `json:"scanned"`
	SNAT     int            `json:"snat"`
	Selected int            `json:"selected"`
	Deleted  int            `json:"deleted"`
	DryRun   bool           `json:"dry_run"`
	ByPublic map[string]int `json:"by_public"`
}

func runFlush(o *flushOptions, stdout io.Writer) error {
	if err := checkChoice("output", o.output, "text", "json"); err != nil {
		return err
	}
	selector, err := o.selector()
	if err != nil {
		return err
	}
	c, err := compiler.DialConntrack(o.netns)
	if err != nil {
		return err
	}
	defer c.Close()
	entries, scanned, err := c.SNATs()
	if err != nil {
		return err
	}
	r := flushReport{Scanned: scanned, SNAT: len(entries), DryRun: o.dryRun, ByPublic: map[string]int{}}
	for _, e := range entries {
		if !selector(e) {
			continue
		}
		r.Selected++
		r.ByPublic[e.Public.Addr().String()]++
		if o.dryRun {
			continue
		}
		if err := c.Delete(e); err != nil {
			return fmt.Errorf("deleting the entry of %s as %s: %w (%d deleted before)", e.Host, e.Public, err, r.Deleted)
		}
		r.Deleted++
	}
	if o.output == "json" {
		return writeJSON(stdout, r)
	}
	verb := "deleted"
	if o.dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "scanned %d conntrack entries in %s, %d source-NATed; %s %d\n", r.Scanned, where(o.netns), r.SNAT, verb, r.Selected)
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

// selector combines the flags: (--stale or --public) within --oif's entry.
func (o *flushOptions) selector() (compiler.Selector, error) {
	if !o.stale && len(o.public) == 0 && o.oif == "" {
		return nil, fmt.Errorf("say what to flush: --stale, --public ADDR or --oif NAME")
	}
	// Even --public needs the plan: flush deletes only natpool's entries,
	// those of the plan's inside hosts.
	plan, err := o.spec.plan()
	if err != nil {
		return nil, err
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
				return nil, fmt.Errorf("--public %w", err)
			}
			addrs[i] = a
		}
		reasons = append(reasons, compiler.TranslatedTo(plan, addrs))
	}
	scope := func(compiler.SNAT) bool { return true }
	if o.oif != "" {
		i := slices.IndexFunc(plan.Egress, func(e *pool.Egress) bool { return e.OIF == o.oif })
		if i < 0 {
			return nil, fmt.Errorf("no egress entry of the plan leaves through %q", o.oif)
		}
		scope = compiler.Of(plan.Egress[i])
	}
	return func(s compiler.SNAT) bool {
		if !scope(s) {
			return false
		}
		if len(reasons) == 0 {
			return true
		}
		return slices.ContainsFunc(reasons, func(r compiler.Selector) bool { return r(s) })
	}, nil
}
