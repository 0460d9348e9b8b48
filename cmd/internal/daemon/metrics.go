package daemon

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/natpool/natpool/pool"
)

// blockUseBuckets are the upper bounds of the block-utilisation histogram.
var blockUseBuckets = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}

// Flush reasons, a label of the flush counters.
const (
	reasonUplink = "uplink"
	reasonStale  = "stale"
	reasonPeer   = "peer"
)

// Metrics are what watch exports. The port-use figures are bounded by the
// pool, never per inside host: a campus has a million hosts and 64
// addresses.
type Metrics struct {
	// Registry holds natpool's series, Go's and the process's.
	Registry *prometheus.Registry
	version  string
	plan     atomic.Pointer[planInfo]
	// usage counts the port use now: it is asked at each scrape.
	usage      atomic.Pointer[func() []pool.LiveCapacity]
	guardDrops atomic.Pointer[map[string]uint64]

	uplink         *prometheus.GaugeVec
	uplinkDegraded *prometheus.GaugeVec
	probeRTT       *prometheus.HistogramVec
	probeLoss      *prometheus.GaugeVec
	peer           *prometheus.GaugeVec
	tableInSync    prometheus.Gauge
	tableRestores  prometheus.Counter
	flushes        *prometheus.CounterVec
	flushed        *prometheus.CounterVec
	readErrors     prometheus.Counter
	eventsLost     prometheus.Counter
	resyncs        prometheus.Counter
	reloads        *prometheus.CounterVec
	logRecords     prometheus.Counter
	logBytes       prometheus.Gauge
	logEventsLost  prometheus.Counter
	logErrors      prometheus.Counter
	planDesc       *prometheus.Desc
	connections    *prometheus.Desc
	hosts          *prometheus.Desc
	portUse        *prometheus.Desc
	blockUse       *prometheus.Desc
	fullBlockHosts *prometheus.Desc
	guardDropped   *prometheus.Desc
}

// planInfo names the plan in force.
type planInfo struct{ table, digest string }

// NewMetrics returns the metrics of a watch of natpool version.
func NewMetrics(version string) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), version: version}
	pe := []string{"egress", "public"}
	m.planDesc = prometheus.NewDesc("natpool_plan_info", "The plan natpool put in force: its table and digest, and natpool's version.", []string{"table", "digest", "version"}, nil)
	m.connections = prometheus.NewDesc("natpool_public_connections", "Connections natpool's rules translated to the public address.", pe, nil)
	m.hosts = prometheus.NewDesc("natpool_public_hosts", "Distinct inside hosts with connections through the public address.", pe, nil)
	m.portUse = prometheus.NewDesc("natpool_public_port_use_ratio", "Connections from the public address to its busiest destination over its port range: they share it, and at 1 new ones fail.", pe, nil)
	m.blockUse = prometheus.NewDesc("natpool_block_use_ratio", "Block mode: per inside host with connections, the share of its port block its busiest destination takes.", []string{"egress"}, nil)
	m.fullBlockHosts = prometheus.NewDesc("natpool_block_full_hosts", "Block mode: inside hosts whose busiest destination takes more than 80% of their port block.", []string{"egress"}, nil)
	m.guardDropped = prometheus.NewDesc("natpool_guard_dropped_packets_total", "Packets from the egress entry's inside hosts that natpool's guard dropped at its uplink because no source NAT translated their connection (it began before natpool's rules saw it); counted by the kernel since the table was loaded.", []string{"egress"}, nil)
	m.uplink = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_uplink_up",
		Help: "1 when the egress entry's uplink carries its hosts: its interface up with carrier, and its hosts routed through it (or, a site's uplink, its probes passing), else 0."}, []string{"egress", "oif"})
	m.uplinkDegraded = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_uplink_degraded",
		Help: "1 while a site's uplink answers its probes with more loss or a longer median round trip than its probe's bounds, else 0: its hosts leave by another uplink that is up."}, []string{"egress", "oif"})
	m.probeRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "natpool_probe_rtt_seconds",
		Help:    "Round trips of the answered probes of a site's uplink.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"egress"})
	m.probeLoss = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_probe_loss_ratio",
		Help: "The share of a site's uplink's probes unanswered over its last probe.down rounds."}, []string{"egress"})
	m.peer = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_peer_up",
		Help: "With --node: 1 while the peer's routing table holds its routes (its BGP session is up) and this node steers the peer's hosts to it, else 0: this node translates them."}, []string{"node"})
	m.tableInSync = prometheus.NewGauge(prometheus.GaugeOpts{Name: "natpool_table_in_sync",
		Help: "1 while natpool's table is in the kernel with the plan watch put in force, else 0: watch restores it within a second."})
	m.tableRestores = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_table_restores_total",
		Help: "Times watch found natpool's table gone or holding another plan, and put its plan back."})
	m.flushes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_flushes_total",
		Help: "Flushes of natpool's conntrack entries, by egress entry and reason (uplink, stale, peer)."}, []string{"egress", "reason"})
	m.flushed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_flushed_entries_total",
		Help: "Conntrack entries the flushes deleted, by egress entry and reason."}, []string{"egress", "reason"})
	m.readErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_read_errors_total",
		Help: "Failed conntrack dumps and event subscriptions."})
	m.eventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_events_lost_total",
		Help: "Times the kernel dropped conntrack events (ENOBUFS); each is followed by a resync."})
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_resyncs_total",
		Help: "Full conntrack dumps the counts were rebuilt from."})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_reloads_total",
		Help: "Reloads of the spec (SIGHUP or natpool reload), by result (applied, unchanged, failed)."}, []string{"result"})
	for _, r := range []string{"applied", "unchanged", "failed"} {
		m.reloads.WithLabelValues(r) // every result from the start: a rate needs its zero
	}
	m.logRecords = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_log_records_total",
		Help: "Translations written to the translation log (watch --log)."})
	m.logBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "natpool_log_bytes",
		Help: "Bytes of the translation log's files."})
	m.logEventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_log_events_lost_total",
		Help: "Times the kernel dropped conntrack events before the translation log read them; each is a window the log marks."})
	m.logErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_log_errors_total",
		Help: "Failures of the translation log: writes refused (a full or read-only disk, each second they fail), damaged tails found, conntrack read errors."})
	m.Registry.MustRegister(m, m.uplink, m.uplinkDegraded, m.probeRTT, m.probeLoss, m.peer, m.tableInSync, m.tableRestores, m.flushes, m.flushed, m.readErrors, m.eventsLost, m.resyncs, m.reloads,
		m.logRecords, m.logBytes, m.logEventsLost, m.logErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// forPlan makes the series of plan's egress entries exist from the start,
// at zero, and drops those of entries it no longer has.
func (m *Metrics) forPlan(plan *pool.Plan) {
	m.flushes.Reset()
	m.flushed.Reset()
	for _, e := range plan.Egress {
		for _, r := range []string{reasonUplink, reasonStale, reasonPeer} {
			m.flushes.WithLabelValues(e.Name, r)
			m.flushed.WithLabelValues(e.Name, r)
		}
	}
	m.uplinkDegraded.Reset()
	m.probeRTT.Reset()
	m.probeLoss.Reset()
	if u := plan.Uplinks; u != nil {
		for _, mm := range u.Members {
			m.uplinkDegraded.WithLabelValues(mm.Name, mm.OIF)
			if plan.Egress[mm.Egress].Probe != nil {
				m.probeRTT.WithLabelValues(mm.Name)
				m.probeLoss.WithLabelValues(mm.Name)
			}
		}
	}
}

// setUplink says the state of a site's uplink.
func (m *Metrics) setUplink(egress, oif string, s pool.UplinkState) {
	up, degraded := 0.0, 0.0
	switch s {
	case pool.UplinkUp:
		up = 1
	case pool.UplinkDegraded:
		degraded = 1
	}
	m.uplink.WithLabelValues(egress, oif).Set(up)
	m.uplinkDegraded.WithLabelValues(egress, oif).Set(degraded)
}

// Describe implements prometheus.Collector for the figures read as they
// are scraped.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.planDesc, m.connections, m.hosts, m.portUse, m.blockUse, m.fullBlockHosts, m.guardDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the plan in force, the guard's
// counters as last read, and the port use counted now.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if p := m.plan.Load(); p != nil {
		ch <- prometheus.MustNewConstMetric(m.planDesc, prometheus.GaugeValue, 1, p.table, p.digest, m.version)
	}
	if drops := m.guardDrops.Load(); drops != nil {
		for egress, n := range *drops {
			ch <- prometheus.MustNewConstMetric(m.guardDropped, prometheus.CounterValue, float64(n), egress)
		}
	}
	usage := m.usage.Load()
	if usage == nil {
		return
	}
	for _, c := range (*usage)() {
		for _, p := range c.Public {
			addr := p.Addr.String()
			ch <- prometheus.MustNewConstMetric(m.connections, prometheus.GaugeValue, float64(p.Entries), c.Egress, addr)
			ch <- prometheus.MustNewConstMetric(m.hosts, prometheus.GaugeValue, float64(p.Hosts), c.Egress, addr)
			ch <- prometheus.MustNewConstMetric(m.portUse, prometheus.GaugeValue, p.Utilisation, c.Egress, addr)
		}
		if c.Strategy != pool.Block {
			continue
		}
		var hosts, full uint64
		sum := 0.0
		buckets := make(map[float64]uint64, len(blockUseBuckets))
		for _, b := range blockUseBuckets {
			buckets[b] = 0 // every bound, empty or not: dashboards expect them all
		}
		for _, u := range c.BlockUse {
			hosts += uint64(u.Hosts)
			sum += float64(u.Hosts) * u.Share()
			for _, b := range blockUseBuckets {
				if u.Busiest*100 <= int(math.Round(b*100))*u.BlockSize { // share <= b, in integers: 0.3 is no float's tenth
					buckets[b] += uint64(u.Hosts)
				}
			}
			if u.Share() > pool.FullBlock {
				full += uint64(u.Hosts)
			}
		}
		ch <- prometheus.MustNewConstHistogram(m.blockUse, hosts, sum, buckets, c.Egress)
		ch <- prometheus.MustNewConstMetric(m.fullBlockHosts, prometheus.GaugeValue, float64(full), c.Egress)
	}
}
