// Package daemon is natpool watch: it puts a plan in force on a NAT box and
// looks after it. It restores natpool's table when it is removed; follows
// the uplinks and, on a cluster node, the peers, flushing the conntrack
// entries their changes strand; reloads the spec on request, flushing what
// the new plan made stale; and keeps the connection counts its metrics
// export. Its clock and the kernel's event sources come through Config, so
// that tests drive it in-process.
package daemon

import (
	"io"
	"net/netip"
	"time"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/translog"
)

// Config is what a daemon runs with.
type Config struct {
	Box     *box.Box
	Options box.Options
	// Plan plans the spec again, at each reload.
	Plan    func() (*pool.Plan, error)
	Metrics *Metrics
	// HoldDown is how long an uplink's link and routes (or the peers'
	// routing tables) must be still before the daemon acts on them; an
	// uplink that keeps changing is acted on after MaxHold times it.
	HoldDown time.Duration
	Resync   time.Duration // how often the counts are rebuilt from a dump
	Refresh  time.Duration // how often the guard's counters are read
	Probe    netip.Addr    // destination whose route says which uplink carries a host
	Log      io.Writer
	Clock    Clock
	// Notify tells systemd the service's state (sd_notify).
	Notify func(state string)
	// Moved counts the hosts a reload moves, for the log.
	Moved func(old, new *pool.Plan) uint64
	// Translations, when not nil, is where and how the translations
	// natpool's rules make are logged.
	Translations *TranslationLog
	// Collectors are the IPFIX collectors NAT44 session events go to.
	Collectors []netip.AddrPort
}

// TranslationLog is where and how watch logs the translations natpool's
// rules make.
type TranslationLog struct {
	Dir     string
	Options translog.Options
}

// A Reload asks a daemon to plan its spec again and put the plan in
// force. Done, when not nil, is told what became of it once it is over.
type Reload struct {
	Done chan<- Outcome
}

// Outcome is what became of a reload: the line the daemon logged of it,
// and whether it failed (the plan before stays in force, or the entries
// the new plan made stale could not all be flushed).
type Outcome struct {
	Line   string
	Failed bool
}

// claimName is what a daemon claims in its namespace for its table: a
// second daemon of the table is refused, and reloads are asked for there.
func claimName(table string) string { return "watch/" + table }

// MaxHold bounds the hold-down of an uplink that keeps changing: after
// MaxHold times HoldDown it is looked at anyway.
const MaxHold = 5
