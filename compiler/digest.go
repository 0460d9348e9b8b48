package compiler

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/natpool/natpool/pool"
)

// DigestVersion names the canonical form Digest hashes. It changes only
// when that form does, and every stamped file and table then looks stale.
const DigestVersion = "natpool-digest-v1"

// Digest identifies a plan by everything that decides what the kernel does
// with it, and nothing else: the same mapping and rules give the same digest
// across natpool versions and kernel encodings (compact or per-host port
// blocks alike). It is the first 16 hex digits of the SHA-256 of this text,
// a line each:
//
//	natpool-digest-v1
//	table NAME
//	ct-label BIT
//	egress NAME                    for each egress entry, in spec order:
//	oif NAME                       ("" for any interface)
//	inside FIRST-LAST              for each range of mapped inside hosts
//	ports LO-HI
//	then the mapping, by strategy:
//	octet BITS                     and "values LO-HI ADDR" per public address
//	hash SEED BUCKETS              and "buckets LO-HI ADDR" per run of buckets
//	persistent FIRST-LAST
//	block WINDOW SPLIT             and "cut P OFFSET SIZE BLOCK-SIZE" per group
//	                               of each pattern P (0, 1) of the window,
//	                               "hosts FIRST-LAST" per range numbered, and
//	                               "public ADDR" per public address
//	then, for a plan with nodes (natpool 0.2.0 on; a plan without is as before):
//	cluster CHUNK TABLE PRIORITY MARK
//	node NAME WEIGHT ADDRESS AS NEIGHBOR NEIGHBOR-AS SOURCE HOLD   for each node, in spec order
//
// Addresses are dotted quads, numbers decimal (the seed 0x hex).
func Digest(p *pool.Plan) string {
	h := sha256.New()
	canonical(h, p)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// canonical writes the text Digest hashes, a line at a time: a hash plan
// has tens of thousands of runs.
func canonical(w io.Writer, p *pool.Plan) {
	var b []byte
	line := func(parts ...any) {
		b = b[:0]
		for i, part := range parts {
			if i > 0 {
				b = append(b, ' ')
			}
			switch v := part.(type) {
			case string:
				b = append(b, v...)
			case int:
				b = strconv.AppendInt(b, int64(v), 10)
			case uint64:
				b = strconv.AppendUint(b, v, 10)
			case netip.Addr:
				b = v.AppendTo(b)
			case fmt.Stringer:
				b = append(b, v.String()...)
			}
		}
		w.Write(append(b, '\n'))
	}
	span := func(lo, hi fmt.Stringer) string { return lo.String() + "-" + hi.String() }
	line(DigestVersion)
	line("table", p.Table)
	line("ct-label", p.CTLabel)
	for _, e := range p.Egress {
		line("egress", e.Name)
		line("oif", strconv.Quote(e.OIF))
		for _, r := range e.Inside.Ranges() {
			line("inside", span(r.From(), r.To()))
		}
		line("ports", e.Ports)
		switch m := e.Mapping.(type) {
		case *pool.OctetMapping:
			line("octet", m.Bits)
			for i, v := range m.Values {
				line("values", v, e.Pool[i].Addr)
			}
		case *pool.HashMapping:
			line("hash", fmt.Sprintf("%#x", m.Seed), len(m.Owners))
			for _, run := range m.Runs() { // up to a million: the line written in place
				b = strconv.AppendUint(append(b[:0], "buckets "...), uint64(run.Lo), 10)
				b = strconv.AppendUint(append(b, '-'), uint64(run.Hi), 10)
				b = e.Pool[run.Owner].Addr.AppendTo(append(b, ' '))
				w.Write(append(b, '\n'))
			}
		case *pool.PersistentMapping:
			line("persistent", span(m.First, m.Last))
		case *pool.BlockMapping:
			line("block", m.Window, m.Split)
			for p, cut := range m.Patterns {
				for _, g := range cut {
					line("cut", p, g.Offset, g.Size, g.BlockSize)
				}
			}
			for _, r := range e.Private {
				line("hosts", span(r.From(), r.To()))
			}
			for _, a := range e.Pool {
				line("public", a.Addr)
			}
		}
	}
	// The nodes decide who serves which chunk, and how: they are part of
	// what the kernels and routers of a cluster do.
	if c := p.Cluster; c != nil {
		line("cluster", c.ChunkBits, c.Table, c.Priority, fmt.Sprintf("%#x", c.Mark))
		for _, n := range c.Nodes {
			b := n.BGP
			line("node", n.Name, n.Weight, n.Address, uint64(b.AS), b.Neighbor, uint64(b.NeighborAS), b.Source, b.Hold)
		}
	}
}
