package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// fakeClock is a clock the test advances; timers fire as it passes them.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	when   time.Time
	f      func()
	active bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when, t.active = t.c.now.Add(d), true
	return was
}

// advance moves the clock on by d, 100 ms at a time, firing the timers it
// passes and giving the daemon a moment to act on each step.
func (c *fakeClock) advance(d time.Duration) {
	for step := time.Duration(0); step < d; step += 100 * time.Millisecond {
		c.mu.Lock()
		c.now = c.now.Add(100 * time.Millisecond)
		var due []*fakeTimer
		for _, t := range c.timers {
			if t.active && !t.when.After(c.now) {
				t.active = false
				due = append(due, t)
			}
		}
		c.mu.Unlock()
		for _, t := range due {
			t.f()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is the daemon's log, which the test reads as it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond until it holds, for up to 5 s of real time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("never: %s", what)
		}
	}
}

// site is two ISPs: egress a out of wan0, b out of wan1.
const site = `egress:
  - name: a
    oif: wan0
    private: [10.16.0.0/24]
    pool: [203.0.113.8/30]
  - name: b
    oif: wan1
    private: [10.17.0.0/24]
    pool: [198.51.100.32/30]
`

// running is a daemon under test: its fake kernel, clock, log and metrics.
type running struct {
	t       *testing.T
	fake    *box.Fake
	clock   *fakeClock
	log     *syncBuffer
	metrics *Metrics
	box     *box.Box
	spec    string
	reloads chan Reload
	done    chan error
}

func plan(t *testing.T, path string) *pool.Plan {
	t.Helper()
	p, err := pool.PlanFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs a daemon of the spec text over a fake kernel that setup
// prepares, for node (empty for a single box), until the test ends.
func start(t *testing.T, spec, node string, setup func(*box.FakeNamespace, *pool.Plan)) *running {
	t.Helper()
	dir := t.TempDir()
	r := &running{t: t, fake: box.NewFake(), clock: &fakeClock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}, log: &syncBuffer{},
		metrics: NewMetrics("test"), spec: filepath.Join(dir, "spec.yaml"), reloads: make(chan Reload), done: make(chan error, 1)}
	writeFile(t, r.spec, spec)
	p := plan(t, r.spec)
	r.fake.Do("ns", func(n *box.FakeNamespace) { setup(n, p) })
	w := &journal.Writer{Dir: filepath.Join(dir, "journal"), Machine: journal.Machine{ID: "m1", Host: "nat1"}, Version: "test",
		Now: r.clock.Now, Waiting: func() {}}
	r.box = box.New("ns", r.fake.Kernels, w)
	ctx, cancel := context.WithCancel(context.Background())
	c := Config{Box: r.box, Options: box.Options{Node: node}, Plan: func() (*pool.Plan, error) { return pool.PlanFile(r.spec) },
		Metrics: r.metrics, HoldDown: 2 * time.Second, Resync: time.Minute, Refresh: time.Second, Probe: netip.MustParseAddr("8.8.8.8"),
		Log: r.log, Clock: r.clock, Notify: func(string) {}, Moved: func(old, new *pool.Plan) uint64 { return pool.PlanChurn(old, new).Moved }}
	go func() { r.done <- Run(ctx, c, p, r.reloads) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("watch: %v", err)
		}
		if t.Failed() {
			t.Logf("watch's log:\n%s", r.log)
		}
	})
	eventually(t, "watch to start", func() bool { return strings.Contains(r.log.String(), "watching ") })
	return r
}

// entry is a connection natpool's rules translated for host h.
func entry(h pool.Host, port uint16) conntrack.Entry {
	return conntrack.Entry{Natpool: true, Translated: true, Connection: pool.Connection{Host: h.Addr,
		Public: netip.AddrPortFrom(h.Public, port), Dest: pool.Destination{Addr: netip.MustParseAddrPort("192.0.2.53:53"), Proto: 17}}}
}

// twoUplinks sets up both uplinks carrying their hosts, and an entry of
// the first host of each egress entry.
func twoUplinks(n *box.FakeNamespace, p *pool.Plan) {
	for _, e := range p.Egress {
		n.Links[e.OIF] = true
		for h := range e.Hosts() {
			n.Out[h.Addr.String()] = e.OIF
			n.Entries = append(n.Entries, entry(h, 40000))
			break
		}
	}
}

// flushed returns the hosts whose entries were flushed.
func (r *running) flushed() []string {
	var out []string
	for _, op := range r.fake.Log() {
		if host, ok := strings.CutPrefix(op, "flush "); ok {
			out = append(out, host)
		}
	}
	return out
}

func (r *running) change(c linux.Change) {
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Changes <- c })
}

func (r *running) setLink(name string, up bool) {
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Links[name] = up })
	r.change(linux.Change{Link: name})
}

// An uplink whose link goes down is acted on after the hold-down, and only
// it: the other uplink's entries stay.
func TestHoldDownActsOnTheUplinkThatChangedOnly(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	r.setLink("wan0", false)
	r.clock.advance(1500 * time.Millisecond)
	if f := r.flushed(); len(f) > 0 {
		t.Fatalf("flushed %v before the hold-down passed", f)
	}
	r.clock.advance(time.Second)
	eventually(t, "egress a's entry to be flushed", func() bool { return slices.Equal(r.flushed(), []string{"10.16.0.0"}) })
	if got := testutil.ToFloat64(r.metrics.uplink.WithLabelValues("a", "wan0")); got != 0 {
		t.Errorf("natpool_uplink_up{egress=a} %v", got)
	}
	if got := testutil.ToFloat64(r.metrics.flushed.WithLabelValues("a", reasonUplink)); got != 1 {
		t.Errorf("natpool_flushed_entries_total{egress=a,reason=uplink} %v", got)
	}
	if got := testutil.ToFloat64(r.metrics.flushed.WithLabelValues("b", reasonUplink)); got != 0 {
		t.Errorf("natpool_flushed_entries_total{egress=b} %v", got)
	}
}

// A link that keeps flapping holds its uplink's hold-down off for at most
// MaxHold hold-downs, and routes that cannot change an uplink hold off
// nothing.
func TestHoldDownIsNotStarved(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Links["wan0"] = false })
	for range 12 { // a flap a second for 12 s
		r.change(linux.Change{Link: "wan0"})
		r.clock.advance(time.Second)
	}
	eventually(t, "the flapping uplink to be looked at", func() bool { return slices.Contains(r.flushed(), "10.16.0.0") })
	if !strings.Contains(r.log.String(), "egress a: wan0 is down or has no carrier") {
		t.Errorf("log:\n%s", r.log)
	}
	r.setLink("wan1", false)
	for range 10 { // an unrelated route changing every half second
		r.change(linux.Change{Route: true, Table: 254, Dst: netip.MustParsePrefix("10.99.0.0/16")})
		r.clock.advance(500 * time.Millisecond)
	}
	eventually(t, "wan1's hosts to be flushed", func() bool { return slices.Contains(r.flushed(), "10.17.0.0") })
}

// A box that does not forward cannot say where a route goes: carrier loss
// alone is enough to flush.
func TestCarrierLossAloneFlushes(t *testing.T) {
	r := start(t, site, "", func(n *box.FakeNamespace, p *pool.Plan) {
		twoUplinks(n, p)
		n.RouteErr = errors.New("no route to host (is net.ipv4.ip_forward 0?)")
	})
	r.setLink("wan0", false)
	r.clock.advance(3 * time.Second)
	eventually(t, "egress a's entry to be flushed", func() bool { return slices.Equal(r.flushed(), []string{"10.16.0.0"}) })
}

// A reload of the spec in force applies nothing and writes nothing to the
// journal; a changed spec is applied and flushes what it made stale.
func TestReloadOfAnUnchangedSpecIsANoOp(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	applies := func() int {
		n := 0
		for _, op := range r.fake.Log() {
			if strings.HasPrefix(op, "apply ") {
				n++
			}
		}
		return n
	}
	r.reloads <- Reload{}
	eventually(t, "the reload to be done", func() bool { return strings.Contains(r.log.String(), "unchanged and in force; nothing applied") })
	if n := applies(); n != 1 {
		t.Errorf("%d applies after an unchanged reload, want 1", n)
	}
	if got := testutil.ToFloat64(r.metrics.reloads.WithLabelValues("unchanged")); got != 1 {
		t.Errorf("natpool_reloads_total{result=unchanged} %v", got)
	}
	writeFile(t, r.spec, strings.Replace(site, "203.0.113.8/30", "203.0.113.12/30", 1))
	r.reloads <- Reload{}
	eventually(t, "the new plan to be applied and its stale entries flushed", func() bool {
		return applies() == 2 && slices.Contains(r.flushed(), "10.16.0.0")
	})
}

// natpool reload is answered once the reload is over, with its outcome:
// an unchanged spec, a spec that does not plan (the plan before stays in
// force), an edited one. A table no watch keeps has no one to answer.
func TestReloadRequestsAreAnsweredWithTheirOutcome(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	for _, c := range []struct {
		spec   string
		failed bool
		says   string
	}{
		{site, false, "unchanged and in force; nothing applied"},
		{strings.Replace(site, "203.0.113.8/30", "203.0.113.300/30", 1), true, "reload failed, plan "},
		{strings.Replace(site, "203.0.113.8/30", "203.0.113.12/30", 1), false, "hosts moved; flushed "},
	} {
		writeFile(t, r.spec, c.spec)
		out, err := RequestReload(r.box, "natpool")
		if err != nil || out.Failed != c.failed || !strings.Contains(out.Line, c.says) {
			t.Errorf("reload: %+v, %v; want failed %v, saying %q", out, err, c.failed, c.says)
		}
	}
	if _, err := RequestReload(r.box, "other"); err == nil || !strings.Contains(err.Error(), "no natpool watch keeps table ip other") {
		t.Errorf("a reload of a table no watch keeps: %v", err)
	}
}

// natpool's table removed (nft flush ruleset) is put back within a second,
// said, and counted.
func TestARemovedTableIsRestored(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	r.fake.Do("ns", func(n *box.FakeNamespace) { delete(n.Tables, "natpool") })
	r.clock.advance(1100 * time.Millisecond)
	eventually(t, "the table to be restored", func() bool {
		return strings.Contains(r.log.String(), "table ip natpool in network namespace ns is gone: restored plan")
	})
	r.fake.Do("ns", func(n *box.FakeNamespace) {
		if n.Tables["natpool"] == nil {
			t.Error("no table after the restore")
		}
	})
	if got := testutil.ToFloat64(r.metrics.tableRestores); got != 1 {
		t.Errorf("natpool_table_restores_total %v", got)
	}
	if got := testutil.ToFloat64(r.metrics.tableInSync); got != 1 {
		t.Errorf("natpool_table_in_sync %v", got)
	}
}

// Lost events are counted and the counts rebuilt from a dump; events
// reach the counts a scrape reads at once.
func TestLostEventsRebuildTheCounts(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	p := plan(t, r.spec)
	var h pool.Host
	for h = range p.Egress[0].Hosts() {
		break
	}
	connections := func() float64 {
		for _, c := range (*r.metrics.usage.Load())() {
			for _, pc := range c.Public {
				if pc.Addr == h.Public {
					return float64(pc.Entries)
				}
			}
		}
		return -1
	}
	eventually(t, "the first dump to count", func() bool { return connections() == 1 })
	r.fake.Do("ns", func(n *box.FakeNamespace) {
		n.Events <- conntrack.Change{Connection: entry(h, 40001).Connection, Delta: 1}
	})
	eventually(t, "an event to count", func() bool { return connections() == 2 })
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Lost <- struct{}{} })
	eventually(t, "the loss to be counted", func() bool { return testutil.ToFloat64(r.metrics.eventsLost) == 1 })
	eventually(t, "the counts to be rebuilt from the dump", func() bool {
		return testutil.ToFloat64(r.metrics.resyncs) == 2 && connections() == 1
	})
}

// A node flushes, when a peer goes down, the entries of the flows it
// steered to it and now translates itself, journals the failover and
// says so in natpool_peer_up; when the peer is back, the entries it
// translated for it.
func TestPeerFailoverFlushesTheMisplacedFlows(t *testing.T) {
	spec, err := readFile("../../../testdata/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var steered, translated pool.Host // a host nat2 serves first, then nat1; one nat1 serves first
	r := start(t, spec, "nat1", func(n *box.FakeNamespace, p *pool.Plan) {
		n.Routes[7351], n.Routes[7352] = []string{"bird"}, []string{"bird"}
		c := p.Cluster
		for h := range p.Egress[0].Hosts() {
			order := c.Order(h.Public)
			switch {
			case order[0] == 1 && order[1] == 0 && !steered.Addr.IsValid():
				steered = h
				e := entry(h, 40000)
				e.Translated, e.Public = false, netip.AddrPortFrom(h.Addr, 40000)
				n.Entries = append(n.Entries, e)
			case order[0] == 0 && !translated.Addr.IsValid():
				translated = h
				n.Entries = append(n.Entries, entry(h, 40000))
			}
		}
	})
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Routes[7351] = nil })
	r.change(linux.Change{Route: true, Table: 7351, Dst: netip.MustParsePrefix("198.51.100.0/29")})
	r.clock.advance(2500 * time.Millisecond)
	eventually(t, "the steered flow's entry to be flushed", func() bool { return slices.Equal(r.flushed(), []string{steered.Addr.String()}) })
	if got := testutil.ToFloat64(r.metrics.peer.WithLabelValues("nat2")); got != 0 {
		t.Errorf("natpool_peer_up{node=nat2} %v", got)
	}
	j, _ := journal.Open(r.box.Journal.Dir)
	c, _ := j.Read()
	// The spec's hold time is 3 s: nat2 went silent at most that long
	// before nat1 saw its routes go.
	if len(c.Peers) != 1 || c.Peers[0].Up || c.Peers[0].Peer != "nat2" || c.Peers[0].Time.Sub(c.Peers[0].Since) != 3*time.Second {
		t.Errorf("peer events %+v", c.Peers)
	}
	// nat2 is back: what nat1 translated for it goes.
	r.fake.Do("ns", func(n *box.FakeNamespace) {
		n.Routes[7351] = []string{"bird"}
		n.Entries = append(n.Entries, entry(steered, 40001))
	})
	r.change(linux.Change{Route: true, Table: 7351, Dst: netip.MustParsePrefix("198.51.100.0/29")})
	r.clock.advance(2500 * time.Millisecond)
	eventually(t, "the entry nat1 translated for nat2 to be flushed", func() bool { return len(r.flushed()) == 2 })
	if slices.Contains(r.flushed(), translated.Addr.String()) {
		t.Errorf("the flow nat1 serves was flushed: %v", r.flushed())
	}
}

// The metrics pass client_golang's lint, and every series a dashboard
// rates exists from the start.
func TestMetricsLint(t *testing.T) {
	r := start(t, site, "", twoUplinks)
	problems, err := testutil.GatherAndLint(r.metrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(r.metrics.flushes); n != 6 {
		t.Errorf("%d flush series at the start, want 2 egress entries x 3 reasons", n)
	}
	if n := testutil.CollectAndCount(r.metrics.reloads); n != 3 {
		t.Errorf("%d reload series at the start, want 3", n)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// uplinkSite is two ISPs sharing the inside hosts, each probed.
const uplinkSite = `egress:
  - name: a
    oif: wan0
    private: [10.16.0.0/24]
    pool: [203.0.113.8/30]
    probe: {targets: ["icmp:198.18.0.1"], interval: 1s, down: 3, up: 2}
  - name: b
    oif: wan1
    private: [10.16.0.0/24]
    pool: [198.51.100.32/30]
    probe: {targets: ["icmp:198.18.0.1"], interval: 1s, down: 3, up: 2}
uplinks:
  members: [a, b]
`

// until advances the clock a second at a time until cond holds.
func (r *running) until(what string, cond func() bool) {
	r.t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			r.t.Fatalf("never: %s", what)
		}
		r.clock.advance(time.Second)
	}
}

// uplinkEntries gives every host an entry through its uplink while all
// are up, and returns the hosts of each.
func uplinkEntries(n *box.FakeNamespace, p *pool.Plan) map[string][]pool.Host {
	n.Links["wan0"], n.Links["wan1"] = true, true
	u := p.Uplinks
	by := map[string][]pool.Host{}
	for h := range p.Egress[0].Hosts() {
		m := u.Members[u.MemberOf(h.Addr, u.AllUp())]
		hh, _ := p.Egress[m.Egress].Host(h.Addr)
		by[m.Name] = append(by[m.Name], hh)
		n.Entries = append(n.Entries, entry(hh, 40000))
	}
	return by
}

// A probed uplink that stops answering goes down after its down rounds:
// the table sends its hosts to the other, the journal and the metrics say
// so, and only its hosts' entries go. Back after its up rounds, its hosts
// return, and their entries on the backup go (the uplinks are not sticky).
// With every uplink down, nothing changes: there is nowhere to go.
func TestAnUplinkThatStopsAnsweringFailsOverAndBack(t *testing.T) {
	var hosts map[string][]pool.Host
	r := start(t, uplinkSite, "", func(n *box.FakeNamespace, p *pool.Plan) { hosts = uplinkEntries(n, p) })
	if len(hosts["a"]) == 0 || len(hosts["b"]) == 0 {
		t.Fatalf("hosts by uplink: %d and %d", len(hosts["a"]), len(hosts["b"]))
	}
	states := func() string {
		var s string
		r.fake.Do("ns", func(n *box.FakeNamespace) { s = fmt.Sprint(n.Tables["natpool"].Uplinks.States) })
		return s
	}
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Unanswered["wan0"] = true })
	r.until("uplink a down", func() bool {
		return strings.Contains(r.log.String(), "uplink a (wan0) is down: 3 probe rounds in a row")
	})
	// The table follows before the entries go, with no round in between.
	eventually(t, "the table to follow [down up]", func() bool { return states() == "[down up]" })
	eventually(t, "a's hosts' entries to go", func() bool { return len(r.flushed()) == len(hosts["a"]) })
	for _, h := range r.flushed() {
		if !slices.ContainsFunc(hosts["a"], func(x pool.Host) bool { return x.Addr.String() == h }) {
			t.Errorf("flushed %s, not a host of a", h)
		}
	}
	if got := testutil.ToFloat64(r.metrics.uplink.WithLabelValues("a", "wan0")); got != 0 {
		t.Errorf("natpool_uplink_up{egress=a} %v", got)
	}
	j, _ := journal.Open(r.box.Journal.Dir)
	c, _ := j.Read()
	if len(c.Uplinks) != 1 || c.Uplinks[0].Egress != "a" || c.Uplinks[0].State != "down" {
		t.Errorf("uplink events %+v", c.Uplinks)
	}

	// Both down: nowhere is better; the table stays, nothing is cut.
	flushed := len(r.flushed())
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Unanswered["wan1"] = true })
	r.until("uplink b down", func() bool { return strings.Contains(r.log.String(), "uplink b (wan1) is down") })
	if s := states(); s != "[down up]" || len(r.flushed()) != flushed {
		t.Errorf("both down: the table follows %s, %d more flushed", s, len(r.flushed())-flushed)
	}

	// b back first: a's hosts stay on b, where they failed over (their new
	// connections on b meanwhile are right); then a back: they return.
	r.fake.Do("ns", func(n *box.FakeNamespace) {
		delete(n.Unanswered, "wan1")
		for _, h := range hosts["a"] {
			n.Entries = append(n.Entries, entry(pool.Host{Addr: h.Addr, Public: netip.MustParseAddr("198.51.100.33")}, 40001))
		}
	})
	r.until("b up", func() bool {
		return states() == "[down up]" && strings.Contains(r.log.String(), "uplink b (wan1) is up")
	})
	if len(r.flushed()) != flushed {
		t.Errorf("b back: %d flushed", len(r.flushed())-flushed)
	}
	r.fake.Do("ns", func(n *box.FakeNamespace) { delete(n.Unanswered, "wan0") })
	r.until("a up", func() bool { return states() == "[up up]" })
	r.until("the failed-over entries to go", func() bool { return len(r.flushed()) == flushed+len(hosts["a"]) })
}

// Uplinks that fail together may be found out a round apart: the first
// found down waits for the other to prove itself before its flows go, and
// the other never does. Nothing is cut.
func TestUplinksFailingTogetherCutNothingWhenFoundARoundApart(t *testing.T) {
	r := start(t, uplinkSite, "", func(n *box.FakeNamespace, p *pool.Plan) { uplinkEntries(n, p) })
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Unanswered["wan0"] = true })
	r.clock.advance(time.Second)
	r.until("a round of a unanswered", func() bool {
		return testutil.ToFloat64(r.metrics.probeLoss.WithLabelValues("a")) > 0
	})
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Unanswered["wan1"] = true })
	r.until("both down", func() bool { return strings.Contains(r.log.String(), "uplinks: every uplink is down") })
	if !strings.Contains(r.log.String(), "uplinks: hosts of a leave by b") {
		t.Errorf("a was not found down first:\n%s", r.log)
	}
	if n := len(r.flushed()); n != 0 {
		t.Errorf("%d entries flushed", n)
	}
}

// With sticky uplinks, a flow failed over to a backup stays there until it
// ends: its host's own uplink back takes its new flows only.
func TestStickyUplinksKeepFailedOverFlows(t *testing.T) {
	var hosts map[string][]pool.Host
	r := start(t, uplinkSite+"  sticky: true\n", "", func(n *box.FakeNamespace, p *pool.Plan) { hosts = uplinkEntries(n, p) })
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.Unanswered["wan0"] = true })
	r.until("uplink a down", func() bool { return strings.Contains(r.log.String(), "uplink a (wan0) is down") })
	r.until("a's hosts' entries to go", func() bool { return len(r.flushed()) == len(hosts["a"]) })
	r.fake.Do("ns", func(n *box.FakeNamespace) {
		delete(n.Unanswered, "wan0")
		for _, h := range hosts["a"] {
			n.Entries = append(n.Entries, entry(pool.Host{Addr: h.Addr, Public: netip.MustParseAddr("198.51.100.33")}, 40001))
		}
	})
	r.until("uplink a up", func() bool { return strings.Contains(r.log.String(), "uplink a (wan0) is up") })
	time.Sleep(50 * time.Millisecond)
	if n := len(r.flushed()); n != len(hosts["a"]) {
		t.Errorf("sticky: %d entries flushed at the failback", n-len(hosts["a"]))
	}
}

// An uplink whose probes answer slower than its latency bound is degraded:
// its hosts leave by the other while that one is up, and come back when
// its round trips are within the bound again.
func TestASlowUplinkIsDegradedWhileAnotherIsUp(t *testing.T) {
	spec := strings.Replace(uplinkSite, "interval: 1s, down: 3, up: 2}", "interval: 1s, down: 3, up: 2, latency: 100ms}", 1)
	r := start(t, spec, "", func(n *box.FakeNamespace, p *pool.Plan) { uplinkEntries(n, p) })
	states := func() string {
		var s string
		r.fake.Do("ns", func(n *box.FakeNamespace) { s = fmt.Sprint(n.Tables["natpool"].Uplinks.States) })
		return s
	}
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.ProbeRTT = 300 * time.Millisecond })
	r.until("a degraded", func() bool { return states() == "[degraded up]" })
	if !strings.Contains(r.log.String(), "uplink a (wan0) is degraded: the median round trip of the last 3 rounds is 300ms (bound 100ms)") {
		t.Errorf("log:\n%s", r.log)
	}
	if got := testutil.ToFloat64(r.metrics.uplinkDegraded.WithLabelValues("a", "wan0")); got != 1 {
		t.Errorf("natpool_uplink_degraded{egress=a} %v", got)
	}
	r.fake.Do("ns", func(n *box.FakeNamespace) { n.ProbeRTT = 10 * time.Millisecond })
	r.until("a up", func() bool { return states() == "[up up]" })
}
