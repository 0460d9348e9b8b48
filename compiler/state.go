package compiler

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableState is natpool's table reduced to what decides its behaviour, in a
// form two tables compare in: built from a ruleset (what should be) or read
// from the kernel (what is). Anonymous sets are listed with the named maps,
// under the rule that uses them.
type TableState struct {
	Chain string
	Maps  []MapState
	Rules []RuleState
}

// MapState is one named map: its type and its elements as text.
type MapState struct {
	Name     string
	Type     string
	Elements []string
}

// RuleState is one rule: its comment and its expressions as text.
type RuleState struct {
	Comment string
	Exprs   string
}

// String writes the state a line per chain, map, element and rule.
func (s *TableState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chain %s\n", s.Chain)
	for _, m := range s.Maps {
		fmt.Fprintf(&b, "map %s %s\n", m.Name, m.Type)
		for _, e := range m.Elements {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	for _, r := range s.Rules {
		fmt.Fprintf(&b, "rule %q: %s\n", r.Comment, r.Exprs)
	}
	return b.String()
}

// ErrNoTable is returned by Read when natpool's table does not exist.
var ErrNoTable = errors.New("no such table")

// Expected returns the state the kernel holds once rs is applied.
func Expected(rs *Ruleset) (*TableState, error) {
	o, err := buildObjects(rs)
	if err != nil {
		return nil, err
	}
	byID := map[uint32]setWithElements{}
	for _, s := range o.sets {
		byID[s.set.ID] = s
	}
	return o.state(func(l *expr.Lookup) (setWithElements, bool) {
		s, ok := byID[l.SetID]
		return s, ok
	}), nil
}

func (o *objects) state(resolve func(*expr.Lookup) (setWithElements, bool)) *TableState {
	st := &TableState{Chain: chainText(o.chain)}
	for _, s := range o.sets {
		if !s.set.Anonymous {
			st.Maps = append(st.Maps, MapState{Name: s.set.Name, Type: setType(s.set), Elements: elementsText(s)})
		}
	}
	for i, r := range o.rules {
		// A rule's anonymous sets are listed as objects of their own, named
		// by the rule and their order in it, so that a change of one
		// element shows as one element.
		anonymous := 0
		ref := func(l *expr.Lookup) string {
			s, ok := resolve(l)
			switch {
			case !ok:
				return "@" + l.SetName + " (missing)"
			case !s.set.Anonymous:
				return "@" + l.SetName
			}
			anonymous++
			name := fmt.Sprintf("rule %d set %d", i+1, anonymous)
			st.Maps = append(st.Maps, MapState{Name: name, Type: setType(s.set), Elements: elementsText(s)})
			return "{" + name + "}"
		}
		var parts []string
		for _, e := range r.Exprs {
			// google/nftables v0.3.0 reads no byteorder expressions back:
			// the state holds what can be read, so leave them out of both
			// sides.
			if _, unreadable := e.(*expr.Byteorder); unreadable {
				continue
			}
			parts = append(parts, exprText(e, ref))
		}
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		st.Rules = append(st.Rules, RuleState{Comment: comment, Exprs: strings.Join(parts, "; ")})
	}
	slices.SortFunc(st.Maps, func(a, b MapState) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// Read returns the state of natpool's table as the kernel holds it, or
// ErrNoTable.
func (k *Kernel) Read(table string) (*TableState, error) {
	c := k.conn
	t, err := c.ListTableOfFamily(table, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNoTable
	}
	if err != nil {
		return nil, err
	}
	o := &objects{table: t}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Table.Name == table && ch.Name == Chain {
			o.chain = ch
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, err
	}
	byName := map[string]setWithElements{}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		sw := listed(s, elems)
		byName[s.Name] = sw
		o.sets = append(o.sets, sw)
	}
	if o.chain != nil {
		if o.rules, err = c.GetRules(t, o.chain); err != nil {
			return nil, err
		}
	}
	st := o.state(func(l *expr.Lookup) (setWithElements, bool) {
		s, ok := byName[l.SetName]
		return s, ok
	})
	if o.chain == nil {
		st.Chain = "missing"
	}
	return st, nil
}

func chainText(c *nftables.Chain) string {
	policy := "none"
	if c.Policy != nil && *c.Policy == nftables.ChainPolicyAccept {
		policy = "accept"
	}
	prio := 0
	if c.Priority != nil {
		prio = int(*c.Priority)
	}
	return fmt.Sprintf("%s type %s hook %d priority %d policy %s", c.Name, c.Type, *c.Hooknum, prio, policy)
}

func setType(s *nftables.Set) string {
	t := fmt.Sprintf("key %s/%d", s.KeyType.Name, s.KeyType.Bytes)
	if s.IsMap {
		t += fmt.Sprintf(" data %d bytes", s.DataType.Bytes)
	}
	if s.Interval {
		t += " interval"
	}
	return t
}

// elementsText writes a set's elements in key order (the kernel dumps them
// in its own), an interval's end before the start that shares its key.
func elementsText(s setWithElements) []string {
	elems := slices.Clone(s.all())
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := strings.Compare(string(a.Key), string(b.Key)); c != 0 {
			return c
		}
		return boolOrder(b.IntervalEnd, a.IntervalEnd)
	})
	key := bytesText
	if s.set.KeyType.Name == nftables.TypeInteger.Name { // jhash buckets, in network byte order
		key = func(b []byte) string { return fmt.Sprint(binary.BigEndian.Uint32(b)) }
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		if e.IntervalEnd {
			out[i] = key(e.Key) + " end"
			continue
		}
		out[i] = key(e.Key)
		if len(e.Val) > 0 {
			out[i] += " : " + bytesText(e.Val)
		}
	}
	return out
}

// bytesText writes key or data bytes readably: 4 bytes as an address, 2 as
// a port, 16 (address . port interval) as both, others in hex.
func bytesText(b []byte) string {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)).String()
	case 2:
		return fmt.Sprint(binary.BigEndian.Uint16(b))
	case 16:
		return fmt.Sprintf("%s . %s-%s . %s", bytesText(b[0:4]), bytesText(b[4:6]), bytesText(b[8:12]), bytesText(b[12:14]))
	}
	return hex.EncodeToString(b)
}

// exprText writes one expression canonically, naming the set of a lookup
// by ref (anonymous set names are the kernel's own).
func exprText(e expr.Any, ref func(*expr.Lookup) string) string {
	switch e := e.(type) {
	case *expr.Payload:
		return fmt.Sprintf("payload %d+%d/%d -> r%d", e.Base, e.Offset, e.Len, reg(e.DestRegister))
	case *expr.Bitwise:
		return fmt.Sprintf("r%d = r%d & %s", reg(e.DestRegister), reg(e.SourceRegister), bytesText(e.Mask))
	case *expr.Cmp:
		if len(e.Data) == unix.IFNAMSIZ {
			return fmt.Sprintf("cmp %d r%d %q", e.Op, reg(e.Register), strings.TrimRight(string(e.Data), "\x00"))
		}
		return fmt.Sprintf("cmp %d r%d %s", e.Op, reg(e.Register), bytesText(e.Data))
	case *expr.Meta:
		return fmt.Sprintf("meta %d -> r%d", e.Key, reg(e.Register))
	case *expr.Immediate:
		return fmt.Sprintf("r%d = %s", reg(e.Register), bytesText(e.Data))
	case *expr.Hash:
		return fmt.Sprintf("r%d = jhash(r%d, %d) mod %d seed %#x offset %d", reg(e.DestRegister), reg(e.SourceRegister), e.Length, e.Modulus, e.Seed, e.Offset)
	case *expr.Lookup:
		target := ref(e)
		if e.IsDestRegSet {
			return fmt.Sprintf("lookup r%d in %s -> r%d", reg(e.SourceRegister), target, reg(e.DestRegister))
		}
		return fmt.Sprintf("lookup r%d in %s", reg(e.SourceRegister), target)
	case *expr.NAT:
		// The kernel reports an unset maximum register as the minimum.
		orMin := func(max, min uint32) uint32 {
			if max == 0 {
				return min
			}
			return max
		}
		return fmt.Sprintf("snat addr r%d-r%d proto r%d-r%d persistent %v specified %v",
			reg(e.RegAddrMin), reg(orMin(e.RegAddrMax, e.RegAddrMin)), reg(e.RegProtoMin), reg(orMin(e.RegProtoMax, e.RegProtoMin)), e.Persistent, e.Specified)
	}
	return fmt.Sprintf("%T %+v", e, e)
}

// reg names a register as the kernel reports it: a 4-byte register that
// starts a 16-byte one (NFT_REG32_00, _04, ...) under the 16-byte number.
func reg(r uint32) uint32 {
	if r >= r32 && (r-r32)%4 == 0 {
		return reg1 + (r-r32)/4
	}
	return r
}

func boolOrder(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Difference is one way two table states differ: what the first has that
// the second lacks (Missing) and what the second has that the first lacks
// (Extra), for one object.
type Difference struct {
	Object  string // "chain", "map NAME" or "rule N (COMMENT)"
	Missing []string
	Extra   []string
}

// Compare lists how have differs from want, object by object, in a stable
// order: the chain, the maps by name, then the rules by position.
func Compare(want, have *TableState) []Difference {
	var out []Difference
	add := func(object string, w, h []string) {
		if missing, extra := setDiff(w, h), setDiff(h, w); len(missing)+len(extra) > 0 {
			out = append(out, Difference{object, missing, extra})
		}
	}
	add("chain", []string{want.Chain}, []string{have.Chain})
	maps := map[string][2]*MapState{}
	var names []string
	for i := range want.Maps {
		m := &want.Maps[i]
		names = append(names, m.Name)
		maps[m.Name] = [2]*MapState{m, nil}
	}
	for i := range have.Maps {
		m := &have.Maps[i]
		pair, seen := maps[m.Name]
		if !seen {
			names = append(names, m.Name)
		}
		maps[m.Name] = [2]*MapState{pair[0], m}
	}
	slices.Sort(names)
	for _, name := range names {
		pair := maps[name]
		add("map "+name, mapLines(pair[0]), mapLines(pair[1]))
	}
	for i := range max(len(want.Rules), len(have.Rules)) {
		var w, h []string
		comment := ""
		if i < len(want.Rules) {
			w, comment = []string{want.Rules[i].Exprs}, want.Rules[i].Comment
		}
		if i < len(have.Rules) {
			h = []string{have.Rules[i].Exprs}
			if comment == "" {
				comment = have.Rules[i].Comment
			}
		}
		add(fmt.Sprintf("rule %d (%s)", i+1, comment), w, h)
	}
	return out
}

// mapLines is a map's type and elements, nil for an absent map.
func mapLines(m *MapState) []string {
	if m == nil {
		return nil
	}
	return append([]string{"type " + m.Type}, m.Elements...)
}

// setDiff returns the lines of a that b lacks, in a's order.
func setDiff(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}
