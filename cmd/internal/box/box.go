// Package box is the engine of a NAT box: it puts a plan in force in the
// kernel of one network namespace and journals it, compares the kernel with
// a plan, and flushes and counts the connections natpool's rules made. It
// returns what it did as the reports package render writes; the commands
// parse flags, call it and print. The kernel comes through the Kernel
// interface: Linux's, or the Fake that tests the ordering and rollbacks
// without root.
package box

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// CheckNode refuses a node the plan's cluster does not list, and a cluster
// plan without a node: applied as one box, every node would translate every
// host and replies would reach the wrong one.
func CheckNode(plan *pool.Plan, node string) error {
	c := plan.Cluster
	switch {
	case c == nil && node != "":
		return fmt.Errorf("--node %q: the spec lists no nodes", node)
	case c == nil:
		return nil
	case node == "":
		return fmt.Errorf("the spec lists nodes (%s): say which this box is with --node", strings.Join(c.Names(), ", "))
	case c.NodeIndex(node) < 0:
		return fmt.Errorf("--node %q is not a node of the spec (%s)", node, strings.Join(c.Names(), ", "))
	}
	return nil
}

// Box is natpool on one NAT box: the kernel of a network namespace, and
// the journal its changes are recorded in.
type Box struct {
	Netns string
	// Kernels opens the kernel of a namespace: the box's own, and for the
	// journal the namespaces of earlier changes it settles.
	Kernels func(netns string) Kernel
	Journal *journal.Writer // nil for what records nothing
}

// New returns the box of netns, recording in w (nil: nowhere), whose
// interrupted changes it settles by the stamps on their tables.
func New(netns string, kernels func(string) Kernel, w *journal.Writer) *Box {
	b := &Box{Netns: netns, Kernels: kernels, Journal: w}
	if w != nil {
		w.Stamp = b.stamp
	}
	return b
}

// Options say how a plan goes into the kernel.
type Options struct {
	Node     string // the node of the plan's cluster this box is
	Encoding compiler.Encoding
	// Uplinks are the states of a site's uplinks (watch's, by member);
	// nil: all up.
	Uplinks []pool.UplinkState
}

// Applied is what an apply put in force, and what it would warn of.
type Applied struct {
	render.ApplyReport
	Ruleset  *compiler.Ruleset
	Warnings []string
}

// Selection is what a flush deletes: the entries the plan no longer gives
// (Stale) or those translated to one of Public, within the egress entry
// named Egress; all of that entry's when neither is asked.
type Selection struct {
	Stale  bool
	Public []netip.Addr
	Egress string
}
