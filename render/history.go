package render

import (
	"fmt"
	"io"
	"time"

	"github.com/natpool/natpool/pool/journal"
)

// HistoryEntry is one journal entry as history shows it.
type HistoryEntry struct {
	journal.Entry
	Egress []EgressSummary // of an apply's plan
	// Moved counts the hosts that changed public address against the plan
	// in force before in the same table, PortsMoved those that kept it and
	// changed port block; Hosts those both plans map. Nil for the first
	// plan of a table and for anything but a committed apply.
	Moved, PortsMoved, Hosts *uint64
	// Unread marks an apply whose plan could not be read from the journal.
	Unread bool
	// Peer is set, and the rest empty, for a peer event; Uplink for an
	// uplink event.
	Peer   *journal.PeerEvent
	Uplink *journal.UplinkEvent
}

// Time returns when the entry took effect, or was meant to.
func (e HistoryEntry) Time() time.Time {
	switch {
	case e.Peer != nil:
		return e.Peer.Time
	case e.Uplink != nil:
		return e.Uplink.Time
	case e.Outcome == journal.Commit:
		return e.From
	}
	return e.Intended
}

// peerText says what a peer event meant for the node that saw it.
func peerText(p *journal.PeerEvent) (op, what string) {
	if p.Up {
		return journal.PeerUp, fmt.Sprintf("peer %s came up: %s steers its hosts to it again", p.Peer, p.Node)
	}
	silent := ""
	if !p.Since.IsZero() {
		silent = fmt.Sprintf(" (silent since %s at the earliest)", TimeText(p.Since))
	}
	return journal.PeerDown, fmt.Sprintf("peer %s went down%s: %s translates the hosts it steered to it", p.Peer, silent, p.Node)
}

// EgressSummary says briefly what an egress entry of a plan did.
type EgressSummary struct {
	Name     string `json:"name"`
	Strategy string `json:"strategy"`
	Hosts    uint64 `json:"hosts"`
	Public   int    `json:"public_addrs"`
}

// outcome says what became of an entry.
func outcome(e journal.Entry) string {
	switch {
	case e.Outcome == "":
		return "unknown: interrupted, not yet settled"
	case e.Outcome == journal.Abort:
		return "no effect: " + e.Error
	case e.Recovered:
		return "took effect (found after an interruption)"
	}
	return "took effect"
}

// HistoryText writes the entries as a table, in the order given.
func HistoryText(w io.Writer, entries []HistoryEntry) error {
	var rows [][]string
	for _, e := range entries {
		if e.Peer != nil {
			op, what := peerText(e.Peer)
			rows = append(rows, []string{TimeText(e.Peer.Time), "-", op, TargetText(e.Peer.Host, e.Peer.Target), "-", what, "", "-"})
			continue
		}
		if u := e.Uplink; u != nil {
			rows = append(rows, []string{TimeText(u.Time), "-", "uplink-" + u.State, TargetText(u.Host, u.Target), "-", uplinkText(u), u.Egress, "-"})
			continue
		}
		plan, egress, moved := "-", "", "-"
		if e.Op == journal.Apply {
			plan = e.Digest
		}
		for i, s := range e.Egress {
			if i > 0 {
				egress += "\n"
			}
			egress += fmt.Sprintf("%s: %s, %s on %d", s.Name, s.Strategy, Plural(s.Hosts, "host"), s.Public)
		}
		if e.Moved != nil && *e.Hosts > 0 {
			moved = fmt.Sprintf("%d (%s)", *e.Moved, percent(float64(*e.Moved)/float64(*e.Hosts)))
			if *e.PortsMoved > 0 {
				moved += fmt.Sprintf("\n+%d port blocks", *e.PortsMoved)
			}
		}
		if e.Unread {
			egress = "(plan unreadable: see stderr)"
		}
		rows = append(rows, []string{TimeText(e.Time()), fmt.Sprint(e.Seq), e.Op, TargetText(e.Host, e.Target), plan, outcome(e.Entry), egress, moved})
	}
	return Table(w, []string{"TIME (UTC)", "ENTRY", "OP", "WHERE", "PLAN", "OUTCOME", "EGRESS", "MOVED"}, rows, 1)
}

type historyJSON struct {
	Seq       int             `json:"entry"`
	Op        string          `json:"op"`
	Host      string          `json:"host"`
	Machine   string          `json:"machine"`
	Netns     string          `json:"netns"`
	Table     string          `json:"table"`
	Digest    string          `json:"digest,omitempty"`
	Version   string          `json:"version"`
	Intended  time.Time       `json:"intended"`
	From      *time.Time      `json:"from"` // null without effect
	Outcome   string          `json:"outcome"`
	Recovered bool            `json:"recovered,omitempty"`
	Error     string          `json:"error,omitempty"`
	Egress    []EgressSummary `json:"egress,omitempty"`
	Moved     *uint64         `json:"moved"`
	Ports     *uint64         `json:"ports_moved"`
	Hosts     *uint64         `json:"hosts_compared"`
	Unread    bool            `json:"plan_unreadable,omitempty"`
}

// peerJSON is a peer event in history's JSON, told apart by its op.
type peerJSON struct {
	Op      string    `json:"op"` // "peer-down" or "peer-up"
	Host    string    `json:"host"`
	Machine string    `json:"machine"`
	Netns   string    `json:"netns"`
	Table   string    `json:"table"`
	Time    time.Time `json:"from"`
	Since   time.Time `json:"silent_since,omitzero"` // a peer-down's earliest
	Node    string    `json:"node"`
	Peer    string    `json:"peer"`
	What    string    `json:"outcome"`
}

// HistoryJSON writes the entries as a JSON array, in the order given.
func HistoryJSON(w io.Writer, entries []HistoryEntry) error {
	out := []any{}
	for _, e := range entries {
		if p := e.Peer; p != nil {
			op, what := peerText(p)
			out = append(out, peerJSON{Op: op, Host: p.Host, Machine: p.Target.Machine, Netns: p.Target.Netns, Table: p.Target.Table, Time: p.Time.UTC(), Since: p.Since.UTC(), Node: p.Node, Peer: p.Peer, What: what})
			continue
		}
		if u := e.Uplink; u != nil {
			out = append(out, uplinkJSON{Op: "uplink-" + u.State, Host: u.Host, Machine: u.Target.Machine, Netns: u.Target.Netns, Table: u.Target.Table,
				Time: u.Time.UTC(), Egress: u.Egress, State: u.State, What: uplinkText(u)})
			continue
		}
		h := historyJSON{Seq: e.Seq, Op: e.Op, Host: e.Host, Machine: e.Target.Machine, Netns: e.Target.Netns, Table: e.Target.Table, Digest: e.Digest,
			Version: e.Version, Intended: e.Intended.UTC(), Outcome: e.Outcome, Recovered: e.Recovered, Error: e.Error,
			Egress: e.Egress, Moved: e.Moved, Ports: e.PortsMoved, Hosts: e.Hosts, Unread: e.Unread}
		if h.Outcome == "" {
			h.Outcome = "unknown"
		}
		if e.Outcome == journal.Commit {
			from := e.From.UTC()
			h.From = &from
		}
		out = append(out, h)
	}
	return JSON(w, out)
}

// uplinkText says what an uplink event meant.
func uplinkText(u *journal.UplinkEvent) string {
	return fmt.Sprintf("uplink of egress %s %s: %s", u.Egress, u.State, u.Why)
}

// uplinkJSON is an uplink event in history's JSON, told apart by its op.
type uplinkJSON struct {
	Op      string    `json:"op"` // "uplink-up", "uplink-degraded" or "uplink-down"
	Host    string    `json:"host"`
	Machine string    `json:"machine"`
	Netns   string    `json:"netns"`
	Table   string    `json:"table"`
	Time    time.Time `json:"from"`
	Egress  string    `json:"egress"`
	State   string    `json:"state"`
	What    string    `json:"outcome"`
}

// PruneReport is what history --prune-before dropped.
type PruneReport struct {
	Journal string    `json:"journal"`
	Before  time.Time `json:"pruned_before"`
	journal.Pruned
}

// Text writes the report as history --prune-before prints it.
func (r PruneReport) Text(w io.Writer) {
	fmt.Fprintf(w, "journal %s: dropped %s, %s and %s that stopped mattering before %s\n", r.Journal,
		Plural(uint64(r.Entries), "entry"), Plural(uint64(r.PeerEvents), "peer event"), Plural(uint64(r.UplinkEvents), "uplink event"), r.Before.UTC().Format(time.RFC3339))
}
