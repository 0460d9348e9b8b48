//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go4.org/netipx"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
)

// Mismatch is a packet the table treats otherwise than the plan says.
type Mismatch struct {
	Egress string
	Packet string // "tcp from 100.64.0.1 out wan0"
	Want   string // what the plan says: "snat to 198.18.0.0 ports 1087-1149"
	Have   string // what the table does
}

// Verification is what Verify found.
type Verification struct {
	Packets  int        // packets run through the table
	Wrong    int        // of them, treated otherwise than the plan says
	Examples []Mismatch // the first of them
}

// maxExamples bounds the mismatches a Verification keeps.
const maxExamples = 8

func (v *Verification) add(m Mismatch) {
	v.Wrong++
	if len(v.Examples) < maxExamples {
		v.Examples = append(v.Examples, m)
	}
}

// Difference is the verification as drift: the plan's fate and the
// table's of each example packet; nothing when every packet agreed.
func (v *Verification) Difference() []compiler.Difference {
	if v.Wrong == 0 {
		return nil
	}
	d := compiler.Difference{Object: fmt.Sprintf("translations (%d of %d packets leave otherwise than the plan says; the first %d shown)", v.Wrong, v.Packets, len(v.Examples))}
	for _, m := range v.Examples {
		d.Missing = append(d.Missing, fmt.Sprintf("%s: %s (egress %s)", m.Packet, m.Want, m.Egress))
		d.Extra = append(d.Extra, fmt.Sprintf("%s: %s (egress %s)", m.Packet, m.Have, m.Egress))
	}
	return []compiler.Difference{d}
}

// probeDst is the destination of the packets Verify sends: natpool's rules
// do not look at it.
var probeDst = netip.AddrFrom4([4]byte{198, 51, 100, 7})

// Verify runs packets through prog as the kernel would and compares their
// fate with the plan's own lookup, address by address: for every inside
// address of every egress entry, and the addresses just outside its ranges,
// a TCP packet and an ICMP one leaving through the entry's interface. A
// mapped host's must be translated to its public address, with its port
// block (or the entry's port range) for TCP, and natpool's conntrack label;
// any other address's must be left alone, or translated as the egress entry
// that maps it says. For a node of a cluster (routes are natpool's policy
// rules, in force or planned) a host's packet must also be marked for the
// nodes ranked above this one for its address, in rank order, and one
// routed to a peer must leave untranslated.
//
// The addresses are checked a chunk at a time by one worker per processor:
// a /10 is 8 million packets.
func Verify(prog *Program, p *pool.Plan, node string, routes []compiler.PolicyRule) (Verification, error) {
	steer := newSteerCheck(p, node, routes)
	type chunk struct {
		e      *pool.Egress
		lo, hi uint32
	}
	var chunks []chunk
	for _, e := range p.Egress {
		for _, r := range e.Private {
			for _, x := range []netip.Addr{r.From().Prev(), r.To().Next()} {
				if x.IsValid() && !slices.ContainsFunc(e.Private, func(r netipx.IPRange) bool { return r.Contains(x) }) {
					chunks = append(chunks, chunk{e, pool.Uint32(x), pool.Uint32(x)})
				}
			}
			for lo, hi := pool.Uint32(r.From()), pool.Uint32(r.To()); ; lo += verifyChunk {
				chunks = append(chunks, chunk{e, lo, min(hi, lo+verifyChunk-1)})
				if hi-lo < verifyChunk {
					break
				}
			}
		}
	}
	results := make([]Verification, len(chunks))
	errs := make([]error, len(chunks))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(chunks); i = int(next.Add(1) - 1) {
				c := chunks[i]
				vr := &verifier{prog: prog, plan: p, steer: steer}
				oif := interfaceFor(c.e.OIF)
				for x := c.lo; ; x++ {
					if errs[i] = vr.address(c.e, pool.AddrFromUint32(x), oif); errs[i] != nil || x == c.hi {
						break
					}
				}
				results[i] = vr.v
			}
		})
	}
	wg.Wait()
	var v Verification
	for i, r := range results {
		if errs[i] != nil {
			return v, errs[i]
		}
		v.Packets += r.Packets
		v.Wrong += r.Wrong - len(r.Examples)
		for _, m := range r.Examples {
			v.add(m)
		}
	}
	return v, nil
}

// verifyChunk is how many addresses a worker of Verify takes at a time.
const verifyChunk = 1 << 16

type verifier struct {
	prog  *Program
	plan  *pool.Plan
	steer *steerCheck
	v     Verification
}

// address checks the packets from x leaving through oif, an interface of
// egress entry e.
func (vr *verifier) address(e *pool.Egress, x netip.Addr, oif string) error {
	// The first entry whose rule meets the packet and maps x decides,
	// as the kernel's first matching rule does.
	owner, h := e, pool.Host{}
	mapped := false
	for _, e2 := range vr.plan.Egress {
		if e2.OIF == "" || pool.MatchesInterface(e2.OIF, oif) {
			if h, mapped = e2.Host(x); mapped {
				owner = e2
				break
			}
		}
	}
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_ICMP} {
		pkt := Packet{Src: x, Dst: probeDst, Proto: proto, OIF: oif}
		out, err := vr.prog.Run(compiler.Chain, pkt)
		if err != nil {
			return err
		}
		var want fate
		if mapped {
			want = fate{addr: h.Public, ports: portsFor(owner, h, proto), labelled: true}
		}
		vr.v.Packets++
		if have := fateOf(out, x, vr.plan.CTLabel); have != want {
			vr.v.add(Mismatch{owner.Name, packetText(pkt), want.String(vr.plan.CTLabel), have.String(vr.plan.CTLabel)})
		}
	}
	// The guard drops an inside host's packet whose connection no source
	// NAT translated, and only that, out of the entry's interface.
	guarded := slices.ContainsFunc(vr.plan.Egress, func(e2 *pool.Egress) bool {
		return (e2.OIF == "" || pool.MatchesInterface(e2.OIF, oif)) && e2.Inside.Contains(x)
	})
	for _, status := range []uint32{0, ipsSrcNAT} {
		pkt := Packet{Src: x, Dst: probeDst, Proto: unix.IPPROTO_TCP, OIF: oif, CtStatus: status}
		out, err := vr.prog.Run(compiler.GuardChain, pkt)
		if err != nil {
			return err
		}
		vr.v.Packets++
		if want := guarded && status == 0; out.Drop != want {
			vr.v.add(Mismatch{owner.Name, "guard " + packetText(pkt), guardText(want), guardText(out.Drop)})
		}
	}
	if mapped && vr.steer != nil {
		m, err := vr.steer.check(vr.prog, h, oif)
		if err != nil {
			return err
		}
		vr.v.Packets += 3
		if m != nil {
			m.Egress = owner.Name
			vr.v.add(*m)
		}
	}
	return nil
}

// portsFor is the port range a packet of proto from h leaves with: its
// block in block mode, the entry's port range when it is not the default,
// for TCP (and UDP); none (zero) otherwise.
func portsFor(e *pool.Egress, h pool.Host, proto uint8) pool.PortRange {
	_, block := e.Mapping.(*pool.BlockMapping)
	if proto != unix.IPPROTO_TCP || !block && e.Ports == pool.DefaultPorts {
		return pool.PortRange{}
	}
	return h.Ports
}

// fate is what becomes of a packet, as Verify compares it: the zero fate is
// left untranslated; a source translation has an address, maybe ports
// (zero: the kernel's choice), and natpool's conntrack label or not;
// anything else is written in other.
type fate struct {
	addr     netip.Addr
	ports    pool.PortRange
	labelled bool
	other    string
}

// fateOf is what a chain's outcome does to a packet from src: the address
// a persistent range gives src is the one the kernel's hash picks.
func fateOf(o Outcome, src netip.Addr, label int) fate {
	if o.Drop || o.NAT == nil || o.NAT.Dest {
		if o.NAT == nil && !o.Drop {
			return fate{}
		}
		return fate{other: o.String()}
	}
	addr, ok := o.NAT.Addr(src)
	if !ok {
		return fate{other: o.String()}
	}
	f := fate{addr: addr, labelled: label >= 0 && o.Labels == [16]byte(compiler.LabelBits(label))}
	if o.NAT.Ports {
		f.ports = pool.PortRange{Lo: o.NAT.PortMin, Hi: o.NAT.PortMax}
	}
	return f
}

// String writes a fate: "snat to ADDR ports LO-HI with ct label N".
func (f fate) String(label int) string {
	switch {
	case f.other != "":
		return f.other
	case !f.addr.IsValid():
		return "not translated"
	}
	s := "snat to " + f.addr.String()
	if f.ports != (pool.PortRange{}) {
		s += " ports " + f.ports.String()
	}
	if f.labelled {
		return s + fmt.Sprintf(" with ct label %d", label)
	}
	return s + " without natpool's ct label"
}

func packetText(p Packet) string {
	proto := map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMP: "icmp"}[p.Proto]
	s := fmt.Sprintf("%s from %s out %s", proto, p.Src, p.OIF)
	if p.Nexthop.IsValid() {
		s += " via " + p.Nexthop.String()
	}
	if p.CtStatus&ipsSrcNAT == 0 {
		return s
	}
	return s + " translated"
}

func guardText(drop bool) string {
	if drop {
		return "dropped: untranslated"
	}
	return "passed"
}

// interfaceFor is an interface name an egress entry's oif matches: the name
// itself, the wildcard's prefix with a 0, or any name for any interface.
func interfaceFor(oif string) string {
	switch prefix, wildcard := strings.CutSuffix(oif, "*"); {
	case oif == "":
		return "any0"
	case wildcard:
		return prefix + "0"
	}
	return oif
}

// steerCheck is what a cluster node's steering must do: mark a host's
// packets for the nodes ranked above this one for its address, whose
// tables natpool's policy rules then look up in rank order.
type steerCheck struct {
	cluster *pool.Cluster
	label   int
	self    int
	tables  map[uint32][]int // the tables a mark's policy rules look up, by priority
}

func newSteerCheck(p *pool.Plan, node string, routes []compiler.PolicyRule) *steerCheck {
	if node == "" || p.Cluster == nil {
		return nil
	}
	s := &steerCheck{cluster: p.Cluster, label: p.CTLabel, self: p.Cluster.NodeIndex(node), tables: map[uint32][]int{}}
	routes = slices.Clone(routes)
	slices.SortStableFunc(routes, func(a, b compiler.PolicyRule) int { return a.Priority - b.Priority })
	for _, r := range routes {
		s.tables[r.Mark] = append(s.tables[r.Mark], r.Table)
	}
	return s
}

// check runs h's packet through the steer chain, then through the NAT chain
// as routed to the first node above this one, if any.
func (s *steerCheck) check(prog *Program, h pool.Host, oif string) (*Mismatch, error) {
	c := s.cluster
	order := c.Order(h.Public)
	above := order[:slices.Index(order, s.self)]
	var want []int
	for _, n := range above {
		want = append(want, compiler.NodeTable(c, n))
	}
	pkt := Packet{Src: h.Addr, Dst: probeDst, Proto: unix.IPPROTO_TCP, IIF: "inside0"}
	out, err := prog.Run(compiler.SteerChain, pkt)
	if err != nil {
		return nil, err
	}
	var have []int
	if out.Mark != 0 {
		have = s.tables[out.Mark]
		if have == nil {
			have = []int{} // a mark no policy rule takes
		}
	}
	tables := func(t []int) string {
		switch {
		case t == nil:
			return "unmarked: translated here"
		case len(t) == 0:
			return "marked for no routing table"
		}
		return fmt.Sprintf("steered by routing tables %v", t)
	}
	if !slices.Equal(want, have) || (want == nil) != (have == nil) {
		return &Mismatch{Packet: "steer " + packetText(pkt), Want: tables(want), Have: tables(have)}, nil
	}
	if len(above) == 0 {
		return nil, nil
	}
	// Routed to the peer, it leaves untranslated with natpool's label, out
	// of an interface the guard lets through.
	pkt = Packet{Src: h.Addr, Dst: probeDst, Proto: unix.IPPROTO_TCP, OIF: "peers0", Nexthop: c.Nodes[above[0]].Address}
	if out, err = prog.Run(compiler.Chain, pkt); err != nil {
		return nil, err
	}
	const steered = "not translated, labelled natpool's: the peer translates it"
	switch have := fateOf(out, h.Addr, -1); {
	case have != (fate{}):
		return &Mismatch{Packet: packetText(pkt), Want: steered, Have: have.String(-1)}, nil
	case out.Labels != [16]byte(compiler.LabelBits(s.label)):
		return &Mismatch{Packet: packetText(pkt), Want: steered, Have: "not translated, without natpool's label"}, nil
	}
	if out, err = prog.Run(compiler.GuardChain, pkt); err != nil {
		return nil, err
	}
	if out.Drop {
		return &Mismatch{Packet: "guard " + packetText(pkt), Want: guardText(false), Have: guardText(true)}, nil
	}
	return nil, nil
}
