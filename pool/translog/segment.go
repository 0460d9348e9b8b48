package translog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
func (k key) tag() byte {
	var a [4]byte
	if k.dst.IsValid() {
		a = k.dst.As4()
	}
	return byte(k.hash) ^ a[3] ^ byte(k.dstPort)
}

// event is one event of a block, decoded.
type event struct {
	kind byte
	at   int64 // Unix milliseconds
	conn Conn  // Dst's address zero when the log keeps its hash
	hash uint32
	// span is a loss window's length before at, or a clock step.
	span int64
}

// key is what names a connection among those alive: Proto, Public and Dst
// (its hash when the address is not kept).
type key struct {
	proto   uint8
	public  netip.AddrPort
	dst     netip.Addr
	hash    uint32
	dstPort uint16
}

// publicOnly is the key's protocol and public address and port.
func (k key) publicOnly() key { return key{proto: k.proto, public: k.public} }

func (e *event) key() key {
	return key{e.conn.Proto, e.conn.Public, e.conn.Dst.Addr(), e.hash, e.conn.Dst.Port()}
}

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
		b = append(b, e.conn.Proto)
		b = appendAddrPort(b, e.conn.Inside)
		// The kernel keeps the source port when it is free: the public
		// port as a difference is mostly 0.
		a := e.conn.Public.Addr().As4()
		b = binary.AppendVarint(append(b, a[:]...), int64(e.conn.Public.Port())-int64(e.conn.Inside.Port()))
		b = appendDst(b, e)
	case kindEnd, kindEndOnly, kindEndTag:
		b = append(b, e.conn.Proto)
		b = appendAddrPort(b, e.conn.Public)
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

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	return binary.BigEndian.AppendUint16(append(b, a[:]...), ap.Port())
}

// appendDst encodes the destination: its address, or its hash, and its port.
func appendDst(b []byte, e *event) []byte {
	if e.conn.Dst.Addr().IsValid() {
		return appendAddrPort(b, e.conn.Dst)
	}
	b = binary.BigEndian.AppendUint32(b, e.hash)
	return binary.BigEndian.AppendUint16(b, e.conn.Dst.Port())
}

// errDamaged is a block whose events do not decode.
var errDamaged = errors.New("damaged block")

// decodeEvents calls fn with each event of a block's events, in order.
func decodeEvents(b []byte, plain bool, fn func(*event) error) error {
	var e event
	prev := int64(0)
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		kind, _ := r.ReadByte()
		d, err := binary.ReadVarint(r)
		if err != nil {
			return errDamaged
		}
		e = event{kind: kind, at: prev + d}
		prev = e.at
		switch kind {
		case kindStart, kindBefore:
			p, _ := r.ReadByte()
			e.conn.Proto = p
			e.conn.Inside = readAddrPort(r)
			var a [4]byte
			r.Read(a[:])
			d, err := binary.ReadVarint(r)
			if err != nil {
				return errDamaged
			}
			e.conn.Public = netip.AddrPortFrom(netip.AddrFrom4(a), uint16(int64(e.conn.Inside.Port())+d))
			readDst(r, &e, plain)
		case kindEnd, kindEndOnly, kindEndTag:
			p, _ := r.ReadByte()
			e.conn.Proto = p
			e.conn.Public = readAddrPort(r)
			switch kind {
			case kindEnd:
				readDst(r, &e, plain)
			case kindEndTag:
				tag, err := r.ReadByte()
				if err != nil {
					return errDamaged
				}
				e.hash = uint32(tag)
			}
		case kindLoss, kindClock:
			if e.span, err = binary.ReadVarint(r); err != nil {
				return errDamaged
			}
		default:
			return errDamaged
		}
		if r.Len() < 0 {
			return errDamaged
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

func readAddrPort(r *bytes.Reader) netip.AddrPort {
	var b [6]byte
	if n, _ := r.Read(b[:]); n < 6 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), binary.BigEndian.Uint16(b[4:]))
}

func readDst(r *bytes.Reader, e *event, plain bool) {
	ap := readAddrPort(r)
	if plain {
		e.conn.Dst = ap
		return
	}
	a := ap.Addr().As4()
	e.hash = binary.BigEndian.Uint32(a[:])
	e.conn.Dst = netip.AddrPortFrom(netip.Addr{}, ap.Port())
}

// publicKey is a public address and port as an index orders them.
type publicKey uint64

func publicKeyOf(ap netip.AddrPort) publicKey {
	a := ap.Addr().As4()
	return publicKey(uint64(binary.BigEndian.Uint32(a[:]))<<16 | uint64(ap.Port()))
}

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

// hasKey reports whether the encoded keys r reads next hold k, reading
// them all.
func hasKey(r io.ByteReader, k publicKey) (bool, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return false, errDamaged
	}
	found, cur := false, publicKey(0)
	for range n {
		d, err := binary.ReadUvarint(r)
		if err != nil {
			return false, errDamaged
		}
		cur += publicKey(d)
		found = found || cur == k
	}
	return found, nil
}

// sortedKeys returns the distinct public keys of events.
func sortedKeys(events []event) []publicKey {
	var keys []publicKey
	for i := range events {
		if e := &events[i]; isConn(e.kind) {
			keys = append(keys, publicKeyOf(e.conn.Public))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
