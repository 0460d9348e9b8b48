package render

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// stream writes text a line at a time through a buffer, formatting numbers
// and addresses by appending: the rulesets of a /10 are hundreds of
// megabytes, and are never held.
type stream struct {
	w    *bufio.Writer
	line []byte
}

func newStream(w io.Writer) *stream {
	return &stream{w: bufio.NewWriterSize(w, 1<<16), line: make([]byte, 0, 256)}
}

func (s *stream) str(text string) *stream { s.line = append(s.line, text...); return s }

func (s *stream) addr(a netip.Addr) *stream { s.line = a.AppendTo(s.line); return s }

func (s *stream) num(n uint64) *stream { s.line = strconv.AppendUint(s.line, n, 10); return s }

func (s *stream) ports(p pool.PortRange) *stream {
	return s.num(uint64(p.Lo)).str("-").num(uint64(p.Hi))
}

// key writes an element's key: an address, or a range of them.
func (s *stream) key(e compiler.Element) *stream {
	if s.addr(e.From); e.From != e.To {
		s.str("-").addr(e.To)
	}
	return s
}

// end ends the line and writes it out.
func (s *stream) end() {
	s.line = append(s.line, '\n')
	s.w.Write(s.line) // a failed write sticks in the bufio.Writer; flush reports it
	s.line = s.line[:0]
}

// flush writes out what is buffered and reports the first failed write.
func (s *stream) flush() error { return s.w.Flush() }
