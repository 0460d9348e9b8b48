//go:build linux

package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler/nft"
)

// shownLines bounds the lines printed per changed object, and shownWidth
// their length: a rule with an inline map of buckets is one long line.
const (
	shownLines = 20
	shownWidth = 200
)

// writeDifferences writes differences as text: per object, the lines its
// first side has marked "-", the lines of the second marked "+".
func writeDifferences(w io.Writer, diffs []nft.Difference, missing, extra string) {
	for _, d := range diffs {
		fmt.Fprintf(w, "%s: %d %s, %d %s\n", d.Object, len(d.Missing), missing, len(d.Extra), extra)
		lines := 0
		for _, group := range []struct {
			mark  string
			lines []string
		}{{"-", d.Missing}, {"+", d.Extra}} {
			for _, l := range group.lines {
				if lines == shownLines {
					fmt.Fprintf(w, "  ... %d more lines (-o json lists them all)\n", len(d.Missing)+len(d.Extra)-lines)
					break
				}
				if len(l) > shownWidth {
					l = l[:shownWidth] + "..."
				}
				fmt.Fprintf(w, "  %s %s\n", group.mark, l)
				lines++
			}
		}
	}
}

// differencesJSON gives differences the names missing and extra.
func differencesJSON(diffs []nft.Difference, missing, extra string) []map[string]any {
	out := []map[string]any{}
	for _, d := range diffs {
		out = append(out, map[string]any{"object": d.Object, missing: nonNil(d.Missing), extra: nonNil(d.Extra)})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
