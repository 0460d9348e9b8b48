package cmd

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

type historyOptions struct {
	journal      []string
	since, until string
	tz           string
	pruneBefore  string
	pruneSet     bool // --prune-before was given, even empty
	output       string
}

func newHistoryCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &historyOptions{}
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the plans the journal says were in force, newest first",
		Long: `History lists the journal's entries, newest first: when each change took
effect (UTC), the entry's number, apply or delete, where (host, network
namespace, table), the plan's digest, what became of it, what the plan did
per egress entry, and how many hosts it moved against the plan in force
before it in the same table. Between them are the failovers watch --node
saw: a peer going down (this node translated its hosts from then on) or
coming up (op peer-down, peer-up).

--prune-before TIME drops the entries that stopped mattering before TIME, for
a retention policy: every lookup --at TIME or later answers as before. natpool
never prunes on its own.`,
		Example: `  natpool history
  natpool history --since 2026-11-01T00:00:00Z -o json
  natpool history --journal /srv/nat1/journal --since "2026-11-17 00:00" --tz Europe/Berlin
  natpool history --prune-before 2025-11-23T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.pruneSet = cmd.Flags().Changed("prune-before")
			return runHistory(o, stdout, stderr)
		},
	}
	journalFlag(cmd, &o.journal, false)
	cmd.Flags().StringVar(&o.since, "since", "", "only entries from this time on")
	cmd.Flags().StringVar(&o.until, "until", "", "only entries before this time")
	timeZoneFlag(cmd, &o.tz)
	cmd.Flags().StringVar(&o.pruneBefore, "prune-before", "", "drop the entries that stopped mattering before this time")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runHistory(o *historyOptions, stdout, stderr io.Writer) error {
	path, err := onePath(o.journal, "")
	if err != nil {
		return err
	}
	if o.tz != "" {
		if _, err := loadZone(o.tz); err != nil {
			return err
		}
	}
	t0 := now()
	var since, until time.Time
	for _, f := range []struct {
		name, value string
		dst         *time.Time
	}{{"--since", o.since, &since}, {"--until", o.until, &until}} {
		if f.value != "" {
			if *f.dst, err = parseTime(f.name, f.value, o.tz, t0); err != nil {
				return err
			}
		}
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return fmt.Errorf("--since %s is not before --until %s", since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
	}
	j, err := journal.Open(path)
	if err != nil {
		return err
	}
	if o.pruneSet {
		return prune(j, o, t0, stdout, stderr)
	}
	c, err := j.Read()
	if err != nil {
		return err
	}
	notes(stderr, c.Notes)
	out, unread := historyOf(j, c, since, until)
	if o.output == "json" {
		err = render.HistoryJSON(stdout, out)
	} else {
		err = render.HistoryText(stdout, out)
	}
	if err != nil {
		return err
	}
	for _, u := range unread {
		fmt.Fprintf(stderr, "natpool: %v\n", u)
	}
	if len(unread) > 0 {
		return &exitError{code: exitFound, msg: fmt.Sprintf("%d plans of journal %s could not be read: their entries are listed without them", len(unread), path)}
	}
	return nil
}

// notes writes what a journal's reader passed over, a line each.
func notes(stderr io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(stderr, "natpool: note: %s\n", n)
	}
}

// historyOf describes the entries that took or tried to take effect in
// [since, until), and the peer events there, newest first: each apply's
// plan, and the hosts it moved against the plan before it in the same table.
// A plan that cannot be read leaves its entries without a description, and
// is returned among the unread.
func historyOf(j *journal.Journal, c *journal.Contents, since, until time.Time) (out []render.HistoryEntry, unread []error) {
	plans := map[string]*pool.Plan{}
	planOf := func(digest string) *pool.Plan {
		p, ok := plans[digest]
		if !ok {
			var err error
			if p, err = rebuild(j, digest); err != nil {
				unread = append(unread, err)
			}
			plans[digest] = p
		}
		return p
	}
	moves := map[[2]string]churnCount{}   // by the digests before and after: a plan is often applied again
	before := map[journal.Target]string{} // the plan in force in each table so far
	for _, e := range c.Entries {
		h := render.HistoryEntry{Entry: e}
		prev := before[e.Target]
		if e.Outcome == journal.Commit {
			before[e.Target] = e.Digest // "" after a delete
		}
		if !within(h.Time(), since, until) {
			continue
		}
		if e.Op == journal.Apply {
			p := planOf(e.Digest)
			if p == nil {
				h.Unread = true
				out = append(out, h)
				continue
			}
			for _, eg := range p.Egress {
				h.Egress = append(h.Egress, render.EgressSummary{Name: eg.Name, Strategy: string(eg.Strategy), Hosts: uint64(eg.InsideHosts()), Public: len(eg.Pool)})
			}
			if e.Outcome == journal.Commit && prev != "" {
				m, ok := moves[[2]string{prev, e.Digest}]
				if q := planOf(prev); !ok && q != nil {
					m = count(q, p)
					moves[[2]string{prev, e.Digest}] = m
					ok = true
				}
				if ok {
					h.Moved, h.PortsMoved, h.Hosts = &m.moved, &m.portsMoved, &m.hosts
				}
			}
		}
		out = append(out, h)
	}
	for i := range c.Peers {
		if within(c.Peers[i].Time, since, until) {
			out = append(out, render.HistoryEntry{Peer: &c.Peers[i]})
		}
	}
	slices.SortStableFunc(out, func(a, b render.HistoryEntry) int { return a.Time().Compare(b.Time()) })
	slices.Reverse(out)
	return out, unread
}

// within reports whether t is in [since, until); a zero bound is none.
func within(t, since, until time.Time) bool {
	return (since.IsZero() || !t.Before(since)) && (until.IsZero() || t.Before(until))
}

func prune(j *journal.Journal, o *historyOptions, t0 time.Time, stdout, stderr io.Writer) error {
	t, err := parseTime("--prune-before", o.pruneBefore, o.tz, t0)
	if err != nil {
		return err
	}
	unlock, err := j.Lock(waiting(j.Dir, stderr))
	if err != nil {
		return err
	}
	defer unlock()
	r, err := j.Prune(t)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return render.JSON(stdout, map[string]any{"journal": j.Dir, "pruned_before": t.UTC(), "dropped": r.Entries, "dropped_peer_events": r.PeerEvents})
	}
	fmt.Fprintf(stdout, "journal %s: dropped %s and %s that stopped mattering before %s\n", j.Dir,
		render.Plural(uint64(r.Entries), "entry"), render.Plural(uint64(r.PeerEvents), "peer event"), t.UTC().Format(time.RFC3339))
	return nil
}
