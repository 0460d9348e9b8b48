package box

import (
	"fmt"
	"slices"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// Rebuild reads the plan with this digest from journal j and checks that it
// is the plan the digest names.
func Rebuild(j *journal.Journal, digest string) (*pool.Plan, error) {
	rec, err := j.Plan(digest)
	if err != nil {
		return nil, err
	}
	p, err := rec.Plan()
	if err != nil {
		return nil, fmt.Errorf("journal %s: plan %s: %w", j.Dir, digest, err)
	}
	if got := compiler.Digest(p); got != digest {
		return nil, fmt.Errorf("journal %s: plan %s rebuilds as %s: the stored plan is damaged", j.Dir, digest, got)
	}
	return p, nil
}

// History describes the entries of journal j (read as c) that took or tried
// to take effect in [since, until) (a zero bound is none), and the peer
// events there, newest first: each apply's plan, and the hosts it moved
// against the plan before it in the same table. A plan that cannot be read
// leaves its entries without a description, and is returned among the
// unread.
func History(j *journal.Journal, c *journal.Contents, since, until time.Time) (out []render.HistoryEntry, unread []error) {
	plans := map[string]*pool.Plan{}
	planOf := func(digest string) *pool.Plan {
		p, ok := plans[digest]
		if !ok {
			var err error
			if p, err = Rebuild(j, digest); err != nil {
				unread = append(unread, err)
			}
			plans[digest] = p
		}
		return p
	}
	moves := map[[2]string]pool.ChurnReport{} // by the digests before and after: a plan is often applied again
	before := map[journal.Target]string{}     // the plan in force in each table so far
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
					m = pool.PlanChurn(q, p)
					moves[[2]string{prev, e.Digest}] = m
					ok = true
				}
				if ok {
					h.Moved, h.PortsMoved, h.Hosts = &m.Moved, &m.PortsMoved, &m.Hosts
				}
			}
		}
		out = append(out, h)
	}
	for i := range c.Uplinks {
		if within(c.Uplinks[i].Time, since, until) {
			out = append(out, render.HistoryEntry{Uplink: &c.Uplinks[i]})
		}
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

// Answers is what the journals say of some addresses at a time.
type Answers struct {
	Plans   []render.PlanAnswers // each plan in force, with its answers
	Multi   bool                 // some plan has several egress entries
	None    []string             // why each journal with no plan in force has none
	Failed  []string             // the plans that could not answer a question, and why
	Notes   []string             // what the journals' readers passed over, and clock steps
	Answers []pool.Answer        // every answer of every plan
}

// LookupAt answers queries (ADDR or ADDR:PORT) from every plan the journals
// at paths hold in force at t, or within slack of it, for the egress entry
// named egress ("" for all). A plan that cannot answer a question (a port
// lookup of an octet plan, an egress entry it does not have, a plan the
// journal cannot rebuild) is named in Failed, and the others answer.
func LookupAt(paths []string, t time.Time, slack time.Duration, queries []string, egress string) (Answers, error) {
	var a Answers
	for _, path := range paths {
		j, err := journal.Open(path)
		if err != nil {
			return a, err
		}
		c, err := j.Read()
		if err != nil {
			return a, err
		}
		a.Notes = append(a.Notes, c.Notes...)
		spans := journal.Spans(c.Entries)
		inForce := journal.InForce(spans, t, slack)
		if len(inForce) == 0 {
			a.None = append(a.None, path+" ("+notInForce(spans, t)+")")
		}
		for _, s := range inForce {
			if s.ClockBack {
				a.Notes = append(a.Notes, fmt.Sprintf("journal %s: the clock went backwards to %s after plan %s took effect (entry %d): it counts as in force from %s until a change with a later time, and a time since then may name it or a plan after the step",
					path, render.TimeText(s.StepTo), s.Digest, s.Seq, render.TimeText(s.From)))
			}
			plan, err := Rebuild(j, s.Digest)
			if err != nil {
				a.Failed = append(a.Failed, err.Error())
				continue
			}
			pa := render.PlanAnswers{Journal: path, Span: s}
			for _, q := range queries {
				ans, err := plan.Lookup(q, egress)
				if err != nil {
					a.Failed = append(a.Failed, fmt.Sprintf("plan %s (%s, in force %s, journal %s) cannot answer %s: %v",
						s.Digest, render.TargetText(s.Host, s.Target), render.Interval(s.From, s.Until), path, q, err))
					continue
				}
				pa.Answers = append(pa.Answers, ans...)
			}
			if u := plan.Uplinks; u != nil {
				u.UplinksIn(pa.Answers, uplinkStatesAt(c.Uplinks, s.Target, t, u))
			}
			if len(pa.Answers) > 0 {
				a.Plans, a.Answers = append(a.Plans, pa), append(a.Answers, pa.Answers...)
				a.Multi = a.Multi || len(plan.Egress) > 1
			}
		}
	}
	return a, nil
}

// uplinkStatesAt returns the states of u's members at t in target, as the
// last uplink event of each before t says (up without one).
func uplinkStatesAt(events []journal.UplinkEvent, target journal.Target, t time.Time, u *pool.Uplinks) []pool.UplinkState {
	states := u.AllUp()
	for _, e := range events {
		i := u.MemberNamed(e.Egress)
		s, ok := pool.ParseUplinkState(e.State)
		if ok && i >= 0 && e.Target == target && !e.Time.After(t) {
			states[i] = s
		}
	}
	return states
}

// notInForce says why no span holds t: the journal starts later, or the
// NAT it records had ended.
func notInForce(spans []journal.Span, t time.Time) string {
	if len(spans) == 0 {
		return "it records no plan"
	}
	first, ended := spans[0].From, time.Time{}
	for _, s := range spans {
		if s.From.Before(first) {
			first = s.From
		}
		if !s.Until.IsZero() && !s.Until.After(t) && s.Until.After(ended) {
			ended = s.Until
		}
	}
	if t.Before(first) {
		return "its first plan took effect at " + render.TimeText(first)
	}
	return "natpool's NAT ended at " + render.TimeText(ended)
}
