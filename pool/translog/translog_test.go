package translog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var epoch = time.Date(2026, 12, 4, 14, 0, 0, 0, time.UTC)

// traffic is translations as a NAT box makes them: few public ports, so
// that a port is used again, by another host, and at once towards other
// destinations; each connection's proto, public and destination are
// unique among those alive, as conntrack's are.
func traffic(r *rand.Rand, n int, span time.Duration) []Translation {
	dsts := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:443"), netip.MustParseAddrPort("198.18.0.2:443"), netip.MustParseAddrPort("198.18.0.2:53")}
	var out []Translation
	for len(out) < n {
		start := epoch.Add(time.Duration(r.Int64N(int64(span))) / time.Millisecond * time.Millisecond)
		t := Translation{Conn: Conn{
			Proto:  []uint8{6, 17}[r.IntN(2)],
			Inside: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(2)), byte(r.IntN(250))}), uint16(30000+r.IntN(100))),
			Public: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 76, 8, byte(1 + r.IntN(2))}), uint16(1024+r.IntN(40))),
			Dst:    dsts[r.IntN(len(dsts))],
		}, Start: start, End: start.Add(time.Duration(1+r.IntN(90_000)) * time.Millisecond)}
		if !slices.ContainsFunc(out, func(o Translation) bool {
			return o.Proto == t.Proto && o.Public == t.Public && o.Dst == t.Dst && o.Start.Before(t.End) && t.Start.Before(o.End)
		}) {
			out = append(out, t)
		}
	}
	return out
}

// write logs the translations, flushing every simulated second, up to
// until; it returns the writer, still open.
func write(t *testing.T, dir string, o Options, ts []Translation, until time.Time) *Writer {
	t.Helper()
	type ev struct {
		at    time.Time
		start bool
		c     Conn
	}
	var evs []ev
	for _, tr := range ts {
		evs = append(evs, ev{tr.Start, true, tr.Conn}, ev{tr.End, false, tr.Conn})
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	w, notes, err := Open(dir, o, epoch)
	if err != nil || len(notes) > 0 {
		t.Fatal(err, notes)
	}
	next := epoch.Add(time.Second)
	for _, e := range evs {
		if e.at.After(until) {
			break
		}
		for ; !e.at.Before(next); next = next.Add(time.Second) {
			if err := w.Flush(next); err != nil {
				t.Fatal(err)
			}
		}
		if e.start {
			w.Start(e.at, e.c)
		} else {
			w.End(e.at, e.c)
		}
	}
	if err := w.Flush(next); err != nil {
		t.Fatal(err)
	}
	return w
}

// truth answers q from the translations themselves.
func truth(ts []Translation, q Query, until time.Time) []string {
	var out []string
	lo, hi := q.At.Add(-q.Slack), q.At.Add(q.Slack)
	for _, t := range ts {
		if t.Public != q.Public || t.Start.After(hi) || t.Start.After(until) || t.End.Before(lo) && !t.End.After(until) {
			continue
		}
		if d := q.Dst; d.Addr().IsValid() && (d.Addr() != t.Dst.Addr() || d.Port() != 0 && d.Port() != t.Dst.Port()) {
			continue
		}
		end := t.End
		if end.After(until) {
			end = time.Time{}
		}
		out = append(out, fmt.Sprint(t.Proto, t.Inside, t.Start.UnixMilli(), endMillis(end), t.Dst.Port()))
	}
	slices.Sort(out)
	return out
}

// endMillis is an end as the answers compare it: 0 when not ended.
func endMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func answers(r *Result) []string {
	var out []string
	for _, t := range r.Translations {
		out = append(out, fmt.Sprint(t.Proto, t.Inside, t.Start.UnixMilli(), endMillis(t.End), t.Dst.Port()))
	}
	slices.Sort(out)
	return out
}

// Every lookup of a public address and port at a time, with and without a
// destination, answers exactly the translations that covered it: from
// sealed segments (their index), from the one being written, across
// segments, with destinations hashed or in clear.
func TestLookupAnswersExactlyTheTranslationsThatCoveredTheTime(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			ts := traffic(r, 3000, 5*time.Minute)
			dir := t.TempDir()
			until := epoch.Add(4 * time.Minute) // later ones not yet logged
			w := write(t, dir, Options{Plain: plain, Span: 40 * time.Second}, ts, until)
			check := func(stage string) {
				for range 300 {
					tr := ts[r.IntN(len(ts))]
					if tr.Start.After(until) {
						continue
					}
					q := Query{Public: tr.Public, At: tr.Start.Add(tr.End.Sub(tr.Start) / 2), Slack: time.Duration(r.IntN(3)) * time.Second}
					if r.IntN(2) == 0 {
						q.Dst = tr.Dst
						if r.IntN(2) == 0 {
							q.Dst = netip.AddrPortFrom(tr.Dst.Addr(), 0)
						}
					}
					if q.At.After(until) {
						continue
					}
					res, err := Lookup(dir, q)
					if err != nil {
						t.Fatal(err)
					}
					if got, want := answers(res), truth(ts, q, until); !slices.Equal(got, want) {
						t.Fatalf("%s: %+v:\n got %q\nwant %q", stage, q, got, want)
					}
					if len(res.Incomplete) > 0 {
						t.Fatalf("%s: %+v: incomplete: %q", stage, q, res.Incomplete)
					}
				}
			}
			check("writing")
			// A running index cut short: the blocks past it are read.
			keys := strings.TrimSuffix(w.path, segmentExt) + keysExt
			if st, err := os.Stat(keys); err != nil || st.Size() < 10 {
				t.Fatalf("running index %s: %v", keys, err)
			} else {
				os.Truncate(keys, st.Size()/2)
			}
			check("writing, its running index torn")
			// Closed later: the log covers the queries' slack past until.
			if err := w.Close(until.Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			check("sealed")
			for _, tr := range res(t, dir, ts[0]) {
				if plain != tr.Dst.Addr().IsValid() {
					t.Errorf("destination %v kept with plain %v", tr.Dst, plain)
				}
			}
		})
	}
}

func res(t *testing.T, dir string, tr Translation) []Translation {
	t.Helper()
	r, err := Lookup(dir, Query{Public: tr.Public, At: tr.Start})
	if err != nil {
		t.Fatal(err)
	}
	return r.Translations
}

// A process killed mid-block leaves a torn tail: the next Open reports it
// with its offset, leaves it, starts a new segment, and marks the time no
// one logged; lookups then say they may be incomplete.
func TestATornTailIsReportedLeftAndMarked(t *testing.T) {
	dir := t.TempDir()
	c := Conn{Proto: 6, Inside: netip.MustParseAddrPort("10.0.0.1:40000"), Public: netip.MustParseAddrPort("192.76.8.1:1024"), Dst: netip.MustParseAddrPort("198.18.0.1:443")}
	w, _, err := Open(dir, Options{}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	w.Start(epoch.Add(time.Second), c)
	if err := w.Flush(epoch.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	size := w.size
	w.f.Write([]byte{0, 0, 1, 0, 0x28, 0xb5}) // a block cut short, as kill -9 leaves one
	w.f.Close()
	// Killed then, on the test's clock: the log's coverage is its
	// segment's modification time.
	if err := os.Chtimes(w.path, epoch.Add(2*time.Second), epoch.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(w.path)

	w2, notes, err := Open(dir, Options{}, epoch.Add(time.Minute))
	var damage *Damage
	if err != nil || len(notes) != 1 || !errors.As(notes[0], &damage) || damage.Offset != size || damage.Bytes != 6 {
		t.Fatalf("notes %v, err %v; want a damaged tail at %d", notes, err, size)
	}
	if err := w2.Close(epoch.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(w.path); string(after) != string(before) {
		t.Error("the damaged segment was rewritten")
	}
	r, err := Lookup(dir, Query{Public: c.Public, At: epoch.Add(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Translations) != 1 || r.Translations[0].Inside != c.Inside || len(r.Incomplete) == 0 ||
		!strings.Contains(strings.Join(r.Incomplete, "; "), "may be missing") {
		t.Errorf("answers %+v, incomplete %q", r.Translations, r.Incomplete)
	}
}

// A disk that refuses writes drops the events of the time it refuses and
// leaves the segment whole; once it takes them again, the log says which
// window may be missing.
func TestAFailingDiskDropsEventsAndMarksTheirWindow(t *testing.T) {
	dir := t.TempDir()
	c := Conn{Proto: 17, Inside: netip.MustParseAddrPort("10.0.0.2:5353"), Public: netip.MustParseAddrPort("192.76.8.1:2000"), Dst: netip.MustParseAddrPort("198.18.0.53:53")}
	w, _, err := Open(dir, Options{}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	good := w.f
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	w.f = full
	w.Start(epoch.Add(10*time.Second), c)
	if err := w.Flush(epoch.Add(11 * time.Second)); err == nil {
		t.Fatal("writing to a full disk did not fail")
	}
	if w.Dropped != 1 {
		t.Errorf("%d events dropped", w.Dropped)
	}
	good.Close()
	// Space is back: the next block opens with the window.
	w.End(epoch.Add(20*time.Second), c)
	if err := w.Flush(epoch.Add(21 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(epoch.Add(22 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r, err := Lookup(dir, Query{Public: c.Public, At: epoch.Add(15 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Incomplete) == 0 || !strings.Contains(r.Incomplete[0], "2026-12-04T14:00:10Z to 2026-12-04T14:00:21Z") {
		t.Errorf("incomplete %q", r.Incomplete)
	}
}

// Keep prunes whole sealed segments that ended before it, never the one
// being written.
func TestKeepPrunesWholeSealedSegments(t *testing.T) {
	dir := t.TempDir()
	ts := traffic(rand.New(rand.NewPCG(3, 4)), 200, 10*time.Minute)
	w := write(t, dir, Options{Span: time.Minute, Keep: 3 * time.Minute}, ts, epoch.Add(10*time.Minute))
	defer w.Close(epoch.Add(10 * time.Minute))
	segs, _ := segments(dir)
	if len(segs) < 3 || len(segs) > 5 {
		t.Errorf("%d segments kept of 10 minutes, keeping 3 minutes: %v", len(segs), segs)
	}
	if _, start, _ := segmentStart(segs[0]); epoch.Add(10*time.Minute).Sub(fromMillis(start)) > 5*time.Minute {
		t.Errorf("the oldest segment kept began at %v", fromMillis(start))
	}
	if _, err := os.Stat(filepath.Join(dir, keyFile)); err != nil {
		t.Error(err)
	}
}
