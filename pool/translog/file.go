package translog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Segment and index file names: the segment's start, UTC, so that names
// sort as time does.
const (
	segmentExt = ".seg"
	indexExt   = ".idx"
	// keysExt is the running index of a segment being written: an entry
	// for each block, appended after it, so that a lookup reads only the
	// blocks of its public address and port there too.
	keysExt    = ".keys"
	nameLayout = "20060102T150405.000Z"
	indexMagic = "NPTI\x01"
)

func segmentName(start int64) string {
	return fromMillis(start).Format(nameLayout) + segmentExt
}

// segments returns the paths of dir's segments, oldest first.
func segments(dir string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	slices.Sort(names)
	return names, err
}

// sealed reports whether a segment has its index.
func sealed(seg string) bool {
	_, err := os.Stat(strings.TrimSuffix(seg, segmentExt) + indexExt)
	return err == nil
}

// coveredUntil returns the time up to which a segment covers what
// happened: a sealed one's index carries the time it was sealed, one being
// written the time of its writer's last flush (each second, as its
// modification time). Past it, no natpool logged.
func coveredUntil(seg string) (int64, error) {
	path := seg
	if sealed(seg) {
		path = strings.TrimSuffix(seg, segmentExt) + indexExt
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return millis(st.ModTime()), nil
}

// blockInfo is where a block is in its segment and the times of its events.
type blockInfo struct {
	offset, length int64
	first, last    int64
}

// Damage is a segment's tail that is not whole blocks: a block cut short
// or not decoding. It is reported and left as it is.
type Damage struct {
	Segment string
	Offset  int64 // of the first byte not of a whole block
	Bytes   int64 // from there to the end
}

func (d *Damage) Error() string {
	return fmt.Sprintf("translation log segment %s: damaged tail at offset %d (%d bytes), left as it is", d.Segment, d.Offset, d.Bytes)
}

// decoders decode blocks; one serves every reader of the process.
var decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))

// scan reads a segment's blocks in order from offset from (0: the first)
// and calls fn with each block's place and decoded events (valid during the
// call). A tail that is not a whole block ends the scan with a *Damage.
func scan(seg string, from int64, fn func(i int, b blockInfo, events []event) error) (plain bool, start int64, err error) {
	f, err := os.Open(seg)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, 0, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	head := make([]byte, headerSize)
	if _, err := io.ReadFull(r, head); err != nil {
		return false, 0, &Damage{seg, 0, st.Size()}
	}
	if plain, start, err = parseHeader(head); err != nil {
		return false, 0, fmt.Errorf("%s: %w", seg, err)
	}
	offset := int64(headerSize)
	if from > offset {
		if _, err := r.Discard(int(from - offset)); err != nil {
			return plain, start, &Damage{seg, offset, st.Size() - offset}
		}
		offset = from
	}
	var frame, raw []byte
	var events []event
	for i := 0; offset < st.Size(); i++ {
		damaged := &Damage{seg, offset, st.Size() - offset}
		var lb [blockHeader]byte
		if _, err := io.ReadFull(r, lb[:]); err != nil {
			return plain, start, damaged
		}
		n := int64(binary.BigEndian.Uint32(lb[:]))
		if n > maxBlock || offset+blockHeader+n > st.Size() {
			return plain, start, damaged
		}
		frame = slices.Grow(frame[:0], int(n))[:n]
		if _, err := io.ReadFull(r, frame); err != nil {
			return plain, start, damaged
		}
		if raw, err = decoder.DecodeAll(frame, raw[:0]); err != nil {
			return plain, start, damaged
		}
		events = events[:0]
		if err := decodeEvents(raw, plain, func(e *event) error { events = append(events, *e); return nil }); err != nil || len(events) == 0 {
			return plain, start, damaged
		}
		b := blockInfo{offset: offset, length: blockHeader + n, first: events[0].at, last: events[0].at}
		for _, e := range events {
			b.first, b.last = min(b.first, e.at), max(b.last, e.at)
		}
		if err := fn(i, b, events); err != nil {
			return plain, start, err
		}
		offset += blockHeader + n
	}
	return plain, start, nil
}

// seal writes a segment's index from its blocks: each block's public keys,
// the log's marks (loss windows, clock steps), and each block's place and
// times. The index's modification time is at, until when the segment
// covers what happened. seal returns a damaged tail, indexed up to its
// last whole block.
func seal(seg string, at int64) (damage *Damage, err error) {
	tmp := strings.TrimSuffix(seg, segmentExt) + indexExt + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(indexMagic)
	z, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	var dir []blockInfo
	var marks []event
	var buf []byte
	_, _, err = scan(seg, 0, func(i int, b blockInfo, events []event) error {
		dir = append(dir, b)
		for _, e := range events {
			if e.kind == kindLoss || e.kind == kindClock {
				marks = append(marks, e)
			}
		}
		// Each block's keys behind their length: a lookup skips to the next
		// once it knows.
		keys := appendKeys(nil, sortedKeys(events))
		buf = append(binary.AppendUvarint(append(buf[:0], 1), uint64(len(keys))), keys...)
		_, err := z.Write(buf)
		return err
	})
	if errors.As(err, &damage) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	buf = binary.AppendUvarint(buf[:0], 0)
	buf = binary.AppendUvarint(buf, uint64(len(marks)))
	for i := range marks {
		buf = appendEvent(buf, &marks[i], 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(dir)))
	for _, b := range dir {
		buf = binary.AppendVarint(binary.AppendVarint(binary.AppendUvarint(binary.AppendUvarint(buf, uint64(b.offset)), uint64(b.length)), b.first), b.last)
	}
	if _, err := z.Write(buf); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Chtimes(tmp, fromMillis(at), fromMillis(at)); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, strings.TrimSuffix(seg, segmentExt)+indexExt); err != nil {
		return nil, err
	}
	// The running index of the blocks, which the index replaces.
	if err := os.Remove(strings.TrimSuffix(seg, segmentExt) + keysExt); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return damage, nil
}

// index is what a query reads of a sealed segment's index: the blocks
// holding a public key, the marks, and the directory.
type index struct {
	blocks []int // of the key, ascending
	marks  []event
	dir    []blockInfo
}

// readIndex reads a sealed segment's index for public key k.
func readIndex(seg string, k publicKey) (*index, error) {
	f, err := os.Open(strings.TrimSuffix(seg, segmentExt) + indexExt)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	head := make([]byte, len(indexMagic))
	if _, err := io.ReadFull(br, head); err != nil || string(head) != indexMagic {
		return nil, fmt.Errorf("%s: not a translation log index", f.Name())
	}
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	r := bufio.NewReaderSize(zr, 256<<10)
	damaged := fmt.Errorf("%s: damaged index", f.Name())
	ix := &index{}
	var keys []byte
	for i := 0; ; i++ {
		more, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, damaged
		}
		if more == 0 {
			break
		}
		n, err := binary.ReadUvarint(r)
		if err != nil || n > maxBlock {
			return nil, damaged
		}
		keys = slices.Grow(keys[:0], int(n))[:n]
		if _, err := io.ReadFull(r, keys); err != nil {
			return nil, damaged
		}
		has, err := hasKey(keys, k)
		if err != nil {
			return nil, damaged
		}
		if has {
			ix.blocks = append(ix.blocks, i)
		}
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, damaged
	}
	for range n {
		e, err := readEvent(r)
		if err != nil {
			return nil, damaged
		}
		ix.marks = append(ix.marks, e)
	}
	if n, err = binary.ReadUvarint(r); err != nil {
		return nil, damaged
	}
	for range n {
		var b blockInfo
		var o, l uint64
		o, err1 := binary.ReadUvarint(r)
		l, err2 := binary.ReadUvarint(r)
		f, err3 := binary.ReadVarint(r)
		la, err4 := binary.ReadVarint(r)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, damaged
		}
		b.offset, b.length, b.first, b.last = int64(o), int64(l), f, la
		ix.dir = append(ix.dir, b)
	}
	return ix, nil
}

// readEvent reads one mark (a loss or clock event, encoded relative to 0).
func readEvent(r io.ByteReader) (event, error) {
	kind, err := r.ReadByte()
	if err != nil {
		return event{}, err
	}
	at, err1 := binary.ReadVarint(r)
	span, err2 := binary.ReadVarint(r)
	return event{kind: kind, at: at, span: span}, errors.Join(err1, err2)
}

// readBlock reads and decodes one block of a segment.
func readBlock(f *os.File, b blockInfo, plain bool, fn func(*event) error) error {
	frame := make([]byte, b.length)
	if _, err := f.ReadAt(frame, b.offset); err != nil {
		return err
	}
	raw, err := decoder.DecodeAll(frame[blockHeader:], nil)
	if err != nil {
		return fmt.Errorf("%s: block at offset %d: %w", f.Name(), b.offset, err)
	}
	return decodeEvents(raw, plain, fn)
}

// appendKeysEntry encodes a running index entry: the block's place and
// times, its marks and its public keys, behind the entry's length.
func appendKeysEntry(b []byte, bi blockInfo, events []event) []byte {
	var p []byte
	p = binary.AppendVarint(binary.AppendVarint(binary.AppendUvarint(binary.AppendUvarint(p, uint64(bi.offset)), uint64(bi.length)), bi.first), bi.last)
	var marks []event
	for _, e := range events {
		if e.kind == kindLoss || e.kind == kindClock {
			marks = append(marks, e)
		}
	}
	p = binary.AppendUvarint(p, uint64(len(marks)))
	for i := range marks {
		p = appendEvent(p, &marks[i], 0)
	}
	p = appendKeys(p, sortedKeys(events))
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

// readKeys reads a segment's running index for public key k: the blocks
// it lists that hold k, every block's marks, and the offset up to which it
// lists the blocks (past it, a lookup reads every block). A torn last
// entry ends it.
func readKeys(seg string, k publicKey) (blocks []blockInfo, marks []event, upTo int64) {
	f, err := os.Open(strings.TrimSuffix(seg, segmentExt) + keysExt)
	if err != nil {
		return nil, nil, 0
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var whole []byte // an entry, read one at a time: an hour's index is large
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > maxBlock {
			break
		}
		whole = slices.Grow(whole[:0], int(n))[:n]
		if _, err := io.ReadFull(r, whole); err != nil {
			break
		}
		entry := bytes.NewReader(whole)
		var bi blockInfo
		o, err1 := binary.ReadUvarint(entry)
		l, err2 := binary.ReadUvarint(entry)
		bi.first, err = binary.ReadVarint(entry)
		last, err3 := binary.ReadVarint(entry)
		nm, err4 := binary.ReadUvarint(entry)
		if errors.Join(err1, err2, err3, err4, err) != nil {
			break
		}
		bi.offset, bi.length, bi.last = int64(o), int64(l), last
		var ms []event
		for range nm {
			e, err := readEvent(entry)
			if err != nil {
				return blocks, marks, upTo
			}
			ms = append(ms, e)
		}
		has, err := hasKey(whole[len(whole)-entry.Len():], k) // the keys, last
		if err != nil {
			break
		}
		marks = append(marks, ms...)
		if has {
			blocks = append(blocks, bi)
		}
		upTo = bi.offset + bi.length
	}
	return blocks, marks, upTo
}
