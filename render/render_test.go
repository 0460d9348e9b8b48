package render

import (
	"bytes"
	"io"
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

func TestUnifiedDiffReconstructsBothSides(t *testing.T) {
	tests := []struct{ old, new string }{
		{"a\nb\nc\n", "a\nB\nc\n"},
		{"", "x\n"},
		{"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "1\n2\nthree\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n"},
		{"same\nsame\nx\nsame\n", "same\ny\nsame\nsame\n"},
	}
	for _, tt := range tests {
		var ops []op
		diffLines(lines(tt.old), lines(tt.new), &ops)
		var old, new []string
		for _, o := range ops {
			if o.kind != '+' {
				old = append(old, o.line)
			}
			if o.kind != '-' {
				new = append(new, o.line)
			}
		}
		if strings.Join(old, "\n") != strings.Join(lines(tt.old), "\n") || strings.Join(new, "\n") != strings.Join(lines(tt.new), "\n") {
			t.Errorf("edit script of %q -> %q does not reconstruct them: %v", tt.old, tt.new, ops)
		}
	}
	got := UnifiedDiff("a", "b", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n", "1\n2\n3\n4\n5\nsix\n7\n8\n9\n10\n")
	want := "--- a\n+++ b\n@@ -3,7 +3,7 @@\n 3\n 4\n 5\n-6\n+six\n 7\n 8\n 9\n"
	if got != want {
		t.Errorf("UnifiedDiff:\n%s\nwant:\n%s", got, want)
	}
}
