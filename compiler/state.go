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
// from the kernel (what is). Anonymous sets appear inside the rules that
// use them.
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
			st.Maps = append(st.Maps, MapState{Name: s.set.Name, Type: setType(s.set), Elements: elementsText(s.elements)})
		}
	}
	slices.SortFunc(st.Maps, func(a, b MapState) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range o.rules {
		var parts []string
		for _, e := range r.Exprs {
			parts = append(parts, exprText(e, resolve))
		}
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		st.Rules = append(st.Rules, RuleState{Comment: comment, Exprs: strings.Join(parts, "; ")})
	}
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
		sw := setWithElements{s, elems}
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

// elementsText writes elements in key order (the kernel dumps them in its
// own), an interval's end before the start that shares its key.
func elementsText(elems []nftables.SetElement) []string {
	elems = slices.Clone(elems)
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := strings.Compare(string(a.Key), string(b.Key)); c != 0 {
			return c
		}
		return boolOrder(b.IntervalEnd, a.IntervalEnd)
	})
	out := make([]string, len(elems))
	for i, e := range elems {
		if e.IntervalEnd {
			out[i] = bytesText(e.Key) + " end"
			continue
		}
		out[i] = bytesText(e.Key)
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

// exprText writes one expression canonically; a lookup in an anonymous set
// carries the set's elements, since anonymous set names are the kernel's.
func exprText(e expr.Any, resolve func(*expr.Lookup) (setWithElements, bool)) string {
	switch e := e.(type) {
	case *expr.Payload:
		return fmt.Sprintf("payload %d+%d/%d -> r%d", e.Base, e.Offset, e.Len, e.DestRegister)
	case *expr.Bitwise:
		return fmt.Sprintf("r%d = r%d & %s", e.DestRegister, e.SourceRegister, bytesText(e.Mask))
	case *expr.Cmp:
		if len(e.Data) == unix.IFNAMSIZ {
			return fmt.Sprintf("cmp %d r%d %q", e.Op, e.Register, strings.TrimRight(string(e.Data), "\x00"))
		}
		return fmt.Sprintf("cmp %d r%d %s", e.Op, e.Register, bytesText(e.Data))
	case *expr.Meta:
		return fmt.Sprintf("meta %d -> r%d", e.Key, e.Register)
	case *expr.Immediate:
		return fmt.Sprintf("r%d = %s", e.Register, bytesText(e.Data))
	case *expr.Hash:
		return fmt.Sprintf("r%d = jhash(r%d, %d) mod %d seed %#x offset %d", e.DestRegister, e.SourceRegister, e.Length, e.Modulus, e.Seed, e.Offset)
	case *expr.Lookup:
		target := "@" + e.SetName
		if s, ok := resolve(e); !ok {
			target += " (missing)"
		} else if s.set.Anonymous {
			target = fmt.Sprintf("{%s: %s}", setType(s.set), strings.Join(elementsText(s.elements), ", "))
		}
		if e.IsDestRegSet {
			return fmt.Sprintf("lookup r%d in %s -> r%d", e.SourceRegister, target, e.DestRegister)
		}
		return fmt.Sprintf("lookup r%d in %s", e.SourceRegister, target)
	case *expr.NAT:
		// The kernel reports an unset maximum register as the minimum.
		orMin := func(max, min uint32) uint32 {
			if max == 0 {
				return min
			}
			return max
		}
		return fmt.Sprintf("snat addr r%d-r%d proto r%d-r%d persistent %v specified %v",
			e.RegAddrMin, orMin(e.RegAddrMax, e.RegAddrMin), e.RegProtoMin, orMin(e.RegProtoMax, e.RegProtoMin), e.Persistent, e.Specified)
	}
	return fmt.Sprintf("%T %+v", e, e)
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
