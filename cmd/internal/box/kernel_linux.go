//go:build linux

package box

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
)

// Kernel opens the parts of one network namespace's kernel natpool works
// with. Each part is closed by its user.
type Kernel interface {
	Tables() (Tables, error)
	Routing() (Routing, error)
	Conntrack() (Conntrack, error)
	// Events subscribes to conntrack's new and destroy events of the
	// connections that carry conntrack label bit label.
	Events(label int) (Events, error)
	// Claim takes name for this process in the namespace until release,
	// refusing a name another holds; serve, if not nil, answers Dial's
	// connections to it (from root or this user only).
	Claim(name string, serve func(net.Conn)) (release func() error, err error)
	// Dial connects to the process that claimed name in the namespace.
	Dial(name string) (net.Conn, error)
	// Probe sends one probe of t through via and returns its round trip,
	// or an error when no answer came before ctx's deadline.
	Probe(ctx context.Context, t pool.ProbeTarget, via linux.Via) (time.Duration, error)
}

// Events is a subscription to conntrack's events.
type Events interface {
	// Run calls fn with each change until ctx ends (nil) or the
	// subscription fails: an error wrapping conntrack.ErrEventsLost when
	// the kernel dropped events.
	Run(ctx context.Context, fn func(conntrack.Change)) error
	Close() error
}

// Tables is nf_tables, where natpool's table lives.
type Tables interface {
	Stamp(table string) (nft.TableStamp, error)
	Apply(rs *compiler.Ruleset) error
	Delete(table string) (bool, error)
	Read(table string) (*nft.TableState, error)
	GuardDrops(table string) (map[string]uint64, error)
	Close() error
}

// Routing is the namespace's policy routing, routes and links.
type Routing interface {
	PolicyRules(reserved func(compiler.PolicyRule) bool) (mine []compiler.PolicyRule, foreign []string, err error)
	SetPolicyRules(want []compiler.PolicyRule, reserved func(compiler.PolicyRule) bool) error
	DeletePolicyRules() (int, error)
	HasBIRDRoutes(table int) (bool, error)
	ForeignRoutes(tables []int) ([]string, error)
	// Routes returns natpool's routes, in any table, and the others in
	// tables; SetRoutes makes natpool's routes want, refusing others' in
	// tables; DeleteRoutes deletes natpool's.
	Routes(tables []int) (mine []compiler.Route, foreign []string, err error)
	SetRoutes(tables []int, want []compiler.Route) error
	DeleteRoutes() (int, error)
	// Uplink says what the kernel knows of interface oif as an uplink: its
	// address and its gateway in the main table (invalid when none).
	Uplink(oif string) (addr, gateway netip.Addr, err error)
	// Uplink6 is Uplink for IPv6: the global address on oif whose prefix
	// a pool6 from-interface takes, and the main table's IPv6 gateway.
	Uplink6(oif string) (addr, gateway netip.Addr, err error)
	// RPFilter returns the reverse-path filter in force on interface oif
	// (0 off, 1 strict, 2 loose).
	RPFilter(oif string) (int, error)
	LinksUp() (map[string]bool, error)
	RouteOut(src, dst netip.Addr) (string, error)
	// Follow sends the changes of links and routes until ctx ends or the
	// subscription fails.
	Follow(ctx context.Context, changed chan<- linux.Change) error
	Close() error
}

// Conntrack is the namespace's connection tracking table.
type Conntrack interface {
	Scan(label int, fn func(*conntrack.Entry) error) (int, error)
	Delete(e *conntrack.Entry) error
	// DeletePrefix6 deletes the IPv6 entries a prefix translation from
	// inside to public made, and returns how many.
	DeletePrefix6(inside, public netip.Prefix) (int, error)
	Close() error
}

// Linux is the kernel of the named network namespace, or of the current
// one when netns is empty.
type Linux string

// Tables connects to nf_tables.
func (ns Linux) Tables() (Tables, error) { return nft.Dial(string(ns)) }

// Routing connects to rtnetlink.
func (ns Linux) Routing() (Routing, error) { return linux.OpenRouting(string(ns)) }

// Conntrack connects to conntrack.
func (ns Linux) Conntrack() (Conntrack, error) { return conntrack.Dial(string(ns)) }

// Events subscribes to conntrack's events.
func (ns Linux) Events(label int) (Events, error) { return conntrack.Subscribe(string(ns), label) }

// LinuxKernels opens the kernel of a namespace as Linux does.
func LinuxKernels(netns string) Kernel { return Linux(netns) }

// Claim takes name in the namespace: an abstract unix socket.
func (ns Linux) Claim(name string, serve func(net.Conn)) (func() error, error) {
	return linux.Claim(string(ns), name, serve)
}

func (ns Linux) Dial(name string) (net.Conn, error) { return linux.Dial(string(ns), name) }

// Probe probes t through via.
func (ns Linux) Probe(ctx context.Context, t pool.ProbeTarget, via linux.Via) (time.Duration, error) {
	return linux.Probe(ctx, string(ns), t, via)
}
