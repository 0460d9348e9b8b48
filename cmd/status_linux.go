//go:build linux

package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/render"
)

func runStatus(o *statusOptions, stdout, stderr io.Writer) error {
	plan, err := o.spec.plan(stderr)
	if err != nil {
		return err
	}
	k, err := nft.Dial(o.netns)
	if err != nil {
		return err
	}
	defer k.Close()
	stamp, err := k.Stamp(plan.Table)
	if err != nil {
		return err
	}
	if !stamp.Exists {
		return fmt.Errorf("no table ip %s in %s", plan.Table, where(o.netns))
	}
	have, err := k.Read(plan.Table)
	if err != nil {
		return err
	}
	// The table may hold either encoding of port blocks: compare with the
	// compact one and, if the table is not in sync with it, with the
	// per-host one too, and report against the closer.
	var diffs []nft.Difference
	var rs *compiler.Ruleset
	for _, enc := range []compiler.Encoding{compiler.Compact, compiler.PerHost} {
		r := compiler.Compile(plan, compiler.Options{Encoding: enc})
		want, err := nft.Expected(r)
		if err != nil {
			return err
		}
		if d := nft.Compare(want, have); rs == nil || size(d) < size(diffs) {
			diffs, rs = d, r
		}
		if len(diffs) == 0 {
			break
		}
	}
	if o.output == "json" {
		err = render.JSON(stdout, map[string]any{"table": plan.Table, "netns": o.netns, "digest": rs.Digest, "stamped": stamp.Natpool,
			"in_sync": len(diffs) == 0, "drift": differencesJSON(diffs, "missing", "extra")})
	} else if len(diffs) == 0 {
		fmt.Fprintf(stdout, "table ip %s in %s is in sync with the plan (%s): %d rules, %d elements\n",
			plan.Table, where(o.netns), rs.Digest, len(rs.Rules), rs.Elements())
	} else {
		fmt.Fprintf(stdout, "table ip %s in %s has drifted from the plan (%s):\n", plan.Table, where(o.netns), rs.Digest)
		if !stamp.Natpool {
			fmt.Fprintf(stdout, "no rule of it carries natpool's stamp: another tool made it, or natpool's rules are gone (apply refuses such a table)\n")
		}
		writeDifferences(stdout, diffs, "missing", "extra")
	}
	if err != nil || len(diffs) == 0 {
		return err
	}
	return &exitError{code: exitFound}
}

// size counts the differing lines.
func size(diffs []nft.Difference) int {
	n := 0
	for _, d := range diffs {
		n += len(d.Missing) + len(d.Extra)
	}
	return n
}
