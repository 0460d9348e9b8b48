//go:build linux

package box

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
)

// Fake is a kernel in memory, in the spirit of knftables' Fake: natpool's
// tables, policy rules, routes, links and conntrack entries of each
// namespace, which a test sets up and looks at, and a log of the changes
// made, in order. It behaves as the kernel does where natpool relies on it
// (a table is replaced whole or not at all) and fails where a test says.
type Fake struct {
	mu sync.Mutex
	ns map[string]*FakeNamespace
	// Ops logs every change, in order: "apply TABLE DIGEST", "delete
	// TABLE", "rule add RULE", "rule del RULE", "flush HOST".
	Ops []string
}

// FakeNamespace is one namespace of a Fake. A test changes it under the
// Fake's lock (Fake.Do).
type FakeNamespace struct {
	Tables map[string]*compiler.Ruleset
	// Foreign are tables of that name another tool made: natpool's own
	// are refused.
	Foreign map[string]bool
	Rules   []compiler.PolicyRule // natpool's policy rules
	// ForeignRules are others' policy rules.
	ForeignRules []compiler.PolicyRule
	// Routes are the routes of each routing table, by the protocol that
	// put them there ("bird" or another).
	Routes map[int][]string
	// MyRoutes are natpool's routes; Addrs and Gateways each interface's
	// address and gateway in the main table.
	MyRoutes        []compiler.Route
	Addrs, Gateways map[string]netip.Addr
	Links           map[string]bool   // interface -> carries traffic
	Out             map[string]string // an inside host -> the interface its route to the probe takes
	// RouteErr is what asking for a route answers, when set: a box that
	// does not forward cannot answer it.
	RouteErr error
	// Entries is the conntrack table.
	Entries []conntrack.Entry
	// GuardCounters are the guard's drops by egress entry.
	GuardCounters map[string]uint64
	// FailApply, FailRules fail the next table apply and policy-rule add.
	FailApply, FailRules error
	// Unanswered are the interfaces whose probes get no answer; the others'
	// are answered in ProbeRTT.
	Unanswered map[string]bool
	ProbeRTT   time.Duration
	// Changes and Events feed Follow and the event subscriptions.
	Changes chan linux.Change
	Events  chan conntrack.Change
	// Lost makes the running event subscription fail with lost events.
	Lost   chan struct{}
	claims map[string]func(net.Conn) // what serves each name claimed
}

// NewFake returns a Fake without namespaces; each is made when first used.
func NewFake() *Fake { return &Fake{ns: map[string]*FakeNamespace{}} }

// Do runs fn with the namespace under the Fake's lock.
func (f *Fake) Do(netns string, fn func(*FakeNamespace)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.namespace(netns))
}

// Log returns the changes made so far.
func (f *Fake) Log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.Ops)
}

func (f *Fake) namespace(netns string) *FakeNamespace {
	n := f.ns[netns]
	if n == nil {
		n = &FakeNamespace{Tables: map[string]*compiler.Ruleset{}, Foreign: map[string]bool{}, Routes: map[int][]string{}, Addrs: map[string]netip.Addr{}, Gateways: map[string]netip.Addr{}, Unanswered: map[string]bool{},
			Links: map[string]bool{}, Out: map[string]string{}, GuardCounters: map[string]uint64{},
			Changes: make(chan linux.Change, 64), Events: make(chan conntrack.Change, 1024), Lost: make(chan struct{}, 1), claims: map[string]func(net.Conn){}}
		f.ns[netns] = n
	}
	return n
}

// Kernels opens the namespaces of the Fake.
func (f *Fake) Kernels(netns string) Kernel { return &fakeKernel{f, netns} }

type fakeKernel struct {
	f     *Fake
	netns string
}

// The parts of a fake kernel: each works on its namespace.
type (
	fakeTables    struct{ *fakeKernel }
	fakeRouting   struct{ *fakeKernel }
	fakeConntrack struct{ *fakeKernel }
	fakeEvents    struct{ *fakeKernel }
)

func (k *fakeKernel) Tables() (Tables, error)       { return fakeTables{k}, nil }
func (k *fakeKernel) Routing() (Routing, error)     { return fakeRouting{k}, nil }
func (k *fakeKernel) Conntrack() (Conntrack, error) { return fakeConntrack{k}, nil }
func (k *fakeKernel) Events(int) (Events, error)    { return fakeEvents{k}, nil }
func (k *fakeKernel) Close() error                  { return nil }

func (k *fakeKernel) Claim(name string, serve func(net.Conn)) (func() error, error) {
	var err error
	k.f.Do(k.netns, func(n *FakeNamespace) {
		if _, held := n.claims[name]; held {
			err = fmt.Errorf("another natpool holds %s", name)
			return
		}
		n.claims[name] = serve
	})
	return func() error {
		k.f.Do(k.netns, func(n *FakeNamespace) { delete(n.claims, name) })
		return nil
	}, err
}

// Dial connects to what serves name, over a pipe.
func (k *fakeKernel) Dial(name string) (net.Conn, error) {
	var serve func(net.Conn)
	held := false
	k.f.Do(k.netns, func(n *FakeNamespace) { serve, held = n.claims[name] })
	if !held || serve == nil {
		return nil, fmt.Errorf("nothing holds %s", name)
	}
	client, server := net.Pipe()
	go serve(server)
	return client, nil
}

// Probe answers, or not, as the namespace's Unanswered says.
func (k *fakeKernel) Probe(ctx context.Context, _ pool.ProbeTarget, via linux.Via) (rtt time.Duration, err error) {
	k.do(func(n *FakeNamespace) {
		rtt = n.ProbeRTT
		if n.Unanswered[via.OIF] {
			err = context.DeadlineExceeded
		}
	})
	return rtt, err
}

// do runs fn with the kernel's namespace, under the Fake's lock.
func (k *fakeKernel) do(fn func(*FakeNamespace)) { k.f.Do(k.netns, fn) }

// log logs a change; the caller holds the lock.
func (k *fakeKernel) log(op string) { k.f.Ops = append(k.f.Ops, op) }

func (p fakeTables) Stamp(table string) (st nft.TableStamp, err error) {
	p.do(func(n *FakeNamespace) {
		rs, mine := n.Tables[table]
		st.Exists = mine || n.Foreign[table]
		if mine {
			st.Natpool, st.Digest = true, rs.Digest
			if len(rs.Prefixes6) > 0 {
				st.Digest6 = rs.Digest
			}
		}
	})
	return st, nil
}

func (p fakeTables) Apply(rs *compiler.Ruleset) (err error) {
	p.do(func(n *FakeNamespace) {
		switch {
		case n.Foreign[rs.Table]:
			err = &nft.NotNatpoolsError{Family: "ip", Table: rs.Table}
		case n.FailApply != nil:
			err, n.FailApply = n.FailApply, nil
		default:
			n.Tables[rs.Table] = rs
			p.log("apply " + rs.Table + " " + rs.Digest)
		}
	})
	return err
}

func (p fakeTables) Delete(table string) (deleted bool, err error) {
	p.do(func(n *FakeNamespace) {
		if n.Foreign[table] {
			err = &nft.NotNatpoolsError{Family: "ip", Table: table}
			return
		}
		_, deleted = n.Tables[table]
		delete(n.Tables, table)
		if deleted {
			p.log("delete " + table)
		}
	})
	return deleted, err
}

func (p fakeTables) Read(table string) (st *nft.TableState, err error) {
	var rs *compiler.Ruleset
	p.do(func(n *FakeNamespace) { rs = n.Tables[table] })
	if rs == nil {
		return nil, nft.ErrNoTable
	}
	return nft.Expected(rs)
}

func (p fakeTables) GuardDrops(string) (drops map[string]uint64, err error) {
	p.do(func(n *FakeNamespace) {
		drops = map[string]uint64{}
		for egress, v := range n.GuardCounters {
			drops[egress] = v
		}
	})
	return drops, nil
}

func (p fakeRouting) PolicyRules(reserved func(compiler.PolicyRule) bool) (mine []compiler.PolicyRule, foreign []string, err error) {
	p.do(func(n *FakeNamespace) {
		mine = slices.Clone(n.Rules)
		for _, r := range n.ForeignRules {
			if reserved(r) {
				foreign = append(foreign, "policy rule "+r.String())
			}
		}
	})
	return mine, foreign, nil
}

func (p fakeRouting) SetPolicyRules(want []compiler.PolicyRule, reserved func(compiler.PolicyRule) bool) (err error) {
	p.do(func(n *FakeNamespace) {
		for _, r := range n.ForeignRules {
			if reserved(r) {
				err = &linux.ForeignError{What: []string{"policy rule " + r.String()}}
				return
			}
		}
		for _, r := range want {
			if slices.Contains(n.Rules, r) {
				continue
			}
			if n.FailRules != nil {
				err, n.FailRules = n.FailRules, nil
				return
			}
			n.Rules = append(n.Rules, r)
			p.log("rule add " + r.String())
		}
		n.Rules = slices.DeleteFunc(n.Rules, func(r compiler.PolicyRule) bool {
			gone := !slices.Contains(want, r)
			if gone {
				p.log("rule del " + r.String())
			}
			return gone
		})
	})
	return err
}

func (p fakeRouting) DeletePolicyRules() (removed int, err error) {
	p.do(func(n *FakeNamespace) {
		removed = len(n.Rules)
		for _, r := range n.Rules {
			p.log("rule del " + r.String())
		}
		n.Rules = nil
	})
	return removed, nil
}

func (p fakeRouting) HasBIRDRoutes(table int) (up bool, err error) {
	p.do(func(n *FakeNamespace) { up = slices.Contains(n.Routes[table], "bird") })
	return up, nil
}

func (p fakeRouting) ForeignRoutes(tables []int) (out []string, err error) {
	p.do(func(n *FakeNamespace) {
		for _, t := range tables {
			for _, proto := range n.Routes[t] {
				if proto != "bird" {
					out = append(out, fmt.Sprintf("route in routing table %d (proto %s)", t, proto))
				}
			}
		}
	})
	return out, nil
}

func (p fakeRouting) Routes(tables []int) (mine []compiler.Route, foreign []string, err error) {
	p.do(func(n *FakeNamespace) {
		mine = slices.Clone(n.MyRoutes)
		for _, t := range tables {
			for _, proto := range n.Routes[t] {
				foreign = append(foreign, fmt.Sprintf("route in routing table %d (proto %s)", t, proto))
			}
		}
	})
	return mine, foreign, nil
}

func (p fakeRouting) SetRoutes(tables []int, want []compiler.Route) (err error) {
	_, foreign, _ := p.Routes(tables)
	if len(foreign) > 0 {
		return &linux.ForeignError{What: foreign}
	}
	p.do(func(n *FakeNamespace) {
		for _, r := range want {
			if !slices.Contains(n.MyRoutes, r) {
				n.MyRoutes = append(n.MyRoutes, r)
				p.log("route add " + r.String())
			}
		}
		n.MyRoutes = slices.DeleteFunc(n.MyRoutes, func(r compiler.Route) bool {
			gone := !slices.Contains(want, r)
			if gone {
				p.log("route del " + r.String())
			}
			return gone
		})
	})
	return nil
}

func (p fakeRouting) DeleteRoutes() (removed int, err error) {
	p.do(func(n *FakeNamespace) {
		removed = len(n.MyRoutes)
		for _, r := range n.MyRoutes {
			p.log("route del " + r.String())
		}
		n.MyRoutes = nil
	})
	return removed, nil
}

func (p fakeRouting) Uplink(oif string) (addr, gw netip.Addr, err error) {
	p.do(func(n *FakeNamespace) { addr, gw = n.Addrs[oif], n.Gateways[oif] })
	return addr, gw, nil
}

func (p fakeRouting) Uplink6(string) (addr, gw netip.Addr, err error) { return addr, gw, nil }

func (p fakeRouting) RPFilter(string) (int, error) { return 2, nil }

func (p fakeRouting) LinksUp() (up map[string]bool, err error) {
	p.do(func(n *FakeNamespace) {
		up = map[string]bool{}
		for name, u := range n.Links {
			up[name] = u
		}
	})
	return up, nil
}

func (p fakeRouting) RouteOut(src, _ netip.Addr) (out string, err error) {
	p.do(func(n *FakeNamespace) { out, err = n.Out[src.String()], n.RouteErr })
	return out, err
}

func (p fakeRouting) Follow(ctx context.Context, changed chan<- linux.Change) error {
	var changes chan linux.Change
	p.do(func(n *FakeNamespace) { changes = n.Changes })
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-changes:
			changed <- c
		}
	}
}

func (p fakeConntrack) Scan(label int, fn func(*conntrack.Entry) error) (int, error) {
	var entries []conntrack.Entry
	p.do(func(n *FakeNamespace) { entries = slices.Clone(n.Entries) })
	for i := range entries {
		if err := fn(&entries[i]); err != nil {
			return i + 1, err
		}
	}
	return len(entries), nil
}

func (p fakeConntrack) Delete(e *conntrack.Entry) (err error) {
	p.do(func(n *FakeNamespace) {
		n.Entries = slices.DeleteFunc(n.Entries, func(x conntrack.Entry) bool { return x.Connection == e.Connection })
		p.log("flush " + e.Host.String())
	})
	return nil
}

func (p fakeConntrack) DeletePrefix6(netip.Prefix, netip.Prefix) (int, error) { return 0, nil }

func (p fakeEvents) Run(ctx context.Context, fn func(conntrack.Change)) error {
	var events chan conntrack.Change
	var lost chan struct{}
	p.do(func(n *FakeNamespace) { events, lost = n.Events, n.Lost })
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			return fmt.Errorf("%w: ENOBUFS", conntrack.ErrEventsLost)
		case c := <-events:
			fn(c)
		}
	}
}
