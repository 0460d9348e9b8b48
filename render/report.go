package render

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/natpool/natpool/compiler"
)

// shownLines bounds the lines printed per changed object, and shownWidth
// their length: a rule with an inline map of buckets is one long line.
const (
	shownLines = 20
	shownWidth = 200
)

// DifferencesText writes differences as text: per object, the lines its
// first side has marked "-", then the lines of the second marked "+",
// missing and extra naming the sides ("missing", "extra"; "to remove", "to
// add").
func DifferencesText(w io.Writer, diffs []compiler.Difference, missing, extra string) {
	for _, d := range diffs {
		fmt.Fprintf(w, "%s: %d %s, %d %s\n", d.Object, len(d.Missing), missing, len(d.Extra), extra)
		lines := 0
	sides:
		for _, group := range []struct {
			mark  string
			lines []string
		}{{"-", d.Missing}, {"+", d.Extra}} {
			for _, l := range group.lines {
				if lines == shownLines {
					fmt.Fprintf(w, "  ... %d more lines (-o json lists them all)\n", len(d.Missing)+len(d.Extra)-lines)
					break sides
				}
				if len(l) > shownWidth {
					l = l[:shownWidth] + "..."
				}
				fmt.Fprintf(w, "  %s %s\n", group.mark, l)
				lines++
			}
		}
	}
}

// DifferencesJSON gives differences the names missing and extra.
func DifferencesJSON(diffs []compiler.Difference, missing, extra string) []map[string]any {
	out := []map[string]any{}
	for _, d := range diffs {
		out = append(out, map[string]any{"object": d.Object, missing: nonNil(d.Missing), extra: nonNil(d.Extra)})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Where names a network namespace for messages.
func Where(netns string) string {
	if netns == "" {
		return "this network namespace"
	}
	return "network namespace " + netns
}

// ApplyReport is what an apply put in force.
type ApplyReport struct {
	Table    string `json:"table"`
	Netns    string `json:"netns"`
	Digest   string `json:"digest"`
	Rules    int    `json:"rules"`
	Maps     int    `json:"maps"`
	Elements int    `json:"elements"`
}

// Text writes the report as apply prints it.
func (r ApplyReport) Text(w io.Writer) {
	fmt.Fprintf(w, "applied table ip %s (plan %s) in %s: %d rules, %d maps, %d elements\n", r.Table, r.Digest, Where(r.Netns), r.Rules, r.Maps, r.Elements)
}

// DryRunReport is what an apply would change: the table created, or the
// changes to the live one.
type DryRunReport struct {
	ApplyReport
	Create  bool
	Changes []compiler.Difference // "Missing": to remove, "Extra": to add
}

// Text writes the report as apply --dry-run prints it.
func (r DryRunReport) Text(w io.Writer) {
	switch {
	case r.Create:
		fmt.Fprintf(w, "no table ip %s in %s yet: would create it with %d rules, %d maps, %d elements\n", r.Table, Where(r.Netns), r.Rules, r.Maps, r.Elements)
	case len(r.Changes) == 0:
		fmt.Fprintf(w, "table ip %s in %s already holds the plan: nothing to change\n", r.Table, Where(r.Netns))
	default:
		fmt.Fprintf(w, "would change table ip %s in %s:\n", r.Table, Where(r.Netns))
		DifferencesText(w, r.Changes, "to remove", "to add")
	}
}

// JSON writes the report as apply --dry-run -o json does.
func (r DryRunReport) JSON(w io.Writer) error {
	if r.Create {
		return JSON(w, map[string]any{"table": r.Table, "netns": r.Netns, "create": true, "rules": r.Rules, "maps": r.Maps, "elements": r.Elements})
	}
	return JSON(w, map[string]any{"table": r.Table, "netns": r.Netns, "changes": DifferencesJSON(r.Changes, "remove", "add")})
}

// DeleteReport is what apply --delete removed, or would.
type DeleteReport struct {
	Table       string `json:"table"`
	Netns       string `json:"netns"`
	Deleted     bool   `json:"deleted"`
	PolicyRules int    `json:"policy_rules"`
	Routes      int    `json:"routes"`
	DryRun      bool   `json:"dry_run"`
}

// Text writes the report as apply --delete prints it.
func (r DeleteReport) Text(w io.Writer) {
	verb, rulesVerb := "deleted", "removed"
	if r.DryRun {
		verb, rulesVerb = "would delete", "would remove"
	}
	if r.Deleted {
		fmt.Fprintf(w, "%s table ip %s in %s", verb, r.Table, Where(r.Netns))
	} else {
		fmt.Fprintf(w, "no table ip %s in %s", r.Table, Where(r.Netns))
	}
	var removed []string
	if r.PolicyRules > 0 {
		removed = append(removed, Plural(uint64(r.PolicyRules), "policy rule"))
	}
	if r.Routes > 0 {
		removed = append(removed, Plural(uint64(r.Routes), "route"))
	}
	switch {
	case len(removed) > 0:
		fmt.Fprintf(w, "; %s %s of natpool's\n", rulesVerb, strings.Join(removed, " and "))
	case !r.Deleted:
		fmt.Fprintf(w, ": nothing to delete\n")
	default:
		fmt.Fprintln(w)
	}
}

// PeerState is whether a peer of a cluster node is up: its routing table
// holds the routes BIRD learned from it.
type PeerState struct {
	Node  string `json:"node"`
	Table int    `json:"table"`
	Up    bool   `json:"up"`
}

// StatusReport is natpool's table compared with a plan, and what the
// journal says of it.
type StatusReport struct {
	Table, Netns, Digest string
	Stamped              bool // a rule of the table carries natpool's stamp
	Rules, Elements      int
	Drift                []compiler.Difference
	Peers                []PeerState // nil for a single box
	Journal              JournalState
}

// JournalState is what the journal says of a table: the entry in force, or
// why it cannot say the table's plan is the one it recorded.
type JournalState struct {
	Path        string
	Seq         int
	Digest      string
	Since       time.Time
	Err         error
	Notes       []string // what the journal's reader passed over
	Unavailable bool     // Err kept the journal from being read at all
}

// InSync reports whether the table is the plan and the journal says so.
func (r StatusReport) InSync() bool { return len(r.Drift) == 0 && r.Journal.Err == nil }

// Text writes the report as status prints it.
func (r StatusReport) Text(w io.Writer) {
	if len(r.Drift) == 0 {
		fmt.Fprintf(w, "table ip %s in %s is in sync with the plan (%s): %d rules, %d elements\n", r.Table, Where(r.Netns), r.Digest, r.Rules, r.Elements)
	} else {
		fmt.Fprintf(w, "table ip %s in %s has drifted from the plan (%s):\n", r.Table, Where(r.Netns), r.Digest)
		if !r.Stamped {
			fmt.Fprintf(w, "no rule of it carries natpool's stamp: another tool made it, or natpool's rules are gone (apply refuses such a table)\n")
		}
		DifferencesText(w, r.Drift, "missing", "extra")
	}
	for _, p := range r.Peers {
		state := "down: its routing table %d holds no route BIRD put there, this node translates the hosts it would steer to it"
		if p.Up {
			state = "up: its routing table %d holds its routes"
		}
		fmt.Fprintf(w, "peer %s "+state+"\n", p.Node, p.Table)
	}
	j := r.Journal
	if j.Err != nil {
		fmt.Fprintf(w, "journal %s: %v\n", j.Path, j.Err)
	} else {
		fmt.Fprintf(w, "journal %s: entry %d, plan %s, in force since %s\n", j.Path, j.Seq, j.Digest, TimeText(j.Since))
	}
	for _, n := range j.Notes {
		fmt.Fprintf(w, "journal note: %s\n", n)
	}
}

// JSON writes the report as status -o json does.
func (r StatusReport) JSON(w io.Writer) error {
	j := map[string]any{"path": r.Journal.Path}
	if len(r.Journal.Notes) > 0 {
		j["notes"] = r.Journal.Notes
	}
	if r.Journal.Err != nil {
		j["drift"] = r.Journal.Err.Error()
	} else {
		j["entry"], j["digest"], j["since"] = r.Journal.Seq, r.Journal.Digest, r.Journal.Since.UTC()
	}
	out := map[string]any{"table": r.Table, "netns": r.Netns, "digest": r.Digest, "stamped": r.Stamped,
		"in_sync": r.InSync(), "drift": DifferencesJSON(r.Drift, "missing", "extra"), "journal": j}
	if r.Peers != nil {
		out["peers"] = r.Peers
	}
	return JSON(w, out)
}

// FlushReport is what a flush scanned and deleted.
type FlushReport struct {
	Scanned  int            `json:"scanned"`
	SNAT     int            `json:"snat"`
	Natpool  int            `json:"natpool"`
	Selected int            `json:"selected"`
	Deleted  int            `json:"deleted"`
	DryRun   bool           `json:"dry_run"`
	ByPublic map[string]int `json:"by_public"`
	// ByEgress counts the entries selected per egress entry: whose inside
	// hosts they are ("" for none of the plan's).
	ByEgress map[string]int `json:"by_egress"`
	Netns    string         `json:"-"`
}

// Text writes the report as flush prints it: a line, then a table of the
// entries per public address.
func (r FlushReport) Text(w io.Writer) error {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	fmt.Fprintf(w, "scanned %d conntrack entries in %s, %d source-NATed, %d by natpool; %s %d\n", r.Scanned, Where(r.Netns), r.SNAT, r.Natpool, verb, r.Selected)
	publics := make([]string, 0, len(r.ByPublic))
	for p := range r.ByPublic {
		publics = append(publics, p)
	}
	slices.SortFunc(publics, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	if len(publics) == 0 {
		return nil
	}
	rows := make([][]string, len(publics))
	for i, p := range publics {
		rows[i] = []string{p, fmt.Sprint(r.ByPublic[p])}
	}
	return Table(w, []string{"PUBLIC", "ENTRIES"}, rows, 1)
}
