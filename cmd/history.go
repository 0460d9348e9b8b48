package cmd

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

type historyOptions struct {
	world        *world
	journal      []string
	since, until string
	tz           string
	pruneBefore  string
	pruneSet     bool // --prune-before was given, even empty
	output       string
}

func newHistoryCmd(w *world, stdout, stderr io.Writer) *cobra.Command {
	o := &historyOptions{world: w}
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
	flags.TimeZone(cmd, &o.tz)
	cmd.Flags().StringVar(&o.pruneBefore, "prune-before", "", "drop the entries that stopped mattering before this time")
	flags.Output(cmd, &o.output, "text", "json")
	return cmd
}

func runHistory(o *historyOptions, stdout, stderr io.Writer) error {
	path, err := o.world.onePath(o.journal, "")
	if err != nil {
		return err
	}
	if o.tz != "" {
		if _, err := journal.LoadZone(o.tz); err != nil {
			return err
		}
	}
	t0 := o.world.now()
	var since, until time.Time
	for _, f := range []struct {
		name, value string
		dst         *time.Time
	}{{"--since", o.since, &since}, {"--until", o.until, &until}} {
		if f.value != "" {
			if *f.dst, err = journal.ParseTime(f.name, f.value, o.tz, t0); err != nil {
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
	out, unread := box.History(j, c, since, until)
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

func prune(j *journal.Journal, o *historyOptions, t0 time.Time, stdout, stderr io.Writer) error {
	t, err := journal.ParseTime("--prune-before", o.pruneBefore, o.tz, t0)
	if err != nil {
		return err
	}
	r, err := j.PruneLocked(t, waiting(j.Dir, stderr))
	if err != nil {
		return err
	}
	rep := render.PruneReport{Journal: j.Dir, Before: t, Pruned: r}
	if o.output == "json" {
		return render.JSON(stdout, rep)
	}
	rep.Text(stdout)
	return nil
}
