package compiler

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"

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
//
// Addresses are dotted quads, numbers decimal (the seed 0x hex).
func Digest(p *pool.Plan) string {
	h := sha256.New()
	canonical(h, p)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// canonical writes the text Digest hashes.
func canonical(w io.Writer, p *pool.Plan) {
	line := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	line(DigestVersion)
	line("table %s", p.Table)
	line("ct-label %d", p.CTLabel)
	for _, e := range p.Egress {
		line("egress %s", e.Name)
		line("oif %q", e.OIF)
		for _, r := range e.Inside.Ranges() {
			line("inside %s-%s", r.From(), r.To())
		}
		line("ports %s", e.Ports)
		switch m := e.Mapping.(type) {
		case *pool.OctetMapping:
			line("octet %d", m.Bits)
			for i, v := range m.Values {
				line("values %s %s", v, e.Pool[i].Addr)
			}
		case *pool.HashMapping:
			line("hash %#x %d", m.Seed, len(m.Owners))
			for _, b := range bucketRuns(len(m.Owners), func(i int) netip.Addr { return e.Pool[m.Owners[i]].Addr }) {
				line("buckets %d-%d %s", b.Lo, b.Hi, b.Addr)
			}
		case *pool.PersistentMapping:
			line("persistent %s-%s", m.First, m.Last)
		case *pool.BlockMapping:
			line("block %d %d", m.Window, m.Split)
			for p, cut := range m.Patterns {
				for _, g := range cut {
					line("cut %d %d %d %d", p, g.Offset, g.Size, g.BlockSize)
				}
			}
			for _, r := range e.Private {
				line("hosts %s-%s", r.From(), r.To())
			}
			for _, a := range e.Pool {
				line("public %s", a.Addr)
			}
		}
	}
}
