package render

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render/golden"
)

const version = "test"

// cases are small plans, one per strategy and shape, whose rendered rulesets
// are kept as golden files.
var cases = []struct {
	name string
	spec pool.EgressSpec
}{
	{"octet", pool.EgressSpec{Strategy: "octet"}},
	{"octet-ports", pool.EgressSpec{Strategy: "octet", Ports: "2000-3000"}},
	{"hash", pool.EgressSpec{Strategy: "hash", Buckets: "8", Seed: "0x1234abcd"}},
	{"persistent", pool.EgressSpec{Strategy: "persistent", Ports: "2000-3000"}},
	{"block", pool.EgressSpec{Strategy: "block", HostsPerIP: "8"}},
}

func plan(t *testing.T, es pool.EgressSpec) *pool.Plan {
	t.Helper()
	if es.Private == nil {
		es.Private = []string{"10.16.0.0/28", "10.16.1.0-10.16.1.4"}
		es.Pool = []string{"192.76.8.1-192.76.8.4"}
		es.OIF = "bond1"
	}
	p, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{es}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// extensions are the golden file extensions of the formats.
var extensions = map[string]string{"nft": "nft", "nft-json": "nft.json", "iptables": "iptables", "ipset": "ipset"}

// rendered renders every case in every format that can carry it.
func rendered(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, c := range cases {
		for _, format := range Formats {
			var b bytes.Buffer
			if err := Ruleset(&b, io.Discard, plan(t, c.spec), format, Options{Version: version}); err != nil {
				continue // see TestFormatsRefuseWhatTheyCannotCarry
			}
			out[c.name+"."+extensions[format]] = b.String()
		}
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for name, text := range rendered(t) {
		golden.Check(t, "render/"+name, text)
	}
}

func TestRenderIsByteStable(t *testing.T) {
	first, second := rendered(t), rendered(t)
	for name := range first {
		if first[name] != second[name] {
			t.Errorf("%s: two renders of the same plan differ", name)
		}
	}
}

func TestFormatsRefuseWhatTheyCannotCarry(t *testing.T) {
	tests := []struct {
		spec   pool.EgressSpec
		format string
		want   string
	}{
		{pool.EgressSpec{Strategy: "block", HostsPerIP: "8"}, "nft-json", "cannot load port blocks from JSON"},
	}
	for _, tt := range tests {
		err := Ruleset(io.Discard, io.Discard, plan(t, tt.spec), tt.format, Options{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s of %s: %v, want an error saying %q", tt.format, tt.spec.Strategy, err, tt.want)
		}
	}
	compact := compiler.Compile(plan(t, pool.EgressSpec{Strategy: "block", HostsPerIP: "8"}), compiler.Options{Encoding: compiler.Compact})
	for name, err := range map[string]error{
		"nft":      NFT(io.Discard, compact, version),
		"nft-json": NFTJSON(io.Discard, compact, version),
		"iptables": IPTables(io.Discard, io.Discard, compact, Options{}),
	} {
		if err == nil {
			t.Errorf("%s of compact port blocks: no error", name)
		}
	}
}

// The eduroam boxes: 10.16.0.0/12 out of bond1 over 192.76.8.1-192.76.8.51,
// last-octet values 0-254, five consecutive values per address.
func TestEduroamU32Rules(t *testing.T) {
	p := plan(t, pool.EgressSpec{Private: []string{"10.16.0.0/12"}, Pool: []string{"192.76.8.1-192.76.8.51"},
		OIF: "bond1", Strategy: "octet", Octets: "0-254"})
	var b bytes.Buffer
	if err := Ruleset(&b, io.Discard, p, "iptables", Options{Version: version}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`-A NATPOOL -s 10.16.0.0/12 -o bond1 -m u32 --u32 "0xc&0xff=0x0:0x4" -m connlabel --label 127 --set -j SNAT --to-source 192.76.8.1`,
		`-A NATPOOL -s 10.16.0.0/12 -o bond1 -m u32 --u32 "0xc&0xff=0xeb:0xef" -m connlabel --label 127 --set -j SNAT --to-source 192.76.8.48`,
		`-A NATPOOL -s 10.16.0.0/12 -o bond1 -m u32 --u32 "0xc&0xff=0xfa:0xfe" -m connlabel --label 127 --set -j SNAT --to-source 192.76.8.51`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing rule %s", want)
		}
	}
	if n := strings.Count(b.String(), "-m u32"); n != 51 {
		t.Errorf("%d u32 rules, want 51", n)
	}
	golden.Check(t, "render/"+"eduroam.iptables", b.String())
}

// Whatever the change, the diff applied to the old text gives the new one:
// edits short and long, near and far, among repeated lines, and changes
// longer than the lookahead. A small change gives the diff a person would
// write.
func TestUnifiedDiffReconstructsTheNewText(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	line := func() string {
		if rng.IntN(4) == 0 {
			return "\t}" // repeated lines tempt a wrong alignment
		}
		return fmt.Sprintf("line %d", rng.IntN(1<<20))
	}
	for trial := range 300 {
		var old []string
		for range rng.IntN(200) {
			old = append(old, line())
		}
		newLines := slices.Clone(old)
		for range rng.IntN(6) {
			at := rng.IntN(len(newLines) + 1)
			n := 1 + rng.IntN(20)
			if trial%50 == 0 {
				n = lookahead + rng.IntN(100) // beyond the lookahead
			}
			switch rng.IntN(3) {
			case 0: // insert
				var ins []string
				for range n {
					ins = append(ins, line())
				}
				newLines = slices.Insert(newLines, at, ins...)
			case 1: // delete
				newLines = slices.Delete(newLines, at, min(at+n, len(newLines)))
			default: // replace
				for k := at; k < min(at+n, len(newLines)); k++ {
					newLines[k] = line()
				}
			}
		}
		a, b := strings.Join(old, "\n"), strings.Join(newLines, "\n")
		if len(old) > 0 {
			a += "\n"
		}
		if len(newLines) > 0 {
			b += "\n"
		}
		diff := UnifiedDiff("old", "new", a, b)
		if (diff == "") != (a == b) {
			t.Fatalf("trial %d: diff %q of texts equal %v", trial, diff, a == b)
		}
		if got := patch(t, old, diff); strings.Join(got, "\n") != strings.Join(newLines, "\n") {
			t.Fatalf("trial %d: the diff does not turn the old text into the new\n%s", trial, diff)
		}
	}
	got := UnifiedDiff("a", "b", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n", "1\n2\n3\n4\n5\nsix\n7\n8\n9\n10\n")
	want := "--- a\n+++ b\n@@ -3,7 +3,7 @@\n 3\n 4\n 5\n-6\n+six\n 7\n 8\n 9\n"
	if got != want {
		t.Errorf("UnifiedDiff:\n%s\nwant:\n%s", got, want)
	}
}

// patch applies a unified diff to lines, checking every context and
// removed line against them.
func patch(t *testing.T, lines []string, diff string) []string {
	t.Helper()
	var out []string
	at := 0 // next line of lines to copy
	for _, l := range strings.Split(strings.TrimSuffix(diff, "\n"), "\n") {
		switch {
		case l == "" || strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "+++ "):
		case strings.HasPrefix(l, "@@ "):
			var start int
			fmt.Sscanf(l, "@@ -%d", &start)
			if !strings.Contains(strings.Fields(l)[1], ",0") || start == 0 {
				start-- // from 1, except for an empty range, which names the line before
			}
			out = append(out, lines[at:max(start, at)]...)
			at = max(start, at)
		case l[0] == '+':
			out = append(out, l[1:])
		case l[0] == '-' || l[0] == ' ':
			if at >= len(lines) || lines[at] != l[1:] {
				t.Fatalf("line %d of the old text is not %q", at+1, l[1:])
			}
			if l[0] == ' ' {
				out = append(out, l[1:])
			}
			at++
		}
	}
	return append(out, lines[at:]...)
}

// A change of every line of texts longer than the index holds (it is
// cleared and filled again as they stream) still turns the old text into
// the new, meets again where they agree, and counts what it removes and
// adds.
func TestStreamDiffOfLongChangesCountsAndReconstructs(t *testing.T) {
	const n = 20 * lookahead
	var old, newLines []string
	for i := range n {
		old = append(old, fmt.Sprintf("host %d : a", i))
		newLines = append(newLines, fmt.Sprintf("host %d : b", i))
		if i%(5*lookahead) == 0 { // a stretch both agree on
			for k := range 10 {
				old = append(old, fmt.Sprintf("same %d %d", i, k))
				newLines = append(newLines, fmt.Sprintf("same %d %d", i, k))
			}
		}
	}
	a, b := strings.Join(old, "\n")+"\n", strings.Join(newLines, "\n")+"\n"
	var out strings.Builder
	r, err := StreamDiff(&out, "old", "new", strings.NewReader(a), strings.NewReader(b), 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Removed != n || r.Added != n {
		t.Errorf("removed %d and added %d lines, want %d each", r.Removed, r.Added, n)
	}
	if got := patch(t, old, out.String()); strings.Join(got, "\n") != strings.Join(newLines, "\n") {
		t.Fatal("the diff does not turn the old text into the new")
	}
}
