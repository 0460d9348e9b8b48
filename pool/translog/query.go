package translog

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
)

// Query asks who had a public address and port at a time.
type Query struct {
	Public netip.AddrPort
	// Proto keeps the translations of one protocol; 0 keeps all.
	Proto uint8
	// At and Slack: translations that covered any moment within Slack of
	// At answer.
	At    time.Time
	Slack time.Duration
	// Dst, when its address is valid, keeps the translations that reached
	// it (any port of it when its port is 0).
	Dst netip.AddrPort
}

// Result is what a log answers to a query.
type Result struct {
	// Translations are the answers, in the order they began.
	Translations []Translation
	// Incomplete lists why the log may miss answers: events lost, no
	// natpool logging, times the log does not cover. Empty when it is
	// complete for the query's time.
	Incomplete []string
	// Clock lists steps of the wall clock near the query's time.
	Clock []string
}

// Lookup answers q from the log in dir. It reads the segment that holds
// the query's time and what follows until every translation open then has
// ended; of a sealed segment only the blocks its index names for the
// public address and port.
func Lookup(dir string, q Query) (*Result, error) {
	segs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("%s holds no translation log", dir)
	}
	h, err := loadKey(dir)
	if err != nil {
		return nil, err
	}
	l := &lookup{q: q, lo: millis(q.At.Add(-q.Slack)), hi: millis(q.At.Add(q.Slack)), want: publicKey(ap(q.Public)),
		open: map[key]*Translation{}, res: &Result{}, last: -1}
	if q.Dst.Addr().IsValid() {
		l.dstHash = h.hash(q.Dst.Addr())
	}
	starts := make([]int64, len(segs))
	first := 0
	for i, seg := range segs {
		if _, starts[i], err = segmentStart(seg); err != nil {
			return nil, err
		}
		if starts[i] <= l.lo {
			first = i
		}
	}
	if l.lo < starts[0] {
		l.incomplete("the log begins at %s", fmtTime(starts[0]))
	}
	i := first
	for ; i < len(segs); i++ {
		// A loss window is logged when it ends, in the segment open then:
		// the first that began after the query's time may hold one that
		// covers it.
		if i > first && starts[i-1] > l.hi && !l.waiting() {
			break
		}
		if err := l.segment(segs[i]); err != nil {
			return nil, err
		}
	}
	if i == len(segs) {
		until, err := coveredUntil(segs[i-1])
		if err != nil {
			return nil, err
		}
		if until = max(until, l.last); until < l.hi {
			l.incomplete("the log ends at %s", fmtTime(until))
		}
	}
	for _, t := range l.open {
		if millis(t.Start) <= l.hi {
			l.answer(t)
		}
	}
	slices.SortFunc(l.res.Translations, func(a, b Translation) int { return a.Start.Compare(b.Start) })
	return l.res, nil
}

// lookup is a query under way.
type lookup struct {
	q       Query
	lo, hi  int64
	want    publicKey
	dstHash uint32
	open    map[key]*Translation
	res     *Result
	last    int64 // the last event read's time
}

func (l *lookup) incomplete(format string, args ...any) {
	l.res.Incomplete = append(l.res.Incomplete, fmt.Sprintf(format, args...))
}

// waiting reports whether translations that began by the query's time
// have not ended yet.
func (l *lookup) waiting() bool {
	for _, t := range l.open {
		if millis(t.Start) <= l.hi {
			return true
		}
	}
	return false
}

// segment reads a segment's events of the public address and port, and
// its marks.
func (l *lookup) segment(seg string) error {
	plain, _, err := segmentStart(seg)
	if err != nil {
		return err
	}
	if !sealed(seg) { // being written: its running index, then the blocks past it
		blocks, marks, upTo := readKeys(seg, l.want)
		for i := range marks {
			l.event(&marks[i])
		}
		if err := l.blocks(seg, blocks, plain); err != nil {
			return err
		}
		_, _, err := scan(seg, upTo, func(_ int, b blockInfo, events []event) error {
			l.last = max(l.last, b.last)
			for i := range events {
				l.event(&events[i])
			}
			return nil
		})
		var damage *Damage
		if errors.As(err, &damage) { // a block being written, or a torn tail
			err = nil
		}
		return err
	}
	ix, err := readIndex(seg, l.want)
	if err != nil {
		return err
	}
	if n := len(ix.dir); n > 0 {
		l.last = max(l.last, ix.dir[n-1].last)
	}
	for i := range ix.marks {
		l.event(&ix.marks[i])
	}
	blocks := make([]blockInfo, len(ix.blocks))
	for i, b := range ix.blocks {
		blocks[i] = ix.dir[b]
	}
	return l.blocks(seg, blocks, plain)
}

// blocks reads the translations' events of a segment's blocks that an
// index listed: their marks came with the index.
func (l *lookup) blocks(seg string, blocks []blockInfo, plain bool) error {
	if len(blocks) == 0 {
		return nil
	}
	f, err := os.Open(seg)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, b := range blocks {
		l.last = max(l.last, b.last)
		if err := readBlock(f, b, plain, func(e *event) error {
			if isConn(e.kind) {
				l.event(e)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// event takes one event.
func (l *lookup) event(e *event) {
	switch e.kind {
	case kindLoss:
		if e.at-e.span <= l.hi && e.at >= l.lo {
			l.incomplete("events from %s to %s may be missing", fmtTime(e.at-e.span), fmtTime(e.at))
		}
		return
	case kindClock:
		if e.at-abs(e.span) <= l.hi && e.at+abs(e.span) >= l.lo {
			l.res.Clock = append(l.res.Clock, fmt.Sprintf("the clock stepped by %s at %s", time.Duration(e.span)*time.Millisecond, fmtTime(e.at)))
		}
		return
	}
	if publicKey(e.public) != l.want || l.q.Proto != 0 && e.proto != l.q.Proto {
		return
	}
	k := e.key()
	t := l.open[k]
	switch e.kind {
	case kindStart, kindBefore:
		if t != nil && ap(t.Inside) == e.inside {
			return // the same translation, carried into a segment or found again
		}
		if t != nil { // its end was not logged: it ended by now
			t.End = fromMillis(e.at)
			l.ended(k, t)
		}
		if e.at > l.hi {
			return
		}
		l.open[k] = &Translation{Conn: e.conn(), DstHash: e.hash, Start: fromMillis(e.at), Before: e.kind == kindBefore}
	case kindEnd:
		if t != nil {
			t.End = fromMillis(e.at)
			l.ended(k, t)
		}
	case kindEndOnly, kindEndTag:
		// The one open on its protocol and public address and port, or
		// the one of its tag; the earliest, should events lost have left
		// several.
		var first *Translation
		for ok, ot := range l.open {
			if ok.publicOnly() == k.publicOnly() && (e.kind == kindEndOnly || ok.tag() == byte(e.hash)) &&
				(first == nil || ot.Start.Before(first.Start)) {
				first, k = ot, ok
			}
		}
		if first != nil {
			first.End = fromMillis(e.at)
			l.ended(k, first)
		}
	}
}

// ended takes a translation that ended: an answer when it covered the
// query's time.
func (l *lookup) ended(k key, t *Translation) {
	delete(l.open, k)
	if millis(t.End) >= l.lo {
		l.answer(t)
	}
}

// answer keeps t if it reached the query's destination.
func (l *lookup) answer(t *Translation) {
	if d := l.q.Dst; d.Addr().IsValid() {
		if d.Port() != 0 && d.Port() != t.Dst.Port() {
			return
		}
		if t.Dst.Addr().IsValid() && t.Dst.Addr() != d.Addr() || !t.Dst.Addr().IsValid() && t.DstHash != l.dstHash {
			return
		}
	}
	l.res.Translations = append(l.res.Translations, *t)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func fmtTime(ms int64) string { return fromMillis(ms).Format(time.RFC3339Nano) }
