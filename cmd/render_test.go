package cmd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
	"github.com/natpool/natpool/render/golden"
)

func TestRenderStampsVersionAndDigest(t *testing.T) {
	t.Parallel()
	for _, format := range render.Formats {
		args := []string{"render", "-f", "../testdata/campus.yaml", "--format", format}
		switch format {
		case "bird", "ip": // one node's configuration, its policy routing
			args = []string{"render", "-f", "../testdata/cluster.yaml", "--format", format, "--node", "nat1"}
		case "ip6tables", "ip6": // IPv6 prefix translations
			args = []string{"render", "-f", "../testdata/site.yaml", "--format", format}
		}
		code, stdout, stderr := run(args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", format, code, stderr)
		}
		// The stamp opens the file: after nft's #! line, or as JSON's first key.
		head := strings.SplitN(stdout, "\n", 3)
		if !strings.Contains(head[0]+head[1], "natpool "+Version+" plan ") {
			t.Errorf("%s: the first lines %q name no version and digest", format, head[:2])
		}
	}
}

// A site's policy routing, as ip -batch and ip -6 -batch take it, and its
// IPv6 prefix translations for ip6tables are reviewed as the ruleset is.
func TestRenderSitePolicyRoutingGolden(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"ip", "ip6", "ip6tables"} {
		code, stdout, stderr := run("render", "-f", "../testdata/site.yaml", "--format", format)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", format, code, stderr)
		}
		golden.Check(t, "render-site."+format, stdout)
	}
}

// writeSpec writes a one-entry spec and returns its path.
func writeSpec(t *testing.T, name, strategy, pool string, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	writeFile(t, path, fmt.Sprintf("egress:\n  - name: campus\n    private: [10.16.0.0/14]\n    pool: [%s]\n    strategy: %s\n%s", pool, strategy, extra))
	return path
}

// writeFile writes a test's file.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDiffOfIdenticalSpecsSaysNothing(t *testing.T) {
	t.Parallel()
	a := writeSpec(t, "a.yaml", "hash", "192.76.8.0/26", "")
	b := filepath.Join(t.TempDir(), "b.json")
	_, planJSON, _ := run("plan", "-f", a, "-o", "json")
	os.WriteFile(b, []byte(planJSON), 0o644)
	for _, args := range [][]string{{"diff", a, a}, {"diff", a, b}, {"diff", "--format", "iptables", a, b}} {
		if code, stdout, stderr := run(args...); code != 0 || stdout != "" || stderr != "" {
			t.Errorf("%v: exit %d, output %q %q", args, code, stdout, stderr)
		}
	}
}

type diffResult struct {
	Identical bool
	Churn     []struct {
		Egress        string
		Hosts, Moved  uint64
		MovedShare    float64  `json:"moved_share"`
		PortsMoved    uint64   `json:"ports_moved"`
		LargestRanges []string `json:"largest_ranges"`
	}
}

func diffJSON(t *testing.T, a, b string) diffResult {
	t.Helper()
	code, stdout, stderr := run("diff", "-o", "json", a, b)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	var d diffResult
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDiffReportsChurn(t *testing.T) {
	t.Parallel()
	// One more address in a hash pool of 64 moves about 1/65 of the hosts,
	// and the figure is the one counted host by host.
	hashA := writeSpec(t, "a", "hash", "192.76.8.0/26", "")
	hashB := writeSpec(t, "b", "hash", "192.76.8.0-192.76.8.64", "")
	d := diffJSON(t, hashA, hashB)
	if c := d.Churn[0]; d.Identical || c.MovedShare >= 0.025 || c.Moved != movedHostByHost(t, hashA, hashB) || c.Hosts != 1<<18 {
		t.Errorf("hash 64 -> 65: %+v, counted %d", c, movedHostByHost(t, hashA, hashB))
	}
	// The same under octet, 60 -> 61 addresses: the ranges of nearly every
	// address shift. The figure must be the real one: count it host by host.
	octA := writeSpec(t, "a", "octet", "192.76.8.0-192.76.8.59", "")
	octB := writeSpec(t, "b", "octet", "192.76.8.0-192.76.8.60", "")
	c := diffJSON(t, octA, octB).Churn[0]
	if want := movedHostByHost(t, octA, octB); c.Moved != want || c.MovedShare < 0.5 {
		t.Errorf("octet 60 -> 61: reported %d moved (share %v), counted %d", c.Moved, c.MovedShare, want)
	}
	// Block mode: a smaller block keeps hosts on their address but moves ports.
	c = diffJSON(t, writeSpec(t, "a", "block", "192.76.8.0/26", "    hosts-per-ip: 4096\n"), writeSpec(t, "b", "block", "192.76.8.0/26", "    hosts-per-ip: 4096\n    ports: 1024-60000\n")).Churn[0]
	if c.Moved != 0 || c.PortsMoved == 0 {
		t.Errorf("block port change: %+v", c)
	}
}

func movedHostByHost(t *testing.T, a, b string) uint64 {
	t.Helper()
	pa, pb := loadPlan(t, a), loadPlan(t, b)
	var moved uint64
	for h := netip.MustParseAddr("10.16.0.0"); h.Compare(netip.MustParseAddr("10.19.255.255")) <= 0; h = h.Next() {
		x, errX := pa.Lookup(h.String(), "")
		y, errY := pb.Lookup(h.String(), "")
		if errX == nil && errY == nil && x[0].Kind == pool.Forward && y[0].Kind == pool.Forward && x[0].Public != y[0].Public {
			moved++
		}
	}
	return moved
}

// A saved plan carries the hosts its mapping was cut for: it plans the same
// from anywhere, with its hosts file gone, and a diff against the spec sees
// the moves a changed hosts file makes.
func TestSavedPlanCarriesItsHosts(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{"octet", "hash"} {
		t.Run(strategy, func(t *testing.T) {
			dir := t.TempDir()
			leases := filepath.Join(dir, "leases")
			os.WriteFile(leases, []byte("10.16.0.1\n10.16.0.2\n10.16.0.3\n10.16.1.9,40\n"), 0o644)
			spec := writeSpec(t, "spec.yaml", strategy, "192.76.8.0/30", "    hosts: "+leases+"\n")
			_, planJSON, _ := run("plan", "-f", spec, "-o", "json")
			saved := filepath.Join(t.TempDir(), "saved.json")
			os.WriteFile(saved, []byte(planJSON), 0o644)

			os.WriteFile(leases, []byte("10.16.0.1\n10.16.2.0-10.16.2.255,5\n"), 0o644)
			if d := diffJSON(t, saved, spec); d.Churn[0].Moved == 0 {
				t.Errorf("a changed hosts file moved no host: %+v", d.Churn[0])
			}
			os.Remove(leases)
			code, again, stderr := run("plan", "-f", saved, "-o", "json")
			if code != 0 || again != planJSON {
				t.Errorf("the saved plan, its hosts file gone, planned again: exit %d %s", code, stderr)
			}
		})
	}
}

// Two cluster specs that differ only in their nodes are different plans:
// the digest covers the nodes, and diff names the chunks that change
// owner; --node diffs one node's steering or BIRD configuration.
func TestDiffOfClusterSpecsReportsChunkMoves(t *testing.T) {
	t.Parallel()
	spec, err := os.ReadFile("../testdata/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	writeFile(t, a, string(spec))
	writeFile(t, b, strings.Replace(string(spec), "{name: nat3, address: 10.255.0.3", "{name: nat4, address: 10.255.0.3", 1))
	code, stdout, stderr := run("diff", a, b)
	if code != exitFound || !strings.Contains(stdout, "churn: cluster: 2 of 8 chunks change owner: 198.51.100.0/29 nat3 -> nat1, 198.51.100.24/29 nat3 -> nat4") {
		t.Errorf("diff of the nodes: exit %d\n%s%s", code, stdout, stderr)
	}
	var d struct {
		Chunks struct {
			Chunks int
			Moves  []struct{ Chunk, From, To string }
		}
	}
	if err := json.Unmarshal([]byte(must(t, exitFound, "diff", "-o", "json", a, b)), &d); err != nil || d.Chunks.Chunks != 8 || len(d.Chunks.Moves) != 2 {
		t.Errorf("diff -o json: %+v, %v", d, err)
	}
	if code, _, stderr := run("diff", "--format", "bird", a, b); code != exitTrouble || !strings.Contains(stderr, "--node") {
		t.Errorf("diff --format bird without --node: exit %d, %q", code, stderr)
	}
	if out := must(t, exitFound, "diff", "--format", "bird", "--node", "nat1", a, b); !strings.Contains(out, "+\tif net ~ [ 198.51.100.0/29,") {
		t.Errorf("diff --format bird --node nat1:\n%s", out)
	}
	if code, _, stderr := run("diff", "--node", "nat4", a, b); code != exitTrouble || !strings.Contains(stderr, `--node "nat4" is not a node of the spec`) {
		t.Errorf("diff --node of one spec only: exit %d, %q", code, stderr)
	}
}
