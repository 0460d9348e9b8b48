package render

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/pool"
)

// largestRanges bounds the moved ranges a churn report names.
const largestRanges = 5

// DiffReport is what changes from one plan to another: the rendered
// ruleset's diff and, per egress entry, the hosts that move.
type DiffReport struct {
	Format    string // the ruleset format diffed
	Identical bool   // the plans' digests are equal: nothing changes
	Diff      string // the unified diff, for JSON (text streams it)
	LeftOut   int    // diff lines left out past --max-lines
	// Removed and Added count the lines of the rulesets the diff removes
	// and adds, left out or not.
	Removed, Added int
	Churn          []EgressChurn
	Chunks         *pool.ClusterChurn // the chunks that change owner; nil without nodes
	// Uplinks counts the hosts whose uplink changes; nil without uplinks.
	Uplinks *pool.UplinkChurnReport
	// Services are the services added, removed or changed.
	Services []pool.ServiceChange
}

// EgressChurn is the churn of one egress entry; Change is "added" or
// "removed" for an entry in only one of the plans, and then Report is empty.
type EgressChurn struct {
	Egress string
	Change string
	Report pool.ChurnReport
}

// DiffText writes what follows the streamed diff: how many lines were left
// out, then a churn line per egress entry.
func DiffText(w io.Writer, d DiffReport) error {
	if d.LeftOut > 0 {
		fmt.Fprintf(w, "natpool: %d more lines of diff left out (--max-lines 0 shows them all); in all it removes %d lines and adds %d\n", d.LeftOut, d.Removed, d.Added)
	}
	for _, c := range d.Churn {
		if c.Change != "" {
			fmt.Fprintf(w, "churn: egress %s is %s\n", c.Egress, c.Change)
			continue
		}
		r := c.Report
		fmt.Fprintf(w, "churn: egress %s: %d of %d hosts (%s) change public address", c.Egress, r.Moved, r.Hosts, percent(r.MovedShare()))
		if r.PortsMoved > 0 {
			fmt.Fprintf(w, ", %d more change port block", r.PortsMoved)
		}
		fmt.Fprintln(w)
		if len(r.Ranges) > 0 {
			fmt.Fprintf(w, "  largest moved ranges:")
			for _, rg := range r.Ranges[:min(largestRanges, len(r.Ranges))] {
				fmt.Fprintf(w, " %s", compact(rg))
			}
			fmt.Fprintln(w)
		}
	}
	for _, s := range d.Services {
		fmt.Fprintf(w, "churn: service %s is %s\n", s.Service, s.Change)
	}
	if u := d.Uplinks; u != nil {
		fmt.Fprintf(w, "churn: uplinks: %d of %d hosts (%s) change uplink\n", u.Moved, u.Hosts, percent(u.MovedShare()))
	}
	if c := d.Chunks; c != nil {
		fmt.Fprintf(w, "churn: cluster: %d of %d chunks change owner", len(c.Moves), c.Chunks)
		sep := ":"
		for i, m := range c.Moves {
			if i == largestRanges {
				fmt.Fprintf(w, " ...")
				break
			}
			fmt.Fprintf(w, "%s %s %s -> %s", sep, m.Block, nodeText(m.From), nodeText(m.To))
			sep = ","
		}
		fmt.Fprintln(w)
	}
	return nil
}

// nodeText names a chunk's owner in a churn line.
func nodeText(name string) string {
	if name == "" {
		return "(none)"
	}
	return name
}

type diffJSON struct {
	Identical bool          `json:"identical"`
	Format    string        `json:"format"`
	Diff      string        `json:"diff"`
	LeftOut   int           `json:"diff_lines_left_out"`
	Removed   int           `json:"lines_removed"`
	Added     int           `json:"lines_added"`
	Churn     []churnJSON   `json:"churn"`
	Chunks    *chunksJSON   `json:"chunks,omitempty"`
	Uplinks   *uplinksJSON  `json:"uplinks,omitempty"`
	Services  []serviceJSON `json:"services,omitempty"`
}

type serviceJSON struct {
	Service string `json:"service"`
	Change  string `json:"change"`
}

type uplinksJSON struct {
	Hosts uint64 `json:"hosts"`
	Moved uint64 `json:"moved"`
}

type chunksJSON struct {
	Chunks int             `json:"chunks"`
	Moves  []chunkMoveJSON `json:"moves"`
}

type chunkMoveJSON struct {
	Chunk string `json:"chunk"`
	From  string `json:"from"`
	To    string `json:"to"`
}

type churnJSON struct {
	Egress     string   `json:"egress"`
	Change     string   `json:"change,omitempty"`
	Hosts      uint64   `json:"hosts"`
	Moved      uint64   `json:"moved"`
	MovedShare float64  `json:"moved_share"`
	PortsMoved uint64   `json:"ports_moved"`
	Largest    []string `json:"largest_ranges"`
}

// DiffJSON writes the diff report as JSON, for CI bots.
func DiffJSON(w io.Writer, d DiffReport) error {
	out := diffJSON{Identical: d.Identical, Format: d.Format, Diff: d.Diff, LeftOut: d.LeftOut, Removed: d.Removed, Added: d.Added, Churn: []churnJSON{}}
	for _, c := range d.Churn {
		r := c.Report
		cj := churnJSON{Egress: c.Egress, Change: c.Change, Hosts: r.Hosts, Moved: r.Moved,
			MovedShare: r.MovedShare(), PortsMoved: r.PortsMoved, Largest: []string{}}
		for _, rg := range r.Ranges[:min(largestRanges, len(r.Ranges))] {
			cj.Largest = append(cj.Largest, compact(rg))
		}
		out.Churn = append(out.Churn, cj)
	}
	if u := d.Uplinks; u != nil {
		out.Uplinks = &uplinksJSON{u.Hosts, u.Moved}
	}
	for _, s := range d.Services {
		out.Services = append(out.Services, serviceJSON{s.Service, s.Change})
	}
	if c := d.Chunks; c != nil {
		out.Chunks = &chunksJSON{Chunks: c.Chunks, Moves: []chunkMoveJSON{}}
		for _, m := range c.Moves {
			out.Chunks.Moves = append(out.Chunks.Moves, chunkMoveJSON{m.Block.String(), m.From, m.To})
		}
	}
	return JSON(w, out)
}

// Churn compares two plans entry by entry, by name: the hosts each moves.
func Churn(oldPlan, newPlan *pool.Plan) []EgressChurn {
	var out []EgressChurn
	old := map[string]*pool.Egress{}
	for _, e := range oldPlan.Egress {
		old[e.Name] = e
	}
	for _, e := range newPlan.Egress {
		c := EgressChurn{Egress: e.Name, Change: "added"}
		if oe, ok := old[e.Name]; ok {
			c = EgressChurn{Egress: e.Name, Report: pool.Churn(oe, e)}
			delete(old, e.Name)
		}
		out = append(out, c)
	}
	for _, e := range oldPlan.Egress {
		if _, gone := old[e.Name]; gone {
			out = append(out, EgressChurn{Egress: e.Name, Change: "removed"})
		}
	}
	return out
}

// DiffRulesets writes the unified diff of the rulesets of two plans, named
// for their files, in format, as they are rendered: neither is ever held.
func DiffRulesets(w io.Writer, names [2]string, plans [2]*pool.Plan, format string, o Options, maxLines int) (DiffResult, error) {
	var texts [2]*io.PipeReader
	for i, plan := range plans {
		r, pw := io.Pipe()
		go func() {
			if err := Ruleset(pw, io.Discard, plan, format, o); err != nil {
				pw.CloseWithError(fmt.Errorf("%s: %w", names[i], err))
			}
			pw.Close()
		}()
		texts[i] = r
	}
	res, err := StreamDiff(w, names[0], names[1], texts[0], texts[1], maxLines)
	texts[0].Close() // stop a renderer the diff did not read to the end
	texts[1].Close()
	return res, err
}
