package pool

import (
	"cmp"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// Strategy names how an egress entry maps inside hosts to public addresses.
type Strategy string

// The strategies. Each is deterministic: the same spec gives the same mapping.
const (
	Octet      Strategy = "octet"      // low bits of the inside address select the public address
	Hash       Strategy = "hash"       // nft's jhash buckets, spread by a consistent-hashing ring within a bound
	Persistent Strategy = "persistent" // the kernel's own `snat to A-B persistent`
	Block      Strategy = "block"      // RFC 7422 port blocks: an address and a port range per host
)

// DefaultStrategy is used when a spec names none: it keeps churn low when
// the pool changes.
const DefaultStrategy = Hash

// StrategyKind is what natpool knows of one strategy beyond its Mapping:
// the options a spec may give it ("hosts", the active-hosts file, applies
// to all), how it plans a mapping, and how a record brings one back. Each
// strategy's file declares its own.
type StrategyKind struct {
	Name    Strategy
	Options []string
	plan    func(e *Egress, es EgressSpec, warnings *[]string) (Mapping, error)
	restore func(e *Egress, er EgressRecord) (Mapping, error)
}

// Strategies lists the strategies.
var Strategies = []StrategyKind{octetKind, hashKind, persistentKind, blockKind}

// kindOf returns strategy s, nil for none.
func kindOf(s Strategy) *StrategyKind {
	for i := range Strategies {
		if Strategies[i].Name == s {
			return &Strategies[i]
		}
	}
	return nil
}

// MaxPool bounds the public addresses of one egress entry (a /16).
const MaxPool = 1 << 16

// Public is one usable public address of a pool.
type Public struct {
	Addr   netip.Addr
	Weight int // relative share of the inside hosts; 1 unless given
}

// DefaultCTLabel is the conntrack label bit natpool's rules set unless the
// spec names another: the last of the kernel's 128.
const DefaultCTLabel = 127

// Plan is a checked spec with its computed mapping: what natpool reports,
// renders and applies.
type Plan struct {
	Table   string
	CTLabel int // the conntrack label bit natpool's rules set
	Egress  []*Egress
	// Cluster is how the nodes share the pool; nil for a single box.
	Cluster *Cluster
	// Uplinks is how a site's uplinks share its inside hosts; nil when
	// the routes decide.
	Uplinks *Uplinks
	// Services are the inside servers reached from outside.
	Services []Service
	Spec     Spec     // the spec the plan was made from
	Warnings []string // things worth telling a person that do not stop the plan
}

// Egress is one planned egress entry.
type Egress struct {
	Name     string
	OIF      string
	Strategy Strategy
	Ports    PortRange
	// Private holds the inside ranges as given, ascending; block mode numbers
	// hosts over them, so excluding a host leaves a hole instead of
	// renumbering every host after it.
	Private []netipx.IPRange
	// Inside is the set of mapped inside hosts: Private less the exclusions.
	Inside *netipx.IPSet
	// Pool holds the usable public addresses, ascending, exclusions removed.
	Pool []Public
	// Active holds, per Pool index, the hosts actually seen (the hosts
	// option, weighted by their counts); nil without a hosts file.
	Active []uint64
	// Mapping is the strategy's mapping: *OctetMapping, *HashMapping,
	// *PersistentMapping or *BlockMapping.
	Mapping Mapping
	// Gateway is the uplink's next hop as the spec gives it; invalid when
	// the main table's default route through OIF is to say.
	Gateway netip.Addr
	// Probe is how watch tests the uplink; nil: its link alone says.
	Probe *Probe
	// NPT are the entry's IPv6 prefix translations; nil for none.
	NPT []NPT

	inside []span
	index  map[uint32]int // public address -> index in Pool
	spec   EgressSpec     // as given, for planning it again with another pool
	hosts  activeHosts    // the active hosts of a hosts file, if given
}

// Mapping decides the public address of every inside host. Each strategy
// makes its own, which knows too what to report of it, what pins it in a
// record and in the plan's digest.
type Mapping interface {
	// owner returns the Pool index of inside host x, or -1 if x is not mapped.
	owner(x uint32) int
	// describe says briefly what each address of a pool of n carries, for
	// the load report, in one pass.
	describe(n int) []string
	// settings are the options the mapping was planned with, as decided.
	settings() []Setting
	// pin records what rebuilds the mapping, in its entry's record.
	pin(er *EgressRecord)
	// canonical writes the lines that decide the mapping of entry e, for
	// the plan's digest.
	canonical(e *Egress, c *Canonical)
}

// NewPlan checks a spec and computes its mapping. Errors name the offending
// value on one line.
func NewPlan(spec Spec) (*Plan, error) {
	p := &Plan{Table: spec.Table, Spec: spec}
	if p.Table == "" {
		p.Table = DefaultTable
	}
	if err := checkName("table name", p.Table); err != nil {
		return nil, err
	}
	p.CTLabel = DefaultCTLabel
	if spec.CTLabel != "" {
		n, err := strconv.Atoi(spec.CTLabel)
		if err != nil || n < 0 || n > 127 {
			return nil, fmt.Errorf("ct-label %q must be a conntrack label bit, 0-127", spec.CTLabel)
		}
		p.CTLabel = n
	}
	if len(spec.Egress) == 0 {
		return nil, fmt.Errorf("no egress entries: give --private and --pool, or a spec file with egress")
	}
	names := map[string]bool{}
	kernelNames := map[string]string{}
	for i, es := range spec.Egress {
		if es.Name == "" {
			es.Name = fmt.Sprintf("egress%d", i+1)
			if len(spec.Egress) == 1 {
				es.Name = "default"
			}
		}
		if names[es.Name] {
			return nil, fmt.Errorf("egress name %q is used twice", es.Name)
		}
		names[es.Name] = true
		k := kernelName(es.Name)
		if other, taken := kernelNames[k]; taken {
			return nil, fmt.Errorf("egress names %q and %q both become %q in the kernel's map and set names: rename one", other, es.Name, k)
		}
		kernelNames[k] = es.Name
		e, err := newEgress(es, &p.Warnings)
		if err != nil {
			if len(spec.Egress) > 1 {
				err = fmt.Errorf("egress %s: %w", es.Name, err)
			}
			return nil, err
		}
		p.Egress = append(p.Egress, e)
	}
	if err := p.checkOverlaps(); err != nil {
		return nil, err
	}
	if len(spec.Nodes) > 0 {
		c, err := newCluster(spec.Cluster, spec.Nodes, p.Egress)
		if err != nil {
			return nil, err
		}
		p.Cluster = c
		if idle := c.Idle(); len(idle) > 0 {
			chunks := fmt.Sprintf("%d chunks", len(c.Chunks))
			if len(c.Chunks) == 1 {
				chunks = "1 chunk"
			}
			p.Warnings = append(p.Warnings, fmt.Sprintf("nodes that own no chunk of the pool (%s of /%d for %d nodes): %s; each translates only while an owner is down: use a longer cluster chunk",
				chunks, c.ChunkBits, len(c.Nodes), strings.Join(idle, ", ")))
		}
	} else if spec.Cluster != (ClusterSpec{}) {
		return nil, fmt.Errorf("cluster settings without nodes: list the nodes that share the pool")
	}
	if !reflect.ValueOf(spec.Uplinks).IsZero() {
		u, err := newUplinks(spec.Uplinks, p)
		if err != nil {
			return nil, err
		}
		p.Uplinks = u
	}
	var err error
	if p.Services, err = newServices(spec.Services, p); err != nil {
		return nil, err
	}
	return p, nil
}

// SavedSpec returns the spec with the hosts-data of every hosts file the
// plan read: a spec that plans the same anywhere, the files gone or changed.
func (p *Plan) SavedSpec() Spec {
	s := p.Spec
	s.Egress = slices.Clone(s.Egress)
	for i, e := range p.Egress {
		if e.hosts != nil {
			s.Egress[i].HostsData = e.hosts.lines()
		}
	}
	return s
}

// checkName refuses a table or egress name nft would not take.
func checkName(what, name string) error {
	switch {
	case len(name) > 64:
		return fmt.Errorf("%s %q is %d characters long: at most 64", what, name, len(name))
	case !validName.MatchString(name):
		return fmt.Errorf("%s %q: use letters, digits, '_', '.' and '-', starting with a letter, digit or '_'", what, name)
	}
	return nil
}

// checkOverlaps refuses entries the kernel would not run as planned: one
// entry's inside hosts among another's public addresses, and an entry whose
// inside hosts an earlier entry already translates on the same interfaces
// (the kernel uses the first matching rule, lookup would answer for both).
// It sweeps every entry's ranges once, in address order.
func (p *Plan) checkOverlaps() error {
	type ranged struct {
		span
		egress int
		public bool
	}
	var all []ranged
	for i, e := range p.Egress {
		for _, s := range e.inside {
			all = append(all, ranged{s, i, false})
		}
		for _, a := range e.Pool {
			x := Uint32(a.Addr)
			all = append(all, ranged{span{x, x}, i, true})
		}
	}
	slices.SortFunc(all, func(a, b ranged) int { return cmp.Compare(a.lo, b.lo) })
	var open []ranged // ranges that reach the current one's start
	for _, r := range all {
		open = slices.DeleteFunc(open, func(o ranged) bool { return o.hi < r.lo })
		for _, o := range open {
			if err := p.conflict(o.egress, o.public, r.egress, r.public, max(o.lo, r.lo)); err != nil {
				return err
			}
		}
		open = append(open, r)
	}
	return nil
}

// conflict says what is wrong when address x is in a range of entry a and
// one of entry b (public tells pool from inside hosts); nil if nothing is.
func (p *Plan) conflict(a int, aPublic bool, b int, bPublic bool, x uint32) error {
	ea, eb := p.Egress[a], p.Egress[b]
	addr := AddrFromUint32(x)
	switch {
	case aPublic && bPublic || a == b:
		return nil // a shared pool; and within an entry, setAddresses checks
	case aPublic || bPublic:
		pub, in := ea, eb
		if bPublic {
			pub, in = eb, ea
		}
		return fmt.Errorf("%s is a public address of egress %s and an inside host of egress %s", addr, pub.Name, in.Name)
	}
	first, second := min(a, b), max(a, b)
	if e1, e2 := p.Egress[first], p.Egress[second]; coversInterface(e1.OIF, e2.OIF) {
		return fmt.Errorf("egress %s never applies to %s and the hosts around it: egress %s comes first and translates them on %s too (give them other interfaces, or drop one)",
			e2.Name, addr, e1.Name, cmp.Or(e1.OIF, "every interface"))
	}
	return nil
}

// coversInterface reports whether every interface oif b matches is also
// matched by oif a (empty: any interface).
func coversInterface(a, b string) bool {
	if a == "" {
		return true
	}
	if b == "" {
		return false
	}
	prefix, wildcard := strings.CutSuffix(a, "*")
	if !wildcard {
		return a == b
	}
	return strings.HasPrefix(strings.TrimSuffix(b, "*"), prefix)
}

var (
	validName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)
	nonKernel = regexp.MustCompile(`[^A-Za-z0-9_]`)
)

// kernelName is what an egress name becomes in the names of its maps and
// sets: letters, digits and '_'.
func kernelName(name string) string { return nonKernel.ReplaceAllString(name, "_") }

// KernelName returns the start of the names of the entry's maps and sets
// in the kernel; no two entries of a plan share one.
func (e *Egress) KernelName() string { return kernelName(e.Name) }

func newEgress(es EgressSpec, warnings *[]string) (*Egress, error) {
	e := &Egress{Name: es.Name, OIF: es.OIF, Strategy: Strategy(es.Strategy), Ports: DefaultPorts, spec: es}
	if err := checkName("egress name", e.Name); err != nil {
		return nil, err
	}
	if err := checkInterface(e.OIF); err != nil {
		return nil, err
	}
	if e.Strategy == "" {
		e.Strategy = DefaultStrategy
	}
	kind := kindOf(e.Strategy)
	if kind == nil {
		return nil, fmt.Errorf("unknown strategy %q (want octet, hash, persistent or block)", es.Strategy)
	}
	for _, o := range es.Options() {
		if *o.Value != "" && !slices.Contains(kind.Options, o.Name) {
			return nil, fmt.Errorf("option %s does not apply to strategy %s", o.Name, e.Strategy)
		}
	}
	if es.Ports != "" {
		var err error
		if e.Ports, err = ParsePortRange(es.Ports); err != nil {
			return nil, err
		}
	}
	if err := e.setUplink(es); err != nil {
		return nil, err
	}
	if err := e.setNPT(es); err != nil {
		return nil, err
	}
	if err := e.setAddresses(es, warnings); err != nil {
		return nil, err
	}
	var err error
	if es.Hosts != "" || es.HostsData != nil {
		if e.hosts, err = loadHosts(es, e.Inside); err != nil {
			return nil, err
		}
	}
	e.Mapping, err = kind.plan(e, es, warnings)
	if err == nil && e.hosts != nil && e.Active == nil {
		// The mapping does not depend on the hosts: count them per public
		// address.
		e.Active = e.hosts.countBy(len(e.Pool), e.Mapping.owner)
	}
	return e, err
}

// checkInterface refuses an oif that is not an interface name or a name
// ending in the wildcard "*", which means the same to apply, to nft and (as
// "+") to iptables: every interface whose name starts with what precedes it.
func checkInterface(name string) error {
	prefix, wildcard := strings.CutSuffix(name, "*")
	switch {
	case name == "":
		return nil
	case name == "*":
		return fmt.Errorf("oif %q matches every interface: leave oif out instead", name)
	case strings.Contains(prefix, "*"):
		return fmt.Errorf("oif %q: '*' is a wildcard only at the end of the name", name)
	case strings.HasSuffix(name, "+"):
		return fmt.Errorf("oif %q: write the wildcard as %q, as nft does", name, strings.TrimSuffix(name, "+")+"*")
	case len(prefix) > 15 || (!wildcard && len(name) > 15) || strings.ContainsAny(name, " /:\"\t\n"):
		return fmt.Errorf("oif %q is not an interface name", name)
	}
	return nil
}

// MatchesInterface reports whether the interface name matches oif: the
// same name, or for a wildcard "eth*" any name that starts with "eth".
func MatchesInterface(oif, name string) bool {
	if prefix, wildcard := strings.CutSuffix(oif, "*"); wildcard {
		return strings.HasPrefix(name, prefix)
	}
	return oif == name
}

// setAddresses parses the inside ranges, the pool and the exclusions.
func (e *Egress) setAddresses(es EgressSpec, warnings *[]string) error {
	if len(es.Private) == 0 {
		return fmt.Errorf("no inside hosts: give --private")
	}
	if len(es.Pool) == 0 {
		return fmt.Errorf("no public addresses: give --pool")
	}
	private, err := parseDisjoint("private", es.Private)
	if err != nil {
		return err
	}
	pool, err := parseDisjoint("pool", es.Pool)
	if err != nil {
		return err
	}
	for _, r := range pool {
		if i := overlapping(private, r.IPRange); i >= 0 {
			return fmt.Errorf("pool %q overlaps private %q", r.text, private[i].text)
		}
	}
	var exclude netipx.IPSetBuilder
	for _, s := range es.Exclude {
		r, err := ParseRange(s)
		if err != nil {
			return fmt.Errorf("exclude %w", err)
		}
		if overlapping(private, r) < 0 && overlapping(pool, r) < 0 {
			*warnings = append(*warnings, fmt.Sprintf("egress %s: exclude %q matches no inside or public address", e.Name, s))
		}
		exclude.AddRange(r)
	}
	excluded, _ := exclude.IPSet()

	var inside netipx.IPSetBuilder
	for _, r := range private {
		inside.AddRange(r.IPRange)
		e.Private = append(e.Private, r.IPRange)
	}
	inside.RemoveSet(excluded)
	e.Inside, _ = inside.IPSet()
	e.inside = spansOf(e.Inside)
	if len(e.inside) == 0 {
		return fmt.Errorf("every inside host is excluded")
	}

	for _, r := range pool {
		for a := r.From(); r.Contains(a); a = a.Next() {
			if excluded.Contains(a) {
				continue
			}
			if len(e.Pool) == MaxPool {
				return fmt.Errorf("the pool has more than %d addresses", MaxPool)
			}
			e.Pool = append(e.Pool, Public{a, r.weight})
		}
	}
	if len(e.Pool) == 0 {
		return fmt.Errorf("the pool is empty after exclusions")
	}
	e.indexPool()
	return nil
}

// indexPool indexes the pool by address.
func (e *Egress) indexPool() {
	e.index = make(map[uint32]int, len(e.Pool))
	for i, p := range e.Pool {
		e.index[Uint32(p.Addr)] = i
	}
}

// entry is a parsed range with the text it came from.
type entry struct {
	netipx.IPRange
	text   string
	weight int
}

// parseDisjoint parses the ranges of the spec key named key ("private" or
// "pool", whose entries may carry =WEIGHT), sorts them and refuses any two
// that overlap.
func parseDisjoint(key string, in []string) ([]entry, error) {
	out := make([]entry, 0, len(in))
	for _, s := range in {
		e := entry{text: s, weight: 1}
		addrs, w, weighted := strings.Cut(s, "=")
		if weighted && key != "pool" {
			addrs = s // let the range parser name the bad value
		}
		r, err := ParseRange(addrs)
		if err != nil {
			return nil, fmt.Errorf("%s %w", key, err)
		}
		e.IPRange = r
		if weighted && key == "pool" {
			n, err := strconv.Atoi(w)
			if err != nil || n <= 0 || n > 1000 {
				return nil, fmt.Errorf("pool %q: weight %q must be a whole number 1-1000", s, w)
			}
			e.weight = n
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b entry) int { return a.From().Compare(b.From()) })
	for i := 1; i < len(out); i++ {
		if out[i-1].Overlaps(out[i].IPRange) {
			return nil, fmt.Errorf("%s %q and %q overlap", key, out[i-1].text, out[i].text)
		}
	}
	return out, nil
}

// overlapping returns the index of the first entry that overlaps r, or -1.
func overlapping(entries []entry, r netipx.IPRange) int {
	return slices.IndexFunc(entries, func(e entry) bool { return e.Overlaps(r) })
}

// InsideHosts returns the number of inside hosts, excluded ones left out.
func (e *Egress) InsideHosts() int { return int(countOf(e.inside)) }

// eachMapped calls fn for every mapped inside host, ascending, with its Pool index.
func (e *Egress) eachMapped(fn func(x uint32, owner int)) {
	each(e.inside, func(x uint32) {
		if i := e.Mapping.owner(x); i >= 0 {
			fn(x, i)
		}
	})
}

// weighted reports whether any public address was given a weight.
func (e *Egress) weighted() bool {
	return slices.ContainsFunc(e.Pool, func(p Public) bool { return p.Weight != 1 })
}
