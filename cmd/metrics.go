package cmd

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natpool/natpool/pool"
)

// blockUseBuckets are the upper bounds of the block-utilisation histogram.
var blockUseBuckets = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}

// watchMetrics are what natpool watch exports. The port-use figures are
// bounded by the pool, never per inside host: a campus has a million hosts
// and 64 addresses.
type watchMetrics struct {
	registry *prometheus.Registry
	plan     atomic.Pointer[planInfo]
	usage    atomic.Pointer[[]pool.LiveCapacity]
	// guardDrops are the guard chain's counters, by egress entry.
	guardDrops atomic.Pointer[map[string]uint64]

	uplink         *prometheus.GaugeVec
	peer           *prometheus.GaugeVec
	flushes        *prometheus.CounterVec
	flushed        *prometheus.CounterVec
	readErrors     prometheus.Counter
	eventsLost     prometheus.Counter
	resyncs        prometheus.Counter
	reloads        *prometheus.CounterVec
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

func newWatchMetrics() *watchMetrics {
	m := &watchMetrics{registry: prometheus.NewRegistry()}
	pe := []string{"egress", "public"}
	m.planDesc = prometheus.NewDesc("natpool_plan_info", "The plan natpool put in force: its table and digest, and natpool's version.", []string{"table", "digest", "version"}, nil)
	m.connections = prometheus.NewDesc("natpool_public_connections", "Connections natpool's rules translated to the public address.", pe, nil)
	m.hosts = prometheus.NewDesc("natpool_public_hosts", "Distinct inside hosts with connections through the public address.", pe, nil)
	m.portUse = prometheus.NewDesc("natpool_public_port_use_ratio", "Connections from the public address to its busiest destination over its port range: they share it, and at 1 new ones fail.", pe, nil)
	m.blockUse = prometheus.NewDesc("natpool_block_use_ratio", "Block mode: per inside host with connections, the share of its port block its busiest destination takes.", []string{"egress"}, nil)
	m.fullBlockHosts = prometheus.NewDesc("natpool_block_full_hosts", "Block mode: inside hosts whose busiest destination takes more than 80% of their port block.", []string{"egress"}, nil)
	m.guardDropped = prometheus.NewDesc("natpool_guard_dropped_packets_total", "Packets from the egress entry's inside hosts that natpool's guard dropped at its uplink because no source NAT translated their connection (it began before natpool's rules saw it); counted by the kernel since the table was loaded.", []string{"egress"}, nil)
	m.uplink = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_uplink_up",
		Help: "1 when the egress entry's interface is up with carrier and its inside hosts are routed through it, else 0."}, []string{"egress", "oif"})
	m.peer = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natpool_peer_up",
		Help: "With --node: 1 while the peer's routing table holds its routes (its BGP session is up) and this node steers the peer's hosts to it, else 0: this node translates them."}, []string{"node"})
	m.flushes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_flushes_total",
		Help: "Flushes of natpool's conntrack entries, by egress entry and reason (uplink, stale)."}, []string{"egress", "reason"})
	m.flushed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_flushed_entries_total",
		Help: "Conntrack entries the flushes deleted, by egress entry and reason."}, []string{"egress", "reason"})
	m.readErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_read_errors_total",
		Help: "Failed conntrack dumps and event subscriptions."})
	m.eventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_events_lost_total",
		Help: "Times the kernel dropped conntrack events (ENOBUFS); each is followed by a resync."})
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "natpool_conntrack_resyncs_total",
		Help: "Full conntrack dumps the counts were rebuilt from."})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natpool_reloads_total",
		Help: "Reloads of the spec (SIGHUP), by result (applied, failed)."}, []string{"result"})
	m.registry.MustRegister(m, m.uplink, m.peer, m.flushes, m.flushed, m.readErrors, m.eventsLost, m.resyncs, m.reloads)
	return m
}

// Describe implements prometheus.Collector for the figures read from the
// last count.
func (m *watchMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.planDesc, m.connections, m.hosts, m.portUse, m.blockUse, m.fullBlockHosts, m.guardDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the plan in force and the port
// use as last counted. It never waits for a count.
func (m *watchMetrics) Collect(ch chan<- prometheus.Metric) {
	if p := m.plan.Load(); p != nil {
		ch <- prometheus.MustNewConstMetric(m.planDesc, prometheus.GaugeValue, 1, p.table, p.digest, Version)
	}
	if drops := m.guardDrops.Load(); drops != nil {
		for egress, n := range *drops {
			ch <- prometheus.MustNewConstMetric(m.guardDropped, prometheus.CounterValue, float64(n), egress)
		}
	}
	caps := m.usage.Load()
	if caps == nil {
		return
	}
	for _, c := range *caps {
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
