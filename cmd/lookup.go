package cmd

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/pool/translog"
	"github.com/natpool/natpool/render"
)

type lookupOptions struct {
	world   *world
	spec    specOptions
	queries []string
	egress  string
	all     bool
	output  string
	at, tz  string
	slack   time.Duration
	journal []string
	logs    []string
	dst     string
	netns   string
}

func newLookupCmd(w *world, stdout, stderr io.Writer) *cobra.Command {
	o := &lookupOptions{world: w}
	cmd := &cobra.Command{
		Use:   "lookup ADDR[:PORT]...",
		Short: "Tell which public address an inside host uses, or who used a public address",
		Long: `Lookup answers from the plan:
  inside address     its public address and port range
  public address     the inside hosts it carries, as ranges (--all: every host)
  public:port        the one inside host that owns that port (block strategy),
                     or the service at that port
  IPv6 address       the host of an IPv6 prefix translation both ways: inside
                     to public, public to inside (a pool6 from-interface prefix
                     is read from the uplink, in --netns)

With several egress entries each entry that knows the address answers, unless
--egress picks one. Every address is answered, one without a mapping (excluded,
unmapped, unknown) saying why.

--at TIME answers from the plan in force at TIME, as apply recorded it in the
journal (--journal, repeatable to ask the journals of several NAT boxes; no
spec is needed). TIME is RFC 3339 with an offset, "now", or a local time with
--tz. Each plan's answers follow a line naming it and its time in force,
[from, until) in UTC. Within --slack of a change, the plans before and after
both answer: a time from an abuse report carries clock error.

--at TIME PUBLIC:PORT --log DIR answers from the translation log natpool
watch --log keeps (repeat --log for several NAT boxes): every translation on
that address and port that covered TIME within --slack, with its inside
address and port, its destination and its start and end. Linux gives one
public address and port to several inside hosts at once when their
destinations differ: --dst ADDR[:PORT] keeps those that reached it (a log
that keeps destinations hashed confirms the one asked). An answer from a
time the log may miss events of (lost events, no natpool running) says so,
exit 1.

Exit status: 0 all mapped, 1 an address without a mapping, a port no host
owns, or no plan in force at TIME, 2 trouble (a bad address or time, a port
lookup of an inside host, a journal that is missing or not natpool's).`,
		Example: `  natpool lookup -f campus.yaml 10.16.3.7
  natpool lookup -f campus.yaml 192.76.8.48 -o json
  natpool lookup -f cgnat.yaml 198.18.3.1:40001

  # abuse desk: who had this address and port last Tuesday at 14:05?
  natpool lookup --at 2026-11-17T14:05:00+01:00 198.18.3.7:40123
  natpool lookup --at "2026-11-17 14:05" --tz Europe/Berlin --journal nat1/ --journal nat2/ 198.18.3.7:40123

  # who had 192.76.8.40:51234 at 14:05:07, reaching 203.0.113.9?
  natpool lookup --at 2026-11-17T14:05:07Z 192.76.8.40:51234 --dst 203.0.113.9 --log /var/log/natpool`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o.queries = args
			return runLookup(o, stdout, stderr)
		},
	}
	addSpecFlags(cmd, &o.spec)
	flags.Egress(cmd, &o.egress, "answer from this egress entry only")
	cmd.Flags().BoolVar(&o.all, "all", false, "list every host of a public address, not ranges")
	flags.Output(cmd, &o.output, "text", "json")
	cmd.Flags().StringVar(&o.at, "at", "", "answer from the plan in force at this time, from the journal")
	flags.TimeZone(cmd, &o.tz)
	cmd.Flags().DurationVar(&o.slack, "slack", 5*time.Second, "with --at: plans that began or ended this close to TIME answer too")
	journalFlag(cmd, &o.journal, true)
	cmd.Flags().StringArrayVar(&o.logs, "log", nil, "with --at: answer PUBLIC:PORT from this translation log (natpool watch --log; default: the spec's log key); repeat for several NAT boxes")
	_ = cmd.MarkFlagDirname("log")
	flags.Netns(cmd, &o.netns)
	cmd.Flags().StringVar(&o.dst, "dst", "", "with --log: only translations to this ADDR or ADDR:PORT")
	return cmd
}

func runLookup(o *lookupOptions, stdout, stderr io.Writer) error {
	if o.tz != "" {
		if _, err := journal.LoadZone(o.tz); err != nil {
			return err
		}
	}
	if o.at != "" {
		return runLookupAt(o, stdout, stderr)
	}
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	if err := box.New(o.netns, box.LinuxKernels, nil).UplinkPrefixes(plan); err != nil {
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
	return unanswered(answers)
}

// unanswered is exit status 1 when an address has no mapping or a port no
// owner.
func unanswered(answers []pool.Answer) error {
	for _, a := range answers {
		if a.Kind == pool.NoMapping || a.Kind == pool.PortOwner && !a.Private.IsValid() {
			return &exitError{code: exitFound}
		}
	}
	return nil
}

// runLookupAt answers from every plan the journals hold in force at --at.
// A plan that cannot answer a question (a port lookup of an octet plan, an
// egress entry it does not have, a plan the journal cannot rebuild) is
// named on stderr, and the others answer.
func runLookupAt(o *lookupOptions, stdout, stderr io.Writer) error {
	t, err := journal.ParseTime("--at", o.at, o.tz, o.world.now())
	if err != nil {
		return err
	}
	if o.slack < 0 {
		return fmt.Errorf("--slack %s: want 0 or more", o.slack)
	}
	// The spec's log answers PUBLIC:PORT questions; the journal the rest.
	if len(o.logs) == 0 && o.spec.file != "" && !slices.ContainsFunc(o.queries, func(q string) bool { _, err := netip.ParseAddrPort(q); return err != nil }) {
		if spec, err := pool.LoadSpec(o.spec.file); err == nil && spec.Log != "" {
			o.logs = []string{spec.Log}
		}
	}
	if len(o.logs) > 0 || o.dst != "" {
		return runLookupLog(o, t, stdout, stderr)
	}
	if flags := o.spec.setFlags(); len(flags) > 0 {
		return fmt.Errorf("--at answers from the plans the journal recorded: %s would change no answer (give the journal with --journal, or -f for its journal key)", strings.Join(flags, ", "))
	}
	for _, q := range o.queries {
		if _, _, _, err := pool.ParseQuery(q); err != nil {
			return err
		}
	}
	_, fromSpec, err := o.spec.unplanned()
	if err != nil {
		return err
	}
	a, err := box.LookupAt(o.world.journalPaths(o.journal, fromSpec), t, o.slack, o.queries, o.egress)
	if err != nil {
		return err
	}
	notes(stderr, a.Notes)
	ro := render.LookupOptions{Egress: a.Multi && o.egress == "", All: o.all}
	if o.output == "json" {
		err = render.LookupAtJSON(stdout, a.Plans, ro)
	} else {
		err = render.LookupAtText(stdout, a.Plans, ro)
	}
	if err != nil {
		return err
	}
	for _, f := range a.Failed {
		fmt.Fprintf(stderr, "natpool: %s\n", f)
	}
	at := t.UTC().Format(time.RFC3339)
	switch {
	case len(a.Plans) == 0 && len(a.Failed) > 0:
		return fmt.Errorf("no plan in force at %s could answer (%s)", at, render.Plural(uint64(len(a.Failed)), "refusal"))
	case len(a.Plans) == 0:
		return &exitError{code: exitFound, msg: fmt.Sprintf("no plan in force at %s in %s", at, strings.Join(a.None, ", "))}
	case len(a.Failed) > 0:
		return &exitError{code: exitFound, msg: fmt.Sprintf("%s of the plans in force at %s could not answer", render.Plural(uint64(len(a.Failed)), "question"), at)}
	}
	return unanswered(a.Answers)
}

// runLookupLog answers PUBLIC:PORT queries at t from the translation logs.
// Where the journal's plan in force gives the port to one host (block
// mode), the log's answers are checked against it: a translation of
// another host is named on stderr, exit 1.
func runLookupLog(o *lookupOptions, t time.Time, stdout, stderr io.Writer) error {
	if len(o.logs) == 0 {
		return fmt.Errorf("--dst %s: it asks a translation log: give --log DIR", o.dst)
	}
	var dst netip.AddrPort
	if o.dst != "" {
		a, err := netip.ParseAddr(o.dst)
		if err == nil {
			dst = netip.AddrPortFrom(a, 0)
		} else if dst, err = netip.ParseAddrPort(o.dst); err != nil || dst.Port() == 0 {
			return fmt.Errorf("--dst %q: want ADDR or ADDR:PORT", o.dst)
		}
		if !dst.Addr().Is4() {
			return fmt.Errorf("--dst %q: want an IPv4 address", o.dst)
		}
	}
	var answers []render.LogAnswers
	found, complete := true, true
	for _, q := range o.queries {
		public, err := netip.ParseAddrPort(q)
		if err != nil || !public.Addr().Is4() {
			return fmt.Errorf("%q: --log answers PUBLIC:PORT, an IPv4 address and port", q)
		}
		n := 0
		for _, dir := range o.logs {
			query := translog.Query{Public: public, At: t, Slack: o.slack, Dst: dst}
			r, err := translog.Lookup(dir, query)
			if err != nil {
				return err
			}
			answers = append(answers, render.LogAnswers{Log: dir, Query: query, Result: r})
			n += len(r.Translations)
			complete = complete && len(r.Incomplete) == 0
		}
		found = found && n > 0
	}
	var err error
	if o.output == "json" {
		err = render.LogJSON(stdout, answers)
	} else {
		err = render.LogText(stdout, answers)
	}
	agree := o.crossCheck(t, answers, stderr)
	switch {
	case err != nil:
		return err
	case !agree:
		return &exitError{code: exitFound, msg: "the log and the plan in force disagree"}
	case !complete:
		return &exitError{code: exitFound, msg: "the log may miss translations of that time"}
	case !found:
		return &exitError{code: exitFound, msg: fmt.Sprintf("no translation logged at %s", t.UTC().Format(time.RFC3339))}
	}
	return nil
}

// crossCheck compares the log's answers with the owners of port blocks in
// the plans the journals hold in force at t; false when a translation is
// of another host than its port's owner. Without a journal, or a plan in
// block mode, there is nothing to compare.
func (o *lookupOptions) crossCheck(t time.Time, answers []render.LogAnswers, stderr io.Writer) bool {
	_, fromSpec, err := o.spec.unplanned()
	if err != nil {
		return true
	}
	agree := true
	for _, la := range answers {
		a, err := box.LookupAt(o.world.journalPaths(o.journal, fromSpec), t, o.slack, []string{la.Query.Public.String()}, o.egress)
		if err != nil {
			return true
		}
		for _, pa := range a.Plans {
			for _, owner := range pa.Answers {
				if owner.Kind != pool.PortOwner || !owner.Private.IsValid() {
					continue
				}
				for _, tr := range la.Result.Translations {
					if tr.Inside.Addr() != owner.Private {
						agree = false
						fmt.Fprintf(stderr, "natpool: the plan %s in force (journal %s) gives %s to %s, but the log has %s on it\n",
							pa.Span.Digest, pa.Journal, la.Query.Public, owner.Private, tr.Inside)
					}
				}
			}
		}
	}
	return agree
}
