package render

import (
	"bufio"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
)

// context is the number of unchanged lines shown around a change.
const context = 3

// lookahead is how many lines ahead of a difference the diff looks for the
// two sides to meet again, and scanned how far it searches: the diff holds
// no more of either side than this, however long they are.
const (
	lookahead = 1 << 15
	scanned   = 1 << 10
)

// hunkLines bounds a hunk: a longer change is written as several adjacent
// hunks, so that a change of millions of lines is never held.
const hunkLines = 1 << 14

// UnifiedDiff returns the unified diff of old and new, or "" when they are
// equal.
func UnifiedDiff(oldName, newName, old, new string) string {
	var out strings.Builder
	StreamDiff(&out, oldName, newName, strings.NewReader(old), strings.NewReader(new), 0)
	return out.String()
}

// DiffResult is what StreamDiff found.
type DiffResult struct {
	Differ         bool
	Written        int // diff lines written
	LeftOut        int // diff lines left out past the limit
	Removed, Added int // lines of the old text the diff removes, of the new it adds
}

// StreamDiff writes the unified diff of two texts as it reads them, lines
// of either side held only within a bounded lookahead: where the sides meet
// again within it, the diff is the one a person would point at; where they
// do not (a change longer than the lookahead), it is still a correct diff,
// replacing lines one for one. After maxLines lines of diff (0: no limit)
// the rest is counted, not written.
func StreamDiff(w io.Writer, oldName, newName string, old, new io.Reader, maxLines int) (DiffResult, error) {
	seed := maphash.MakeSeed()
	d := &differ{a: newSide(old, seed), b: newSide(new, seed), out: bufio.NewWriter(w), maxLines: maxLines,
		names: [2]string{oldName, newName}}
	d.run()
	if d.err == nil {
		d.err = d.out.Flush()
	}
	return d.result, d.err
}

// side is one text being read, with the lines read ahead.
type side struct {
	r       *bufio.Reader
	ahead   []string // lines read, not yet consumed
	where   lineIndex
	base    int // absolute number of ahead[0], from 0
	indexed int // absolute number of the first line not in where
	eof     bool
	err     error
}

func newSide(r io.Reader, seed maphash.Seed) *side {
	return &side{r: bufio.NewReaderSize(r, 1<<16), where: newLineIndex(seed)}
}

// fill reads until n lines are ahead or the text ends.
func (s *side) fill(n int) {
	for len(s.ahead) < n && !s.eof {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.eof = true
			if err != io.EOF {
				s.err = err
			}
			if line == "" {
				break
			}
		}
		s.ahead = append(s.ahead, strings.TrimSuffix(line, "\n"))
	}
}

// index makes the lines ahead findable. Lines are indexed only where the
// sides differ: long equal stretches pass through without it.
func (s *side) index() {
	if s.where.full() {
		// Drop the consumed lines: index the lines ahead again.
		s.where.clear(s.base)
		s.indexed = s.base
	}
	for ; s.indexed < s.base+len(s.ahead); s.indexed++ {
		s.where.add(s.ahead[s.indexed-s.base], s.indexed)
	}
}

// pop consumes the first line ahead.
func (s *side) pop() string {
	line := s.ahead[0]
	s.indexed = max(s.indexed, s.base+1)
	s.ahead[0] = ""
	s.ahead = s.ahead[1:]
	s.base++
	if cap(s.ahead) > 2*lookahead && len(s.ahead) < cap(s.ahead)/4 {
		s.ahead = append([]string(nil), s.ahead...) // let the consumed lines go
	}
	return line
}

// find returns the offset in ahead of the first occurrence of line, -1 if
// none.
func (s *side) find(line string) int {
	return s.where.find(line, s.base, func(pos int) string { return s.ahead[pos-s.base] })
}

// lineIndex finds lines by their hash: an open-addressing table of the
// numbers of the lines added, which holds no pointers for the collector to
// scan and needs no map write to forget a line. Consumed lines stay until
// the table fills, when it is cleared and the lines ahead are added again:
// about one extra add per line. The table is made at the first difference:
// texts that are the same never need it.
type lineIndex struct {
	seed   maphash.Seed
	slots  []indexSlot // a power of two of them
	used   int
	origin int // the absolute line number slots count from
}

// indexSlot is 8 bytes: a line's number counts from origin (natpool's
// texts are far shorter than 2^32 lines), and a hash's low 32 bits tell
// most lines apart (the line itself decides).
type indexSlot struct {
	hash uint32
	pos  uint32 // line number - origin + 1; 0: empty
}

func newLineIndex(seed maphash.Seed) lineIndex { return lineIndex{seed: seed} }

// full reports whether the table is past half full, or not yet made.
func (x *lineIndex) full() bool {
	if x.slots == nil {
		x.slots = make([]indexSlot, 8*lookahead)
		return true
	}
	return 2*x.used > len(x.slots)
}

// clear empties the table, whose lines will number from origin on.
func (x *lineIndex) clear(origin int) {
	clear(x.slots)
	x.used, x.origin = 0, origin
}

// add adds line number pos. Lines are added in ascending order, so the
// first of equal lines on a probe sequence is the first in the text.
func (x *lineIndex) add(line string, pos int) {
	h := maphash.String(x.seed, line)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if x.slots[i].pos == 0 {
			x.slots[i] = indexSlot{uint32(h), uint32(pos - x.origin + 1)}
			x.used++
			return
		}
	}
}

// find returns the first line number from base on whose line (as lineAt
// gives it) is line, -1 if none.
func (x *lineIndex) find(line string, base int, lineAt func(int) string) int {
	h := maphash.String(x.seed, line)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; x.slots[i].pos != 0; i = (i + 1) & mask {
		if sl := x.slots[i]; sl.hash == uint32(h) {
			if pos := x.origin + int(sl.pos) - 1; pos >= base && lineAt(pos) == line {
				return pos - base
			}
		}
	}
	return -1
}

type differ struct {
	a, b     *side
	out      *bufio.Writer
	names    [2]string
	maxLines int
	result   DiffResult
	err      error

	line   [2]int     // line numbers of the next lines of old and new, from 1
	before []string   // unchanged lines kept to lead the next hunk
	hunk   []hunkLine // the open hunk
	start  [2]int     // the open hunk's first line numbers
	tail   int        // unchanged lines at the end of the open hunk
}

type hunkLine struct {
	kind byte // ' ', '-' or '+'
	text string
}

func (d *differ) run() {
	d.line = [2]int{1, 1}
	for {
		d.a.fill(1)
		d.b.fill(1)
		switch {
		case len(d.a.ahead) == 0 && len(d.b.ahead) == 0:
			d.closeHunk()
			d.err = firstErr(d.a.err, d.b.err)
			return
		case len(d.a.ahead) == 0:
			d.change(0, 1)
		case len(d.b.ahead) == 0:
			d.change(1, 0)
		case d.a.ahead[0] == d.b.ahead[0]:
			d.same()
		default:
			i, j := d.meet()
			d.change(i, j)
		}
	}
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// meet finds where the sides meet again: the pair of offsets (i, j) with
// a[i] == b[j], confirmed by the next lines, that skips the fewest lines.
// Without one among the lines it scanned, those lines are replaced, one for
// one: a change of every line of millions is scanned a stretch at a time,
// not a line at a time.
func (d *differ) meet() (int, int) {
	d.a.fill(lookahead)
	d.b.fill(lookahead)
	d.a.index()
	d.b.index()
	best, bi, bj := -1, scanned, scanned
	consider := func(i, j int) {
		if j < 0 || i < 0 || (best >= 0 && i+j >= best) || !d.confirmed(i, j) {
			return
		}
		best, bi, bj = i+j, i, j
	}
	for k := 0; k < scanned && (best < 0 || k < best); k++ {
		if k < len(d.a.ahead) {
			consider(k, d.b.find(d.a.ahead[k]))
		}
		if k < len(d.b.ahead) {
			consider(d.a.find(d.b.ahead[k]), k)
		}
	}
	return min(bi, len(d.a.ahead)), min(bj, len(d.b.ahead))
}

// confirmed reports whether the sides agree at i, j and on the line after,
// or one of them ends there.
func (d *differ) confirmed(i, j int) bool {
	if d.a.ahead[i] != d.b.ahead[j] {
		return false
	}
	if i+1 < len(d.a.ahead) && j+1 < len(d.b.ahead) {
		return d.a.ahead[i+1] == d.b.ahead[j+1]
	}
	return i+1 == len(d.a.ahead) && d.a.eof || j+1 == len(d.b.ahead) && d.b.eof
}

// same consumes a line both sides have.
func (d *differ) same() {
	text := d.a.pop()
	d.b.pop()
	d.line[0]++
	d.line[1]++
	if d.hunk == nil {
		d.before = append(d.before, text)
		if len(d.before) > context {
			d.before = d.before[1:]
		}
		return
	}
	d.hunk = append(d.hunk, hunkLine{' ', text})
	if d.tail++; d.tail == 2*context {
		// Changes this far apart make two hunks: keep context lines
		// after this one, and the rest lead the next.
		keep := len(d.hunk) - context
		d.before = nil
		for _, l := range d.hunk[keep:] {
			d.before = append(d.before, l.text)
		}
		d.hunk = d.hunk[:keep]
		d.tail = context
		d.closeHunk()
	}
}

// change consumes i lines of old as removed and j of new as added.
func (d *differ) change(i, j int) {
	d.result.Differ = true
	if d.hunk == nil {
		d.start = [2]int{d.line[0] - len(d.before), d.line[1] - len(d.before)}
		for _, text := range d.before {
			d.hunk = append(d.hunk, hunkLine{' ', text})
		}
		d.before = nil
	}
	d.tail = 0
	for range i {
		d.hunk = append(d.hunk, hunkLine{'-', d.a.pop()})
		d.line[0]++
	}
	for range j {
		d.hunk = append(d.hunk, hunkLine{'+', d.b.pop()})
		d.line[1]++
	}
	d.result.Removed += i
	d.result.Added += j
	if len(d.hunk) >= hunkLines {
		d.closeHunk() // a long change: the next hunk starts where this ends
	}
}

// closeHunk writes the open hunk, with its trailing context.
func (d *differ) closeHunk() {
	if d.hunk == nil {
		return
	}
	if d.tail > context {
		d.hunk = d.hunk[:len(d.hunk)-(d.tail-context)]
	}
	var n [2]int
	for _, l := range d.hunk {
		if l.kind != '+' {
			n[0]++
		}
		if l.kind != '-' {
			n[1]++
		}
	}
	if d.result.Written == 0 && d.result.LeftOut == 0 {
		d.emit(fmt.Sprintf("--- %s", d.names[0]))
		d.emit(fmt.Sprintf("+++ %s", d.names[1]))
	}
	d.emit(fmt.Sprintf("@@ -%s +%s @@", hunkRange(d.start[0], n[0]), hunkRange(d.start[1], n[1])))
	for _, l := range d.hunk {
		d.emit(string(l.kind) + l.text)
	}
	d.hunk, d.tail = nil, 0
}

// emit writes a line of the diff, or counts it past the limit.
func (d *differ) emit(line string) {
	if d.maxLines > 0 && d.result.Written >= d.maxLines {
		d.result.LeftOut++
		return
	}
	d.out.WriteString(line)
	d.out.WriteByte('\n')
	d.result.Written++
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
