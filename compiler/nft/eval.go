//go:build linux

package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/pool"
)

// Program is a table's chains and sets as nf_tables runs them: what the
// kernel does with a packet, worked out in userspace without a kernel. It
// runs the expressions natpool writes; what it cannot run is an error,
// never a guess.
//
// google/nftables v0.3.0 reads rules back without their byteorder and rt
// expressions and their verdicts' kinds, so a table read from the kernel
// runs as its rules compiled (which status compares as text) over the
// elements the kernel holds: see WithSetsOf.
type Program struct {
	chains map[string][]progRule
	sets   map[string]*evalSet // by setRef
}

type progRule struct {
	comment string
	steps   []evalStep
}

// evalStep is one expression of a rule, with its set for a lookup.
type evalStep struct {
	e   expr.Any
	ref string // a lookup's set, named by setRef
}

// setRef names a set a lookup uses as TableState does: a named set by its
// name, a rule's anonymous set by the rule and its place in it.
func setRef(s *nftables.Set, chain string, rule, anonymous int) string {
	if !s.Anonymous {
		return "@" + s.Name
	}
	return fmt.Sprintf("%s rule %d set %d", chain, rule, anonymous)
}

// Packet is what a chain looks at. A zero Nexthop is the destination: the
// route of a destination on the link.
type Packet struct {
	Src, Dst         netip.Addr
	Proto            uint8 // unix.IPPROTO_TCP, _UDP, _ICMP, ...
	SrcPort, DstPort uint16
	IIF, OIF         string // interface names
	Mark             uint32
	Nexthop          netip.Addr
	CtStatus         uint32 // the conntrack entry's status bits (IPS_*)
}

// Outcome is what a chain did with a packet.
type Outcome struct {
	// Rule is the rule that ended the chain, 1-based, with its comment;
	// 0 when the packet reached the chain's policy.
	Rule    int
	Comment string
	Drop    bool // the verdict was drop; otherwise accept
	NAT     *NAT // the translation, if a rule made one
	Mark    uint32
	Labels  [16]byte // the conntrack labels the rules set
}

// NAT is the translation a nat expression sets up: an address range and,
// when Ports is set, a port range.
type NAT struct {
	Dest               bool // dnat; otherwise snat
	AddrMin, AddrMax   netip.Addr
	Ports              bool
	PortMin, PortMax   uint16
	Persistent, Random bool
}

// Addr is the address the kernel gives src from the range: the only one,
// or for a persistent range the one its hash picks (see
// pool.PersistentIndex); false when the kernel picks at random.
func (n *NAT) Addr(src netip.Addr) (netip.Addr, bool) {
	lo, hi := pool.Uint32(n.AddrMin), pool.Uint32(n.AddrMax)
	switch {
	case lo == hi:
		return n.AddrMin, true
	case n.Persistent && !n.Random:
		return pool.AddrFromUint32(lo + pool.PersistentIndex(pool.Uint32(src), hi-lo+1)), true
	}
	return netip.Addr{}, false
}

// program builds the Program of chains whose lookups resolve finds; a set
// it does not find is empty.
func program(chains []chainRules, resolve func(*expr.Lookup) (setWithElements, bool)) *Program {
	p := &Program{chains: map[string][]progRule{}, sets: map[string]*evalSet{}}
	for _, c := range chains {
		rules := make([]progRule, 0, len(c.rules))
		for i, r := range c.rules {
			pr := progRule{steps: make([]evalStep, len(r.Exprs))}
			pr.comment, _ = userdata.GetString(r.UserData, userdata.TypeComment)
			anonymous := 0
			for j, e := range r.Exprs {
				pr.steps[j].e = e
				l, ok := e.(*expr.Lookup)
				if !ok {
					continue
				}
				s, ok := resolve(l)
				if !ok {
					pr.steps[j].ref = "@" + l.SetName + " (missing)"
					continue
				}
				if s.set.Anonymous {
					anonymous++
				}
				ref := setRef(s.set, c.chain.Name, i+1, anonymous)
				if p.sets[ref] == nil {
					p.sets[ref] = newEvalSet(s)
				}
				pr.steps[j].ref = ref
			}
			rules = append(rules, pr)
		}
		p.chains[c.chain.Name] = rules
	}
	return p
}

// WithSetsOf returns p's rules over the sets of q (an empty set where q
// has none by that name), for the chains q has: a compiled table's rules
// over the elements a kernel's table holds.
func (p *Program) WithSetsOf(q *Program) *Program {
	out := &Program{chains: map[string][]progRule{}, sets: q.sets}
	for name, rules := range p.chains {
		if _, ok := q.chains[name]; ok {
			out.chains[name] = rules
		}
	}
	return out
}

// evalSet is a set's elements sorted by key, keys and data each in one
// buffer: a per-host map holds millions. Keys of up to 4 bytes, all of
// natpool's, are kept as numbers that order as their bytes do.
type evalSet struct {
	interval   bool
	klen, dlen int
	keys32     []uint32 // klen <= 4
	keys       []byte   // klen > 4
	data       []byte
	ends       []bool // an interval's end element, which matches nothing
}

func newEvalSet(s setWithElements) *evalSet {
	elems := s.all()
	es := &evalSet{interval: s.set.Interval}
	if len(elems) == 0 {
		return es
	}
	es.klen = len(elems[0].Key)
	for _, e := range elems { // an interval's end element has no data
		es.dlen = max(es.dlen, len(e.Val))
	}
	order := make([]int32, len(elems))
	for i := range order {
		order[i] = int32(i)
	}
	// An interval's end sorts before the start that shares its key, which
	// then begins the next range.
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &elems[i], &elems[j]
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return boolOrder(b.IntervalEnd, a.IntervalEnd)
	})
	es.data, es.ends = make([]byte, es.dlen*len(elems)), make([]bool, len(elems))
	if es.klen <= 4 {
		es.keys32 = make([]uint32, len(elems))
	} else {
		es.keys = make([]byte, 0, es.klen*len(elems))
	}
	for i, k := range order {
		e := &elems[k]
		if es.keys32 != nil {
			es.keys32[i] = key32(e.Key, es.klen)
		} else {
			es.keys = append(es.keys, padded(e.Key, es.klen)...)
		}
		copy(es.data[i*es.dlen:], e.Val)
		es.ends[i] = e.IntervalEnd
	}
	return es
}

// key32 is the number a key of n <= 4 bytes orders as.
func key32(k []byte, n int) uint32 {
	var b [4]byte
	copy(b[:n], k)
	return binary.BigEndian.Uint32(b[:])
}

// padded is b cut or zero-filled to n bytes.
func padded(b []byte, n int) []byte {
	if len(b) >= n {
		return b[:n]
	}
	return append(slices.Clone(b), make([]byte, n-len(b))...)
}

// find returns the data of the element key k falls in, false if none: for
// an interval set the range of the last element at or below k, unless that
// element ends a range.
func (s *evalSet) find(k []byte) ([]byte, bool) {
	var above int // the first element above k
	var equal func(i int) bool
	if s.keys32 != nil {
		x := key32(k, s.klen)
		above, _ = slices.BinarySearchFunc(s.keys32, x, func(e, x uint32) int {
			if e <= x {
				return -1
			}
			return 1
		})
		equal = func(i int) bool { return s.keys32[i] == x }
	} else {
		key := func(i int) []byte { return s.keys[i*s.klen : (i+1)*s.klen] }
		lo, hi := 0, len(s.ends)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if bytes.Compare(key(m), k) <= 0 {
				lo = m + 1
			} else {
				hi = m
			}
		}
		above, equal = lo, func(i int) bool { return bytes.Equal(key(i), k) }
	}
	i := above - 1
	switch {
	case i < 0, s.ends[i]:
		return nil, false
	case !s.interval && !equal(i):
		return nil, false
	}
	return s.data[i*s.dlen : (i+1)*s.dlen], true
}

// regs is nf_tables' register file: NFT_REG_1 to _4 are 16 bytes each,
// NFT_REG32_00 to _15 the same bytes 4 at a time.
type regs [80]byte

// at returns the bytes of register r from its start.
func (rg *regs) at(r uint32) []byte {
	if r <= reg4 {
		return rg[r*16:]
	}
	return rg[16+(r-r32)*4:]
}

// Run passes p through chain and returns what became of it. A chain the
// program lacks leaves the packet alone, as a hook with no chain does.
func (prog *Program) Run(chain string, p Packet) (Outcome, error) {
	rules := prog.chains[chain]
	if !p.Nexthop.IsValid() {
		p.Nexthop = p.Dst
	}
	m := machine{p: p, sets: prog.sets}
	m.ip[0], m.ip[9] = 0x45, p.Proto
	if p.Src.Is4() {
		src := p.Src.As4()
		copy(m.ip[12:], src[:])
	}
	if p.Dst.Is4() {
		dst := p.Dst.As4()
		copy(m.ip[16:], dst[:])
	}
	binary.BigEndian.PutUint16(m.th[0:], p.SrcPort)
	binary.BigEndian.PutUint16(m.th[2:], p.DstPort)
	for i, r := range rules {
		end, err := m.run(r.steps)
		if err != nil {
			return Outcome{}, fmt.Errorf("rule %d of chain %s (%s): %w", i+1, chain, r.comment, err)
		}
		if end {
			m.out.Rule, m.out.Comment = i+1, r.comment
			break
		}
	}
	m.out.Mark = m.p.Mark
	return m.out, nil
}

// machine is one packet's pass through a chain.
type machine struct {
	sets map[string]*evalSet
	p    Packet
	ip   [20]byte // the IPv4 header rules can read
	th   [4]byte  // the transport header's ports
	rg   regs
	out  Outcome
}

// run runs a rule's steps until one breaks the rule (false) or ends the
// chain (true).
func (m *machine) run(steps []evalStep) (bool, error) {
	p, rg := &m.p, &m.rg
	for _, s := range steps {
		switch e := s.e.(type) {
		case *expr.Payload:
			if e.SourceRegister != 0 {
				return false, fmt.Errorf("cannot run a payload write")
			}
			var hdr []byte
			switch e.Base {
			case expr.PayloadBaseNetworkHeader:
				hdr = m.ip[:]
			case expr.PayloadBaseTransportHeader:
				hdr = m.th[:]
			}
			if int(e.Offset+e.Len) > len(hdr) {
				return false, nil
			}
			load(rg.at(e.DestRegister), hdr[e.Offset:e.Offset+e.Len])
		case *expr.Meta:
			if e.SourceRegister {
				if e.Key != expr.MetaKeyMARK {
					return false, fmt.Errorf("cannot run meta set of key %d", e.Key)
				}
				p.Mark = binary.NativeEndian.Uint32(rg.at(e.Register))
				continue
			}
			if err := meta(p, e.Key, rg.at(e.Register)); err != nil {
				return false, err
			}
		case *expr.Bitwise:
			src, dst := rg.at(e.SourceRegister), rg.at(e.DestRegister)
			if len(e.Mask) < int(e.Len) || len(e.Xor) < int(e.Len) {
				return false, fmt.Errorf("cannot run a bitwise shift")
			}
			for i := range e.Len {
				dst[i] = src[i]&e.Mask[i] ^ e.Xor[i]
			}
		case *expr.Byteorder:
			if e.Size != 2 && e.Size != 4 || e.Len%e.Size != 0 || e.Len > 16 {
				return false, fmt.Errorf("cannot run byteorder of size %d", e.Size)
			}
			// hton and ntoh both swap on the little-endian machines natpool models.
			var v [16]byte
			copy(v[:], rg.at(e.SourceRegister)[:e.Len])
			for i := uint32(0); i < e.Len; i += e.Size {
				slices.Reverse(v[i : i+e.Size])
			}
			copy(rg.at(e.DestRegister), v[:e.Len])
		case *expr.Cmp:
			if !compare(e.Op, bytes.Compare(rg.at(e.Register)[:len(e.Data)], e.Data)) {
				return false, nil
			}
		case *expr.Range:
			v := rg.at(e.Register)[:len(e.FromData)]
			in := bytes.Compare(v, e.FromData) >= 0 && bytes.Compare(v, e.ToData) <= 0
			if in != (e.Op == expr.CmpOpEq) {
				return false, nil
			}
		case *expr.Lookup:
			set := m.sets[s.ref]
			if set == nil {
				set = &evalSet{}
			}
			data, found := set.find(rg.at(e.SourceRegister)[:set.klen])
			if found == e.Invert {
				return false, nil
			}
			if e.IsDestRegSet {
				copy(rg.at(e.DestRegister), data)
			}
		case *expr.Hash:
			if e.Type != expr.HashTypeJenkins || e.Length != 4 {
				return false, fmt.Errorf("cannot run a hash of type %d over %d bytes", e.Type, e.Length)
			}
			h := pool.NftJhash(binary.BigEndian.Uint32(rg.at(e.SourceRegister)), e.Seed, e.Modulus) + e.Offset
			binary.NativeEndian.PutUint32(rg.at(e.DestRegister), h)
		case *expr.Immediate:
			if e.Register == 0 {
				return false, fmt.Errorf("cannot run a verdict google/nftables read back without its kind")
			}
			copy(rg.at(e.Register), e.Data)
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				return true, nil
			case expr.VerdictDrop:
				m.out.Drop = true
				return true, nil
			case expr.VerdictBreak:
				return false, nil
			case expr.VerdictContinue:
				continue
			}
			return false, fmt.Errorf("cannot run verdict %s", verdictText(e))
		case *expr.Ct:
			if err := m.ct(e); err != nil {
				return false, err
			}
		case *expr.Rt:
			if e.Key != expr.RtNexthop4 || !p.Nexthop.Is4() {
				return false, fmt.Errorf("cannot run rt key %d", e.Key)
			}
			a := p.Nexthop.As4()
			load(rg.at(e.Register), a[:])
		case *expr.NAT:
			if e.Family != unix.NFPROTO_IPV4 || e.Prefix {
				return false, fmt.Errorf("cannot run nat of family %d", e.Family)
			}
			n := &NAT{Dest: e.Type == expr.NATTypeDestNAT, Persistent: e.Persistent, Random: e.Random || e.FullyRandom}
			n.AddrMin = netip.AddrFrom4([4]byte(rg.at(e.RegAddrMin)))
			n.AddrMax = n.AddrMin
			if e.RegAddrMax != 0 {
				n.AddrMax = netip.AddrFrom4([4]byte(rg.at(e.RegAddrMax)))
			}
			if e.RegProtoMin != 0 {
				n.Ports = true
				n.PortMin = binary.BigEndian.Uint16(rg.at(e.RegProtoMin))
				n.PortMax = n.PortMin
				if e.RegProtoMax != 0 {
					n.PortMax = binary.BigEndian.Uint16(rg.at(e.RegProtoMax))
				}
			}
			m.out.NAT = n
			return true, nil
		case *expr.Counter, *expr.Log:
		default:
			return false, fmt.Errorf("cannot run %T", e)
		}
	}
	return false, nil
}

// load puts v in a register as the kernel does: a value that ends within
// a 4-byte word has the rest of that word zeroed.
func load(reg, v []byte) {
	n := copy(reg, v)
	for ; n%4 != 0; n++ {
		reg[n] = 0
	}
}

// meta loads a packet's meta key into reg.
func meta(p *Packet, key expr.MetaKey, reg []byte) error {
	switch key {
	case expr.MetaKeyL4PROTO:
		load(reg, []byte{p.Proto})
	case expr.MetaKeyNFPROTO:
		load(reg, []byte{unix.NFPROTO_IPV4})
	case expr.MetaKeyPROTOCOL:
		load(reg, []byte{0x08, 0x00})
	case expr.MetaKeyMARK:
		binary.NativeEndian.PutUint32(reg, p.Mark)
	case expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME:
		name := p.OIF
		if key == expr.MetaKeyIIFNAME {
			name = p.IIF
		}
		clear(reg[:unix.IFNAMSIZ])
		copy(reg[:unix.IFNAMSIZ], name)
	default:
		return fmt.Errorf("cannot run meta key %d", key)
	}
	return nil
}

func (m *machine) ct(e *expr.Ct) error {
	// google/nftables v0.3.0 reads a ct set back with no register at all;
	// nft, like natpool, loads the value into register 1.
	if e.SourceRegister || e.Register == 0 {
		v := m.rg.at(max(e.Register, reg1))
		if e.Key != expr.CtKeyLABELS {
			return fmt.Errorf("cannot run ct set of key %s", ctNames[e.Key])
		}
		for i := range m.out.Labels {
			m.out.Labels[i] |= v[i]
		}
		return nil
	}
	switch e.Key {
	case expr.CtKeySTATUS:
		binary.NativeEndian.PutUint32(m.rg.at(e.Register), m.p.CtStatus)
	case expr.CtKeyLABELS:
		copy(m.rg.at(e.Register), m.out.Labels[:])
	case expr.CtKeyDIRECTION:
		// The packets run are connections' first: the original direction.
		m.rg.at(e.Register)[0] = 0
	default:
		return fmt.Errorf("cannot run ct key %s", ctNames[e.Key])
	}
	return nil
}

func compare(op expr.CmpOp, c int) bool {
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

// String writes the outcome as natpool's reports do: "snat to ADDR",
// with " ports LO-HI" when the rule gives ports, "drop", or "not
// translated".
func (o Outcome) String() string {
	switch {
	case o.Drop:
		return "drop"
	case o.NAT == nil:
		return "not translated"
	}
	var b strings.Builder
	b.WriteString("snat to ")
	if o.NAT.Dest {
		b.Reset()
		b.WriteString("dnat to ")
	}
	b.WriteString(o.NAT.AddrMin.String())
	if o.NAT.AddrMax != o.NAT.AddrMin {
		b.WriteString("-" + o.NAT.AddrMax.String())
	}
	if o.NAT.Ports {
		fmt.Fprintf(&b, " ports %d-%d", o.NAT.PortMin, o.NAT.PortMax)
	}
	if o.NAT.Persistent {
		b.WriteString(" persistent")
	}
	return b.String()
}
