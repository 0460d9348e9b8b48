package compiler

import (
	"testing"

	"github.com/natpool/natpool/pool"
)

func loadPlan(t *testing.T, path string) *pool.Plan {
	t.Helper()
	p, err := pool.PlanFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The digest is a format: these pins change only when the mapping or the
// ruleset of a spec changes, or DigestVersion does.
func TestDigestOfTheExampleSpecsIsPinned(t *testing.T) {
	for spec, want := range map[string]string{
		"campus":  "a8f3746aa5dccf0c",
		"cgnat":   "4bb533cbf10dbb91",
		"two-isp": "fd31669d4e0336b9",
	} {
		if got := Digest(loadPlan(t, "../testdata/"+spec+".yaml")); got != want {
			t.Errorf("%s: digest %s, pinned %s", spec, got, want)
		}
	}
}

// The digest names the plan, not how the kernel is given it.
func TestDigestIsTheSameForEveryEncoding(t *testing.T) {
	p := loadPlan(t, "../testdata/cgnat.yaml")
	if a, b := Compile(p, Options{Encoding: Compact}).Digest, Compile(p, Options{Encoding: PerHost}).Digest; a != b {
		t.Errorf("compact %s, per-host %s", a, b)
	}
}
