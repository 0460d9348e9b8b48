package render

import (
	"fmt"
	"strings"
)

// context is the number of unchanged lines shown around a change.
const context = 3

// op is one line of an edit script: kept, deleted from old or inserted from new.
type op struct {
	kind byte // ' ', '-' or '+'
	line string
}

// UnifiedDiff returns the unified diff of old and new, line by line, or ""
// when they are equal.
func UnifiedDiff(oldName, newName, old, new string) string {
	if old == new {
		return ""
	}
	a, b := lines(old), lines(new)
	var ops []op
	diffLines(a, b, &ops)
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", oldName, newName)
	for start := 0; start < len(ops); {
		// Find the next change, then extend the hunk while changes are
		// closer than twice the context.
		first := start
		for first < len(ops) && ops[first].kind == ' ' {
			first++
		}
		if first == len(ops) {
			break
		}
		lo := max(first-context, start)
		hi := first
		for i := first; i < len(ops) && i-hi <= 2*context; i++ {
			if ops[i].kind != ' ' {
				hi = i
			}
		}
		hi = min(hi+context+1, len(ops))
		writeHunk(&out, ops, lo, hi)
		start = hi
	}
	return out.String()
}

func writeHunk(out *strings.Builder, ops []op, lo, hi int) {
	// Line numbers of the hunk's start in old and new (1-based).
	oldLine, newLine := 1, 1
	for _, o := range ops[:lo] {
		if o.kind != '+' {
			oldLine++
		}
		if o.kind != '-' {
			newLine++
		}
	}
	var oldN, newN int
	for _, o := range ops[lo:hi] {
		if o.kind != '+' {
			oldN++
		}
		if o.kind != '-' {
			newN++
		}
	}
	fmt.Fprintf(out, "@@ -%s +%s @@\n", hunkRange(oldLine, oldN), hunkRange(newLine, newN))
	for _, o := range ops[lo:hi] {
		out.WriteByte(o.kind)
		out.WriteString(o.line)
		out.WriteByte('\n')
	}
}

func hunkRange(start, n int) string {
	if n == 0 {
		start-- // an empty range names the line before it
	}
	if n == 1 {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d,%d", start, n)
}

func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// diffLines appends the edit script from a to b. It keeps common prefixes and
// suffixes, then anchors on lines that occur exactly once in each side, in
// the longest run of such lines in the same order (patience diff), and
// recurses between anchors; with no anchor the rest is replaced. Rendered
// rulesets are sorted and mostly unique lines, where this finds the changes
// a person would point at, in near-linear time.
func diffLines(a, b []string, ops *[]op) {
	for len(a) > 0 && len(b) > 0 && a[0] == b[0] {
		*ops = append(*ops, op{' ', a[0]})
		a, b = a[1:], b[1:]
	}
	var tail []op
	for len(a) > 0 && len(b) > 0 && a[len(a)-1] == b[len(b)-1] {
		tail = append(tail, op{' ', a[len(a)-1]})
		a, b = a[:len(a)-1], b[:len(b)-1]
	}
	anchors := uniqueCommon(a, b)
	if len(anchors) == 0 {
		for _, l := range a {
			*ops = append(*ops, op{'-', l})
		}
		for _, l := range b {
			*ops = append(*ops, op{'+', l})
		}
	} else {
		i, j := 0, 0
		for _, an := range anchors {
			diffLines(a[i:an[0]], b[j:an[1]], ops)
			*ops = append(*ops, op{' ', a[an[0]]})
			i, j = an[0]+1, an[1]+1
		}
		diffLines(a[i:], b[j:], ops)
	}
	for k := len(tail) - 1; k >= 0; k-- {
		*ops = append(*ops, tail[k])
	}
}

// uniqueCommon returns the pairs (i, j) with a[i] == b[j] where the line
// occurs once in a and once in b, reduced to the longest chain increasing in
// both i and j.
func uniqueCommon(a, b []string) [][2]int {
	count := map[string][2]int{} // line -> occurrences in a, in b
	where := map[string]int{}    // line -> index in b
	for _, l := range a {
		c := count[l]
		c[0]++
		count[l] = c
	}
	for j, l := range b {
		c := count[l]
		c[1]++
		count[l] = c
		where[l] = j
	}
	var pairs [][2]int
	for i, l := range a {
		if c := count[l]; c[0] == 1 && c[1] == 1 {
			pairs = append(pairs, [2]int{i, where[l]})
		}
	}
	// Longest increasing subsequence of the j's (pairs are ascending in i),
	// by patience sorting.
	var piles []int // index into pairs of the top of each pile
	prev := make([]int, len(pairs))
	for k, p := range pairs {
		lo, hi := 0, len(piles)
		for lo < hi {
			mid := (lo + hi) / 2
			if pairs[piles[mid]][1] < p[1] {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		prev[k] = -1
		if lo > 0 {
			prev[k] = piles[lo-1]
		}
		if lo == len(piles) {
			piles = append(piles, k)
		} else {
			piles[lo] = k
		}
	}
	if len(piles) == 0 {
		return nil
	}
	chain := make([][2]int, len(piles))
	for k, n := piles[len(piles)-1], len(piles)-1; k >= 0; k, n = prev[k], n-1 {
		chain[n] = pairs[k]
	}
	return chain
}
