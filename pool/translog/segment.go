package translog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// A segment file is a header and blocks. The header is the magic, the
// format's version, flags and the segment's start (Unix milliseconds); a
// block is its length (4 bytes) and a zstd frame of events.
const (
	magic       = "NPTL"
	version     = 1
	headerSize  = len(magic) + 2 + 8
	flagPlain   = 1 // destinations in clear
	blockHeader = 4
	// maxBlock bounds a block's frame: a length above it is damage.
	maxBlock = 64 << 20
)

// The kinds of event in a block.
const (
	kindStart  = 1 // a translation began
	kindBefore = 2 // a translation there when the log began or resumed
	kindEnd    = 3 // a translation ended
	kindLoss   = 4 // events of a window may be missing
	kindClock  = 5 // the wall clock stepped
	// An end names its translation by protocol and public address and
	// port alone when it was the only one open on them (kindEndOnly), or
	// with its destination's tag when that tells it from the others
	// (kindEndTag): a destination's hash, repeated in every end, would be
	// a third of the log.
	kindEndOnly = 6
	kindEndTag  = 7
)

// isConn reports whether events of kind are of a translation.
func isConn(kind byte) bool { return kind <= kindEnd || kind >= kindEndOnly }

// tag is the byte of a destination that an end may name it by.
func (k key) tag() byte { return byte(k.hash) ^ byte(k.dst>>16) ^ byte(k.dst) }

// event is one event of a block, decoded. It holds no pointer (addresses
// and ports are packed as ap does), so that the writer's millions of open
// translations cost the garbage collector nothing to scan.
type event struct {
	kind  byte
	proto uint8
	// clear: dst holds the destination's address; else only its port,
	// and hash its address's keyed hash.
	clear               bool
	at                  int64 // Unix milliseconds
	inside, public, dst uint64
	hash                uint32
	// span is a loss window's length before at, or a clock step.
	span int64
}

// ap packs an IPv4 address and port in one word: the address above the
// port, so that words order as addresses, then ports.
func ap(a netip.AddrPort) uint64 {
	if !a.Addr().Is4() {
		return uint64(a.Port())
	}
	v := a.Addr().As4()
	return uint64(binary.BigEndian.Uint32(v[:]))<<16 | uint64(a.Port())
}

// unap unpacks what ap packed.
func unap(v uint64) netip.AddrPort {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], uint32(v>>16))
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(v))
}

// conn returns the event's connection, its destination's address the zero
// Addr when the log keeps its hash.
func (e *event) conn() Conn {
	c := Conn{Proto: e.proto, Inside: unap(e.inside), Public: unap(e.public), Dst: unap(e.dst)}
	if !e.clear {
		c.Dst = netip.AddrPortFrom(netip.Addr{}, uint16(e.dst))
	}
	return c
}

// key is what names a connection among those alive: its protocol, public
// address and port, and destination (its hash when the address is not
// kept).
type key struct {
	proto  uint8
	public uint64
	dst    uint64
	hash   uint32
}

// publicOnly is the key's protocol and public address and port.
func (k key) publicOnly() key { return key{proto: k.proto, public: k.public} }

func (e *event) key() key { return key{e.proto, e.public, e.dst, e.hash} }

// header encodes a segment's header.
func header(plain bool, start int64) []byte {
	b := append([]byte(magic), version, 0)
	if plain {
		b[len(magic)+1] = flagPlain
	}
	return binary.BigEndian.AppendUint64(b, uint64(start))
}

// parseHeader decodes a segment's header.
func parseHeader(b []byte) (plain bool, start int64, err error) {
	if len(b) < headerSize || string(b[:len(magic)]) != magic {
		return false, 0, errors.New("not a natpool translation log segment")
	}
	if b[len(magic)] != version {
		return false, 0, fmt.Errorf("segment format version %d, this natpool reads %d", b[len(magic)], version)
	}
	return b[len(magic)+1]&flagPlain != 0, int64(binary.BigEndian.Uint64(b[len(magic)+2:])), nil
}

// appendEvent encodes e after b; prev is the time of the event before it
// in the block, and the block's first event's time is relative to 0.
func appendEvent(b []byte, e *event, prev int64) []byte {
	b = append(b, e.kind)
	b = binary.AppendVarint(b, e.at-prev)
	switch e.kind {
	case kindStart, kindBefore:
		b = appendAP(append(b, e.proto), e.inside)
		// The kernel keeps the source port when it is free: the public
		// port as a difference is mostly 0.
		b = binary.BigEndian.AppendUint32(b, uint32(e.public>>16))
		b = binary.AppendVarint(b, int64(uint16(e.public))-int64(uint16(e.inside)))
		b = appendDst(b, e)
	case kindEnd, kindEndOnly, kindEndTag:
		b = appendAP(append(b, e.proto), e.public)
		switch e.kind {
		case kindEnd:
			b = appendDst(b, e)
		case kindEndTag:
			b = append(b, byte(e.hash))
		}
	case kindLoss, kindClock:
		b = binary.AppendVarint(b, e.span)
	}
	return b
}

// appendAP encodes an address and port packed by ap: 6 bytes.
func appendAP(b []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(b, uint32(v>>16)), uint16(v))
}

// appendDst encodes the destination: its address, or its hash, and its port.
func appendDst(b []byte, e *event) []byte {
	if e.clear {
		return appendAP(b, e.dst)
	}
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(b, e.hash), uint16(e.dst))
}

// errDamaged is a block whose events do not decode.
var errDamaged = errors.New("damaged block")

// decodeEvents calls fn with each event of a block's events, in order.
func decodeEvents(b []byte, plain bool, fn func(*event) error) error {
	var e event
	prev := int64(0)
	r := reader{b: b}
	for len(r.b) > 0 {
		kind := r.byte()
		e = event{kind: kind, at: prev + r.varint(), clear: plain}
		prev = e.at
		switch kind {
		case kindStart, kindBefore:
			e.proto = r.byte()
			e.inside = r.ap()
			addr := uint64(r.uint32())
			e.public = addr<<16 | uint64(uint16(int64(uint16(e.inside))+r.varint()))
			r.dst(&e)
		case kindEnd, kindEndOnly, kindEndTag:
			e.proto = r.byte()
			e.public = r.ap()
			switch kind {
			case kindEnd:
				r.dst(&e)
			case kindEndTag:
				e.hash = uint32(r.byte())
			}
		case kindLoss, kindClock:
			e.span = r.varint()
		default:
			return errDamaged
		}
		if r.short {
			return errDamaged
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

// reader reads a block's events; short says it ran past their end.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) take(n int) []byte {
	if len(r.b) < n {
		r.short, r.b = true, nil
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte     { return r.take(1)[0] }
func (r *reader) uint32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) ap() uint64 {
	return uint64(r.uint32())<<16 | uint64(binary.BigEndian.Uint16(r.take(2)))
}
func (r *reader) varint() (v int64) {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.short, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// dst reads a destination: its address, or its hash, and its port.
func (r *reader) dst(e *event) {
	if e.clear {
		e.dst = r.ap()
		return
	}
	e.hash = r.uint32()
	e.dst = uint64(binary.BigEndian.Uint16(r.take(2)))
}

// publicKey is a public address and port, packed as ap packs them: as an
// index orders them.
type publicKey uint64

// appendKeys encodes a block's sorted, distinct public keys.
func appendKeys(b []byte, keys []publicKey) []byte {
	b = binary.AppendUvarint(b, uint64(len(keys)))
	prev := publicKey(0)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(k-prev))
		prev = k
	}
	return b
}

// hasKey reports whether the encoded keys b hold k. The keys ascend: it
// stops at the first not below k.
func hasKey(b []byte, k publicKey) (bool, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 {
		return false, errDamaged
	}
	b = b[w:]
	cur := publicKey(0)
	for range n {
		d, w := binary.Uvarint(b)
		if w <= 0 {
			return false, errDamaged
		}
		if cur += publicKey(d); cur >= k {
			return cur == k, nil
		}
		b = b[w:]
	}
	return false, nil
}

// sortedKeys returns the distinct public keys of events.
func sortedKeys(events []event) []publicKey {
	var keys []publicKey
	for i := range events {
		if e := &events[i]; isConn(e.kind) {
			keys = append(keys, publicKey(e.public))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
