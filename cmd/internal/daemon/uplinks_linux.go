//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/pool"
)

// member is what the daemon knows of one uplink of a site.
type member struct {
	name, oif string
	link      bool             // up, with carrier (and the interface exists)
	probed    pool.UplinkState // what its probes say; up without probes
	why       string           // why the probes say so
	said      pool.UplinkState // the state last said of it
	// fails and passes count the rounds in a row that failed and passed;
	// window holds the last rounds, for loss and latency.
	fails, passes int
	window        []round
}

// state is the member's state: down when its link is, else its probes'.
func (m *member) state() pool.UplinkState {
	if !m.link {
		return pool.UplinkDown
	}
	return m.probed
}

// round is one round of a member's probes: the targets that answered, and
// the probes sent and answered (a target's probe may be sent twice).
type round struct {
	member      int
	answered    int
	sent, heard int
	rtts        []time.Duration
	missed      []string // the targets that did not answer
}

// uplinks follows a site's uplinks: their links, and their probes.
type uplinks struct {
	members []member
	// facts are each member's address and gateway as the table was last
	// compiled with; a change puts them in force.
	facts [][2]netip.Addr
	// vias are how each member's probes leave, for the probes' goroutines.
	vias   atomic.Pointer[[]linux.Via]
	states []pool.UplinkState // what natpool's table follows now
	// moved says that the states changed and the entries of flows left
	// on an uplink their host no longer leaves by wait to go. They go once
	// the last round of every uplink that is not down passed: uplinks
	// that fail together but are found out a round apart cut nothing.
	moved  bool
	rounds chan round
	stop   func() // stops the probes
}

// startUplinks begins to follow plan's uplinks, keeping what is known of
// members of the same name from before, and starts their probes.
func (d *daemon) startUplinks(ctx context.Context, plan *pool.Plan) {
	old := d.up
	if old != nil {
		old.stop()
	}
	d.up = nil
	u := plan.Uplinks
	if u == nil {
		return
	}
	d.up = &uplinks{rounds: make(chan round, 64)}
	for _, m := range u.Members {
		nm := member{name: m.Name, oif: m.OIF, link: true}
		if old != nil {
			if i := slices.IndexFunc(old.members, func(o member) bool { return o.name == m.Name }); i >= 0 {
				nm = old.members[i]
				nm.oif = m.OIF
			}
		}
		d.up.members = append(d.up.members, nm)
	}
	d.up.facts = make([][2]netip.Addr, len(u.Members))
	for i, m := range u.Members {
		d.up.facts[i][0], d.up.facts[i][1], _ = d.routing.Uplink(m.OIF)
	}
	d.setVias(u)
	d.up.states = d.uplinkStates()
	for i := range d.up.members {
		m := &d.up.members[i]
		m.said = d.up.states[i]
		d.c.Metrics.setUplink(m.name, m.oif, m.said)
	}
	d.up.moved = old != nil && old.moved
	var stops []func()
	up := d.up
	for i, m := range u.Members {
		if p := plan.Egress[m.Egress].Probe; p != nil {
			stops = append(stops, every(d.c.Clock, p.Interval, func() { go d.probe(ctx, up, i, p) }))
		}
	}
	d.up.stop = func() {
		for _, s := range stops {
			s()
		}
	}
}

// statesFor returns the states of plan's uplinks as known of the members
// of the same name (up when not known); nil for a plan without.
func (d *daemon) statesFor(plan *pool.Plan) []pool.UplinkState {
	u := plan.Uplinks
	if u == nil {
		return nil
	}
	states := u.AllUp()
	if d.up != nil {
		for i, m := range u.Members {
			if j := slices.IndexFunc(d.up.members, func(o member) bool { return o.name == m.Name }); j >= 0 {
				states[i] = d.up.members[j].state()
			}
		}
	}
	return states
}

// rounds returns the channel of the uplinks' probe rounds; nil (which no
// select takes from) without uplinks.
func (d *daemon) rounds() chan round {
	if d.up == nil {
		return nil
	}
	return d.up.rounds
}

// uplinkStates returns each member's state; nil without uplinks.
func (d *daemon) uplinkStates() []pool.UplinkState {
	if d.up == nil {
		return nil
	}
	states := make([]pool.UplinkState, len(d.up.members))
	for i := range d.up.members {
		states[i] = d.up.members[i].state()
	}
	return states
}

// setVias says how each of u's members' probes leave now: by its
// interface, from its address, with its mark.
func (d *daemon) setVias(u *pool.Uplinks) {
	vias := make([]linux.Via, len(u.Members))
	for i, m := range u.Members {
		vias[i] = linux.Via{OIF: m.OIF, Source: d.up.facts[i][0], Mark: u.MemberMark(i)}
	}
	d.up.vias.Store(&vias)
}

// probe runs one round of member i's probes, every target at once, and
// hands it to the daemon. It runs beside the daemon's loop: it reads only
// what up shares for it.
func (d *daemon) probe(ctx context.Context, up *uplinks, i int, p *pool.Probe) {
	via := (*up.vias.Load())[i]
	within, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	r := round{member: i}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range p.Targets {
		wg.Go(func() {
			sent, rtt, err := d.probeTarget(within, t, via, p.Timeout/2)
			mu.Lock()
			defer mu.Unlock()
			r.sent += sent
			if err != nil {
				r.missed = append(r.missed, t.String())
				return
			}
			r.answered++
			r.heard++
			r.rtts = append(r.rtts, rtt)
		})
	}
	wg.Wait()
	select {
	case up.rounds <- r:
	case <-ctx.Done():
	}
}

// probeTarget probes t, and again when it has not answered after again:
// both wait for an answer until ctx ends, and the first answer counts. One
// lost packet so fails no round, and a slow answer to the first is still
// heard. It returns the probes sent and the answer's round trip.
func (d *daemon) probeTarget(ctx context.Context, t pool.ProbeTarget, via linux.Via, again time.Duration) (int, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		rtt time.Duration
		err error
	}
	answers := make(chan answer, 2)
	send := func() {
		rtt, err := d.c.Box.Kernels(d.c.Box.Netns).Probe(ctx, t, via)
		answers <- answer{rtt, err}
	}
	go send()
	sent, pending := 1, 1
	retry := time.NewTimer(again)
	defer retry.Stop()
	for {
		select {
		case a := <-answers:
			pending--
			if a.err == nil {
				cancel()
				for ; pending > 0; pending-- {
					<-answers
				}
				return sent, a.rtt, nil
			}
			if pending == 0 && (sent == 2 || ctx.Err() != nil) {
				return sent, 0, a.err
			}
			if sent == 1 {
				retry.Reset(0) // failed at once (no route): the second goes now
			}
		case <-retry.C:
			if sent == 1 {
				sent, pending = 2, pending+1
				go send()
			}
		}
	}
}

// probed takes a round of a member's probes: Down failed rounds in a row
// take it down, Up passed ones bring it back; while up, its loss or median
// round trip over the last Down rounds above the probe's bounds make it
// degraded.
func (d *daemon) probed(r round) {
	if d.up == nil || r.member >= len(d.up.members) {
		return // a round of a plan reloaded since
	}
	p := d.plan.Egress[d.plan.Uplinks.Members[r.member].Egress].Probe
	m := &d.up.members[r.member]
	m.window = append(m.window, r)
	if len(m.window) > p.Down {
		m.window = m.window[1:]
	}
	for _, rtt := range r.rtts {
		d.c.Metrics.probeRTT.WithLabelValues(m.name).Observe(rtt.Seconds())
	}
	sent, heard := 0, 0
	var rtts []time.Duration
	for _, w := range m.window {
		sent, heard, rtts = sent+w.sent, heard+w.heard, append(rtts, w.rtts...)
	}
	loss := 1 - float64(heard)/float64(sent)
	d.c.Metrics.probeLoss.WithLabelValues(m.name).Set(loss)
	if r.answered >= p.Reliability {
		m.passes, m.fails = m.passes+1, 0
	} else {
		m.passes, m.fails = 0, m.fails+1
	}
	state := m.probed
	switch {
	case state != pool.UplinkDown && m.fails >= p.Down:
		state = pool.UplinkDown
		m.why = fmt.Sprintf("%d probe rounds in a row had fewer than %d of %d targets answer (unanswered: %s)", m.fails, p.Reliability, len(p.Targets), strings.Join(r.missed, ", "))
	case state == pool.UplinkDown && m.passes >= p.Up:
		state = pool.UplinkUp
		m.why = fmt.Sprintf("%d probe rounds in a row passed", m.passes)
	}
	if state != pool.UplinkDown && len(m.window) == p.Down {
		slices.Sort(rtts)
		median := time.Duration(0)
		if len(rtts) > 0 {
			median = rtts[len(rtts)/2]
		}
		switch {
		case p.Loss > 0 && loss > p.Loss:
			state, m.why = pool.UplinkDegraded, fmt.Sprintf("%.0f%% of the probes of the last %d rounds were lost (bound %.0f%%)", 100*loss, p.Down, 100*p.Loss)
		case p.Latency > 0 && median > p.Latency:
			state, m.why = pool.UplinkDegraded, fmt.Sprintf("the median round trip of the last %d rounds is %s (bound %s)", p.Down, median.Round(time.Millisecond), p.Latency)
		case state == pool.UplinkDegraded:
			state, m.why = pool.UplinkUp, fmt.Sprintf("loss %.0f%% and median round trip %s within bounds again", 100*loss, median.Round(time.Millisecond))
		}
	}
	if state != m.probed {
		m.probed = state
		d.steer()
	}
	d.flushMoved()
}

// memberNamed returns the index of the site's uplink of egress entry
// name, -1 if it is none.
func (d *daemon) memberNamed(name string) int {
	if d.up == nil {
		return -1
	}
	return d.plan.Uplinks.MemberNamed(name)
}

// refacts puts member i's address and gateway in force when they changed
// (a DHCP lease, a new route): natpool's rules for its own packets and its
// routing table follow them.
func (d *daemon) refacts(i int) {
	addr, gw, err := d.routing.Uplink(d.up.members[i].oif)
	if err != nil || d.up.facts[i] == [2]netip.Addr{addr, gw} {
		return
	}
	d.up.facts[i] = [2]netip.Addr{addr, gw}
	d.setVias(d.plan.Uplinks)
	if err := d.putStates(); err != nil {
		fmt.Fprintf(d.c.Log, "uplink %s: %v\n", d.up.members[i].name, err)
		return
	}
	fmt.Fprintf(d.c.Log, "uplink %s (%s): address %s, gateway %s: its routing follows\n", d.up.members[i].name, d.up.members[i].oif, addrText(addr), addrText(gw))
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// linkOf notes whether member i's link is up; a change is steered.
func (d *daemon) linkOf(i int, up bool, why string) {
	m := &d.up.members[i]
	if m.link == up {
		return
	}
	m.link = up
	if !up {
		m.why = why
	} else {
		m.why = "its link is up"
	}
	d.steer()
}

// steer says each change of the members' states (log, journal, metrics)
// and puts the states in force: natpool's table and routing follow them
// (new connections of a host leave by the first of its uplinks that is
// up), and the entries of flows left on an uplink their host no longer
// leaves by are to go: those on one that is down, and (unless the uplinks
// are sticky) those failed over to a backup when their host's own uplink
// is back. The table changes first, so that a flow's next packet after
// its deletion finds the new way, and the entries go once the uplinks
// that are up last passed their probes (flushMoved). While every uplink is
// down nothing changes and nothing goes: there is nowhere better to go,
// and the flows may recover.
func (d *daemon) steer() {
	states := d.uplinkStates()
	for i := range d.up.members {
		m := &d.up.members[i]
		if states[i] == m.said {
			continue
		}
		m.said = states[i]
		d.c.Metrics.setUplink(m.name, m.oif, states[i])
		fmt.Fprintf(d.c.Log, "uplink %s (%s) is %s: %s\n", m.name, m.oif, states[i], m.why)
		if err := d.c.Box.Journal.Uplink(d.c.Box.Netns, d.plan.Table, m.name, states[i].String(), m.why, d.c.Clock.Now()); err != nil {
			fmt.Fprintf(d.c.Log, "uplink %s: the journal did not take it: %v\n", m.name, err)
		}
	}
	if !slices.ContainsFunc(states, func(s pool.UplinkState) bool { return s != pool.UplinkDown }) {
		fmt.Fprintf(d.c.Log, "uplinks: every uplink is down: hosts keep their uplinks and connections, which may recover\n")
		d.up.moved = false
		return
	}
	if slices.Equal(states, d.up.states) {
		return
	}
	d.up.states = states
	if err := d.putStates(); err != nil {
		fmt.Fprintf(d.c.Log, "uplinks: %v\n", err)
	}
	for i, m := range d.up.members {
		fmt.Fprintf(d.c.Log, "uplinks: hosts of %s leave by %s\n", m.name, d.carries(i, states))
	}
	d.up.moved = true
	d.flushMoved()
}

// flushMoved deletes the entries of flows left on an uplink their host no
// longer leaves by, when the states moved them and the last round of each
// uplink that is not down passed (one without probes has its link alone to
// say). A backup found failing is no better than the uplink its hosts
// leave: they keep their entries until it passes again or is found down.
func (d *daemon) flushMoved() {
	if d.up == nil || !d.up.moved {
		return
	}
	for i := range d.up.members {
		if d.up.states[i] != pool.UplinkDown && d.up.members[i].fails > 0 {
			return
		}
	}
	d.up.moved = false
	states := d.up.states
	r, err := d.c.Box.FlushBy(d.plan, conntrack.Rerouted(d.plan, states), false)
	d.counted(reasonUplink, r, err)
	switch {
	case err != nil:
		fmt.Fprintf(d.c.Log, "uplinks: flushing the entries of flows whose uplink changed failed after %d: %v\n", r.Deleted, err)
	case r.Deleted > 0:
		fmt.Fprintf(d.c.Log, "uplinks: flushed %d conntrack entries of flows left on an uplink their host no longer leaves by\n", r.Deleted)
	}
}

// carries says which members carry member i's hosts now.
func (d *daemon) carries(i int, states []pool.UplinkState) string {
	u := d.plan.Uplinks
	by := make([]bool, len(u.Members))
	chosen, k := u.Choose(states), 0
	for _, r := range u.Runs() { // both ascending: one walk
		for ; k < len(chosen) && chosen[k].Hi < r.Lo; k++ {
		}
		for c := k; r.Owner == i && c < len(chosen) && chosen[c].Lo <= r.Hi; c++ {
			by[chosen[c].Owner] = true
		}
	}
	var names []string
	for j, m := range u.Members {
		if by[j] {
			names = append(names, m.Name)
		}
	}
	if len(names) == 0 {
		return "none (it is no host's first uplink)"
	}
	return strings.Join(names, ", ")
}

// putStates puts the uplinks' states in force: natpool's table and routing
// compiled for them, not journaled (the plan is the same).
func (d *daemon) putStates() error {
	o := d.c.Options
	o.Uplinks = d.up.states
	_, err := d.c.Box.Reassert(d.plan, o)
	return err
}
