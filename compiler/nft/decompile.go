//go:build linux

package nft

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ruleText writes a rule's expressions in nft's syntax, as far as they can
// be told from the kernel's bytecode: the statements nft would list for
// natpool's rules, and a recognisable form for other tools' rules. Lookups
// are named by ref. ip6 says the rule is of an ip6 table.
func ruleText(exprs []expr.Any, ref func(*expr.Lookup) string, ip6 bool) string {
	d := decompiler{regs: map[uint32]operand{}, ref: ref, ip6: ip6}
	for i := 0; i < len(exprs); i++ {
		// A bounded range is two comparisons of one register.
		if lo, ok := exprs[i].(*expr.Cmp); ok && lo.Op == expr.CmpOpGte && i+1 < len(exprs) {
			if hi, ok := exprs[i+1].(*expr.Cmp); ok && hi.Op == expr.CmpOpLte && hi.Register == lo.Register {
				left := d.reg(lo.Register)
				d.out = append(d.out, fmt.Sprintf("%s %s-%s", left.text, left.value(lo.Data), left.value(hi.Data)))
				i++
				continue
			}
		}
		d.expr(exprs[i])
	}
	return strings.Join(d.out, " ")
}

// operand is what a register holds: an expression as nft writes it, with
// what its value looks like.
type operand struct {
	text string
	kind operandKind
	mask []byte // a bitwise mask applied to it, for a prefix
	data []byte // an immediate's value
}

type operandKind int

const (
	rawValue operandKind = iota
	addrValue
	addr6Value
	ifnameValue
	protoValue
	portValue
	hostValue // a 32-bit number in host order: marks, ct status
)

// value writes data compared with or assigned to the operand.
func (o operand) value(data []byte) string {
	switch {
	case o.kind == ifnameValue:
		name := strings.TrimRight(string(data), "\x00")
		if len(data) < unix.IFNAMSIZ {
			name += "*" // compared for its own length: a wildcard
		}
		return fmt.Sprintf("%q", name)
	case o.kind == protoValue && len(data) == 1:
		if name, ok := protocolNames[data[0]]; ok {
			return name
		}
	case o.kind == addrValue && len(data) <= 4:
		var b [4]byte
		copy(b[:], data)
		a := netip.AddrFrom4(b).String()
		if n := len(data); n < 4 { // nft compares the bytes of a whole-byte prefix
			return fmt.Sprintf("%s/%d", a, 8*n)
		}
		return a
	case o.kind == addr6Value && len(data) <= 16:
		var b [16]byte
		copy(b[:], data)
		a := netip.AddrFrom16(b).String()
		if n := len(data); n < 16 {
			return fmt.Sprintf("%s/%d", a, 8*n)
		}
		return a
	case o.kind == portValue && len(data) == 2:
		return fmt.Sprint(binary.BigEndian.Uint16(data))
	case o.kind == hostValue && len(data) == 4:
		return fmt.Sprintf("%#x", binary.NativeEndian.Uint32(data))
	}
	return bytesText(data)
}

var protocolNames = map[byte]string{unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}

var metaNames = map[expr.MetaKey]string{
	expr.MetaKeyLEN: "meta length", expr.MetaKeyPROTOCOL: "meta protocol", expr.MetaKeyMARK: "meta mark",
	expr.MetaKeyIIF: "iif", expr.MetaKeyOIF: "oif", expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname",
	expr.MetaKeySKUID: "meta skuid", expr.MetaKeySKGID: "meta skgid", expr.MetaKeyNFPROTO: "meta nfproto",
	expr.MetaKeyL4PROTO: "meta l4proto", expr.MetaKeyPKTTYPE: "meta pkttype",
}

type decompiler struct {
	regs map[uint32]operand
	ref  func(*expr.Lookup) string
	out  []string
	ip6  bool
}

// reg returns what a register holds; a 4-byte register inside a 16-byte one
// that holds a value is a part of that value.
func (d *decompiler) reg(r uint32) operand {
	if o, ok := d.regs[reg(r)]; ok {
		return o
	}
	if r >= r32 {
		base := reg1 + (r-r32)/4
		if o, ok := d.regs[base]; ok {
			return operand{text: fmt.Sprintf("%s[%d]", o.text, (r-r32)%4)}
		}
	}
	return operand{text: fmt.Sprintf("reg %d", r)}
}

func (d *decompiler) set(r uint32, o operand) { d.regs[reg(r)] = o }

// reg names a register as the kernel reports it: a 4-byte register that
// starts a 16-byte one (NFT_REG32_00, _04, ...) under the 16-byte number.
func reg(r uint32) uint32 {
	if r >= r32 && (r-r32)%4 == 0 {
		return reg1 + (r-r32)/4
	}
	return r
}

func (d *decompiler) expr(e expr.Any) {
	switch e := e.(type) {
	case *expr.Payload:
		d.set(e.DestRegister, payloadOperand(e, d.ip6))
	case *expr.Meta:
		o := operand{text: metaNames[e.Key]}
		if o.text == "" {
			o.text = fmt.Sprintf("meta %d", e.Key)
		}
		switch e.Key {
		case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
			o.kind = ifnameValue
		case expr.MetaKeyL4PROTO:
			o.kind = protoValue
		case expr.MetaKeyMARK:
			o.kind = hostValue
		}
		if e.SourceRegister {
			d.out = append(d.out, fmt.Sprintf("%s set %s", o.text, d.reg(e.Register).text))
			return
		}
		d.set(e.Register, o)
	case *expr.Bitwise:
		o := d.reg(e.SourceRegister)
		o.mask = e.Mask
		o.text = fmt.Sprintf("%s & %s", o.text, o.value(e.Mask))
		d.set(e.DestRegister, o)
	case *expr.Byteorder:
		d.set(e.DestRegister, d.reg(e.SourceRegister)) // nft lists no byte order conversion
	case *expr.Cmp:
		d.out = append(d.out, d.cmpText(e))
	case *expr.Lookup:
		left := d.reg(e.SourceRegister)
		if e.IsDestRegSet {
			d.set(e.DestRegister, operand{text: fmt.Sprintf("%s map %s", left.text, d.ref(e))})
			return
		}
		op := ""
		if e.Invert {
			op = "!= "
		}
		d.out = append(d.out, fmt.Sprintf("%s %s%s", left.text, op, d.ref(e)))
	case *expr.Hash:
		text := fmt.Sprintf("jhash %s mod %d seed %#x", d.reg(e.SourceRegister).text, e.Modulus, e.Seed)
		if e.Type == expr.HashTypeSym {
			text = fmt.Sprintf("symhash mod %d", e.Modulus)
		}
		if e.Offset != 0 {
			text += fmt.Sprintf(" offset %d", e.Offset)
		}
		d.set(e.DestRegister, operand{text: text})
	case *expr.Immediate:
		if e.Register == 0 {
			d.out = append(d.out, "verdict") // google/nftables reads no verdict kind back
			return
		}
		text := bytesText(e.Data)
		if d.ip6 && len(e.Data) == 16 {
			text = netip.AddrFrom16([16]byte(e.Data)).String()
		}
		d.set(e.Register, operand{text: text, data: e.Data})
	case *expr.Verdict:
		d.out = append(d.out, verdictText(e))
	case *expr.Ct:
		text := fmt.Sprintf("ct %s", ctNames[e.Key])
		// google/nftables v0.3.0 reads a ct set back without its source
		// register (and so with none at all); nft, like natpool, loads the
		// value into register 1.
		if e.SourceRegister || e.Register == 0 {
			value := d.reg(cmp.Or(e.Register, reg1))
			text += " set " + value.text
			if e.Key == expr.CtKeyLABELS && len(value.data) == 16 {
				text = "ct label set " + labelsText(value.data)
			}
			d.out = append(d.out, text)
			return
		}
		o := operand{text: text}
		if e.Key == expr.CtKeySTATUS || e.Key == expr.CtKeyMARK {
			o.kind = hostValue
		}
		d.set(e.Register, o)
	case *expr.Rt:
		// google/nftables v0.3.0 reads no rt expression back: it drops it
		// from the rule. Written as the kernel's copy is read, the register
		// stays unnamed on both sides, and the rest of the rule still counts.
	case *expr.NAT:
		d.out = append(d.out, d.natText(e))
	case *expr.Counter:
		d.out = append(d.out, "counter")
	case *expr.Masq:
		d.out = append(d.out, "masquerade")
	case *expr.Log:
		d.out = append(d.out, "log")
	case *expr.Limit:
		d.out = append(d.out, "limit")
	case *expr.Reject:
		d.out = append(d.out, "reject")
	default:
		name := fmt.Sprintf("%T", e)
		d.out = append(d.out, "["+strings.ToLower(strings.TrimPrefix(name, "*expr."))+"]")
	}
}

var ctNames = map[expr.CtKey]string{expr.CtKeySTATE: "state", expr.CtKeyMARK: "mark", expr.CtKeyLABELS: "label",
	expr.CtKeySTATUS: "status", expr.CtKeyZONE: "zone", expr.CtKeyDIRECTION: "direction"}

// labelsText writes the bits of a 16-byte ct label value as nft does.
func labelsText(b []byte) string {
	var labels []string
	for i, x := range b { // see LabelBits
		for ; x != 0; x &= x - 1 {
			labels = append(labels, fmt.Sprint(8*i+bits.TrailingZeros8(x)))
		}
	}
	return strings.Join(labels, ", ")
}

func payloadOperand(e *expr.Payload, ip6 bool) operand {
	switch {
	case ip6 && e.Base == expr.PayloadBaseNetworkHeader && (e.Offset == 8 || e.Offset == 24) && e.Len <= 16:
		field := "ip6 saddr"
		if e.Offset == 24 {
			field = "ip6 daddr"
		}
		return operand{text: field, kind: addr6Value}
	case e.Base == expr.PayloadBaseNetworkHeader && (e.Offset == 12 || e.Offset == 16) && e.Len <= 4:
		field := "ip saddr"
		if e.Offset == 16 {
			field = "ip daddr"
		}
		return operand{text: field, kind: addrValue}
	case e.Base == expr.PayloadBaseTransportHeader && (e.Offset == 0 || e.Offset == 2) && e.Len == 2:
		field := "th sport"
		if e.Offset == 2 {
			field = "th dport"
		}
		return operand{text: field, kind: portValue}
	}
	base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "ll", expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[e.Base]
	return operand{text: fmt.Sprintf("@%s,%d,%d", base, 8*e.Offset, 8*e.Len)}
}

func (d *decompiler) cmpText(e *expr.Cmp) string {
	left := d.reg(e.Register)
	// A masked address compared with an address is a prefix.
	if left.kind == addrValue && len(left.mask) == 4 && len(e.Data) == 4 && e.Op == expr.CmpOpEq {
		if ones, _ := maskBits(left.mask); ones >= 0 {
			field, _, _ := strings.Cut(left.text, " & ")
			return fmt.Sprintf("%s %s/%d", field, left.value(e.Data), ones)
		}
	}
	ops := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}
	if left.mask != nil && e.Op == expr.CmpOpEq {
		ops[e.Op] = "== " // ct status & 0x10 == 0x0
	}
	return fmt.Sprintf("%s %s%s", left.text, ops[e.Op], left.value(e.Data))
}

// maskBits returns the length of a prefix mask, -1 if m is not one.
func maskBits(m []byte) (int, bool) {
	v := binary.BigEndian.Uint32(m)
	ones := bits.LeadingZeros32(^v)
	if v != ^uint32(0)<<(32-ones) && ones != 32 {
		return -1, false
	}
	return ones, true
}

func (d *decompiler) natText(e *expr.NAT) string {
	kind := "snat"
	if e.Type == expr.NATTypeDestNAT {
		kind = "dnat"
	}
	family := "ip"
	if e.Family == unix.NFPROTO_IPV6 {
		family = "ip6"
	}
	to := " to "
	if e.Prefix {
		to = " prefix to "
	}
	text := kind + " " + family + to

	// Address and ports that are all parts of one map lookup's value are
	// that map's interval data, which nft lists as the lookup alone.
	parts := []uint32{e.RegAddrMin, e.RegAddrMax, e.RegProtoMin, e.RegProtoMax}
	if base, ok := d.oneValue(parts); ok {
		text += d.regs[base].text
	} else {
		text += d.reg(e.RegAddrMin).text
		if e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin {
			text += "-" + d.reg(e.RegAddrMax).text
		}
		if e.RegProtoMin != 0 {
			text += ":" + d.reg(e.RegProtoMin).text
			if e.RegProtoMax != 0 && e.RegProtoMax != e.RegProtoMin {
				text += "-" + d.reg(e.RegProtoMax).text
			}
		}
	}
	if e.Persistent {
		text += " persistent"
	}
	if e.Random {
		text += " random"
	}
	if e.FullyRandom {
		text += " fully-random"
	}
	return text
}

// oneValue reports whether the set registers among regs are all 4-byte
// parts of one 16-byte register holding a value, and which.
func (d *decompiler) oneValue(regs []uint32) (uint32, bool) {
	base, parts := uint32(0), 0
	for _, r := range regs {
		if r == 0 {
			continue
		}
		b := reg(r)
		if r >= r32 {
			b = reg1 + (r-r32)/4
		}
		if base != 0 && b != base {
			return 0, false
		}
		base = b
		parts++
	}
	_, held := d.regs[base]
	return base, parts > 1 && held
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
