package cmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

var day = time.Date(2026, 11, 17, 14, 0, 0, 0, time.UTC)

// writeJournal records, without a kernel, applies of hash plans of the
// pools given (each a minute after the last, from day) and then a delete,
// as apply does.
func writeJournal(t *testing.T, pools ...string) string {
	t.Helper()
	var specs []pool.EgressSpec
	for _, p := range pools {
		specs = append(specs, pool.EgressSpec{Private: []string{"10.16.0.0/16"}, Pool: []string{p}, Strategy: "hash"})
	}
	return writeJournalOf(t, specs...)
}

// writeJournalOf records applies of a plan of each egress entry given, as
// writeJournal does.
func writeJournalOf(t *testing.T, specs ...pool.EgressSpec) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "journal")
	j, unlock, err := journal.Create(dir, day, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	at := day
	change := func(ev journal.Event, rec *pool.Record) {
		ev.Time, ev.Host, ev.Table = at, "nat1", "natpool"
		seq, err := j.Begin(ev, rec)
		if err == nil {
			err = j.End(seq, journal.Commit, at, nil, false)
		}
		if err != nil {
			t.Fatal(err)
		}
		at = at.Add(time.Minute)
	}
	for _, es := range specs {
		plan, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{es}})
		if err != nil {
			t.Fatal(err)
		}
		rec := plan.Record()
		change(journal.Event{Op: journal.Apply, Digest: compiler.Digest(plan)}, &rec)
	}
	change(journal.Event{Op: journal.Delete}, nil)
	return dir
}

// A plan of several NAT boxes, in the journal, names the nodes of an
// address as the plan itself does.
func TestLookupAtNamesTheNodesOfACluster(t *testing.T) {
	t.Parallel()
	later := day.Add(time.Hour)
	w := worldAt(&later)
	dir := filepath.Join(t.TempDir(), "journal")
	j, unlock, err := journal.Create(dir, day, func() {})
	if err != nil {
		t.Fatal(err)
	}
	plan := loadPlan(t, "../testdata/cluster.yaml")
	rec := plan.Record()
	seq, err := j.Begin(journal.Event{Op: journal.Apply, Time: day, Host: "nat1", Table: "natpool", Digest: compiler.Digest(plan)}, &rec)
	if err == nil {
		err = j.End(seq, journal.Commit, day, nil, false)
	}
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"198.51.100.1", "100.64.0.1"} {
		want := w.must(t, 0, "lookup", "-f", "../testdata/cluster.yaml", addr)
		want = want[strings.Index(want, " on nodes "):strings.IndexByte(want, '\n')]
		if got := w.must(t, 0, "lookup", "--journal", dir, "--at", "2026-11-17T14:00:30Z", addr); !strings.Contains(got, want) {
			t.Errorf("lookup --at %s:\n%s\nwant %q", addr, got, want)
		}
	}
}

func TestJournalBadInputIsOneLineAndExitStatusTwo(t *testing.T) {
	t.Parallel()
	w := worldAt(&day)
	good := writeJournal(t, "192.76.8.0/28")
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "events"), []byte("my notes\n"), 0o644)
	newer := filepath.Join(dir, "newer")
	os.MkdirAll(newer, 0o755)
	os.WriteFile(filepath.Join(newer, "events"), []byte(`{"natpool_journal":9,"created":"2026-01-01T00:00:00Z"}`+"\n"), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"lookup", "--journal", good, "--at", "last tuesday", "10.16.0.1"}, `"last tuesday"`},
		{[]string{"lookup", "--journal", good, "--at", "2026-11-17T14:05:00+25:00", "10.16.0.1"}, `"2026-11-17T14:05:00+25:00"`},
		{[]string{"lookup", "--journal", good, "--at", "2027-01-01T00:00:00Z", "10.16.0.1"}, "2027-01-01T00:00:00Z is in the future"},
		{[]string{"lookup", "--journal", good, "--at", "2026-11-17 14:05", "10.16.0.1"}, "has no UTC offset"},
		{[]string{"lookup", "--journal", good, "--at", "2026-11-17 14:05", "--tz", "Mars/Olympus", "10.16.0.1"}, `"Mars/Olympus"`},
		{[]string{"lookup", "--journal", good, "--at", "now", "--slack", "-1s", "10.16.0.1"}, "--slack -1s"},
		{[]string{"lookup", "--journal", filepath.Join(dir, "missing"), "--at", "now", "10.16.0.1"}, "no such file"},
		{[]string{"lookup", "--journal", other, "--at", "now", "10.16.0.1"}, "not a natpool journal"},
		{[]string{"lookup", "--journal", newer, "--at", "now", "10.16.0.1"}, "format 9 by a newer natpool"},
		{[]string{"history", "--journal", newer}, "format 9 by a newer natpool"},
		{[]string{"history", "--journal", good, "--since", "yesterday"}, `"yesterday"`},
		{[]string{"history", "--journal", good, "--journal", good}, "--journal given 2 times"},
		{[]string{"history", "--journal", good, "--tz", "Mars/Olympus"}, `--tz "Mars/Olympus" is not a time zone`},
		{[]string{"history", "--journal", good, "--since", "2026-11-17T13:00:00Z", "--until", "2026-11-17T12:00:00Z"}, "--since 2026-11-17T13:00:00Z is not before --until 2026-11-17T12:00:00Z"},
		{[]string{"history", "--journal", good, "--prune-before", ""}, "--prune-before needs a time"},
		{[]string{"lookup", "--journal", good, "--at", "now", "--private", "10.0.0.0/8", "--strategy", "octet", "10.16.0.1"}, "--at answers from the plans the journal recorded: --private, --strategy would change no answer"},
		{[]string{"lookup", "--journal", good, "--at", "2026-03-29 02:30", "--tz", "Europe/Berlin", "10.16.0.1"},
			`"2026-03-29 02:30" does not exist in Europe/Berlin: the clocks skipped it; give an offset: 2026-03-29T02:30:00+01:00 (01:30:00Z) or 2026-03-29T02:30:00+02:00 (00:30:00Z)`},
		{[]string{"lookup", "--journal", good, "--at", "2026-10-25 02:30", "--tz", "Europe/Berlin", "10.16.0.1"},
			`"2026-10-25 02:30" happened twice in Europe/Berlin: the clocks went back over it; give an offset: 2026-10-25T02:30:00+02:00 (00:30:00Z) or 2026-10-25T02:30:00+01:00 (01:30:00Z)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := w.run(tt.args...)
			if code != exitTrouble || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q: want 2 and one line naming %s", code, stderr, tt.want)
			}
		})
	}
}

func TestHistoryListsChangesNewestFirstWithTheHostsMoved(t *testing.T) {
	t.Parallel()
	clock := day.Add(time.Hour)
	w := worldAt(&clock)
	path := writeJournal(t, "192.76.8.0/28", "192.76.8.0-192.76.8.16")
	var got []struct {
		Entry  int     `json:"entry"`
		Op     string  `json:"op"`
		Moved  *uint64 `json:"moved"`
		Hosts  *uint64 `json:"hosts_compared"`
		Egress []struct {
			Public int `json:"public_addrs"`
		} `json:"egress"`
	}
	out := w.must(t, 0, "history", "--journal", path, "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Op != "delete" || got[1].Entry != 2 || got[2].Entry != 1 {
		t.Fatalf("entries, newest first:\n%s", out)
	}
	// 16 -> 17 addresses moves about 1/17 of 65,536 hosts.
	if m := got[1].Moved; m == nil || *got[1].Hosts != 65536 || *m < 3000 || *m > 4500 || got[2].Moved != nil || got[1].Egress[0].Public != 17 {
		t.Errorf("moved: %s", out)
	}
	out = w.must(t, 0, "history", "--journal", path, "--since", "2026-11-17T14:01:00Z", "--until", "2026-11-17 14:02", "--tz", "UTC")
	if !strings.Contains(out, "2026-11-17T14:01:00.000Z") || strings.Contains(out, "14:00:00") || strings.Contains(out, "14:02:00") {
		t.Errorf("--since/--until:\n%s", out)
	}
	// Pruning before the second apply drops the first, and every lookup
	// from then on answers as before.
	before := w.must(t, 0, "lookup", "--journal", path, "--at", "2026-11-17T14:01:30Z", "10.16.3.7", "192.76.8.16")
	if out := w.must(t, 0, "history", "--journal", path, "--prune-before", "2026-11-17T14:01:30Z"); !strings.Contains(out, "dropped 1 entry, 0 peer events and 0 uplink events that") {
		t.Errorf("prune: %s", out)
	}
	if after := w.must(t, 0, "lookup", "--journal", path, "--at", "2026-11-17T14:01:30Z", "10.16.3.7", "192.76.8.16"); after != before {
		t.Errorf("after the prune:\n%s\nbefore:\n%s", after, before)
	}
	_, _, stderr := w.run("lookup", "--journal", path, "--at", "2026-11-17T14:00:30Z", "10.16.3.7")
	if !strings.Contains(stderr, "no plan in force at 2026-11-17T14:00:30Z in "+path+" (its first plan took effect at 2026-11-17T14:01:00.000Z)") {
		t.Errorf("before the pruned journal starts: %q", stderr)
	}
}

// A plan the journal cannot read leaves its entry listed without it, named
// on stderr, with exit status 1: the rest of the history is all there.
func TestHistoryListsTheRestWhenAPlanIsUnreadable(t *testing.T) {
	t.Parallel()
	clock := day.Add(time.Hour)
	w := worldAt(&clock)
	path := writeJournal(t, "192.76.8.0/28", "192.76.8.0-192.76.8.16")
	plans, _ := filepath.Glob(filepath.Join(path, "plans", "*.json.gz"))
	os.WriteFile(plans[0], []byte("not gzip"), 0o644)
	code, stdout, stderr := w.run("history", "--journal", path)
	if code != exitFound || strings.Count(stdout, "apply") != 2 || !strings.Contains(stdout, "plan unreadable") ||
		!strings.Contains(stderr, "plans/"+filepath.Base(plans[0])) && !strings.Contains(stderr, strings.TrimSuffix(filepath.Base(plans[0]), ".json.gz")) {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// Around a change from octet to block, a port lookup is answered by the
// block plan and the octet plan is named as one that cannot answer; an
// egress entry of one plan only is answered by that plan.
func TestLookupAtAnswersFromEachPlanThatCan(t *testing.T) {
	t.Parallel()
	clock := day.Add(time.Hour)
	w := worldAt(&clock)
	octet := pool.EgressSpec{Name: "campus", Private: []string{"10.16.0.0/22"}, Pool: []string{"198.18.0.0/29"}, Strategy: "octet"}
	block := pool.EgressSpec{Name: "cgnat", Private: []string{"10.16.0.0/22"}, Pool: []string{"198.18.0.0/29"}, Strategy: "block"}
	path := writeJournalOf(t, octet, block)
	code, stdout, stderr := w.run("lookup", "--journal", path, "--at", "2026-11-17T14:01:00Z", "--slack", "2m", "198.18.0.0:1030")
	if code != exitFound || !strings.Contains(stdout, "198.18.0.0:1030 <- 10.16.0.0") || !strings.Contains(stderr, "cannot answer 198.18.0.0:1030: 198.18.0.0:1030: port lookups need the block strategy (egress campus uses octet)") {
		t.Errorf("port lookup across the change: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = w.run("lookup", "--journal", path, "--at", "2026-11-17T14:01:00Z", "--slack", "2m", "--egress", "cgnat", "10.16.0.9")
	if code != exitFound || !strings.Contains(stdout, "10.16.0.9 -> 198.18.0.") || !strings.Contains(stderr, `no egress entry is named "cgnat"`) {
		t.Errorf("--egress of one plan: exit %d\n%s%s", code, stdout, stderr)
	}
	// RFC 3339 in lower case, and seconds since the epoch, are times too.
	for _, at := range []string{"2026-11-17t14:01:30z", "@1794924090"} {
		if code, stdout, stderr := w.run("lookup", "--journal", path, "--at", at, "10.16.0.9"); code != 0 || !strings.Contains(stdout, "plan ") {
			t.Errorf("--at %s: exit %d\n%s%s", at, code, stdout, stderr)
		}
	}
}
