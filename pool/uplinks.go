package pool

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// UplinksSpec is how the egress entries of a site with several uplinks
// share its inside hosts, as written: which entries (their oif the
// uplink), how hosts are split over them, and natpool's ranges of routing
// tables, rule priorities and packet marks.
type UplinksSpec struct {
	// Policy is "balance" (hosts split by weight, the default) or
	// "priority" (every host through the first uplink that is up).
	Policy string `yaml:"policy" json:"policy,omitempty"`
	// Members are egress entry names, NAME or NAME=WEIGHT (balance), in
	// order of preference (priority); every entry when empty.
	Members []string `yaml:"members" json:"members,omitempty"`
	// Sticky keeps a failed-over connection on its backup until it ends,
	// instead of cutting it when its uplink is back.
	Sticky   bool   `yaml:"sticky" json:"sticky,omitempty"`
	Table    string `yaml:"table" json:"table,omitempty"`       // the first member's routing table
	Priority string `yaml:"priority" json:"priority,omitempty"` // the first of natpool's two rule priorities
	Mark     string `yaml:"mark" json:"mark,omitempty"`         // the first member's packet mark
}

// UplinkPolicy is how a site's hosts are split over its uplinks.
type UplinkPolicy string

// The policies.
const (
	Balance  UplinkPolicy = "balance"
	Priority UplinkPolicy = "priority"
)

// Defaults of the uplinks: beside, not among, a cluster's (7350...).
const (
	DefaultUplinkTable    = 7300
	DefaultUplinkPriority = 7300
	DefaultUplinkMark     = 0x4e510000
	// UplinkBuckets cut the inside hosts for balance: fine enough to split
	// a few hundred hosts within 2% of the weights, few enough runs for
	// the kernel (about 1,000 per unit of weight).
	UplinkBuckets = 1 << 16
)

// Uplinks is a checked uplinks spec: the egress entries that share the
// same inside hosts, each through its own uplink (its oif), and which
// uplink each host leaves by.
//
// A host is in bucket NftJhash(host, Seed, buckets); each bucket has a
// primary member (Owners, spread by weight over the hosts as the hash
// strategy spreads them over addresses, or the first member for priority),
// and a run of buckets falls back, when its primary is not up, to the
// other members in rendezvous order. So an uplink that dies moves only its
// own hosts, and they come back with it.
type Uplinks struct {
	Policy   UplinkPolicy
	Members  []Member
	Sticky   bool
	Table    int
	Priority int
	Mark     uint32
	Seed     uint32
	// Owners gives each bucket's primary member; nil for priority, where
	// one bucket holds every host.
	Owners []uint16
	runs   []Run
}

// Member is one uplink of a site.
type Member struct {
	Egress int // index in the plan's Egress
	Name   string
	OIF    string
	Weight int
	// Label is the conntrack label bit of the connections that leave by
	// it: a connection keeps its uplink while it lives.
	Label int
}

// UplinkState is what watch knows of an uplink.
type UplinkState uint8

// The states of an uplink. A degraded uplink carries its hosts only while
// no other member that is up could.
const (
	UplinkUp UplinkState = iota
	UplinkDegraded
	UplinkDown
)

// String names the state.
func (s UplinkState) String() string { return [...]string{"up", "degraded", "down"}[s] }

// ParseUplinkState reads a state's name.
func ParseUplinkState(name string) (UplinkState, bool) {
	for s := UplinkUp; s <= UplinkDown; s++ {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// newUplinks checks an uplinks spec against the plan's entries.
func newUplinks(us UplinksSpec, p *Plan) (*Uplinks, error) {
	u := &Uplinks{Policy: UplinkPolicy(cmp.Or(us.Policy, string(Balance))), Sticky: us.Sticky, Seed: DefaultSeed}
	if u.Policy != Balance && u.Policy != Priority {
		return nil, fmt.Errorf("uplinks policy %q: want balance or priority", us.Policy)
	}
	if len(p.Spec.Nodes) > 0 {
		return nil, fmt.Errorf("uplinks and nodes: a cluster's nodes with several uplinks each is not supported; give one or the other")
	}
	members := us.Members
	if len(members) == 0 {
		for _, e := range p.Egress {
			members = append(members, e.Name)
		}
	}
	seen := map[int]bool{}
	for _, m := range members {
		name, weight, hasWeight := strings.Cut(m, "=")
		i := slices.IndexFunc(p.Egress, func(e *Egress) bool { return e.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("uplinks member %q is no egress entry", name)
		}
		if seen[i] {
			return nil, fmt.Errorf("uplinks member %q is given twice", name)
		}
		seen[i] = true
		w := 1
		if hasWeight {
			if u.Policy == Priority {
				return nil, fmt.Errorf("uplinks member %q: priority takes the members in order, without weights", m)
			}
			var err error
			if w, err = strconv.Atoi(weight); err != nil || w < 1 || w > 100 {
				return nil, fmt.Errorf("uplinks member %q: weight must be 1-100", m)
			}
		}
		e := p.Egress[i]
		if e.OIF == "" || strings.HasSuffix(e.OIF, "*") {
			return nil, fmt.Errorf("uplinks member %q: its oif %q must name one interface, the uplink", name, e.OIF)
		}
		u.Members = append(u.Members, Member{Egress: i, Name: name, OIF: e.OIF, Weight: w, Label: p.CTLabel - 1 - len(u.Members)})
	}
	if len(u.Members) < 2 {
		return nil, fmt.Errorf("uplinks: %d member; a site's uplinks are two or more egress entries with the same inside hosts", len(u.Members))
	}
	if u.Members[len(u.Members)-1].Label < 0 {
		return nil, fmt.Errorf("uplinks: ct-label %d leaves no label bit below it for each of %d uplinks", p.CTLabel, len(u.Members))
	}
	first := p.Egress[u.Members[0].Egress]
	for _, m := range u.Members[1:] {
		if e := p.Egress[m.Egress]; !e.Inside.Equal(first.Inside) {
			return nil, fmt.Errorf("uplinks: egress %s and %s have other inside hosts; a site's uplinks carry the same ones", first.Name, e.Name)
		}
		if slices.ContainsFunc(u.Members, func(o Member) bool { return o.Name != m.Name && o.OIF == m.OIF }) {
			return nil, fmt.Errorf("uplinks: two members leave by %s; each is an uplink of its own", m.OIF)
		}
	}
	for i, e := range p.Egress {
		if !seen[i] && e.Inside.Overlaps(first.Inside) {
			return nil, fmt.Errorf("egress %s shares inside hosts with the uplinks but is not a member", e.Name)
		}
	}
	n := len(u.Members)
	var err error
	if u.Table, err = number("uplinks table", us.Table, DefaultUplinkTable, 1, 1<<31-n); err != nil {
		return nil, err
	}
	for _, kernel := range []int{253, 254, 255} {
		if u.Table <= kernel && kernel < u.Table+n {
			return nil, fmt.Errorf("uplinks table %q: natpool's routing tables %d-%d would take the kernel's own table %d", us.Table, u.Table, u.Table+n-1, kernel)
		}
	}
	if u.Priority, err = number("uplinks priority", us.Priority, DefaultUplinkPriority, 1, 32765); err != nil {
		return nil, err
	}
	mark, err := strconv.ParseUint(cmp.Or(us.Mark, strconv.Itoa(DefaultUplinkMark)), 0, 32)
	if err != nil || mark == 0 || mark+uint64(n) > 1<<32 {
		return nil, fmt.Errorf("uplinks mark %q must be a packet mark, 1-0xffffffff, with one above it for each uplink", us.Mark)
	}
	u.Mark = uint32(mark)
	if u.Policy == Balance {
		u.balance(p.Egress[u.Members[0].Egress])
	}
	return u, nil
}

// balance spreads the buckets over the members by weight, balancing the
// hosts of e (its inside hosts, or the active ones of its hosts file) as
// the hash strategy does over a pool: each member stands on the ring where
// its name puts it.
func (u *Uplinks) balance(e *Egress) {
	members := make([]Public, len(u.Members))
	for i, m := range u.Members {
		h := fnv.New32a()
		h.Write([]byte(m.Name))
		members[i] = Public{Addr: AddrFromUint32(h.Sum32()), Weight: m.Weight}
	}
	// No member above 1% over its share: two members at 2:1 are within 2%
	// of it either way.
	hm := &HashMapping{Seed: u.Seed, Owners: make([]uint16, UplinkBuckets), MaxImbalance: 1.01}
	shared := *e
	shared.Pool = members
	hm.assign(&shared)
	u.Owners = hm.Owners
}

// Buckets returns the jhash modulus of the hosts' buckets.
func (u *Uplinks) Buckets() int { return max(1, len(u.Owners)) }

// Runs returns the primary member of each run of buckets.
func (u *Uplinks) Runs() []Run {
	if u.runs == nil {
		if u.Owners == nil {
			u.runs = []Run{{0, 0, 0}}
		} else {
			u.runs = (&HashMapping{Owners: u.Owners}).Runs()
		}
	}
	return u.runs
}

// Order returns the members a run of buckets leaves by, in preference:
// its primary, then (balance) the others in rendezvous order for the run,
// or (priority) the members in order.
func (u *Uplinks) Order(r Run) []int {
	if u.Policy == Priority {
		order := make([]int, len(u.Members))
		for i := range order {
			order[i] = i
		}
		return order
	}
	names, weights := make([]string, len(u.Members)), make([]int, len(u.Members))
	for i, m := range u.Members {
		names[i], weights[i] = m.Name, m.Weight
	}
	order := rendezvous(names, weights, uint64(r.Lo))
	i := slices.Index(order, r.Owner)
	return append([]int{r.Owner}, slices.Delete(order, i, i+1)...)
}

// Choose returns the member each run of buckets leaves by, given the
// members' states: the first in its order that is up, else the first that
// is degraded, else (every uplink down: nowhere better to go) its primary.
// Adjacent runs that leave alike are one.
func (u *Uplinks) Choose(states []UplinkState) []Run {
	var out []Run
	for _, r := range u.Runs() {
		c := u.choose(r, states)
		if n := len(out); n > 0 && out[n-1].Owner == c && out[n-1].Hi+1 == r.Lo {
			out[n-1].Hi = r.Hi
			continue
		}
		out = append(out, Run{r.Lo, r.Hi, c})
	}
	return out
}

func (u *Uplinks) choose(r Run, states []UplinkState) int {
	order := u.Order(r)
	for _, want := range []UplinkState{UplinkUp, UplinkDegraded} {
		for _, m := range order {
			if states[m] == want {
				return m
			}
		}
	}
	return r.Owner
}

// MemberOf returns the member inside host a leaves by, given the states.
func (u *Uplinks) MemberOf(a netip.Addr, states []UplinkState) int {
	return u.choose(u.runOf(a), states)
}

// OrderOf returns the members inside host a leaves by, in preference.
func (u *Uplinks) OrderOf(a netip.Addr) []int { return u.Order(u.runOf(a)) }

// runOf returns the run of buckets of inside host a.
func (u *Uplinks) runOf(a netip.Addr) Run {
	b := NftJhash(Uint32(a), u.Seed, uint32(u.Buckets()))
	runs := u.Runs()
	i, _ := slices.BinarySearchFunc(runs, b, func(r Run, b uint32) int {
		switch {
		case r.Hi < b:
			return -1
		case r.Lo > b:
			return 1
		}
		return 0
	})
	return runs[i]
}

// UplinksIn says, of answers, which uplink each host leaves by when the
// members are in states.
func (u *Uplinks) UplinksIn(answers []Answer, states []UplinkState) {
	for i := range answers {
		if a := &answers[i]; a.Uplink > 0 {
			a.InUse = u.Members[u.MemberOf(a.Private, states)].Name == a.Egress
		}
	}
}

// AllUp returns the states of members that are all up.
func (u *Uplinks) AllUp() []UplinkState { return make([]UplinkState, len(u.Members)) }

// MemberTable returns the routing table of member i.
func (u *Uplinks) MemberTable(i int) int { return u.Table + i }

// MemberMark returns the packet mark of member i.
func (u *Uplinks) MemberMark(i int) uint32 { return u.Mark + uint32(i) }

// MemberNamed returns the index of the member of that name, -1 if none.
func (u *Uplinks) MemberNamed(name string) int {
	return slices.IndexFunc(u.Members, func(m Member) bool { return m.Name == name })
}

// setUplink checks the entry's gateway and probe, which only an entry
// leaving by one named interface can have.
func (e *Egress) setUplink(es EgressSpec) error {
	if es.Gateway == "" && es.Probe == nil {
		return nil
	}
	if e.OIF == "" || strings.HasSuffix(e.OIF, "*") {
		return fmt.Errorf("gateway and probe are an uplink's: give oif, one interface")
	}
	if es.Gateway != "" {
		a, err := netip.ParseAddr(es.Gateway)
		if err != nil || !a.Is4() || !a.IsGlobalUnicast() && !a.IsPrivate() {
			return fmt.Errorf("gateway %q must be the uplink's IPv4 next hop", es.Gateway)
		}
		e.Gateway = a
	}
	if es.Probe != nil {
		p, err := newProbe(es.Probe)
		if err != nil {
			return err
		}
		e.Probe = p
	}
	return nil
}

// UplinksRecord is the uplinks of a Record: the settings, the members (by
// their entries' names) and each bucket's primary member.
type UplinksRecord struct {
	Policy   UplinkPolicy   `json:"policy"`
	Sticky   bool           `json:"sticky,omitempty"`
	Table    int            `json:"table"`
	Priority int            `json:"priority"`
	Mark     uint32         `json:"mark"`
	Members  []MemberRecord `json:"members"`
	Owners   *HashPins      `json:"owners,omitempty"` // balance
}

// MemberRecord is one member of an UplinksRecord.
type MemberRecord struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
	Label  int    `json:"label"`
}

func (u *Uplinks) record() *UplinksRecord {
	r := &UplinksRecord{Policy: u.Policy, Sticky: u.Sticky, Table: u.Table, Priority: u.Priority, Mark: u.Mark}
	for _, m := range u.Members {
		r.Members = append(r.Members, MemberRecord{m.Name, m.Weight, m.Label})
	}
	if u.Owners != nil {
		var er EgressRecord
		(&HashMapping{Seed: u.Seed, Owners: u.Owners}).pin(&er)
		r.Owners = er.Hash
	}
	return r
}

// uplinks rebuilds the uplinks of a record over the plan's entries.
func (r *UplinksRecord) uplinks(entries []*Egress) (*Uplinks, error) {
	u := &Uplinks{Policy: r.Policy, Sticky: r.Sticky, Table: r.Table, Priority: r.Priority, Mark: r.Mark, Seed: DefaultSeed}
	for _, mr := range r.Members {
		i := slices.IndexFunc(entries, func(e *Egress) bool { return e.Name == mr.Name })
		if i < 0 {
			return nil, fmt.Errorf("uplinks: member %q is no egress entry", mr.Name)
		}
		u.Members = append(u.Members, Member{Egress: i, Name: mr.Name, OIF: entries[i].OIF, Weight: mr.Weight, Label: mr.Label})
	}
	switch {
	case len(u.Members) < 2 || u.Policy != Balance && u.Policy != Priority:
		return nil, fmt.Errorf("uplinks: policy %q with %d members", u.Policy, len(u.Members))
	case u.Policy == Balance && r.Owners == nil:
		return nil, fmt.Errorf("uplinks: balance without its buckets")
	case u.Policy == Balance:
		m, err := r.Owners.mapping(len(u.Members))
		if err != nil {
			return nil, fmt.Errorf("uplinks: %w", err)
		}
		u.Seed, u.Owners = m.Seed, m.Owners
	}
	return u, nil
}

// Spec returns the probe as a spec writes it, nil for none: what a record
// keeps of it.
func (p *Probe) Spec() *ProbeSpec {
	if p == nil {
		return nil
	}
	ps := &ProbeSpec{Reliability: strconv.Itoa(p.Reliability), Interval: p.Interval.String(), Timeout: p.Timeout.String(),
		Down: strconv.Itoa(p.Down), Up: strconv.Itoa(p.Up)}
	for _, t := range p.Targets {
		ps.Targets = append(ps.Targets, t.String())
	}
	if p.Latency > 0 {
		ps.Latency = p.Latency.String()
	}
	if p.Loss > 0 {
		ps.Loss = strconv.FormatFloat(p.Loss, 'g', -1, 64)
	}
	return ps
}
