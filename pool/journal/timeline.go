package journal

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Span is a plan in force in a target: from its apply's From until the next
// change of the target took effect (Until zero: still in force).
type Span struct {
	Entry
	Until time.Time
	// Pending marks an apply whose outcome is unknown: the target may have
	// had its plan from its intent on, or kept the one before.
	Pending bool
}

// Contains reports whether the span's plan was in force at t.
func (s Span) Contains(t time.Time) bool {
	return !t.Before(s.From) && (s.Until.IsZero() || t.Before(s.Until))
}

// Spans returns the plans each target had, in the order they took effect.
// An apply of unknown outcome gives a Pending span that does not end the
// one before it.
func Spans(entries []Entry) []Span {
	out := make([]Span, 0, len(entries))
	// The spans not yet ended, by index in out, of each target: a journal
	// has a few targets, so a short list finds them faster than a map.
	type target struct {
		Target
		open []int
	}
	var targets []target
	openOf := func(t Target) *[]int {
		for i := range targets {
			if targets[i].Target == t {
				return &targets[i].open
			}
		}
		targets = append(targets, target{Target: t})
		return &targets[len(targets)-1].open
	}
	for _, e := range entries {
		open := openOf(e.Target)
		switch e.Outcome {
		case Commit: // ends the target's span in force and its pending ones
			for _, i := range *open {
				out[i].Until = e.From
			}
			*open = (*open)[:0]
			if e.Op == Apply {
				*open = append(*open, len(out))
				out = append(out, Span{Entry: e})
			}
		case "":
			if e.Op == Apply {
				s := Span{Entry: e, Pending: true}
				s.From = e.Intended
				*open = append(*open, len(out))
				out = append(out, s)
			}
		}
	}
	return out
}

// Resolved is what Recover found of an interrupted change.
type Resolved struct {
	Entry
	Outcome string // Commit or Abort
	Why     string
}

// Recover settles the changes of host whose outcome was lost (natpool was
// killed between intent and outcome): stamp reads the digest natpool stamped
// on a target's table ("" without one). An apply whose digest the table
// holds took effect; a delete took effect when the table is gone; anything
// else did not. The caller holds the lock.
func (j *Journal) Recover(host string, now time.Time, stamp func(Target) (digest string, exists bool, err error)) ([]Resolved, error) {
	entries, err := j.Entries()
	if err != nil {
		return nil, err
	}
	var out []Resolved
	for _, e := range entries {
		if e.Outcome != "" || e.Target.Host != host {
			continue
		}
		digest, exists, err := stamp(e.Target)
		if err != nil {
			return out, fmt.Errorf("journal %s: settling entry %d: %w", j.Dir, e.Seq, err)
		}
		r := Resolved{Entry: e, Outcome: Abort}
		switch {
		case e.Op == Apply && exists && digest == e.Digest, e.Op == Delete && !exists:
			r.Outcome = Commit
		case !exists:
			r.Why = "interrupted: the table is absent"
		default:
			r.Why = "interrupted: the table holds plan " + cmp.Or(digest, "(unstamped)")
		}
		var why error
		if r.Why != "" {
			why = errors.New(r.Why)
		}
		if err := j.End(e.Seq, r.Outcome, now, why, true); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Prune drops the entries that stopped mattering before t: every change of
// a target that another had replaced by t. The plan each target had at t,
// everything since and every change of unknown outcome stay, so every
// lookup at t or later answers as before. Of the peer events before t only
// each peer's last stays. It returns how many entries and peer events it
// dropped. The caller holds the lock.
func (j *Journal) Prune(t time.Time) (int, error) {
	entries, peers, err := j.read()
	if err != nil {
		return 0, err
	}
	keep := map[int]bool{}
	last := map[Target]int{} // the target's last change in effect before t
	for _, e := range entries {
		switch {
		case e.Outcome == "" || !e.Intended.Before(t):
			keep[e.Seq] = true
		case e.Outcome == Commit && e.From.Before(t):
			last[e.Target] = e.Seq
		}
	}
	for _, seq := range last {
		keep[seq] = true
	}
	// Of the peer events, those from t on, and the last before t of each
	// peer as each node saw it: the peer's state at t.
	keepPeer := map[int]bool{} // by line
	lastPeer := map[PeerEvent]int{}
	for _, p := range peers {
		if !p.Time.Before(t) {
			keepPeer[p.Line] = true
		} else {
			lastPeer[PeerEvent{Target: p.Target, Node: p.Node, Peer: p.Peer}] = p.Line
		}
	}
	for _, line := range lastPeer {
		keepPeer[line] = true
	}
	if len(keep) == len(entries) && len(keepPeer) == len(peers) {
		return 0, nil
	}
	// Rewrite the events: the header and the kept entries' lines, in order.
	data, err := os.ReadFile(j.path(eventsFile))
	if err != nil {
		return 0, err
	}
	header, events, _ := bytes.Cut(data, []byte{'\n'})
	var kept bytes.Buffer
	kept.Write(header)
	kept.WriteByte('\n')
	names := map[string]string{}
	n := 1                                  // the header's line
	for line := range bytes.Lines(events) { // whole lines: Entries read them all
		n++
		var ev Event
		if err := parseEvent(line, &ev, names); err != nil {
			return 0, err
		}
		if ev.Seq == 0 && keepPeer[n] || ev.Seq != 0 && keep[ev.Seq] {
			kept.Write(line)
		}
	}
	if err := writeFile(j.path(eventsFile), kept.Bytes()); err != nil {
		return 0, fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	// Plans no kept apply names go too.
	named := map[string]bool{}
	for _, e := range entries {
		if keep[e.Seq] {
			named[e.Digest] = true
		}
	}
	plans, _ := os.ReadDir(j.path(plansDir))
	for _, p := range plans {
		if digest, ok := strings.CutSuffix(p.Name(), ".json.gz"); ok && !named[digest] {
			os.Remove(j.planPath(digest))
		}
	}
	return len(entries) - len(keep) + len(peers) - len(keepPeer), nil
}

// InForce returns the spans in force at t, with those that began or ended
// within slack of t: a time from an abuse report carries clock error.
func InForce(spans []Span, t time.Time, slack time.Duration) []Span {
	var out []Span
	for _, s := range spans {
		lo := s.From.Add(-slack)
		if !t.Before(lo) && (s.Until.IsZero() || t.Before(s.Until.Add(slack))) {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b Span) int { return a.From.Compare(b.From) })
	return out
}
