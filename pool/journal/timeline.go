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
	// ClockBack marks a span whose next change carries an earlier time than
	// its own start: the clock went backwards (to StepTo) while the plan
	// was in force, so its end is not known in wall-clock time. It counts
	// as in force from its start until a later change of the target with a
	// later time ends it: a time in that stretch may name it, or the plans
	// after the step.
	ClockBack bool
	StepTo    time.Time
	// Current marks the span of the last change of its target, in the order
	// the changes were written: the plan in force now.
	Current bool
}

// Contains reports whether the span's plan was in force at t.
func (s Span) Contains(t time.Time) bool {
	return !t.Before(s.From) && (s.Until.IsZero() || t.Before(s.Until))
}

// Spans returns the plans each target had, in the order the changes were
// written (their sequence numbers), not by their times: a clock stepped
// backwards gives a span marked ClockBack. An apply of unknown outcome
// gives a Pending span that does not end the one before it.
func Spans(entries []Entry) []Span {
	out := make([]Span, 0, len(entries))
	// The spans not yet ended, by index in out, of each target: a journal
	// has a few targets, so a short list finds them faster than a map.
	type target struct {
		Target
		open    []int
		stepped []int // spans ClockBack leaves open until a later time
	}
	var targets []target
	targetOf := func(t Target) *target {
		for i := range targets {
			if targets[i].Target == t {
				return &targets[i]
			}
		}
		targets = append(targets, target{Target: t})
		return &targets[len(targets)-1]
	}
	for _, e := range entries {
		tg := targetOf(e.Target)
		switch e.Outcome {
		case Commit: // ends the target's span in force and its pending ones
			tg.stepped = slices.DeleteFunc(tg.stepped, func(i int) bool {
				ended := !e.From.Before(out[i].From)
				if ended {
					out[i].Until = e.From
				}
				return ended
			})
			for _, i := range tg.open {
				if e.From.Before(out[i].From) {
					out[i].ClockBack, out[i].StepTo = true, e.From
					tg.stepped = append(tg.stepped, i)
					continue
				}
				out[i].Until = e.From
			}
			tg.open = tg.open[:0]
			if e.Op == Apply {
				tg.open = append(tg.open, len(out))
				out = append(out, Span{Entry: e})
			}
		case "":
			if e.Op == Apply {
				s := Span{Entry: e, Pending: true}
				s.From = e.Intended
				tg.open = append(tg.open, len(out))
				out = append(out, s)
			}
		}
	}
	for _, tg := range targets {
		for _, i := range tg.open {
			out[i].Current = true
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

// Recover settles the changes of machine whose outcome was lost (natpool was
// killed between intent and outcome): stamp reads the digest natpool stamped
// on a target's table ("" without one). An apply whose digest the table
// holds took effect; a delete took effect when the table is gone; anything
// else did not. The caller holds the lock.
func (j *Journal) Recover(machine string, now time.Time, stamp func(Target) (digest string, exists bool, err error)) ([]Resolved, error) {
	c, err := j.Read()
	if err != nil {
		return nil, err
	}
	var out []Resolved
	for _, e := range c.Entries {
		if e.Outcome != "" || e.Target.Machine != machine {
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

// Pruned is what Prune dropped.
type Pruned struct {
	Entries      int `json:"dropped"`
	PeerEvents   int `json:"dropped_peer_events"`
	UplinkEvents int `json:"dropped_uplink_events"`
}

// PruneLocked takes the journal's lock (waiting, as Lock does) and prunes.
func (j *Journal) PruneLocked(t time.Time, waiting func()) (Pruned, error) {
	unlock, err := j.Lock(waiting)
	if err != nil {
		return Pruned{}, err
	}
	defer unlock()
	return j.Prune(t)
}

// Prune drops the entries that stopped mattering before t: every change of
// a target that another had replaced by t. The plan each target had at t,
// everything since and every change of unknown outcome stay, so every
// lookup at t or later answers as before. Of the peer events before t only
// each peer's last stays. The caller holds the lock.
func (j *Journal) Prune(t time.Time) (Pruned, error) {
	c, err := j.Read()
	if err != nil {
		return Pruned{}, err
	}
	entries, peers := c.Entries, c.Peers
	keep := map[int]bool{}
	last := map[Target]int{} // the target's last change in effect before t
	for _, e := range entries {
		switch {
		// An apply intended before t that took effect at or after it is
		// in force from then on: kept, as everything written from t.
		case e.Outcome == "" || !e.Intended.Before(t) || !e.From.Before(t):
			keep[e.Seq] = true
		case e.Outcome == Commit:
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
	// And of the uplink events, as of the peer events: each uplink's state.
	keptUplinks := 0
	lastUplink := map[UplinkEvent]int{}
	for _, u := range c.Uplinks {
		if !u.Time.Before(t) {
			keepPeer[u.Line] = true
			keptUplinks++
		} else {
			lastUplink[UplinkEvent{Target: u.Target, Egress: u.Egress}] = u.Line
		}
	}
	for _, line := range lastUplink {
		keepPeer[line] = true
		keptUplinks++
	}
	if len(keep) == len(entries) && len(keepPeer) == len(peers)+len(c.Uplinks) {
		return Pruned{}, nil
	}
	// Rewrite the events: the header and the kept entries' lines, in order.
	data, err := os.ReadFile(j.path(eventsFile))
	if err != nil {
		return Pruned{}, err
	}
	header, events, _ := bytes.Cut(data, []byte{'\n'})
	var kept bytes.Buffer
	kept.Write(header)
	kept.WriteByte('\n')
	names := map[string]string{}
	n := 1                                  // the header's line
	for line := range bytes.Lines(events) { // Read parsed them all
		n++
		if !bytes.HasSuffix(line, []byte{'\n'}) {
			break // cut short: never written
		}
		var ev Event
		if err := parseEvent(line, &ev, names); err != nil {
			return Pruned{}, err
		}
		// Events of kinds this natpool does not know stay, as they were.
		if !slices.Contains(kinds, ev.Kind) || ev.Seq == 0 && keepPeer[n] || ev.Seq != 0 && keep[ev.Seq] {
			kept.Write(line)
		}
	}
	if err := writeFile(j.path(eventsFile), kept.Bytes()); err != nil {
		return Pruned{}, fmt.Errorf("journal %s: %w", j.Dir, err)
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
	return Pruned{Entries: len(entries) - len(keep), PeerEvents: len(peers) - (len(keepPeer) - keptUplinks), UplinkEvents: len(c.Uplinks) - keptUplinks}, nil
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
