package compiler

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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
//	then, for an uplink (natpool 0.2.0 on; an entry without is as before):
//	gateway ADDR                   when the spec gives it
//	probe RELIABILITY INTERVAL TIMEOUT DOWN UP LATENCY LOSS   and "target KIND:ADDR[:PORT]" per target
//	npt INSIDE=PUBLIC              for each IPv6 prefix translation (PUBLIC may
//	                               be from-interface; natpool 0.2.0 on)
//	then, for a plan with nodes (natpool 0.2.0 on; a plan without is as before):
//	cluster CHUNK TABLE PRIORITY MARK
//	node NAME WEIGHT ADDRESS AS NEIGHBOR NEIGHBOR-AS SOURCE HOLD   for each node, in spec order
//	then, for a plan with uplinks (natpool 0.2.0 on):
//	uplinks POLICY STICKY TABLE PRIORITY MARK SEED BUCKETS
//	member NAME WEIGHT LABEL       for each member, in order, and for balance
//	                               "uplink-buckets LO-HI MEMBER" per run of buckets
//	then, for each service (natpool 0.2.0 on):
//	service NAME PROTOCOL INSIDE PORTS
//	service-public EGRESS ADDR PORTS   for each of its public entries
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
	c := pool.NewCanonical(w)
	span := func(lo, hi fmt.Stringer) string { return lo.String() + "-" + hi.String() }
	c.Line(DigestVersion)
	c.Line("table", p.Table)
	c.Line("ct-label", p.CTLabel)
	for _, e := range p.Egress {
		c.Line("egress", e.Name)
		c.Line("oif", strconv.Quote(e.OIF))
		for _, r := range e.Inside.Ranges() {
			c.Line("inside", span(r.From(), r.To()))
		}
		c.Line("ports", e.Ports)
		e.Canonical(c)
		if e.Gateway.IsValid() {
			c.Line("gateway", e.Gateway)
		}
		if pr := e.Probe; pr != nil {
			c.Line("probe", pr.Reliability, pr.Interval.String(), pr.Timeout.String(), pr.Down, pr.Up, pr.Latency.String(), strconv.FormatFloat(pr.Loss, 'g', -1, 64))
			for _, t := range pr.Targets {
				c.Line("target", t)
			}
		}
		for _, n := range e.NPT {
			c.Line("npt", n)
		}
	}
	// The nodes decide who serves which chunk, and how: they are part of
	// what the kernels and routers of a cluster do.
	if cl := p.Cluster; cl != nil {
		c.Line("cluster", cl.ChunkBits, cl.Table, cl.Priority, fmt.Sprintf("%#x", cl.Mark))
		for _, n := range cl.Nodes {
			b := n.BGP
			c.Line("node", n.Name, n.Weight, n.Address, uint64(b.AS), b.Neighbor, uint64(b.NeighborAS), b.Source, b.Hold)
		}
	}
	if u := p.Uplinks; u != nil {
		c.Line("uplinks", string(u.Policy), strconv.FormatBool(u.Sticky), u.Table, u.Priority, fmt.Sprintf("%#x", u.Mark), fmt.Sprintf("%#x", u.Seed), u.Buckets())
		for _, m := range u.Members {
			c.Line("member", m.Name, m.Weight, m.Label)
		}
		if u.Owners != nil {
			for _, r := range u.Runs() {
				c.Line("uplink-buckets", strconv.Itoa(int(r.Lo))+"-"+strconv.Itoa(int(r.Hi)), r.Owner)
			}
		}
	}
	for i := range p.Services {
		p.Services[i].Canonical(c)
	}
}
