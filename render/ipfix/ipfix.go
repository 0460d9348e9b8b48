// Package ipfix encodes NAT44 session events as IPFIX (RFC 7011) messages
// in the form RFC 8158 gives them, which the collectors of CGNAT operators
// read (nfdump's nfcapd among them).
package ipfix

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Event is a NAT44 session that was created or deleted.
type Event struct {
	At     time.Time
	Create bool // created; else deleted
	Proto  uint8
	Inside netip.AddrPort // before NAT
	Public netip.AddrPort // after NAT
	Dst    netip.AddrPort
}

// The natEvent values of NAT44 sessions (IANA's NAT Event Type registry).
const (
	natEventCreate = 1
	natEventDelete = 2
)

// TemplateID is the template of natpool's data records.
const TemplateID = 256

// field is an information element of the template: its id and length.
type field struct{ id, length uint16 }

// template is RFC 8158's NAT44 session create and delete event, without
// VRFs: a Linux NAT box has one.
var template = []field{
	{323, 8}, // observationTimeMilliseconds
	{230, 1}, // natEvent
	{8, 4},   // sourceIPv4Address
	{225, 4}, // postNATSourceIPv4Address
	{4, 1},   // protocolIdentifier
	{7, 2},   // sourceTransportPort
	{227, 2}, // postNAPTSourceTransportPort
	{12, 4},  // destinationIPv4Address
	{226, 4}, // postNATDestinationIPv4Address
	{11, 2},  // destinationTransportPort
	{228, 2}, // postNAPTDestinationTransportPort
}

// recordSize is the bytes of a data record.
const recordSize = 8 + 1 + 4 + 4 + 1 + 2 + 2 + 4 + 4 + 2 + 2

// MaxMessage bounds a message: one UDP datagram that crosses any path
// without fragments.
const MaxMessage = 1400

const (
	headerSize    = 16
	setHeaderSize = 4
	templateSet   = 2
)

// Encoder makes the messages of one observation domain. Over UDP the
// template goes with the first message and again every TemplateRefresh,
// so that a collector that starts later learns it (RFC 7011, 8.4).
type Encoder struct {
	Domain          uint32
	TemplateRefresh time.Duration
	seq             uint32 // data records sent before the message being made
	templateSent    time.Time
	records         [][]byte // the data records waiting
}

// Add takes an event for the next message.
func (e *Encoder) Add(ev Event) {
	r := make([]byte, 0, recordSize)
	r = binary.BigEndian.AppendUint64(r, uint64(ev.At.UnixMilli()))
	r = append(r, map[bool]byte{true: natEventCreate, false: natEventDelete}[ev.Create])
	r = appendAddr(r, ev.Inside.Addr())
	r = appendAddr(r, ev.Public.Addr())
	r = append(r, ev.Proto)
	r = binary.BigEndian.AppendUint16(r, ev.Inside.Port())
	r = binary.BigEndian.AppendUint16(r, ev.Public.Port())
	r = appendAddr(r, ev.Dst.Addr())
	r = appendAddr(r, ev.Dst.Addr()) // no destination NAT
	r = binary.BigEndian.AppendUint16(r, ev.Dst.Port())
	r = binary.BigEndian.AppendUint16(r, ev.Dst.Port())
	e.records = append(e.records, r)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.Is4() {
		return append(b, 0, 0, 0, 0)
	}
	v := a.As4()
	return append(b, v[:]...)
}

// Messages returns the messages that carry the events added since the
// last call, each within MaxMessage, the template first when it is due.
func (e *Encoder) Messages(now time.Time) [][]byte {
	var out [][]byte
	refresh := e.TemplateRefresh
	if refresh <= 0 {
		refresh = time.Minute
	}
	for len(e.records) > 0 || e.templateSent.IsZero() || now.Sub(e.templateSent) >= refresh {
		m := make([]byte, headerSize, MaxMessage)
		if e.templateSent.IsZero() || now.Sub(e.templateSent) >= refresh {
			m = appendTemplate(m)
			e.templateSent = now
		}
		n := min(len(e.records), (MaxMessage-len(m)-setHeaderSize)/recordSize)
		if n > 0 {
			m = binary.BigEndian.AppendUint16(m, TemplateID)
			m = binary.BigEndian.AppendUint16(m, uint16(setHeaderSize+n*recordSize))
			for _, r := range e.records[:n] {
				m = append(m, r...)
			}
		}
		binary.BigEndian.PutUint16(m[0:], 10) // version: IPFIX
		binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
		binary.BigEndian.PutUint32(m[4:], uint32(now.Unix()))
		binary.BigEndian.PutUint32(m[8:], e.seq) // data records before this message
		binary.BigEndian.PutUint32(m[12:], e.Domain)
		e.seq += uint32(n)
		e.records = e.records[n:]
		out = append(out, m)
	}
	e.records = nil
	return out
}

// appendTemplate appends the template set.
func appendTemplate(m []byte) []byte {
	m = binary.BigEndian.AppendUint16(m, templateSet)
	m = binary.BigEndian.AppendUint16(m, uint16(setHeaderSize+4+4*len(template)))
	m = binary.BigEndian.AppendUint16(m, TemplateID)
	m = binary.BigEndian.AppendUint16(m, uint16(len(template)))
	for _, f := range template {
		m = binary.BigEndian.AppendUint16(m, f.id)
		m = binary.BigEndian.AppendUint16(m, f.length)
	}
	return m
}
