// Package compiler turns a plan into one backend-neutral ruleset: natpool's
// table, its maps and its rules. Every output format and the kernel path
// work from this one representation.
package compiler

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"

	"github.com/natpool/natpool/pool"
)

// Difference is one way two copies of natpool's objects differ (a table as
// planned and as the kernel holds it, natpool's policy rules): what the
// first has that the second lacks (Missing) and what the second has that
// the first lacks (Extra), for one object, each a line of text.
type Difference struct {
	Object  string // "chain NAME", "rule N of chain NAME (COMMENT)", "map NAME", "policy rules", ...
	Missing []string
	Extra   []string
}

// Chain is the name of natpool's source-NAT chain.
const Chain = "postrouting"

// Ruleset is natpool's table: named maps and the rules of one source-NAT
// chain, in spec order.
type Ruleset struct {
	Table  string
	Digest string // identifies the plan: the same spec gives the same digest
	// Label is the conntrack label bit every rule sets on the connections
	// it translates: how natpool tells its own conntrack entries.
	Label int
	Maps  []Map
	Rules []Rule
	// Guards are the guard chain's rules, one per egress entry.
	Guards []Guard
	// Steering is what a node of a cluster adds; nil for a single box.
	Steering *Steering
	// Uplinks is what a site with several uplinks adds; nil when the
	// routes decide.
	Uplinks *Uplinks
	// Forwards send the connections to the services' public ports on to
	// their servers; Hairpins let inside hosts reach them so too.
	Forwards []Forward
	Hairpins []Hairpin
	// Prefixes6 are the IPv6 prefix translations, in natpool's ip6 table
	// of the same name; none: no ip6 table.
	Prefixes6 []Prefix6
}

// GuardChain is the chain of natpool's table that drops what would leave an
// uplink with an inside source untranslated.
const GuardChain = "guard"

// Guard is a rule of the guard chain, which runs after source NAT: a packet
// from Sources leaving through OIF (any interface when empty; then not one
// routed to a peer of a cluster node, which the peer translates) whose
// connection no source NAT translated is dropped and counted. Such a
// connection began before natpool's rules could see it (before the table
// existed, or steered to a peer that has since died): its conntrack entry
// would send every later packet out with the inside address.
type Guard struct {
	Egress  string
	OIF     string
	Sources []netipx.IPRange
}

// Elements returns the number of map elements, the bucket ranges of the
// rules' jhash maps included.
func (rs *Ruleset) Elements() int {
	n := 0
	for _, m := range rs.Maps {
		n += m.Len
	}
	for _, r := range rs.Rules {
		n += len(r.Target.Runs)
	}
	if rs.Steering != nil {
		for _, r := range rs.Steering.Rules {
			n += len(r.Target.Runs)
		}
	}
	return n
}

// MapKind tells what a map's elements hold.
type MapKind int

// The kinds of map.
const (
	// AddrMap maps a key (a masked value or an inside host), or a range of
	// them, to a public address: `type ipv4_addr : ipv4_addr`.
	AddrMap MapKind = iota
	// PortBlockMap maps an inside host to a public address and its port
	// block: `type ipv4_addr : interval ipv4_addr . inet_service`.
	PortBlockMap
	// PortMap maps a key to a port: `type ipv4_addr : inet_service`.
	PortMap
	// MarkMap maps a key to a packet mark: `type ipv4_addr : mark`.
	MarkMap
)

// Map is a named map of natpool's table. Its elements are made as they are
// read, ascending by key: a map of every host of a /10 is never held.
type Map struct {
	Name string
	Kind MapKind
	// Interval says that some key is a range: the kernel keeps an interval
	// map (an rbtree); otherwise a hash map, which it looks up, loads and
	// dumps faster.
	Interval bool
	Len      int // elements
	Elements iter.Seq[Element]
}

// listedMap is a map of elements at hand.
func listedMap(name string, kind MapKind, elems []Element) Map {
	return Map{Name: name, Kind: kind, Len: len(elems), Elements: slices.Values(elems),
		Interval: slices.ContainsFunc(elems, func(e Element) bool { return e.From != e.To })}
}

// Element is one map element: keys From-To (equal for a single key) map to
// Addr, for a PortBlockMap to Addr and Ports, for a PortMap to Ports.Lo, for
// a MarkMap to Mark. Fields a map's kind does not use are ignored (and may
// be set).
type Element struct {
	From, To netip.Addr
	Addr     netip.Addr
	Ports    pool.PortRange
	Mark     uint32
}

// Rule is one rule of natpool's chain: packets from Sources (leaving through
// OIF, when set) are source-NATed as Target says.
type Rule struct {
	Egress  string
	OIF     string
	Sources []netipx.IPRange
	// L4 restricts the rule to TCP and UDP, which have ports; a rule for
	// the other protocols follows it.
	L4     bool
	Target Target
	// Ports is the source port range; zero leaves ports to the kernel's
	// default (1024-65535 for unprivileged source ports).
	Ports pool.PortRange

	egress *pool.Egress
}

// TargetKind tells how a rule picks the public address.
type TargetKind int

// The ways of picking the public address.
const (
	ByValue     TargetKind = iota // map lookup of ip saddr & Mask (octet; compact block, any protocol)
	ByJhash                       // jhash ip saddr mod Buckets seed Seed (hash)
	ByRange                       // First-Last persistent (persistent)
	ByHost                        // map lookup of ip saddr (per-host block, any protocol)
	ByHostBlock                   // map lookup of ip saddr giving address and ports (per-host block, TCP and UDP)
	// ByValuePorts is ByValue for the address, and the lowest and highest
	// port from MinMap and MaxMap keyed on ip saddr & PortMask: three
	// lookups feeding the NAT expression's three registers (compact block,
	// TCP and UDP).
	ByValuePorts
)

// Target says how a rule picks the public address (and ports).
type Target struct {
	Kind        TargetKind
	Map         string        // ByValue, ByValuePorts, ByHost, ByHostBlock: the map's name
	Mask        netip.Addr    // ByValue, ByValuePorts: all ones for a plain ip saddr key
	MinMap      string        // ByValuePorts
	MaxMap      string        // ByValuePorts
	PortMask    netip.Addr    // ByValuePorts
	Seed        uint32        // ByJhash
	Buckets     int           // ByJhash: the modulus
	Runs        []BucketRange // ByJhash: the buckets' addresses, a run of buckets at a time
	First, Last netip.Addr    // ByRange
}

// Comment is the comment natpool writes on a rule of the ruleset. It is
// natpool's stamp: it names the plan's digest, so that natpool recognises its
// own table (and never replaces or deletes another) and tells which plan a
// table holds.
func (rs *Ruleset) Comment(r Rule) string {
	return fmt.Sprintf("%s%s egress %s", stampPrefix, rs.Digest, r.Egress)
}

const stampPrefix = "natpool plan "

// GuardComment is the stamp on a rule of the guard chain.
func (rs *Ruleset) GuardComment(g Guard) string {
	return fmt.Sprintf("%s%s guard %s", stampPrefix, rs.Digest, g.Egress)
}

// GuardEgress reads the egress entry a guard rule's stamp names.
func GuardEgress(comment string) (string, bool) {
	rest, ok := strings.CutPrefix(comment, stampPrefix)
	if !ok {
		return "", false
	}
	_, what, _ := strings.Cut(rest, " ")
	return strings.CutPrefix(what, "guard ")
}

// Stamp reads a rule comment: the digest of the plan a natpool rule belongs
// to, and whether the comment is natpool's at all. natpool 0.1.0 wrote
// "egress NAME" without a digest: such a rule is natpool's, digest unknown.
func Stamp(comment string) (digest string, natpool bool) {
	if rest, ok := strings.CutPrefix(comment, stampPrefix); ok {
		digest, what, _ := strings.Cut(rest, " ")
		return digest, stamped(what)
	}
	return "", strings.HasPrefix(comment, "egress ")
}

// LabelBits is the 16-byte conntrack label bitmap with only bit set, as the
// kernel keeps it: an array of host-order words, little-endian on the NAT
// boxes natpool models.
func LabelBits(bit int) []byte {
	b := make([]byte, 16)
	b[bit/8] = 1 << (bit % 8)
	return b
}

// BucketRange is a run of consecutive jhash buckets of one public address.
// The kernel takes the runs as an interval map, as nft builds one from
// ranges: the hash is turned to network byte order for the lookup, the byte
// order that google/nftables declares for the keys of every interval set,
// so that a table natpool applies lists like one nft loads.
type BucketRange struct {
	Lo, Hi uint32
	Addr   netip.Addr
	Mark   uint32 // in a steer rule, instead of Addr
}

// KernelName returns the start of the names of the rule's egress entry's
// maps and sets.
func (r *Rule) KernelName() string { return r.egress.KernelName() }

// Publics returns the public addresses of the rule's egress entry, in pool
// order: the order of the per-address sets of the ipset output.
func (r *Rule) Publics() []netip.Addr {
	addrs := make([]netip.Addr, len(r.egress.Pool))
	for i, p := range r.egress.Pool {
		addrs[i] = p.Addr
	}
	return addrs
}

// Hosts returns the mapped inside hosts of the rule's egress entry, in
// address order, as they are made.
func (r *Rule) Hosts() iter.Seq[pool.Host] { return r.egress.Hosts() }

// Encoding is how the block strategy's port blocks reach the kernel.
type Encoding int

// The encodings of port blocks.
const (
	// Compact finds the address by the host's group and the ports by the
	// host's low bits: one element per public address plus two per host of
	// a group, when the plan is aligned (pool.BlockMapping.Aligned), and
	// three small elements per host otherwise. nft prints it in a form its
	// own parser cannot read back, so it travels as netlink or nft JSON.
	Compact Encoding = iota
	// PerHost maps each host to its address and port block in one element:
	// the only form nft -f text and iptables can carry.
	PerHost
)

// Options say how a plan is compiled.
type Options struct {
	Encoding Encoding
	// Node names the node of the plan's cluster the ruleset is for, which
	// adds its steering; empty for none. It must be a node of the plan.
	Node string
	// Uplinks says, for a plan with uplinks, what is known of each member
	// (by member); nil: every one up, nothing learned.
	Uplinks []UplinkFacts
	// Addrs6 are the global IPv6 addresses of the interfaces whose prefix
	// an entry's pool6 takes (from-interface), by interface.
	Addrs6 map[string]netip.Addr
}

// Compile builds the ruleset of a plan.
func Compile(p *pool.Plan, o Options) *Ruleset {
	rs := &Ruleset{Table: p.Table, Label: p.CTLabel}
	for _, e := range p.Egress {
		compileEgress(rs, e, o)
	}
	rs.Digest = Digest(p)
	if o.Node != "" {
		rs.Steering = steering(rs, p, o.Node)
	}
	services(rs, p)
	rs.Prefixes6 = prefixes6(p, o.Addrs6)
	if p.Uplinks != nil {
		rs.Uplinks = uplinks(p, o.Uplinks, rs.Prefixes6)
	}
	return rs
}

func compileEgress(rs *Ruleset, e *pool.Egress, o Options) {
	r := Rule{Egress: e.Name, OIF: e.OIF, Sources: e.Inside.Ranges(), egress: e}
	rs.Guards = append(rs.Guards, Guard{Egress: e.Name, OIF: e.OIF, Sources: r.Sources})
	if e.Ports != pool.DefaultPorts {
		r.Ports = e.Ports
	}
	name := e.KernelName()
	switch m := e.Mapping.(type) {
	case *pool.OctetMapping:
		var elems []Element
		for i, v := range m.Values {
			elems = append(elems, Element{From: pool.AddrFromUint32(v.Lo), To: pool.AddrFromUint32(v.Hi), Addr: e.Pool[i].Addr})
		}
		mp := listedMap(name+"_octet", AddrMap, elems)
		rs.Maps = append(rs.Maps, mp)
		r.Target = Target{Kind: ByValue, Map: mp.Name, Mask: pool.AddrFromUint32(m.Mask())}
	case *pool.HashMapping:
		runs := m.Runs()
		r.Target = Target{Kind: ByJhash, Seed: m.Seed, Buckets: len(m.Owners), Runs: make([]BucketRange, 0, len(runs))}
		for _, run := range runs {
			r.Target.Runs = append(r.Target.Runs, BucketRange{Lo: run.Lo, Hi: run.Hi, Addr: e.Pool[run.Owner].Addr})
		}
	case *pool.PersistentMapping:
		r.Target = Target{Kind: ByRange, First: m.First, Last: m.Last}
	case *pool.BlockMapping:
		// The maps carry the ports for TCP and UDP; other protocols get
		// the address alone.
		r.Ports = pool.PortRange{}
		if o.Encoding == PerHost {
			l4 := r
			l4.L4 = true
			blocks := perHost(name+"_blocks", PortBlockMap, e, func(h pool.Host) Element {
				return Element{From: h.Addr, To: h.Addr, Addr: h.Public, Ports: h.Ports}
			})
			addrs := groupAddrs(name, e, m)
			rs.Maps = append(rs.Maps, blocks, addrs)
			l4.Target = Target{Kind: ByHostBlock, Map: blocks.Name}
			r.Target = Target{Kind: ByHost, Map: addrs.Name}
			rs.Rules = append(rs.Rules, l4, r)
		} else {
			rs.Rules = append(rs.Rules, compactBlocks(rs, r, name, e, m))
		}
		return
	}
	if r.Ports != (pool.PortRange{}) {
		// Ports exist only for TCP and UDP: one rule for them with the
		// range, and the same choice of address for everything else.
		l4 := r
		l4.L4 = true
		rs.Rules = append(rs.Rules, l4)
		r.Ports = pool.PortRange{}
	}
	rs.Rules = append(rs.Rules, r)
}

// perHost is a map of an element per mapped inside host, made from each
// host as the map is read.
func perHost(name string, kind MapKind, e *pool.Egress, element func(pool.Host) Element) Map {
	return Map{Name: name, Kind: kind, Len: e.InsideHosts(), Elements: func(yield func(Element) bool) {
		for h := range e.Hosts() {
			if !yield(element(h)) {
				return
			}
		}
	}}
}

// groupAddrs is the interval map from the inside hosts of every group of a
// block layout to the group's public address: the group's addresses less
// excluded hosts, which iptables' per-host rules must not match.
func groupAddrs(name string, e *pool.Egress, m *pool.BlockMapping) Map {
	var elems []Element
	inside := e.Inside.Ranges()
	for rg, public := range m.GroupRanges() {
		for _, r := range intersectRanges([]netipx.IPRange{rg}, inside) {
			elems = append(elems, Element{From: r.From(), To: r.To(), Addr: e.Pool[public].Addr})
		}
	}
	return listedMap(name+"_addrs", AddrMap, elems)
}

// compactBlocks adds the maps and TCP and UDP rules of the compact
// encoding, and returns the rule for other protocols: an interval map from
// every group's addresses to its public address and, for each way the
// layout cuts a window, two maps from a host's offset in its window (its low
// bits) to the lowest and highest port of its block, with a rule for the
// windows cut so. Unaligned plans map each host's address to its ports.
func compactBlocks(rs *Ruleset, r Rule, name string, e *pool.Egress, m *pool.BlockMapping) Rule {
	addrs := groupAddrs(name, e, m)
	rs.Maps = append(rs.Maps, addrs)
	all := pool.AddrFromUint32(^uint32(0))
	lowest := func(key netip.Addr, p pool.PortRange) Element {
		return Element{From: key, To: key, Ports: pool.PortRange{Lo: p.Lo, Hi: p.Lo}}
	}
	highest := func(key netip.Addr, p pool.PortRange) Element {
		return Element{From: key, To: key, Ports: pool.PortRange{Lo: p.Hi, Hi: p.Hi}}
	}
	l4 := r
	l4.L4 = true
	l4.Target = Target{Kind: ByValuePorts, Map: addrs.Name, Mask: all, PortMask: all}
	r.Target = Target{Kind: ByValue, Map: addrs.Name, Mask: all}
	if !m.Aligned() {
		pmin := perHost(name+"_pmin", PortMap, e, func(h pool.Host) Element { return lowest(h.Addr, h.Ports) })
		pmax := perHost(name+"_pmax", PortMap, e, func(h pool.Host) Element { return highest(h.Addr, h.Ports) })
		rs.Maps = append(rs.Maps, pmin, pmax)
		l4.Target.MinMap, l4.Target.MaxMap = pmin.Name, pmax.Name
		rs.Rules = append(rs.Rules, l4)
		return r
	}
	cuts := m.Cuts()
	for _, p := range cuts {
		suffix := ""
		if len(cuts) > 1 {
			suffix = fmt.Sprint(p)
		}
		var mins, maxs []Element
		for o, ports := range m.WindowPorts(p) {
			key := pool.AddrFromUint32(uint32(o))
			mins, maxs = append(mins, lowest(key, ports)), append(maxs, highest(key, ports))
		}
		pmin, pmax := listedMap(name+"_pmin"+suffix, PortMap, mins), listedMap(name+"_pmax"+suffix, PortMap, maxs)
		rs.Maps = append(rs.Maps, pmin, pmax)
		rule := l4
		if len(cuts) > 1 {
			rule.Sources = intersectRanges(r.Sources, m.PatternRanges(p))
		}
		rule.Target.MinMap, rule.Target.MaxMap, rule.Target.PortMask = pmin.Name, pmax.Name, pool.AddrFromUint32(uint32(m.Window-1))
		if len(rule.Sources) > 0 {
			rs.Rules = append(rs.Rules, rule)
		}
	}
	return r
}

// intersectRanges returns the addresses in both a and b (each ascending).
func intersectRanges(a, b []netipx.IPRange) []netipx.IPRange {
	var out []netipx.IPRange
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := a[i].From(), a[i].To()
		if b[j].From().Compare(lo) > 0 {
			lo = b[j].From()
		}
		if b[j].To().Less(hi) {
			hi = b[j].To()
		}
		if !hi.Less(lo) {
			out = append(out, netipx.IPRangeFrom(lo, hi))
		}
		if a[i].To().Less(b[j].To()) {
			i++
		} else {
			j++
		}
	}
	return out
}
