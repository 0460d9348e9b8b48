package box_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// cluster plans testdata/cluster.yaml with the pool given.
func cluster(t *testing.T, pools ...string) *pool.Plan {
	t.Helper()
	spec, err := pool.LoadSpec("../../../testdata/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if pools != nil {
		spec.Egress[0].Pool = pools
	}
	p, err := pool.NewPlan(spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newBox is a box over a fake kernel, journaling in a directory of the
// test's.
func newBox(t *testing.T) (*box.Box, *box.Fake) {
	t.Helper()
	f := box.NewFake()
	w := &journal.Writer{Dir: filepath.Join(t.TempDir(), "journal"), Machine: journal.Machine{ID: "m1", Host: "nat1"},
		Version: "test", Now: time.Now, Waiting: func() {}}
	return box.New("ns", f.Kernels, w), f
}

func entries(t *testing.T, b *box.Box) []journal.Entry {
	t.Helper()
	j, err := journal.Open(b.Journal.Dir)
	if err != nil {
		return nil
	}
	c, err := j.Read()
	if err != nil {
		t.Fatal(err)
	}
	return c.Entries
}

// A node's new policy rules go in before its table, the stale ones go
// after: no packet meets a table without the rules it needs.
func TestApplyOfANodeAddsRulesBeforeTheTableAndDropsThemAfter(t *testing.T) {
	b, f := newBox(t)
	first, second := cluster(t), cluster(t, "198.51.100.0/26", "198.51.100.64/29")
	if _, err := b.Apply(first, box.Options{Node: "nat1"}); err != nil {
		t.Fatal(err)
	}
	before := len(f.Log())
	a, err := b.Apply(second, box.Options{Node: "nat1"})
	if err != nil {
		t.Fatal(err)
	}
	ops := f.Log()[before:]
	table := slices.IndexFunc(ops, func(op string) bool { return strings.HasPrefix(op, "apply natpool "+a.Digest) })
	for i, op := range ops {
		switch {
		case strings.HasPrefix(op, "rule add") && i > table:
			t.Errorf("%q after the table: %q", op, ops)
		case strings.HasPrefix(op, "rule del") && i < table:
			t.Errorf("%q before the table: %q", op, ops)
		}
	}
	var rules []compiler.PolicyRule
	f.Do("ns", func(n *box.FakeNamespace) { rules = n.Rules })
	if !slices.Equal(rules, a.Ruleset.Steering.Routes) {
		t.Errorf("policy rules %v, want %v", rules, a.Ruleset.Steering.Routes)
	}
}

// A table the kernel refuses, or a policy rule it refuses, leaves the
// policy rules as they were, and the journal says the change had no effect.
func TestApplyOfANodePutsTheRulesBackWhenRefused(t *testing.T) {
	for _, fail := range []string{"table", "rules"} {
		t.Run(fail, func(t *testing.T) {
			b, f := newBox(t)
			first := cluster(t)
			if _, err := b.Apply(first, box.Options{Node: "nat1"}); err != nil {
				t.Fatal(err)
			}
			var had []compiler.PolicyRule
			refused := errors.New("refused")
			f.Do("ns", func(n *box.FakeNamespace) {
				had = slices.Clone(n.Rules)
				if fail == "table" {
					n.FailApply = refused
				} else {
					n.FailRules = refused
				}
			})
			if _, err := b.Apply(cluster(t, "198.51.100.0/25"), box.Options{Node: "nat1"}); !errors.Is(err, refused) {
				t.Fatalf("apply: %v, want the refusal", err)
			}
			f.Do("ns", func(n *box.FakeNamespace) {
				if !slices.Equal(n.Rules, had) {
					t.Errorf("policy rules %v after the refusal, want %v as before", n.Rules, had)
				}
				if n.Tables["natpool"].Digest != compiler.Digest(first) {
					t.Errorf("the table holds %s, want the first plan's", n.Tables["natpool"].Digest)
				}
			})
			if e := entries(t, b); len(e) != 2 || e[1].Outcome != journal.Abort {
				t.Errorf("journal %+v, want the second apply aborted", e)
			}
		})
	}
}

// Another's policy rule in natpool's ranges, or a table natpool did not
// make, is refused before the journal is written, and nothing changes.
func TestApplyRefusesForeignStateBeforeItJournals(t *testing.T) {
	for _, foreign := range []string{"rule", "route", "table"} {
		t.Run(foreign, func(t *testing.T) {
			b, f := newBox(t)
			f.Do("ns", func(n *box.FakeNamespace) {
				switch foreign {
				case "rule":
					n.ForeignRules = []compiler.PolicyRule{{Priority: 7350, Mark: 0x4e500000, Table: 100}}
				case "route":
					n.Routes[7351] = []string{"static"}
				case "table":
					n.Foreign["natpool"] = true
				}
			})
			if _, err := b.Apply(cluster(t), box.Options{Node: "nat1"}); err == nil {
				t.Fatal("applied beside a foreign object")
			}
			if ops := f.Log(); len(ops) > 0 {
				t.Errorf("changes made: %q", ops)
			}
			if e := entries(t, b); len(e) > 0 {
				t.Errorf("journal entries %+v", e)
			}
		})
	}
}

// Delete takes natpool's table and policy rules, journaled, and only them.
func TestDeleteTakesNatpoolsTableAndRulesOnly(t *testing.T) {
	b, f := newBox(t)
	if _, err := b.Apply(cluster(t), box.Options{Node: "nat1"}); err != nil {
		t.Fatal(err)
	}
	foreign := compiler.PolicyRule{Priority: 100, Mark: 7, Table: 100}
	f.Do("ns", func(n *box.FakeNamespace) { n.ForeignRules = []compiler.PolicyRule{foreign} })
	r, err := b.Delete("natpool", false)
	if err != nil || !r.Deleted || r.PolicyRules == 0 {
		t.Fatalf("%+v, %v", r, err)
	}
	f.Do("ns", func(n *box.FakeNamespace) {
		if len(n.Tables) > 0 || len(n.Rules) > 0 || !slices.Equal(n.ForeignRules, []compiler.PolicyRule{foreign}) {
			t.Errorf("after delete: tables %v, rules %v, foreign %v", n.Tables, n.Rules, n.ForeignRules)
		}
	})
	if e := entries(t, b); len(e) != 2 || e[1].Op != journal.Delete || e[1].Outcome != journal.Commit {
		t.Errorf("journal %+v", e)
	}
}
