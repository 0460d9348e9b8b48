package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render/golden"
)

// testWorld is the world the tests run natpool in: this machine and its
// clock, and a default journal of the tests' own (TestMain's), never the
// NAT box's.
var testWorld = &world{now: time.Now, machine: journal.ThisMachine, journal: filepath.Join(os.TempDir(), "natpool-test-journal")}

// worldAt is the tests' world with a clock that reads at.
func worldAt(at *time.Time) *world {
	w := *testWorld
	w.now = func() time.Time { return *at }
	return &w
}

// run runs natpool with args in the tests' world and returns its exit
// status and output.
func run(args ...string) (code int, stdout, stderr string) { return testWorld.run(args...) }

// run runs natpool with args in w.
func (w *world) run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = execute(w, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// loadPlan plans a spec file as natpool does.
func loadPlan(t *testing.T, path string) *pool.Plan {
	t.Helper()
	p, err := pool.PlanFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadInputIsOneLineAndExitStatusTwo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"plan", "--private", "10.16.0.0/33", "--pool", "192.0.2.1"}, `"10.16.0.0/33"`},
		{[]string{"plan", "--private", "10.16.0", "--pool", "192.0.2.1"}, `"10.16.0"`},
		{[]string{"plan", "--private", "10.0.0.0/8", "--pool", "2001:db8::1"}, `"2001:db8::1" is IPv6`},
		{[]string{"plan", "--private", "10.0.0.0/8", "--pool", "192.0.2.1", "--strategy", "rr"}, `"rr"`},
		{[]string{"plan", "--private", "10.0.0.0/8", "--pool", "192.0.2.1", "--colour"}, "--colour"},
		{[]string{"plan", "--private", "10.0.0.0/8", "--pool", "192.0.2.1", "-o", "xml"}, `"xml"`},
		{[]string{"plan", "-f", "/nonexistent.yaml"}, "/nonexistent.yaml"},
		{[]string{"plan"}, "--private"},
		{[]string{"lookup", "-f", "../testdata/campus.yaml", "10.16.0.1:80"}, "a port lookup takes a public address"},
		{[]string{"lookup", "-f", "../testdata/campus.yaml", "192.76.8.1:80"}, "need the block strategy"},
		{[]string{"lookup", "-f", "../testdata/campus.yaml", "--egress", "nope", "10.16.0.1"}, `"nope"`},
		{[]string{"lookup", "-f", "../testdata/cgnat.yaml", "198.18.0.1:0"}, `port "0"`},
		{[]string{"apply", "-f", "../testdata/campus.yaml", "--netns", ""}, "--netns"},
		{[]string{"completion", "foo"}, `unknown command "foo"`},
		{[]string{"completion"}, "name a shell"},
		{[]string{"capacity", "-f", "../testdata/campus.yaml", "--sessions-per-host", "Inf"}, "must be a finite number"},
		{[]string{"status", "-f", "../testdata/campus.yaml", "--netns="}, "an empty name"},
		{[]string{"watch", "-f", "../testdata/campus.yaml", "--probe", "2001:db8::1"}, `--probe "2001:db8::1"`},
		{[]string{"watch", "-f", "../testdata/campus.yaml", "--resync", "0s"}, "--resync 0s"},
		{[]string{"watch", "-f", "../testdata/campus.yaml", "--hold-down", "soon"}, `"soon"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := run(tt.args...)
			if code != exitTrouble {
				t.Errorf("exit status %d, want 2", code)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q: want one line naming %s", stderr, tt.want)
			}
		})
	}
}

func TestPlanGolden(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"campus", "two-isp", "cgnat", "cluster", "site"} {
		for _, output := range []string{"table", "json"} {
			t.Run(spec+"."+output, func(t *testing.T) {
				code, stdout, stderr := run("plan", "-f", "../testdata/"+spec+".yaml", "-o", output)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				golden.Check(t, "plan-"+spec+"."+output, stdout)
			})
		}
	}
}

func TestPlanJSONHasTheDocumentedFields(t *testing.T) {
	t.Parallel()
	_, stdout, _ := run("plan", "-f", "../testdata/campus.yaml", "-o", "json")
	var got struct {
		Egress []struct {
			Name, Strategy string
			Hosts          uint64
			Imbalance      float64
			Public         []map[string]any
		}
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	e := got.Egress[0]
	if e.Name != "campus" || e.Strategy != "hash" || e.Hosts != 1<<20 || e.Imbalance < 1 || len(e.Public) != 63 {
		t.Errorf("egress %+v", e)
	}
	for _, key := range []string{"addr", "hosts", "ports_per_host"} {
		if _, ok := e.Public[0][key]; !ok {
			t.Errorf("public entries lack %q", key)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
		want string // golden file
	}{
		{"forward and reverse", []string{"-f", "../testdata/two-isp.yaml", "192.168.1.9", "198.51.100.33"}, 0, "lookup-two-isp.txt"},
		{"unmapped of several egress entries", []string{"-f", "../testdata/two-isp.yaml", "8.8.8.8", "192.168.1.9"}, 1, "lookup-two-isp-unmapped.txt"},
		{"one egress", []string{"-f", "../testdata/two-isp.yaml", "--egress", "isp-a", "192.168.1.9", "-o", "json"}, 0, "lookup-isp-a.json"},
		{"unmapped among mapped", []string{"-f", "../testdata/campus.yaml", "8.8.8.8", "10.16.0.1", "192.76.8.0", "10.16.0.2"}, 1, "lookup-unmapped.txt"},
		{"unmapped as json", []string{"-f", "../testdata/campus.yaml", "8.8.8.8", "-o", "json"}, 1, "lookup-unmapped.json"},
		{"port owners", []string{"-f", "../testdata/cgnat.yaml", "100.64.0.1", "198.18.0.0:1087", "198.18.0.0:1023", "-o", "json"}, 1, "lookup-cgnat.json"},
		{"every host", []string{"-f", "../testdata/cgnat.yaml", "--private", "100.64.0.0/24", "--pool", "198.18.0.0/30", "--hosts-per-ip", "64", "198.18.0.1", "--all"}, 0, "lookup-all.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(append([]string{"lookup"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d: %s", code, tt.code, stderr)
			}
			golden.Check(t, tt.want, stdout)
		})
	}
}

func TestFlagsOverrideTheSpecFile(t *testing.T) {
	t.Parallel()
	_, stdout, stderr := run("plan", "-f", "../testdata/campus.yaml", "--strategy", "octet", "--buckets", "", "--table", "nat2", "-o", "json")
	var got struct {
		Table  string
		Egress []struct{ Strategy string }
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	if got.Table != "nat2" || got.Egress[0].Strategy != "octet" {
		t.Errorf("got %+v", got)
	}
}

func TestCapacityGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, spec, output string }{
		{"two-isp.table", "two-isp", "table"},
		{"two-isp.json", "two-isp", "json"},
		{"cluster.table", "cluster", "table"},
		{"cluster.json", "cluster", "json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run("capacity", "-f", "../testdata/"+tc.spec+".yaml", "--sessions-per-host", "400",
				"--same-destination-share", "0.2", "-o", tc.output)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			golden.Check(t, "capacity-"+tc.name, stdout)
		})
	}
	if code, _, stderr := run("capacity", "-f", "../testdata/cgnat.yaml", "--target", "1.5"); code != exitTrouble || !strings.Contains(stderr, "target 1.5") {
		t.Errorf("--target 1.5: exit %d, %q", code, stderr)
	}
}

// Every command that takes a spec takes every spec flag, with one meaning:
// the flags of apply work for flush, status and capacity alike.
func TestEverySpecCommandTakesEverySpecFlag(t *testing.T) {
	t.Parallel()
	root := Root(nil, nil)
	plan, _, err := root.Find([]string{"plan"})
	if err != nil {
		t.Fatal(err)
	}
	var spec []*pflag.Flag
	plan.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "output" {
			spec = append(spec, f)
		}
	})
	for _, name := range []string{"lookup", "render", "apply", "status", "flush", "capacity", "watch"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range spec {
			if got := cmd.Flags().Lookup(want.Name); got == nil || got.Usage != want.Usage || got.Shorthand != want.Shorthand {
				t.Errorf("%s --%s: %+v, want %q as in plan", name, want.Name, got, want.Usage)
			}
		}
	}
}

// must runs natpool in the tests' world and fails the test unless it exits
// with status code.
func must(t *testing.T, code int, args ...string) string {
	t.Helper()
	return testWorld.must(t, code, args...)
}

// must runs natpool in w, as must.
func (w *world) must(t *testing.T, code int, args ...string) string {
	t.Helper()
	got, stdout, stderr := w.run(args...)
	if got != code {
		t.Fatalf("natpool %s: exit %d, want %d\n%s%s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	return stdout
}

// Flags whose values are names complete them: nodes and egress entries
// from the spec given so far, time zones from the tz database.
func TestFlagsCompleteTheNamesTheyTake(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"render", "-f", "../testdata/cluster.yaml", "--node", ""}, []string{"nat1", "nat2", "nat3"}},
		{[]string{"diff", "../testdata/campus.yaml", "../testdata/cluster.yaml", "--node", ""}, []string{"nat1", "nat2", "nat3"}},
		{[]string{"flush", "-f", "../testdata/two-isp.yaml", "--egress", ""}, []string{"isp-a", "isp-b"}},
		{[]string{"lookup", "--egress", ""}, nil}, // no spec, nothing to offer
		{[]string{"lookup", "--at", "now", "--tz", "Lo"}, []string{"Local"}},
	} {
		_, stdout, _ := run(append([]string{"__complete"}, c.args...)...)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		got := lines[:len(lines)-1] // the last line is cobra's directive
		if !slices.Equal(got, c.want) {
			t.Errorf("%v: %q, want %q", c.args, got, c.want)
		}
	}
	if _, stdout, _ := run("__complete", "lookup", "--tz", "Europe/Be"); !strings.Contains(stdout, "Europe/Berlin\n") {
		if _, err := os.Stat("/usr/share/zoneinfo/Europe/Berlin"); err == nil {
			t.Errorf("--tz Europe/Be: %q", stdout)
		}
	}
}
