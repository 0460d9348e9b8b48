//go:build linux

package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// peersKey names the peers' hold-down among the uplinks'.
const peersKey = "\x00peers"

type daemon struct {
	c       Config
	plan    *pool.Plan
	digest  string
	routing box.Routing
	// active is, per egress entry, whether its uplink carried its hosts
	// when last looked at: a flush follows the change to false.
	active map[string]bool
	// peerUp is, with a node, whether each peer's routing table held
	// BIRD's routes when last looked at.
	peerUp map[string]bool
	// holds are the hold-down timers, by egress entry and peersKey, and
	// unstable when each's changes began; due receives a key whose
	// hold-down passed.
	holds    map[string]Timer
	unstable map[string]time.Time
	due      chan string
	tableOK  bool // natpool's table held the plan when last looked at
	tally    *tally
	ctx      context.Context
	// up follows a site's uplinks; nil without.
	up *uplinks
	// prefixes6 are the public prefixes in force of the entries whose
	// pool6 is their uplink's (from-interface), by entry; invalid: none.
	prefixes6 map[string]netip.Prefix
}

// Run puts plan in force and looks after it until ctx ends, planning the
// spec again whenever reloads receives or RequestReload asks. A second
// daemon on the same table of the same namespace is refused.
func Run(ctx context.Context, c Config, plan *pool.Plan, reloads <-chan Reload) error {
	d := &daemon{c: c, active: map[string]bool{}, peerUp: map[string]bool{}, holds: map[string]Timer{},
		unstable: map[string]time.Time{}, due: make(chan string, 16), tally: &tally{}, ctx: ctx, prefixes6: map[string]netip.Prefix{}}
	c.Metrics.usage.Store(ptr(d.tally.usage))
	requests := make(chan Reload)
	release, err := c.Box.Kernels(c.Box.Netns).Claim(claimName(plan.Table), func(conn net.Conn) { serveReload(ctx, conn, requests) })
	if err != nil {
		return fmt.Errorf("natpool watch keeps table ip %s in %s already: %w", plan.Table, render.Where(c.Box.Netns), err)
	}
	defer release()
	if d.routing, err = c.Box.Kernels(c.Box.Netns).Routing(); err != nil {
		return err
	}
	defer d.routing.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.ctx = ctx
	d.startUplinks(ctx, plan)
	if err := d.put(plan); err != nil {
		return err
	}
	defer func() {
		if d.up != nil {
			d.up.stop()
		}
	}()
	failed := make(chan error, 2)
	changes := make(chan linux.Change, 256)
	go func() { failed <- d.routing.Follow(ctx, changes) }()
	plans := make(chan *pool.Plan, 1)
	go func() { failed <- d.count(ctx, plan, plans) }()
	if c.Translations != nil || len(c.Collectors) > 0 {
		logged := make(chan struct{})
		go func() { d.followSessions(ctx, plan.CTLabel); close(logged) }()
		defer func() { cancel(); <-logged }() // its last block written and its segment sealed
	}
	defer every(c.Clock, c.Refresh, d.readGuard)()
	tableCheck := make(chan struct{}, 1)
	defer every(c.Clock, time.Second, func() {
		select {
		case tableCheck <- struct{}{}:
		default:
		}
	})()
	d.lookAtAll()
	c.Notify("READY=1")
	fmt.Fprintf(c.Log, "watching %s: hold-down %s, counts rebuilt every %s\n", render.Where(c.Box.Netns), c.HoldDown, c.Resync)
	defer func() {
		for _, t := range d.holds {
			t.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(c.Log, "stopping; the plan stays in force\n")
			c.Notify("STOPPING=1")
			return nil
		case err := <-failed:
			if err != nil {
				return err
			}
		case r := <-reloads:
			d.reloadFor(r, plans)
		case r := <-requests:
			d.reloadFor(r, plans)
		case r := <-d.rounds():
			d.probed(r)
		case ch := <-changes:
			d.changed(ch)
		case key := <-d.due:
			delete(d.unstable, key)
			if key == peersKey {
				d.peers()
			} else if e, err := d.plan.EgressNamed(key); err == nil {
				d.uplink(e)
			}
		case <-tableCheck:
			d.checkTable()
		}
	}
}

func ptr[T any](v T) *T { return &v }

// followPrefix puts in force the public IPv6 prefix of an entry whose
// pool6 is its uplink's (from-interface) when the uplink's global address
// moved to another prefix (a new delegation), then deletes the conntrack
// entries of the old prefix: their replies would go to addresses no longer
// routed to the box. The first look only notes the prefix: the plan was
// applied with it.
func (d *daemon) followPrefix(e *pool.Egress) {
	i := slices.IndexFunc(e.NPT, func(n pool.NPT) bool { return n.FromInterface })
	if i < 0 {
		return
	}
	a, _, err := d.routing.Uplink6(e.OIF)
	if err != nil {
		fmt.Fprintf(d.c.Log, "egress %s: %v\n", e.Name, err)
		return
	}
	n := e.NPT[i]
	var now netip.Prefix
	if a.IsValid() {
		now = n.WithPublic(a).Public
	}
	was, known := d.prefixes6[e.Name]
	d.prefixes6[e.Name] = now
	if !known || was == now {
		return
	}
	fmt.Fprintf(d.c.Log, "egress %s: the IPv6 prefix of %s is %s (was %s): applying\n", e.Name, e.OIF, prefixText(now), prefixText(was))
	if err := d.put(d.plan); err != nil {
		fmt.Fprintf(d.c.Log, "egress %s: applying the new prefix failed: %v\n", e.Name, err)
		return
	}
	if !was.IsValid() {
		return
	}
	c, err := d.c.Box.Kernels(d.c.Box.Netns).Conntrack()
	if err == nil {
		defer c.Close()
		var flushed int
		if flushed, err = c.DeletePrefix6(n.Inside, was); err == nil {
			fmt.Fprintf(d.c.Log, "egress %s: flushed %d conntrack entries of the old prefix %s\n", e.Name, flushed, was)
			return
		}
	}
	fmt.Fprintf(d.c.Log, "egress %s: flushing the entries of the old prefix %s failed: %v\n", e.Name, was, err)
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return "none"
	}
	return p.String()
}

// lookAtAll looks at every uplink and the peers.
func (d *daemon) lookAtAll() {
	for _, e := range d.plan.Egress {
		d.uplink(e)
	}
	d.peers()
}

// put applies plan, journaled, for the uplinks' states as known, and
// reports the table's status.
func (d *daemon) put(plan *pool.Plan) error {
	o := d.c.Options
	o.Uplinks = d.statesFor(plan)
	a, err := d.c.Box.Apply(plan, o)
	if err != nil {
		return err
	}
	for _, w := range a.Warnings {
		fmt.Fprintf(d.c.Log, "warning: %s\n", w)
	}
	a.Text(d.c.Log)
	d.plan, d.digest, d.tableOK = plan, a.Digest, true
	d.c.Metrics.plan.Store(&planInfo{table: plan.Table, digest: a.Digest})
	d.c.Metrics.forPlan(plan)
	d.c.Metrics.tableInSync.Set(1)
	if r, err := d.c.Box.Status(plan, d.c.Options.Node); err != nil {
		fmt.Fprintf(d.c.Log, "status: %v\n", err)
	} else {
		r.Text(d.c.Log)
	}
	return nil
}

// reloadFor reloads as r asks, telling systemd and r how it went, and
// hands a new plan to the counting loop.
func (d *daemon) reloadFor(r Reload, plans chan *pool.Plan) {
	d.c.Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10))
	p, out := d.reload()
	fmt.Fprintln(d.c.Log, out.Line)
	if p != nil {
		select { // the counting loop wants only the latest plan
		case <-plans:
		default:
		}
		plans <- p
		d.startUplinks(d.ctx, p)
		d.lookAtAll()
	}
	d.c.Notify("READY=1")
	if r.Done != nil {
		r.Done <- out
	}
}

// reload re-reads the spec and, if its plan differs from the one in force,
// applies it and flushes the entries it made stale; it returns the new
// plan (nil when the plan in force stays) and what became of the reload.
func (d *daemon) reload() (*pool.Plan, Outcome) {
	fmt.Fprintf(d.c.Log, "reloading the spec\n")
	plan, err := d.c.Plan()
	if err == nil && compiler.Digest(plan) == d.digest && d.tableHolds() {
		d.c.Metrics.reloads.WithLabelValues("unchanged").Inc()
		return nil, Outcome{Line: fmt.Sprintf("reload: plan %s unchanged and in force; nothing applied", d.digest)}
	}
	before, old := d.digest, d.plan
	if err == nil {
		err = d.put(plan)
	}
	if err != nil {
		d.c.Metrics.reloads.WithLabelValues("failed").Inc()
		return nil, Outcome{Line: fmt.Sprintf("reload failed, plan %s stays in force: %v", before, err), Failed: true}
	}
	d.c.Metrics.reloads.WithLabelValues("applied").Inc()
	change := fmt.Sprintf("reload: plan %s -> %s", before, d.digest)
	r, err := d.c.Box.FlushBy(plan, conntrack.StaleIn(plan), false)
	d.counted(reasonStale, r, err)
	moved := d.c.Moved(old, plan)
	if err != nil {
		return plan, Outcome{Line: fmt.Sprintf("%s: %d hosts moved; flushing the stale entries failed after %d: %v", change, moved, r.Deleted, err), Failed: true}
	}
	return plan, Outcome{Line: fmt.Sprintf("%s: %d hosts moved; flushed %d stale conntrack entries of %d natpool's", change, moved, r.Deleted, r.Natpool)}
}

// The reload protocol on the daemon's claimed socket: a request line, then
// one line of outcome, prefixed by whether it failed.
const (
	reloadRequest = "reload"
	reloadOK      = "ok "
	reloadFailed  = "failed "
)

// serveReload answers one connection to the daemon's socket: a reload
// request is passed to the daemon and its outcome written back.
func serveReload(ctx context.Context, conn net.Conn, requests chan<- Reload) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, 64)).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != reloadRequest {
		return // a peek at who holds the socket, or nonsense
	}
	done := make(chan Outcome, 1)
	select {
	case requests <- Reload{Done: done}:
	case <-ctx.Done():
		return
	}
	var out Outcome
	select {
	case out = <-done:
	case <-ctx.Done():
		return
	}
	prefix := reloadOK
	if out.Failed {
		prefix = reloadFailed
	}
	fmt.Fprintf(conn, "%s%s\n", prefix, out.Line)
}

// RequestReload asks the daemon that keeps table in the box's namespace to
// reload its spec, and returns its outcome once the reload is over.
func RequestReload(b *box.Box, table string) (Outcome, error) {
	k := b.Kernels(b.Netns)
	conn, err := k.Dial(claimName(table))
	if err != nil {
		return Outcome{}, fmt.Errorf("no natpool watch keeps table ip %s in %s: %w", table, render.Where(b.Netns), err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s\n", reloadRequest); err != nil {
		return Outcome{}, fmt.Errorf("asking natpool watch of table ip %s to reload: %w", table, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return Outcome{}, fmt.Errorf("natpool watch of table ip %s ended without saying how its reload went", table)
	}
	line = strings.TrimSuffix(line, "\n")
	if rest, failed := strings.CutPrefix(line, reloadFailed); failed {
		return Outcome{Line: rest, Failed: true}, nil
	}
	return Outcome{Line: strings.TrimPrefix(line, reloadOK)}, nil
}

// tableHolds reports whether natpool's table holds the plan in force.
func (d *daemon) tableHolds() bool {
	st, err := d.stamp()
	return err == nil && d.inForce(st)
}

// inForce reports whether natpool's tables, as st says, hold the plan in
// force: the ip table, and the ip6 table when the plan translates IPv6.
func (d *daemon) inForce(st nft.TableStamp) bool {
	ip6 := slices.ContainsFunc(d.plan.Egress, func(e *pool.Egress) bool { return len(e.NPT) > 0 })
	return st.Exists && st.Digest == d.digest && (!ip6 || st.Digest6 == d.digest)
}

func (d *daemon) stamp() (nft.TableStamp, error) {
	t, err := d.c.Box.Kernels(d.c.Box.Netns).Tables()
	if err != nil {
		return nft.TableStamp{}, err
	}
	defer t.Close()
	return t.Stamp(d.plan.Table)
}

// checkTable puts the plan back when natpool's table is gone or holds
// another plan: someone ran nft flush ruleset, or another natpool applied.
// It says so once per change of state.
func (d *daemon) checkTable() {
	st, err := d.stamp()
	switch {
	case err != nil:
		if d.tableOK {
			fmt.Fprintf(d.c.Log, "table ip %s: %v\n", d.plan.Table, err)
		}
		d.tableOK = false
		d.c.Metrics.tableInSync.Set(0)
		return
	case d.inForce(st):
		if !d.tableOK {
			fmt.Fprintf(d.c.Log, "table ip %s in %s holds plan %s again\n", d.plan.Table, render.Where(d.c.Box.Netns), d.digest)
		}
		d.tableOK = true
		d.c.Metrics.tableInSync.Set(1)
		return
	}
	d.c.Metrics.tableInSync.Set(0)
	why := "is gone"
	switch {
	case st.Exists && !st.Natpool:
		why = "is no longer natpool's"
	case st.Exists && st.Digest != d.digest:
		why = "holds plan " + st.Digest
	case st.Exists:
		why = "has lost its ip6 table"
	}
	wasOK := d.tableOK
	d.tableOK = false
	if err := d.put(d.plan); err != nil {
		if wasOK {
			fmt.Fprintf(d.c.Log, "table ip %s in %s %s; restoring plan %s failed: %v\n", d.plan.Table, render.Where(d.c.Box.Netns), why, d.digest, err)
		}
		return
	}
	d.c.Metrics.tableRestores.Inc()
	fmt.Fprintf(d.c.Log, "table ip %s in %s %s: restored plan %s\n", d.plan.Table, render.Where(d.c.Box.Netns), why, d.digest)
}

// changed starts the hold-down of what a change of links or routes may
// change: the uplink of an interface that changed; every uplink, for a
// route the probe's lookup may take; the peers, for a route in a peer's
// routing table. Other routes change nothing natpool looks at.
func (d *daemon) changed(ch linux.Change) {
	var peerTables []int
	if c := d.plan.Cluster; c != nil && d.c.Options.Node != "" {
		peerTables = compiler.NodeTables(c)
	}
	switch {
	case ch.All:
		for _, e := range d.plan.Egress {
			d.hold(e.Name)
		}
		d.hold(peersKey)
	case ch.Link != "" && ch.Addr6:
		// A delegated prefix moves rarely and at once: no hold-down.
		for _, e := range d.plan.Egress {
			if pool.MatchesInterface(e.OIF, ch.Link) {
				d.followPrefix(e)
			}
		}
	case ch.Link != "":
		for _, e := range d.plan.Egress {
			if pool.MatchesInterface(e.OIF, ch.Link) {
				d.hold(e.Name)
			}
		}
	case ch.Route && slices.Contains(peerTables, ch.Table):
		d.hold(peersKey)
	case ch.Route && ch.Dst.Contains(d.c.Probe):
		for _, e := range d.plan.Egress {
			d.hold(e.Name)
		}
	}
}

// hold (re)starts the hold-down of key: it comes due HoldDown after its
// last change, or MaxHold times HoldDown after the first of a stretch of
// changes, whichever is sooner.
func (d *daemon) hold(key string) {
	now := d.c.Clock.Now()
	first, ok := d.unstable[key]
	if !ok {
		first, d.unstable[key] = now, now
	}
	wait := min(d.c.HoldDown, max(0, first.Add(MaxHold*d.c.HoldDown).Sub(now)))
	if t := d.holds[key]; t != nil {
		t.Reset(wait)
		return
	}
	d.holds[key] = d.c.Clock.AfterFunc(wait, func() {
		select {
		case d.due <- key:
		case <-d.ctx.Done():
		}
	})
}

// uplink looks at an egress entry's interface and route, and flushes its
// entries when its uplink has stopped carrying its hosts. An interface
// down or without carrier is enough: the route is asked only of one that
// is up (a box that does not forward cannot answer it).
func (d *daemon) uplink(e *pool.Egress) {
	if e.OIF == "" {
		return // leaves by any interface: nothing to follow
	}
	d.followPrefix(e)
	links, err := d.routing.LinksUp()
	if err != nil {
		fmt.Fprintf(d.c.Log, "links: %v\n", err)
		return
	}
	linkUp, exists := false, false
	for name, up := range links {
		if pool.MatchesInterface(e.OIF, name) {
			exists, linkUp = true, linkUp || up
		}
	}
	why := fmt.Sprintf("%s is down or has no carrier", e.OIF)
	if !exists {
		why = fmt.Sprintf("there is no interface %s", e.OIF)
	}
	if i := d.memberNamed(e.Name); i >= 0 {
		// A site's uplink carries its hosts while its link is up and its
		// probes pass: the marks choose it, not the main table's routes.
		d.linkOf(i, linkUp, why)
		d.refacts(i)
		return
	}
	host := e.Inside.Ranges()[0].From()
	active := false
	if linkUp {
		out, err := d.routing.RouteOut(host, d.c.Probe)
		if err != nil {
			fmt.Fprintf(d.c.Log, "egress %s: %v\n", e.Name, err)
			return
		}
		active = out != "" && pool.MatchesInterface(e.OIF, out)
		why = fmt.Sprintf("its hosts (%s) are routed through %s", host, cmpOr(out, "nothing"))
	}
	gauge := 0.0
	if active {
		gauge = 1
	}
	d.c.Metrics.uplink.WithLabelValues(e.Name, e.OIF).Set(gauge)
	was, known := d.active[e.Name]
	d.active[e.Name] = active
	switch {
	case active && known && !was:
		fmt.Fprintf(d.c.Log, "egress %s: %s now carries its hosts\n", e.Name, e.OIF)
	case active || known && !was:
		// in force, or already flushed
	default:
		r, err := d.c.Box.FlushBy(d.plan, conntrack.Of(e), false)
		d.counted(reasonUplink, r, err)
		if err != nil {
			fmt.Fprintf(d.c.Log, "egress %s: %s; flushing its conntrack entries failed after %d: %v\n", e.Name, why, r.Deleted, err)
			return
		}
		fmt.Fprintf(d.c.Log, "egress %s: %s; flushed %d of its conntrack entries\n", e.Name, why, r.Deleted)
	}
}

func cmpOr(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// counted adds a flush to the metrics, by the egress entries whose
// entries it deleted.
func (d *daemon) counted(reason string, r render.FlushReport, err error) {
	for egress, n := range r.ByEgress {
		d.c.Metrics.flushes.WithLabelValues(egress, reason).Inc()
		d.c.Metrics.flushed.WithLabelValues(egress, reason).Add(float64(n))
	}
	if err != nil {
		d.c.Metrics.readErrors.Inc()
	}
}

// peers looks, on a node, at the routing table of each peer, says when one
// stops or starts holding routes (status said how they were at first), and
// deletes the entries of the flows whose path that changes.
func (d *daemon) peers() {
	c, node := d.plan.Cluster, d.c.Options.Node
	self := -1
	if c != nil && node != "" {
		self = c.NodeIndex(node)
	}
	for name := range d.peerUp { // a node the spec no longer has
		if self < 0 || c.NodeIndex(name) < 0 {
			delete(d.peerUp, name)
			d.c.Metrics.peer.DeleteLabelValues(name)
		}
	}
	if self < 0 {
		return
	}
	peers, err := d.c.Box.Peers(c, node)
	if err != nil {
		fmt.Fprintf(d.c.Log, "peers: %v\n", err)
		return
	}
	first, changed := len(d.peerUp) == 0, false
	for _, p := range peers {
		gauge := 0.0
		if p.Up {
			gauge = 1
		}
		d.c.Metrics.peer.WithLabelValues(p.Node).Set(gauge)
		was, known := d.peerUp[p.Node]
		d.peerUp[p.Node] = p.Up
		if !known || was == p.Up {
			continue // status said how it was
		}
		changed = true
		kind, now, since := journal.PeerUp, d.c.Clock.Now(), time.Time{}
		if p.Up {
			fmt.Fprintf(d.c.Log, "peer %s came up: routing table %d has its routes again; its hosts are steered to it\n", p.Node, p.Table)
		} else {
			// BGP told its death a hold time after the peer's last word.
			kind, since = journal.PeerDown, now.Add(-time.Duration(c.SessionHold(self, c.NodeIndex(p.Node)))*time.Second)
			fmt.Fprintf(d.c.Log, "peer %s went down (silent since %s at the earliest): routing table %d is empty; this node translates the hosts it steered to it, to the same public addresses\n", p.Node, render.TimeText(since), p.Table)
		}
		if err := d.c.Box.Journal.Peer(kind, d.c.Box.Netns, d.plan.Table, node, p.Node, now, since); err != nil {
			fmt.Fprintf(d.c.Log, "peer %s: the journal did not take the failover: %v\n", p.Node, err)
		}
	}
	if !changed && !first {
		return
	}
	// The flows that take another path now than their entries: at a
	// failover those steered to a dead peer, at a failback those this
	// node translated for a peer that is back.
	live := func(n int) bool { return n == self || d.peerUp[c.Nodes[n].Name] }
	r, err := d.c.Box.FlushBy(d.plan, conntrack.Misplaced(d.plan, self, live), false)
	d.counted(reasonPeer, r, err)
	switch {
	case err != nil:
		fmt.Fprintf(d.c.Log, "peers: flushing the entries of flows whose path changed failed after %d: %v\n", r.Deleted, err)
	case r.Deleted > 0:
		fmt.Fprintf(d.c.Log, "peers: flushed %d conntrack entries of flows whose path the peers changed; their next packets are translated where their address is served now\n", r.Deleted)
	}
}

// readGuard reads the guard's counters for the metrics.
func (d *daemon) readGuard() {
	if p := d.c.Metrics.plan.Load(); p != nil {
		if drops, err := d.c.Box.GuardDrops(p.table); err == nil {
			d.c.Metrics.guardDrops.Store(&drops)
		}
	}
}
