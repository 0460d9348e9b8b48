package translog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Options are how a Writer keeps its log.
type Options struct {
	// Plain keeps destinations in clear, not as keyed hashes.
	Plain bool
	// Span and MaxSize end a segment: after Span (an hour when zero), or
	// once it holds MaxSize bytes (256 MiB when zero).
	Span    time.Duration
	MaxSize int64
	// Keep prunes the sealed segments that ended longer ago; zero keeps
	// every one.
	Keep time.Duration
}

// carriedBlock is how many open translations a block of a new segment's
// opening carries.
const carriedBlock = 16384

// Writer appends translations to a log directory. Its methods are not safe
// for concurrent use. Events gather in memory until Flush writes them as a
// block: the caller flushes every second, and a process killed loses what
// it gathered since.
type Writer struct {
	dir   string
	o     Options
	h     hasher
	enc   *zstd.Encoder
	f     *os.File // nil while no segment is open
	keys  *os.File // its running index; nil once a write to it failed
	path  string
	start int64 // the open segment's start
	size  int64 // its bytes written whole
	// events is the block being gathered; open, the translations begun
	// and not ended, which a new segment opens with.
	events []event
	open   map[key]event
	// onPublic counts the open translations of each protocol and public
	// address and port, and onTag those of each destination tag there:
	// the others an end must be told from.
	onPublic map[key]uint32
	onTag    map[tagKey]uint32
	// seen, during a resync, holds the open translations found again.
	seen map[key]bool
	raw  []byte
	// failing is when writing began to fail, zero while it does not: the
	// next block written says that the log may miss events since.
	failing int64
	// flushed is when Flush last ran: until when the open segment covers.
	flushed int64
	// Records counts the translations logged; Dropped, the events lost
	// to a failing disk.
	Records, Dropped uint64
}

// Open opens dir for writing at now, making it and its key if need be. A
// segment left unsealed (a process killed) is sealed, a damaged tail
// reported in notes and left as it is, and the new segment opens with a
// loss window from the last event logged to now: what happened while no
// natpool logged.
func Open(dir string, o Options, now time.Time) (w *Writer, notes []error, err error) {
	if o.Span <= 0 {
		o.Span = time.Hour
	}
	if o.MaxSize <= 0 {
		o.MaxSize = 256 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	w = &Writer{dir: dir, o: o, open: map[key]event{}, onPublic: map[key]uint32{}, onTag: map[tagKey]uint32{}}
	if w.h, err = loadKey(dir); err != nil {
		return nil, nil, fmt.Errorf("translation log %s: its key: %w", dir, err)
	}
	if w.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1)); err != nil {
		return nil, nil, err
	}
	segs, err := segments(dir)
	if err != nil {
		return nil, nil, err
	}
	last := int64(-1)
	for _, seg := range segs {
		until, err := coveredUntil(seg)
		if err != nil {
			return nil, nil, err
		}
		last = max(last, until)
		if sealed(seg) {
			continue
		}
		damage, err := seal(seg, until)
		if err != nil {
			return nil, nil, fmt.Errorf("translation log: sealing %s: %w", seg, err)
		}
		if damage != nil {
			notes = append(notes, damage)
		}
	}
	t := millis(now)
	if last >= 0 && last < t {
		w.events = append(w.events, event{kind: kindLoss, at: t, span: t - last})
	}
	if err := w.openSegment(t); err != nil {
		return nil, notes, fmt.Errorf("translation log %s: %w", dir, err)
	}
	return w, notes, nil
}

// Start logs a translation that began at t.
func (w *Writer) Start(t time.Time, c Conn) { w.begin(kindStart, t, c) }

// Existing logs a translation there at t, found by a dump of the kernel's
// connections when logging began or resynchronises: it began earlier. One
// the log holds open already is only noted as found.
func (w *Writer) Existing(t time.Time, c Conn) {
	e := w.event(kindBefore, t, c)
	if o, ok := w.open[e.key()]; ok && o.inside == e.inside {
		if w.seen != nil {
			w.seen[e.key()] = true
		}
		return
	}
	w.begin(kindBefore, t, c)
}

// Resync begins a resynchronisation after events were lost: Existing then
// notes the translations alive, and Resynced ends at t those open in the
// log that were not found.
func (w *Writer) Resync() { w.seen = map[key]bool{} }

// Resynced ends, at t, the open translations Existing did not find since
// Resync: their ends were among the events lost.
func (w *Writer) Resynced(t time.Time) {
	if w.seen == nil { // no Resync: nothing to end
		return
	}
	for k, e := range w.open {
		if !w.seen[k] {
			e.kind, e.at = kindEnd, millis(t)
			w.end(e)
		}
	}
	w.seen = nil
}

func (w *Writer) begin(kind byte, t time.Time, c Conn) {
	e := w.event(kind, t, c)
	k := e.key()
	if _, ok := w.open[k]; !ok {
		w.onPublic[k.publicOnly()]++
		w.onTag[tagKey{k.publicOnly(), k.tag()}]++
	}
	w.open[k] = e
	if w.seen != nil {
		w.seen[e.key()] = true
	}
	w.events = append(w.events, e)
	w.Records++
}

// tagKey is a protocol and public address and port, and a destination tag.
type tagKey struct {
	public key
	tag    byte
}

// End logs the end of a translation at t.
func (w *Writer) End(t time.Time, c Conn) { w.end(w.event(kindEnd, t, c)) }

// end logs e, an end, naming its translation as briefly as the others
// open on its protocol and public address and port allow.
func (w *Writer) end(e event) {
	e.inside = 0
	k := e.key()
	if _, ok := w.open[k]; !ok { // its beginning is not in the log: all of it
		w.events = append(w.events, e)
		return
	}
	delete(w.open, k)
	pk, tk := k.publicOnly(), tagKey{k.publicOnly(), k.tag()}
	switch {
	case w.onPublic[pk] == 1:
		e.kind = kindEndOnly
	case w.onTag[tk] == 1:
		e.kind, e.hash = kindEndTag, uint32(k.tag())
	}
	if w.onPublic[pk]--; w.onPublic[pk] == 0 {
		delete(w.onPublic, pk)
	}
	if w.onTag[tk]--; w.onTag[tk] == 0 {
		delete(w.onTag, tk)
	}
	w.events = append(w.events, e)
}

// Loss logs that events between from and to may be missing.
func (w *Writer) Loss(from, to time.Time) {
	w.events = append(w.events, event{kind: kindLoss, at: millis(to), span: millis(to) - millis(from)})
}

// ClockStep logs that the wall clock stepped by step at t.
func (w *Writer) ClockStep(t time.Time, step time.Duration) {
	w.events = append(w.events, event{kind: kindClock, at: millis(t), span: step.Milliseconds()})
}

func (w *Writer) event(kind byte, t time.Time, c Conn) event {
	e := event{kind: kind, proto: c.Proto, clear: w.o.Plain, at: millis(t), inside: ap(c.Inside), public: ap(c.Public), dst: ap(c.Dst)}
	if !w.o.Plain {
		e.hash, e.dst = w.h.hash(c.Dst.Addr()), uint64(c.Dst.Port())
	}
	return e
}

// Opened returns how many translations are open.
func (w *Writer) Opened() int { return len(w.open) }

// Flush writes the events gathered as a block; a segment that has had its
// time or size is then sealed, what Keep no longer keeps pruned, and the
// next segment opened. When writing fails the events are dropped, the
// segment stays as it was, and the next block written opens with the
// window they fell in.
func (w *Writer) Flush(now time.Time) error {
	t := millis(now)
	if w.f == nil { // a segment torn by a failed write was left
		if err := w.openSegment(t); err != nil {
			return w.failed(t, err)
		}
	}
	if w.failing != 0 { // the window of the events dropped, even alone
		w.events = append(w.events, event{kind: kindLoss, at: t, span: t - w.failing})
	}
	if len(w.events) > 0 {
		if err := w.writeBlock(w.events); err != nil {
			return w.failed(t, err)
		}
		w.failing, w.events = 0, w.events[:0]
	}
	// The segment covers up to now, events or not: its modification time
	// says so to a lookup.
	w.flushed = t
	if err := os.Chtimes(w.path, now, now); err != nil {
		return w.failed(t, err)
	}
	if t-w.start >= w.o.Span.Milliseconds() || w.size >= w.o.MaxSize {
		if err := w.closeSegment(); err != nil {
			return err
		}
		if err := w.openSegment(t); err != nil {
			return w.failed(t, err)
		}
	}
	return nil
}

// failed drops the events gathered, noting since when writing fails.
func (w *Writer) failed(t int64, err error) error {
	if w.failing == 0 {
		w.failing = t
		for _, e := range w.events {
			if isConn(e.kind) {
				t = min(t, e.at)
			}
		}
		w.failing = t
	}
	w.Dropped += uint64(len(w.events))
	w.events = w.events[:0]
	return err
}

// writeBlock appends events to the open segment as one block; a write
// cut short is cut back off the segment.
func (w *Writer) writeBlock(events []event) error {
	w.raw = w.raw[:0]
	prev := int64(0)
	for i := range events {
		w.raw = appendEvent(w.raw, &events[i], prev)
		prev = events[i].at
	}
	frame := w.enc.EncodeAll(w.raw, make([]byte, blockHeader, blockHeader+len(w.raw)/4))
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-blockHeader))
	bi := blockInfo{offset: w.size, length: int64(len(frame)), first: events[0].at, last: events[0].at}
	for _, e := range events {
		bi.first, bi.last = min(bi.first, e.at), max(bi.last, e.at)
	}
	if _, err := w.f.Write(frame); err != nil {
		if terr := w.f.Truncate(w.size); terr != nil {
			// The segment ends in a torn block: the next block goes to a
			// new segment, and sealing reports the tail.
			w.f.Close()
			w.f = nil
			w.closeKeys()
		} else {
			w.f.Seek(w.size, 0)
		}
		return err // it names the segment
	}
	w.size += int64(len(frame))
	if w.keys != nil {
		// An entry cut short would misread the next: the running index
		// stops at the first that fails, and lookups read the blocks past
		// it.
		if _, err := w.keys.Write(appendKeysEntry(nil, bi, events)); err != nil {
			w.keys.Close()
			w.keys = nil
		}
	}
	return nil
}

// closeKeys closes the running index of the segment.
func (w *Writer) closeKeys() {
	if w.keys != nil {
		w.keys.Close()
		w.keys = nil
	}
}

// openSegment starts a segment at t, opening with the translations open.
func (w *Writer) openSegment(t int64) error {
	path := filepath.Join(w.dir, segmentName(t))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(header(w.o.Plain, t)); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	w.f, w.path, w.start, w.size, w.flushed = f, path, t, int64(headerSize), t
	if w.keys, err = os.OpenFile(strings.TrimSuffix(path, segmentExt)+keysExt, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
		w.keys = nil // lookups read every block of the segment
	}
	carried := make([]event, 0, min(len(w.open), carriedBlock))
	for _, e := range w.open {
		if carried = append(carried, e); len(carried) == carriedBlock {
			if err := w.writeBlock(carried); err != nil {
				return err
			}
			carried = carried[:0]
		}
	}
	if len(carried) > 0 {
		return w.writeBlock(carried)
	}
	return nil
}

// closeSegment closes and seals the open segment, and prunes.
func (w *Writer) closeSegment() error {
	f := w.f
	w.f = nil
	w.closeKeys()
	err := f.Close()
	if err == nil {
		_, err = seal(w.path, w.flushed)
	}
	if err == nil && w.o.Keep > 0 {
		err = w.prune(w.start - w.o.Keep.Milliseconds())
	}
	return err
}

// prune removes the sealed segments that ended before cut: those the next
// segment began after.
func (w *Writer) prune(cut int64) error {
	segs, err := segments(w.dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := 0; i+1 < len(segs); i++ {
		_, next, err := segmentStart(segs[i+1])
		if err != nil || next > cut || !sealed(segs[i]) {
			break
		}
		base := strings.TrimSuffix(segs[i], segmentExt)
		errs = append(errs, os.Remove(base+indexExt), os.Remove(segs[i]))
	}
	return errors.Join(errs...)
}

// segmentStart reads a segment's header.
func segmentStart(seg string) (plain bool, start int64, err error) {
	f, err := os.Open(seg)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	head := make([]byte, headerSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return false, 0, fmt.Errorf("%s: %w", seg, err)
	}
	return parseHeader(head)
}

// Close writes what is gathered and seals the open segment.
func (w *Writer) Close(now time.Time) error {
	err := w.Flush(now)
	if w.f != nil && err == nil {
		err = errors.Join(err, w.closeSegment())
	}
	w.enc.Close()
	return err
}

// Bytes returns the bytes of the log's files.
func (w *Writer) Bytes() int64 {
	var n int64
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}
