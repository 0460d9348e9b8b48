package journal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natpool/natpool/pool"
)

var t0 = time.Date(2026, 11, 17, 14, 0, 0, 0, time.UTC)

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func record(t *testing.T, pools ...string) *pool.Record {
	t.Helper()
	p, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{{Private: []string{"10.16.0.0/24"}, Pool: pools}}})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Record()
	return &r
}

var box = Target{Host: "nat1", Table: "natpool"}

// apply records an apply of digest at minute m with the given outcome
// ("" leaves it pending).
func apply(t *testing.T, j *Journal, digest string, m int, outcome string) int {
	t.Helper()
	seq, err := j.Begin(Event{Time: at(m), Op: Apply, Host: box.Host, Table: box.Table, Digest: digest}, record(t, "192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if outcome != "" {
		if err := j.End(seq, outcome, at(m), nil, false); err != nil {
			t.Fatal(err)
		}
	}
	return seq
}

func newJournal(t *testing.T) *Journal {
	t.Helper()
	j, unlock, err := Create(filepath.Join(t.TempDir(), "journal"), t0, func() {})
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	return j
}

const (
	planA = "aaaaaaaaaaaaaaaa"
	planB = "bbbbbbbbbbbbbbbb"
	planC = "cccccccccccccccc"
)

func TestSpansFollowCommitsNotIntents(t *testing.T) {
	j := newJournal(t)
	apply(t, j, planA, 0, Commit)
	apply(t, j, planB, 10, Abort) // refused by the kernel: A stays
	apply(t, j, planC, 20, Commit)
	seq, _ := j.Begin(Event{Time: at(30), Op: Delete, Host: box.Host, Table: box.Table}, nil)
	j.End(seq, Commit, at(30), nil, false)
	entries, err := j.Entries()
	if err != nil {
		t.Fatal(err)
	}
	spans := Spans(entries)
	tests := []struct {
		minute int
		want   string
	}{{-1, ""}, {0, planA}, {15, planA}, {20, planC}, {29, planC}, {30, ""}, {99, ""}}
	for _, tt := range tests {
		var got []string
		for _, s := range InForce(spans, at(tt.minute), 0) {
			got = append(got, s.Digest)
		}
		if strings.Join(got, ",") != tt.want {
			t.Errorf("minute %d: %v, want %q", tt.minute, got, tt.want)
		}
	}
	if got := InForce(spans, at(20).Add(-2*time.Second), 5*time.Second); len(got) != 2 {
		t.Errorf("within the slack of a change: %d plans, want both", len(got))
	}
}

func TestRecoverSettlesAnInterruptedApplyByTheStamp(t *testing.T) {
	for _, tt := range []struct {
		name    string
		stamp   string
		exists  bool
		outcome string
	}{
		{"the kernel took it", planB, true, Commit},
		{"the kernel kept the old plan", planA, true, Abort},
		{"no table", "", false, Abort},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := newJournal(t)
			apply(t, j, planA, 0, Commit)
			apply(t, j, planB, 10, "")
			spans := Spans(mustEntries(t, j))
			if got := InForce(spans, at(11), 0); len(got) != 2 || !got[1].Pending {
				t.Fatalf("before recovery, minute 11: %+v, want A and B pending", got)
			}
			got, err := j.Recover("nat1", at(12), func(Target) (string, bool, error) { return tt.stamp, tt.exists, nil })
			if err != nil || len(got) != 1 || got[0].Outcome != tt.outcome {
				t.Fatalf("recovered %+v, %v; want %s", got, err, tt.outcome)
			}
			want := planA
			if tt.outcome == Commit {
				want = planB
			}
			if now := InForce(Spans(mustEntries(t, j)), at(12), 0); len(now) != 1 || now[0].Digest != want {
				t.Errorf("after recovery: %+v, want %s", now, want)
			}
		})
	}
}

func mustEntries(t *testing.T, j *Journal) []Entry {
	t.Helper()
	e, err := j.Entries()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDamageIsReportedWithItsLineAndOffset(t *testing.T) {
	tests := []struct {
		name, tail, want string
	}{
		{"cut short", `{"seq":2,"event":"intent"`, "is cut short"},
		{"not JSON", "garbage\n", "does not parse"},
		{"two events on a line", `{"seq":2,"event":"intent","op":"delete"} {"seq":2,"event":"commit"}` + "\n", "does not parse: invalid character '{' after top-level value"},
		{"outcome of nothing", `{"seq":9,"event":"commit","time":"2026-11-17T14:00:00Z"}` + "\n", "is no intent, outcome of one, or peer event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newJournal(t)
			apply(t, j, planA, 0, Commit)
			f, _ := os.OpenFile(j.path(eventsFile), os.O_APPEND|os.O_WRONLY, 0)
			st, _ := f.Stat()
			f.WriteString(tt.tail)
			f.Close()
			_, err := j.Entries()
			want := fmt.Sprintf("line 4 (offset %d) %s", st.Size(), tt.want)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want %q", err, want)
			}
			if _, err := j.Begin(Event{Time: at(1), Op: Delete, Host: "nat1", Table: "natpool"}, nil); err == nil {
				t.Errorf("a damaged journal took another entry")
			}
		})
	}
}

func TestOpenRefusesWhatIsNotAJournal(t *testing.T) {
	dir := t.TempDir()
	newer := filepath.Join(dir, "newer")
	os.MkdirAll(newer, 0o755)
	os.WriteFile(filepath.Join(newer, eventsFile), []byte(`{"natpool_journal":2,"created":"2030-01-01T00:00:00Z"}`+"\n"), 0o644)
	other := filepath.Join(dir, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, eventsFile), []byte("hello\n"), 0o644)
	for path, want := range map[string]string{
		filepath.Join(dir, "missing"): "no such file",
		other:                         "not a natpool journal",
		newer:                         "format 2 by a newer natpool",
		dir:                           "not a natpool journal",
	} {
		if _, err := Open(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", filepath.Base(path), err, want)
		}
	}
	// A directory of other things is refused with nothing made in it.
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	if _, _, err := Create(etc, t0, func() {}); err == nil || !strings.Contains(err.Error(), "not a natpool journal, and not empty (it holds hosts)") {
		t.Errorf("Create took a directory that holds other things: %v", err)
	}
	if entries, _ := os.ReadDir(etc); len(entries) != 1 {
		t.Errorf("Create refused the directory, but left %d entries in it", len(entries))
	}
}

func TestPruneKeepsEveryAnswerFromItsTimeOn(t *testing.T) {
	j := newJournal(t)
	apply(t, j, planA, 0, Commit)
	apply(t, j, planB, 10, Commit)
	apply(t, j, planC, 20, Commit)
	before := Spans(mustEntries(t, j))
	dropped, err := j.Prune(at(15))
	if err != nil || dropped != 1 {
		t.Fatalf("dropped %d, %v; want 1 (plan A)", dropped, err)
	}
	after := Spans(mustEntries(t, j))
	for _, m := range []int{15, 19, 20, 40} {
		a, b := InForce(before, at(m), 0), InForce(after, at(m), 0)
		if len(a) != 1 || len(b) != 1 || a[0].Digest != b[0].Digest {
			t.Errorf("minute %d: %v before the prune, %v after", m, a, b)
		}
	}
	if _, err := j.Plan(planA); err == nil {
		t.Errorf("plan A is still stored")
	}
	if _, err := j.Plan(planB); err != nil {
		t.Errorf("plan B, in force at the cut, is gone: %v", err)
	}
}

// Peer events sit between the entries without changing them, read back as
// written, and go with a prune when they are older than its time.
func TestPeerEventsAreKeptBesideTheEntries(t *testing.T) {
	j := newJournal(t)
	apply(t, j, planA, 0, Commit)
	peer := func(kind string, m int) {
		t.Helper()
		if err := j.Peer(Event{Kind: kind, Time: at(m), Host: box.Host, Table: box.Table, Node: "nat1", Peer: "nat2"}); err != nil {
			t.Fatal(err)
		}
	}
	peer(PeerDown, 5)
	apply(t, j, planB, 10, Commit)
	peer(PeerUp, 20)
	if err := j.Peer(Event{Kind: Commit, Node: "nat1", Peer: "nat2"}); err == nil {
		t.Errorf("a commit was taken as a peer event")
	}
	if got := mustEntries(t, j); len(got) != 2 || got[0].Digest != planA || got[1].Digest != planB || got[1].Seq != 2 {
		t.Errorf("entries with peer events between them: %+v", got)
	}
	peers, err := j.PeerEvents()
	if err != nil {
		t.Fatal(err)
	}
	want := []PeerEvent{
		{Time: at(5), Target: Target{Host: box.Host, Table: box.Table}, Node: "nat1", Peer: "nat2", Line: 4},
		{Time: at(20), Target: Target{Host: box.Host, Table: box.Table}, Node: "nat1", Peer: "nat2", Up: true, Line: 7},
	}
	if !slices.EqualFunc(peers, want, func(a, b PeerEvent) bool {
		return a.Time.Equal(b.Time) && a.Target == b.Target && a.Node == b.Node && a.Peer == b.Peer && a.Up == b.Up && a.Line == b.Line
	}) {
		t.Errorf("peer events %+v, want %+v", peers, want)
	}
	// At minute 15 plan A stopped mattering; the peer is still down.
	peer(PeerUp, 25)
	peer(PeerDown, 30)
	if dropped, err := j.Prune(at(27)); err != nil || dropped != 3 {
		t.Fatalf("dropped %d, %v; want 3 (plan A, the peer down at 5, up at 20)", dropped, err)
	}
	if peers, err := j.PeerEvents(); err != nil || len(peers) != 2 || !peers[0].Up || !peers[0].Time.Equal(at(25)) || peers[1].Up {
		t.Errorf("after the prune: %+v, %v", peers, err)
	}
}

// BenchmarkEntries reads a journal of 10,000 applies, the size lookup --at
// must answer from in under 100 ms.
func BenchmarkEntries(b *testing.B) {
	j, unlock, err := Create(filepath.Join(b.TempDir(), "journal"), t0, func() {})
	if err != nil {
		b.Fatal(err)
	}
	unlock()
	f, err := os.OpenFile(j.path(eventsFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		b.Fatal(err)
	}
	for seq := 1; seq <= 10000; seq++ {
		for _, ev := range []Event{
			{Seq: seq, Kind: Intent, Time: at(seq), Op: Apply, Host: "nat1", Table: "natpool", Version: "0.1.0", Digest: planA},
			{Seq: seq, Kind: Commit, Time: at(seq)},
		} {
			line, _ := json.Marshal(ev)
			f.Write(append(line, '\n'))
		}
	}
	f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.Entries(); err != nil {
			b.Fatal(err)
		}
	}
}
