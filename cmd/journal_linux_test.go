package cmd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// planAt is what lookup --at -o json says of one plan.
type planAt struct {
	Digest  string            `json:"digest"`
	Pending bool              `json:"pending"`
	Answers []json.RawMessage `json:"answers"`
}

// A multi-egress spec of every strategy, with hosts files, applied as plans
// A, B and C at known times and then deleted: lookup --at answers from the
// plan in force at each time, on the boundaries and within the slack from
// both, after the spec and hosts files are gone.
func TestLookupAtAnswersFromThePlanInForce(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t)
	dir := t.TempDir()
	jpath := filepath.Join(dir, "journal")
	clock := time.Date(2026, 11, 17, 13, 0, 0, 0, time.UTC)
	w := worldAt(&clock)

	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	spec := func(extra int, leases string) string {
		write("leases", leases)
		return write("spec.yaml", fmt.Sprintf(`egress:
  - name: octet
    private: [10.16.0.0/16]
    pool: [192.76.8.0-192.76.8.%d]
    strategy: octet
    hosts: leases
  - name: hash
    private: [10.17.0.0/16]
    pool: [192.76.9.0-192.76.9.%d]
    strategy: hash
  - name: persistent
    private: [10.18.0.0/16]
    pool: [192.76.10.0-192.76.10.%d]
    strategy: persistent
  - name: block
    private: [10.19.0.0/20]
    pool: [192.76.11.0-192.76.11.%d]
    strategy: block
`, 3+extra, 3+extra, 3+extra, 3+extra))
	}
	type applied struct {
		at   time.Time
		plan *pool.Plan
	}
	var plans []applied
	for i, leases := range []string{"10.16.0.1\n10.16.0.2,5\n", "10.16.0.1\n10.16.0.2\n10.16.0.3,9\n", "10.16.7.0/24\n"} {
		path := spec(i, leases)
		w.must(t, 0, "apply", "-f", path, "--journal", jpath, "--netns", ns.Name)
		plans = append(plans, applied{clock, loadPlan(t, path)})
		clock = clock.Add(time.Minute)
	}
	end := clock
	w.must(t, 0, "apply", "--delete", "--journal", jpath, "--netns", ns.Name)
	clock = clock.Add(time.Hour)
	os.Remove(filepath.Join(dir, "spec.yaml"))
	os.Remove(filepath.Join(dir, "leases"))

	// A host of every strategy, a public address, and a port of a block
	// address, which names one subscriber.
	queries := []string{"10.16.0.2", "10.17.3.4", "10.18.5.6", "10.19.1.2", "192.76.11.1:40000", "192.76.8.1"}
	lookupAt := func(at time.Time, slack string) (int, []planAt) {
		args := append([]string{"lookup", "--journal", jpath, "--at", at.Format(time.RFC3339Nano), "--slack", slack, "-o", "json"}, queries...)
		code, stdout, stderr := w.run(args...)
		var got []planAt
		if code != exitTrouble && json.Unmarshal([]byte(stdout), &got) != nil {
			t.Fatalf("lookup --at %s: %s %s", at, stdout, stderr)
		}
		return code, got
	}
	digests := func(got []planAt) string {
		var d []string
		for _, g := range got {
			d = append(d, g.Digest)
		}
		return strings.Join(d, ",")
	}
	a, b, c := compiler.Digest(plans[0].plan), compiler.Digest(plans[1].plan), compiler.Digest(plans[2].plan)
	for _, tt := range []struct {
		name  string
		at    time.Time
		slack string
		want  string // the plans answering, or why none does
		code  int
	}{
		{"before the journal", plans[0].at.Add(-time.Minute), "0s", "its first plan took effect at " + render.TimeText(plans[0].at), exitFound},
		{"the moment A took effect", plans[0].at, "0s", a, 0},
		{"inside A", plans[0].at.Add(30 * time.Second), "5s", a, 0},
		{"just before B", plans[1].at.Add(-time.Millisecond), "0s", a, 0},
		{"the moment B took effect", plans[1].at, "0s", b, 0},
		{"within the slack of C", plans[2].at.Add(-2 * time.Second), "5s", b + "," + c, 0},
		{"after the delete", end, "0s", "natpool's NAT ended at " + render.TimeText(end), exitFound},
		{"within the slack of the delete", end.Add(time.Second), "5s", c, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, got := lookupAt(tt.at, tt.slack)
			if code == exitFound {
				// No plan answers, and stderr says why.
				_, _, stderr := w.run("lookup", "--journal", jpath, "--at", tt.at.Format(time.RFC3339Nano), "--slack", tt.slack, queries[0])
				if len(got) > 0 || !strings.Contains(stderr, tt.want) {
					t.Fatalf("exit %d, plans %s, %q; want no plan and %q", code, digests(got), stderr, tt.want)
				}
				return
			}
			if code != tt.code || digests(got) != tt.want {
				t.Fatalf("exit %d, plans %s; want exit %d, plans %s", code, digests(got), tt.code, tt.want)
			}
			for _, g := range got {
				var p *pool.Plan
				for _, ap := range plans {
					if compiler.Digest(ap.plan) == g.Digest {
						p = ap.plan
					}
				}
				// The journal's plan answers as the spec's plan did.
				code, text, _ := w.run(append([]string{"lookup", "--journal", jpath, "--at", tt.at.Format(time.RFC3339Nano), "--slack", tt.slack}, queries...)...)
				if code != tt.code || !strings.Contains(text, "plan "+g.Digest) {
					t.Errorf("text answer: exit %d\n%s", code, text)
				}
				if len(g.Answers) != len(flatten(t, p, queries)) {
					t.Errorf("plan %s: %d answers, want %d", g.Digest, len(g.Answers), len(flatten(t, p, queries)))
				}
				for i, ans := range flatten(t, p, queries) {
					if got := normalJSON(g.Answers[i]); got != string(ans) {
						t.Errorf("plan %s answer %d: %.200s, want %.200s", g.Digest, i, got, ans)
					}
				}
			}
		})
	}
}

// flatten is what lookup -o json says of the queries under plan p, answer
// by answer.
func flatten(t *testing.T, p *pool.Plan, queries []string) []json.RawMessage {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "plan.json")
	data, err := json.Marshal(p.SavedSpec())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, data, 0o644)
	_, stdout, stderr := run(append([]string{"lookup", "-f", path, "-o", "json"}, queries...)...)
	var out []json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("lookup: %s %s", stdout, stderr)
	}
	for i := range out {
		out[i] = json.RawMessage(normalJSON(out[i]))
	}
	return out
}

// normalJSON writes JSON without its indentation.
func normalJSON(raw json.RawMessage) string {
	var v any
	json.Unmarshal(raw, &v)
	out, _ := json.Marshal(v)
	return string(out)
}

// journalNow is the plan the journal says is in force now in ns ("" for
// none), after settling what an interruption left, as status does.
func journalNow(t *testing.T, jpath, ns string) string {
	t.Helper()
	j, err := journal.Open(jpath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := j.Read()
	if err != nil {
		t.Fatal(err)
	}
	digest := ""
	for _, s := range journal.Spans(c.Entries) {
		if s.Target.Netns == ns && s.Current {
			if s.Pending {
				t.Fatalf("entry %d is still pending", s.Seq)
			}
			digest = s.Digest
		}
	}
	return digest
}

// kernelNow is the digest stamped on natpool's rules in ns ("" for no table).
func kernelNow(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	k, err := nft.Dial(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	st, err := k.Stamp("natpool")
	if err != nil {
		t.Fatal(err)
	}
	return st.Digest
}

// settleIn settles the journal at jpath as natpool does, by the stamp nft
// lists on the table in ns.
func settleIn(t *testing.T, jpath string, ns *netnstest.NS) {
	t.Helper()
	j, err := journal.Open(jpath)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := journal.ThisMachine()
	_, err = j.Recover(m.ID, time.Now(), func(journal.Target) (string, bool, error) {
		k := kernelNow(t, ns)
		return k, k != "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Killed at random moments of a large apply, natpool leaves a journal that,
// once the next natpool has settled it, says what the kernel holds, and
// has lost no entry.
func TestKilledApplyLeavesTheJournalAndTheKernelAgreeing(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t)
	jpath := filepath.Join(t.TempDir(), "journal")
	rng := rand.New(rand.NewPCG(21, 22))
	spec := func(i int) []string {
		return []string{"--private", "100.64.0.0/14", "--pool", fmt.Sprintf("198.18.0.0-198.18.0.%d", 100+i), "--strategy", "block",
			"--encoding", "per-host", "--journal", jpath, "--netns", ns.Name}
	}
	start := time.Now()
	cmd := exec.Command(natpoolBinary, append([]string{"apply"}, spec(0)...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	took := time.Since(start)
	attempts := 1
	for i := 1; i <= 6; i++ {
		cmd := exec.Command(natpoolBinary, append([]string{"apply"}, spec(i)...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		attempts++
		time.Sleep(time.Duration(rng.Int64N(3 * int64(took)))) // before, during and after the commit
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		// Settled as the next natpool settles it (the next apply here), by
		// the stamp on the kernel's table.
		settleIn(t, jpath, ns)
		if j, k := journalNow(t, jpath, ns.Name), kernelNow(t, ns); j != k {
			t.Fatalf("kill %d after up to %s: the journal says %q is in force, the kernel holds %q", i, took, j, k)
		}
	}
	// And as status settles it, after one more kill.
	cmd = exec.Command(natpoolBinary, append([]string{"apply"}, spec(7)...)...)
	cmd.Start()
	attempts++
	time.Sleep(time.Duration(rng.Int64N(3 * int64(took))))
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	run("status", "--journal", jpath, "--netns", ns.Name, "--private", "100.64.0.0/14", "--pool", "198.18.0.0-198.18.0.100", "--strategy", "block")
	if j, k := journalNow(t, jpath, ns.Name), kernelNow(t, ns); j != k {
		t.Fatalf("after status: the journal says %q is in force, the kernel holds %q", j, k)
	}
	j, _ := journal.Open(jpath)
	c, err := j.Read()
	if err != nil {
		t.Fatal(err)
	}
	entries := c.Entries
	for _, e := range entries {
		t.Logf("entry %d: %s recovered=%v %s", e.Seq, e.Outcome, e.Recovered, e.Error)
		if e.Outcome == "" {
			t.Errorf("entry %d has no outcome", e.Seq)
		}
	}
	if len(entries) > attempts {
		t.Errorf("%d entries for %d applies", len(entries), attempts)
	}
	must(t, 0, "apply", "--delete", "--journal", jpath, "--netns", ns.Name)
}

// Two applies started together are both recorded, one after the other, in
// the order they took effect, and the last is what the kernel holds.
func TestConcurrentAppliesAreRecordedInCommitOrder(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t)
	jpath := filepath.Join(t.TempDir(), "journal")
	var wg sync.WaitGroup
	outs := make([][]byte, 2)
	for i := range 2 {
		wg.Go(func() {
			cmd := exec.Command(natpoolBinary, "apply", "--private", "10.16.0.0/12", "--pool", fmt.Sprintf("192.76.8.0/%d", 26+i),
				"--strategy", "hash", "--journal", jpath, "--netns", ns.Name)
			outs[i], _ = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	j, err := journal.Open(jpath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := j.Read()
	if err != nil || len(c.Entries) != 2 {
		t.Fatalf("%v, %v\n%s\n%s", c, err, outs[0], outs[1])
	}
	entries := c.Entries
	if entries[0].Outcome != journal.Commit || entries[1].Outcome != journal.Commit || !entries[0].From.Before(entries[1].Intended) {
		t.Errorf("entries interleaved or not both in force: %+v", entries)
	}
	if k := kernelNow(t, ns); k != entries[1].Digest {
		t.Errorf("the kernel holds %s, the journal's last entry %s", k, entries[1].Digest)
	}
	must(t, 0, "apply", "--delete", "--journal", jpath, "--netns", ns.Name)
}

// A damaged journal does not hide the table: status compares it with the
// plan and says so, then names the journal's trouble, exit status 1.
func TestStatusReportsTheTableBesideAJournalsTrouble(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t)
	jpath := filepath.Join(t.TempDir(), "journal")
	args := []string{"--private", "10.16.0.0/24", "--pool", "192.76.8.0/29", "--netns", ns.Name, "--journal", jpath}
	must(t, 0, append([]string{"apply"}, args...)...)
	f, _ := os.OpenFile(filepath.Join(jpath, "events"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("garbage\n")
	f.Close()
	out := must(t, 1, append([]string{"status"}, args...)...)
	if !strings.Contains(out, "is in sync with the plan") || !strings.Contains(out, "line 4 (offset") || !strings.Contains(out, "does not parse") {
		t.Errorf("status with a damaged journal:\n%s", out)
	}
}
