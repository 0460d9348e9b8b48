//go:build linux

package cmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// watcher is the state of natpool watch. The main loop owns the plan and
// the uplinks; the counting loop owns the connection counts.
type watcher struct {
	o       *watchOptions
	log     io.Writer
	metrics *watchMetrics
	// active is, per egress entry, whether its uplink carried its hosts
	// when last looked at: a flush follows the change to false.
	active map[string]bool
	// peerUp is, with --node, whether each peer's routing table held
	// routes when last looked at.
	peerUp map[string]bool
}

func runWatch(o *watchOptions, stdout, stderr io.Writer) error {
	// watch lives long with a large heap that changes slowly, the counts,
	// and allocates little between dumps: a low GC target keeps its memory
	// near the counts for little CPU (a million connections: 123 MB, 145
	// at GOGC=50), and one processor keeps its few goroutines on one
	// thread rather than waking another for each batch of events. GOGC
	// and GOMAXPROCS in the environment still decide.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	defer signal.Stop(hup)

	w := &watcher{o: o, log: stderr, metrics: newWatchMetrics(), active: map[string]bool{}, peerUp: map[string]bool{}}
	var listener net.Listener
	var err error
	if o.metrics != "" {
		// Before anything is applied: a port in use is bad input.
		if listener, err = net.Listen("tcp", o.metrics); err != nil {
			return fmt.Errorf("--metrics %s: %w", o.metrics, err)
		}
		defer listener.Close()
	}
	plan, err := o.apply.spec.plan(stderr)
	if err != nil {
		return err
	}
	if err := w.put(plan); err != nil {
		return err
	}
	routing, err := linux.OpenRouting(o.apply.netns)
	if err != nil {
		return err
	}
	defer routing.Close()
	if listener != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(w.metrics.registry, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(listener)
		defer srv.Close()
		fmt.Fprintf(w.log, "serving metrics on http://%s/metrics\n", listener.Addr())
	}

	failed := make(chan error, 2)
	changed := make(chan struct{}, 1)
	go func() { failed <- routing.Follow(ctx, changed) }()
	plans := make(chan *pool.Plan, 1)
	go func() { failed <- w.count(ctx, plan, plans) }()
	go w.guard(ctx)
	w.uplinks(routing, plan)
	w.peers(routing, plan)
	notify("READY=1")
	fmt.Fprintf(w.log, "watching %s: hold-down %s, counts rebuilt every %s\n", where(o.apply.netns), o.holdDown, o.resync)

	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(w.log, "stopping; the plan stays in force\n")
			notify("STOPPING=1")
			return nil
		case err := <-failed:
			if err != nil {
				return err
			}
		case <-hup:
			notify("RELOADING=1")
			if p := w.reload(plan); p != nil {
				plan = p
				select { // the counting loop wants only the latest plan
				case <-plans:
				default:
				}
				plans <- p
				w.uplinks(routing, plan)
				w.peers(routing, plan)
			}
			notify("READY=1")
		case <-changed:
			hold.Reset(o.holdDown) // act once the links and routes are still
		case <-hold.C:
			w.uplinks(routing, plan)
			w.peers(routing, plan)
		}
	}
}

// put applies plan, journaled, and reports the table's status.
func (w *watcher) put(plan *pool.Plan) error {
	digest, err := applyPlan(plan, &w.o.apply, w.log, w.log)
	if err != nil {
		return err
	}
	w.metrics.plan.Store(&planInfo{table: plan.Table, digest: digest})
	status := &statusOptions{netns: w.o.apply.netns, node: w.o.apply.node, output: "text", journal: w.o.apply.journal}
	if err := statusOf(plan, status, w.log, w.log); err != nil {
		fmt.Fprintf(w.log, "status: %v\n", err)
	}
	return nil
}

// reload re-reads the spec, applies it and flushes the entries it made
// stale; it returns the new plan, or nil when the old one stays in force.
func (w *watcher) reload(old *pool.Plan) *pool.Plan {
	fmt.Fprintf(w.log, "SIGHUP: reloading the spec\n")
	before := w.metrics.plan.Load().digest
	plan, err := w.o.apply.spec.plan(w.log)
	if err == nil {
		err = w.put(plan)
	}
	if err != nil {
		w.metrics.reloads.WithLabelValues("failed").Inc()
		fmt.Fprintf(w.log, "reload failed, plan %s stays in force: %v\n", before, err)
		return nil
	}
	w.metrics.reloads.WithLabelValues("applied").Inc()
	change := fmt.Sprintf("reload: plan %s -> %s", before, w.metrics.plan.Load().digest)
	n := count(old, plan).moved
	r, err := flush(plan, conntrack.StaleIn(plan), w.o.apply.netns, false)
	w.counted("", "stale", r, err)
	if err != nil {
		fmt.Fprintf(w.log, "%s: %d hosts moved; flushing the stale entries failed after %d: %v\n", change, n, r.Deleted, err)
		return plan
	}
	fmt.Fprintf(w.log, "%s: %d hosts moved; flushed %d stale conntrack entries of %d natpool's\n", change, n, r.Deleted, r.Natpool)
	return plan
}

// counted adds a flush to the metrics.
func (w *watcher) counted(egress, reason string, r flushReport, err error) {
	w.metrics.flushes.WithLabelValues(egress, reason).Inc()
	w.metrics.flushed.WithLabelValues(egress, reason).Add(float64(r.Deleted))
	if err != nil {
		w.metrics.readErrors.Inc()
	}
}

// uplinks looks at every egress entry's interface and route, and flushes
// the entries of those whose uplink no longer carries their hosts.
func (w *watcher) uplinks(r *linux.Routing, plan *pool.Plan) {
	up, err := r.LinksUp()
	if err != nil {
		fmt.Fprintf(w.log, "links: %v\n", err)
		return
	}
	for _, e := range plan.Egress {
		if e.OIF == "" {
			continue // leaves by any interface: nothing to follow
		}
		linkUp := false
		for name, u := range up {
			linkUp = linkUp || u && pool.MatchesInterface(e.OIF, name)
		}
		host := e.Inside.Ranges()[0].From()
		out, err := r.RouteOut(host, w.o.probeTo)
		if err != nil {
			fmt.Fprintf(w.log, "egress %s: %v\n", e.Name, err)
			continue
		}
		active := linkUp && out != "" && pool.MatchesInterface(e.OIF, out)
		gauge := 0.0
		if active {
			gauge = 1
		}
		w.metrics.uplink.WithLabelValues(e.Name, e.OIF).Set(gauge)
		was, known := w.active[e.Name]
		w.active[e.Name] = active
		switch {
		case active && known && !was:
			fmt.Fprintf(w.log, "egress %s: %s now carries its hosts\n", e.Name, e.OIF)
		case active || known && !was:
			// in force, or already flushed
		default:
			why := fmt.Sprintf("%s is down or has no carrier", e.OIF)
			if linkUp {
				why = fmt.Sprintf("its hosts (%s) are routed through %s", host, cmp.Or(out, "nothing"))
			}
			rep, err := flush(plan, conntrack.Of(e), w.o.apply.netns, false)
			w.counted(e.Name, "uplink", rep, err)
			if err != nil {
				fmt.Fprintf(w.log, "egress %s: %s; flushing its conntrack entries failed after %d: %v\n", e.Name, why, rep.Deleted, err)
				continue
			}
			fmt.Fprintf(w.log, "egress %s: %s; flushed %d of its conntrack entries\n", e.Name, why, rep.Deleted)
		}
	}
}

// peers looks, with --node, at the routing table of each peer and says
// when one stops or starts holding routes (status said how they were at
// first): a failover, after which this node translates the hosts it used
// to steer to the peer, or steers them again.
func (w *watcher) peers(r *linux.Routing, plan *pool.Plan) {
	c, self := plan.Cluster, -1
	if c != nil {
		self = c.NodeIndex(w.o.apply.node)
	}
	for name := range w.peerUp { // a node the spec no longer has
		if self < 0 || c.NodeIndex(name) < 0 {
			delete(w.peerUp, name)
			w.metrics.peer.DeleteLabelValues(name)
		}
	}
	if self < 0 {
		return
	}
	peers, err := peerStates(r, c, w.o.apply.node)
	if err != nil {
		fmt.Fprintf(w.log, "peers: %v\n", err)
		return
	}
	first := len(w.peerUp) == 0
	changed := false
	for _, p := range peers {
		gauge := 0.0
		if p.Up {
			gauge = 1
		}
		w.metrics.peer.WithLabelValues(p.Node).Set(gauge)
		was, known := w.peerUp[p.Node]
		w.peerUp[p.Node] = p.Up
		if !known || was == p.Up {
			continue // status said how it was
		}
		changed = true
		kind := journal.PeerDown
		if p.Up {
			kind = journal.PeerUp
			fmt.Fprintf(w.log, "peer %s came up: routing table %d has its routes again; its hosts are steered to it\n", p.Node, p.Table)
		} else {
			fmt.Fprintf(w.log, "peer %s went down: routing table %d is empty; this node translates the hosts it steered to it, to the same public addresses\n", p.Node, p.Table)
		}
		if err := w.recordPeer(plan, journal.Event{Kind: kind, Node: w.o.apply.node, Peer: p.Node}); err != nil {
			fmt.Fprintf(w.log, "peer %s: the journal did not take the failover: %v\n", p.Node, err)
		}
	}
	if changed || first {
		w.flushMisplaced(plan, self)
	}
}

// flushMisplaced deletes the entries of the flows the peers' states send
// another way than their entry (see conntrack.Misplaced): at a failover,
// the flows this node steered to a dead peer, which would leave
// untranslated; at a failback, those it translated for a peer that is back.
func (w *watcher) flushMisplaced(plan *pool.Plan, self int) {
	live := func(node int) bool {
		return node == self || w.peerUp[plan.Cluster.Nodes[node].Name]
	}
	r, err := flush(plan, conntrack.Misplaced(plan, self, live), w.o.apply.netns, false)
	w.counted("", "peer", r, err)
	switch {
	case err != nil:
		fmt.Fprintf(w.log, "peers: flushing the entries of flows whose path changed failed after %d: %v\n", r.Deleted, err)
	case r.Deleted > 0:
		fmt.Fprintf(w.log, "peers: flushed %d conntrack entries of flows whose path the peers changed; their next packets are translated where their address is served now\n", r.Deleted)
	}
}

// guard reads the guard chain's counters every --refresh for the metrics,
// until ctx ends.
func (w *watcher) guard(ctx context.Context) {
	k, err := nft.Dial(w.o.apply.netns)
	if err != nil {
		fmt.Fprintf(w.log, "guard counters: %v\n", err)
		return
	}
	defer k.Close()
	tick := time.NewTicker(w.o.refresh)
	defer tick.Stop()
	for {
		if drops, err := k.GuardDrops(w.metrics.plan.Load().table); err == nil {
			w.metrics.guardDrops.Store(&drops)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// recordPeer writes a peer event to the journal apply writes.
func (w *watcher) recordPeer(plan *pool.Plan, ev journal.Event) error {
	path, err := onePath(w.o.apply.journal, plan.Spec.Journal)
	if err != nil {
		return err
	}
	jw, err := journalWriter(path, w.log)
	if err != nil {
		return err
	}
	return jw.Peer(ev.Kind, w.o.apply.netns, plan.Table, ev.Node, ev.Peer, now())
}

// count keeps the connection counts from conntrack's events, rebuilt from a
// dump at first, every --resync, for each new plan and after any loss. It
// returns when ctx ends.
func (w *watcher) count(ctx context.Context, plan *pool.Plan, plans <-chan *pool.Plan) error {
	for ctx.Err() == nil {
		next, err := w.follow(ctx, plan, plans)
		plan = next
		switch {
		case err == nil:
		case errors.Is(err, conntrack.ErrEventsLost):
			w.metrics.eventsLost.Inc()
			fmt.Fprintf(w.log, "conntrack: events were lost; rebuilding the counts\n")
		default:
			w.metrics.readErrors.Inc()
			fmt.Fprintf(w.log, "conntrack: %v; retrying in a second\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// tally is the counts, which the events change as they arrive and the
// dumps rebuild.
type tally struct {
	mu      sync.Mutex
	counter *pool.LiveCounter // nil while a dump rebuilds it
	pending []conntrack.Change
	dirty   bool
}

// change counts an event, or keeps it for the dump under way.
func (t *tally) change(c conntrack.Change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counter == nil {
		t.pending = append(t.pending, c)
		return
	}
	t.counter.Count(c.Connection, c.Delta)
	t.dirty = true
}

// follow counts from one subscription until it fails, the conntrack label
// changes with a new plan (nil error), or ctx ends. It returns the plan it
// counted for last.
func (w *watcher) follow(ctx context.Context, plan *pool.Plan, plans <-chan *pool.Plan) (*pool.Plan, error) {
	sub, err := conntrack.Subscribe(w.o.apply.netns, plan.CTLabel)
	if err != nil {
		return plan, err
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &tally{}
	failed := make(chan error, 1)
	go func() { failed <- sub.Run(ctx, t.change) }()
	if err := w.resync(t, plan); err != nil {
		return plan, err
	}
	refresh, resync := time.NewTicker(w.o.refresh), time.NewTicker(w.o.resync)
	defer refresh.Stop()
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return plan, nil
		case err := <-failed:
			return plan, err
		case <-refresh.C:
			t.mu.Lock()
			if t.dirty && t.counter != nil {
				w.publish(t.counter)
				t.dirty = false
			}
			t.mu.Unlock()
		case <-resync.C:
			if err := w.resync(t, plan); err != nil {
				return plan, err
			}
		case p := <-plans:
			relabel := p.CTLabel != plan.CTLabel
			plan = p
			if relabel {
				return plan, nil // subscribe again, for the new label
			}
			if err := w.resync(t, plan); err != nil {
				return plan, err
			}
		}
	}
}

// resync rebuilds the counts from a full dump. The events that arrive while
// it runs are counted on top of it: the counts are then off by at most the
// connections made and ended during the dump. The old counts go first, so
// that two never take memory at once; the metrics serve the last figures
// meanwhile.
func (w *watcher) resync(t *tally, plan *pool.Plan) error {
	t.mu.Lock()
	t.counter, t.pending = nil, nil
	t.mu.Unlock()
	w.metrics.resyncs.Inc()
	counter, err := countLive(plan, w.o.apply.netns)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.pending {
		counter.Count(c.Connection, c.Delta)
	}
	t.counter, t.pending, t.dirty = counter, nil, false
	w.publish(counter)
	return nil
}

// publish makes the counts the figures the metrics serve.
func (w *watcher) publish(counter *pool.LiveCounter) {
	usage := counter.Usage()
	w.metrics.usage.Store(&usage)
}

// notify tells systemd the service's state (sd_notify(3)); without
// NOTIFY_SOCKET, when not started as a Type=notify service, it does nothing.
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
