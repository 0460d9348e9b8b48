//go:build linux

package nft

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
)

// TableState is a table reduced to what decides its behaviour, written in
// nft's syntax, in a form two tables compare in: built from a ruleset (what
// should be) or read from the kernel (what is). Everything the kernel's
// table holds is read, so a chain or object another tool added to it shows.
type TableState struct {
	Chains  []ChainState // by name
	Maps    []MapState   // named maps, then the rules' anonymous sets; by name
	Objects []string     // stateful objects and flowtables

	program *Program
}

// Program returns the table as the kernel runs it.
func (s *TableState) Program() *Program { return s.program }

// ChainState is one chain: its hook (empty for a regular chain) and rules.
type ChainState struct {
	Name  string
	Hook  string // "type nat hook postrouting priority srcnat; policy accept"
	Rules []RuleState
}

// MapState is one set or map: its type and its elements as text.
type MapState struct {
	Name     string
	Type     string
	Elements []string
}

// RuleState is one rule: its comment and its statements in nft's syntax.
type RuleState struct {
	Comment string
	Text    string
}

// String writes the state a line per chain, rule, map and element.
func (s *TableState) String() string {
	var b strings.Builder
	for _, c := range s.Chains {
		fmt.Fprintf(&b, "chain %s { %s }\n", c.Name, c.Hook)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  %s comment %q\n", r.Text, r.Comment)
		}
	}
	for _, m := range s.Maps {
		fmt.Fprintf(&b, "map %s { %s }\n", m.Name, m.Type)
		for _, e := range m.Elements {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	for _, o := range s.Objects {
		fmt.Fprintln(&b, o)
	}
	return b.String()
}

// ErrNoTable is returned by Read when natpool's table does not exist.
var ErrNoTable = errors.New("no such table")

// Expected returns the state the kernel holds once rs is applied.
func Expected(rs *compiler.Ruleset) (*TableState, error) {
	o, err := buildObjects(rs)
	if err != nil {
		return nil, err
	}
	byID := map[uint32]setWithElements{}
	for _, s := range o.sets {
		byID[s.set.ID] = s
	}
	return o.state(o.chains, nil, func(l *expr.Lookup) (setWithElements, bool) {
		s, ok := byID[l.SetID]
		return s, ok
	}), nil
}

// chainRules is a chain with its rules.
type chainRules struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

func (o *objects) state(chains []chainRules, objects []string, resolve func(*expr.Lookup) (setWithElements, bool)) *TableState {
	// The ip6 table's chains are listed as "ip6 NAME"; the program runs
	// the ip table's, which IPv4 packets meet.
	v4 := slices.DeleteFunc(slices.Clone(chains), func(c chainRules) bool { return c.chain.Table.Family == nftables.TableFamilyIPv6 })
	st := &TableState{Objects: objects, program: program(v4, resolve)}
	for _, s := range o.sets {
		if !s.set.Anonymous {
			st.Maps = append(st.Maps, MapState{Name: s.set.Name, Type: setType(s.set), Elements: elementsText(s)})
		}
	}
	for _, c := range chains {
		cs := ChainState{Name: c.chain.Name, Hook: hookText(c.chain)}
		if c.chain.Table.Family == nftables.TableFamilyIPv6 {
			cs.Name = "ip6 " + cs.Name
		}
		for i, r := range c.rules {
			// A rule's anonymous sets are listed as maps of their own,
			// named by the rule and their order in it, so that a change of
			// one element shows as one element.
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
				name := setRef(s.set, c.chain.Name, i+1, anonymous)
				st.Maps = append(st.Maps, MapState{Name: name, Type: setType(s.set), Elements: elementsText(s)})
				return "{" + name + "}"
			}
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			cs.Rules = append(cs.Rules, RuleState{Comment: comment, Text: ruleText(r.Exprs, ref, c.chain.Table.Family == nftables.TableFamilyIPv6)})
		}
		st.Chains = append(st.Chains, cs)
	}
	slices.SortFunc(st.Chains, func(a, b ChainState) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Maps, func(a, b MapState) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(st.Objects)
	return st
}

// Read returns the state of the table as the kernel holds it, everything in
// it: every chain, set, stateful object and flowtable. ErrNoTable when there
// is no such table.
func (k *Kernel) Read(table string) (_ *TableState, err error) {
	defer func() { err = linux.Privileged(err) }()
	c := k.conn
	t, err := c.ListTableOfFamily(table, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNoTable
	}
	if err != nil {
		return nil, err
	}
	o := &objects{table: t}
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
		sw := listed(s, "set "+s.Name, elems)
		byName[s.Name] = sw
		o.sets = append(o.sets, sw)
	}
	chains, err := k.chainsOf(t)
	if err != nil {
		return nil, err
	}
	// natpool's ip6 table of the same name: its chains.
	if t6, err := c.ListTableOfFamily(table, nftables.TableFamilyIPv6); err == nil {
		chains6, err := k.chainsOf(t6)
		if err != nil {
			return nil, err
		}
		chains = append(chains, chains6...)
	} else if !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	objects, err := k.objectsText(t)
	if err != nil {
		return nil, err
	}
	return o.state(chains, objects, func(l *expr.Lookup) (setWithElements, bool) {
		s, ok := byName[l.SetName]
		return s, ok
	}), nil
}

// chainsOf returns the chains of table t with their rules.
func (k *Kernel) chainsOf(t *nftables.Table) ([]chainRules, error) {
	all, err := k.conn.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, err
	}
	var chains []chainRules
	for _, ch := range all {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := k.conn.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("chain %s: %w", ch.Name, err)
		}
		chains = append(chains, chainRules{ch, rules})
	}
	return chains, nil
}

// objectsText lists a table's stateful objects and flowtables, which
// natpool never makes.
func (k *Kernel) objectsText(t *nftables.Table) ([]string, error) {
	objs, err := k.conn.GetNamedObjects(t)
	if err != nil {
		return nil, fmt.Errorf("stateful objects: %w", err)
	}
	var out []string
	for _, o := range objs {
		if n, ok := o.(*nftables.NamedObj); ok {
			out = append(out, fmt.Sprintf("object %s type %d", n.Name, n.Type))
		} else {
			out = append(out, fmt.Sprintf("object %T", o))
		}
	}
	flowtables, err := k.conn.ListFlowtables(t)
	if err != nil {
		return nil, fmt.Errorf("flowtables: %w", err)
	}
	for _, f := range flowtables {
		out = append(out, "flowtable "+f.Name)
	}
	return out, nil
}

var hookNames = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookInput: "input", *nftables.ChainHookForward: "forward",
	*nftables.ChainHookOutput: "output", *nftables.ChainHookPostrouting: "postrouting",
}

// priorityNames are nft's names of the standard priorities of the ip family.
var priorityNames = []struct {
	name string
	prio int32
}{{"raw", -300}, {"mangle", -150}, {"dstnat", -100}, {"filter", 0}, {"security", 50}, {"srcnat", 100}}

// hookText writes a base chain's declaration as nft does; "" for a regular
// chain, which has no hook.
func hookText(c *nftables.Chain) string {
	if c.Hooknum == nil {
		return ""
	}
	hook, ok := hookNames[*c.Hooknum]
	if !ok {
		hook = fmt.Sprint(*c.Hooknum)
	}
	prio := "0"
	if c.Priority != nil {
		p := int32(*c.Priority)
		prio = fmt.Sprint(p)
		for _, n := range priorityNames {
			switch d := p - n.prio; {
			case d == 0:
				prio = n.name
			case d > 0 && d <= 10:
				prio = fmt.Sprintf("%s + %d", n.name, d)
			case d < 0 && d >= -10:
				prio = fmt.Sprintf("%s - %d", n.name, -d)
			default:
				continue
			}
			break
		}
	}
	policy := "accept"
	if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
		policy = "drop"
	}
	return fmt.Sprintf("type %s hook %s priority %s; policy %s", c.Type, hook, prio, policy)
}

func setType(s *nftables.Set) string {
	t := fmt.Sprintf("type %s", s.KeyType.Name)
	if s.IsMap {
		t += fmt.Sprintf(" : %d bytes", s.DataType.Bytes)
	}
	if s.Interval {
		t += "; flags interval"
	}
	return t
}

// elementsText writes a set's elements in key order (the kernel dumps them
// in its own), an interval's end before the start that shares its key.
func elementsText(s setWithElements) []string {
	elems := s.all()
	// Sorted by index, not moved: a map may hold a million elements.
	order := make([]int32, len(elems))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(i, j int32) int {
		a, b := &elems[i], &elems[j]
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return boolOrder(b.IntervalEnd, a.IntervalEnd)
	})
	key := bytesText
	switch s.set.KeyType.Name {
	case nftables.TypeInteger.Name: // jhash buckets, in network byte order
		key = func(b []byte) string { return strconv.FormatUint(uint64(binary.BigEndian.Uint32(b)), 10) }
	case nftables.TypeInetProto.Name:
		key = operand{kind: protoValue}.value
	}
	out := make([]string, len(elems))
	for i, k := range order {
		e := &elems[k]
		switch {
		case e.IntervalEnd:
			out[i] = key(e.Key) + " end"
		case len(e.Val) > 0:
			out[i] = key(e.Key) + " : " + bytesText(e.Val)
		default:
			out[i] = key(e.Key)
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
	return "0x" + hex.EncodeToString(b)
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

// Compare lists how have differs from want, object by object, in a stable
// order: each chain and its rules by position, the maps by name, then
// stateful objects.
func Compare(want, have *TableState) []compiler.Difference {
	var out []compiler.Difference
	add := func(object string, w, h []string) {
		if missing, extra := setDiff(w, h), setDiff(h, w); len(missing)+len(extra) > 0 {
			out = append(out, compiler.Difference{Object: object, Missing: missing, Extra: extra})
		}
	}
	for _, name := range names(want.Chains, have.Chains, func(c ChainState) string { return c.Name }) {
		w, h := find(want.Chains, name, func(c ChainState) string { return c.Name }), find(have.Chains, name, func(c ChainState) string { return c.Name })
		add("chain "+name, chainLines(w), chainLines(h))
		var wr, hr []RuleState
		if w != nil {
			wr = w.Rules
		}
		if h != nil {
			hr = h.Rules
		}
		for i := range max(len(wr), len(hr)) {
			var wl, hl []string
			comment := ""
			if i < len(hr) {
				hl, comment = []string{hr[i].Text}, hr[i].Comment
			}
			if i < len(wr) {
				wl, comment = []string{wr[i].Text}, wr[i].Comment
			}
			add(fmt.Sprintf("rule %d of chain %s (%s)", i+1, name, comment), wl, hl)
		}
	}
	for _, name := range names(want.Maps, have.Maps, func(m MapState) string { return m.Name }) {
		add("map "+name, mapLines(find(want.Maps, name, func(m MapState) string { return m.Name })),
			mapLines(find(have.Maps, name, func(m MapState) string { return m.Name })))
	}
	add("objects", want.Objects, have.Objects)
	return out
}

// names returns the sorted union of the names of a and b.
func names[T any](a, b []T, name func(T) string) []string {
	var out []string
	for _, x := range a {
		out = append(out, name(x))
	}
	for _, x := range b {
		out = append(out, name(x))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func find[T any](list []T, n string, name func(T) string) *T {
	if i := slices.IndexFunc(list, func(x T) bool { return name(x) == n }); i >= 0 {
		return &list[i]
	}
	return nil
}

// chainLines is a chain's declaration, nil for an absent chain.
func chainLines(c *ChainState) []string {
	switch {
	case c == nil:
		return nil
	case c.Hook == "":
		return []string{"regular chain (no hook)"}
	}
	return []string{c.Hook}
}

// mapLines is a map's type and elements, nil for an absent map.
func mapLines(m *MapState) []string {
	if m == nil {
		return nil
	}
	return append([]string{m.Type}, m.Elements...)
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
