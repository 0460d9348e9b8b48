package pool

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// Canonical writes the canonical text of a plan, a line at a time, for
// its digest: words separated by single spaces, addresses as dotted
// quads, numbers in decimal.
type Canonical struct {
	w io.Writer
	b []byte // the line being written, reused
}

// NewCanonical returns a Canonical writing to w.
func NewCanonical(w io.Writer) *Canonical { return &Canonical{w: w} }

// Line writes one line of parts: strings, ints, uint64s, addresses and
// Stringers.
func (c *Canonical) Line(parts ...any) {
	c.b = c.b[:0]
	for i, part := range parts {
		if i > 0 {
			c.b = append(c.b, ' ')
		}
		switch v := part.(type) {
		case string:
			c.b = append(c.b, v...)
		case int:
			c.b = strconv.AppendInt(c.b, int64(v), 10)
		case uint64:
			c.b = strconv.AppendUint(c.b, v, 10)
		case netip.Addr:
			c.b = v.AppendTo(c.b)
		case fmt.Stringer:
			c.b = append(c.b, v.String()...)
		default: // a part the digest would silently lose
			panic(fmt.Sprintf("pool.Canonical: a %T", part))
		}
	}
	c.w.Write(append(c.b, '\n'))
}

// Canonical writes the lines that decide the entry's mapping.
func (e *Egress) Canonical(c *Canonical) { e.Mapping.canonical(e, c) }
