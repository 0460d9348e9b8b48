//go:build linux

package linux

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Routing reads a namespace's links and routes, and follows their changes.
type Routing struct {
	name   string   // the namespace's name; "": the current one
	ns     *os.File // nil: the current namespace
	handle *netlink.Handle
}

// OpenRouting opens the routing of the named namespace (the current one
// when empty).
func OpenRouting(name string) (_ *Routing, err error) {
	defer func() { err = Privileged(err) }()
	r := &Routing{name: name}
	if name != "" {
		if r.ns, err = OpenNetNS(name); err != nil {
			return nil, err
		}
	}
	// The socket is opened inside the namespace by Within, whose refusal
	// to enter it keeps its errno; netlink's own setns would not.
	err = Within(name, func() (err error) {
		r.handle, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close releases the namespace and the netlink socket.
func (r *Routing) Close() error {
	if r.handle != nil {
		r.handle.Close()
	}
	if r.ns != nil {
		return r.ns.Close()
	}
	return nil
}

// LinksUp returns each interface's name and whether it carries traffic:
// administratively up, with carrier.
func (r *Routing) LinksUp() (map[string]bool, error) {
	links, err := r.handle.LinkList()
	if err != nil {
		return nil, Privileged(fmt.Errorf("listing links: %w", err))
	}
	up := make(map[string]bool, len(links))
	for _, l := range links {
		a := l.Attrs()
		up[a.Name] = a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0
	}
	return up, nil
}

// RouteOut returns the interface the kernel forwards a packet from src to
// dst through, as `ip route get DST from SRC iif lo` does: source-based
// policy routing counts. An unreachable destination is "" and no error.
func (r *Routing) RouteOut(src, dst netip.Addr) (string, error) {
	routes, err := r.handle.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{Iif: "lo", SrcAddr: src.AsSlice()})
	if err == unix.ENETUNREACH || err == nil && len(routes) == 0 {
		return "", nil
	}
	if err == unix.EHOSTUNREACH { // what a lookup of a forwarded packet meets
		return "", fmt.Errorf("route from %s to %s: %w (is net.ipv4.ip_forward 0? a NAT box forwards)", src, dst, err)
	}
	if err != nil {
		return "", Privileged(fmt.Errorf("route from %s to %s: %w", src, dst, err))
	}
	link, err := r.handle.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("route from %s to %s: interface %d: %w", src, dst, routes[0].LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

// Change is what changed in a namespace's links and routes: a link came,
// went, gained or lost its carrier or up state, an IPv4 address, or a
// global IPv6 address (Addr6) (Link, its name); an IPv4 route changed
// (Route, in Table, to Dst); or, All, changes came faster than they were
// taken and any of them may have.
type Change struct {
	Link string
	// Addr6 says that a global IPv6 address of Link came or went.
	Addr6 bool
	Route bool
	Table int
	Dst   netip.Prefix
	All   bool
}

// Follow sends the namespace's changes of links and routes on changed until
// ctx ends or the subscription fails. It never blocks on changed: when
// changed is full it sends an All change once there is room. Other news
// (IPv6 routes and addresses, statistics) is no change.
func (r *Routing) Follow(ctx context.Context, changed chan<- Change) error {
	h := netns.None()
	if r.ns != nil {
		h = netns.NsHandle(r.ns.Fd())
	}
	links, routes, addrs := make(chan netlink.LinkUpdate, 64), make(chan netlink.RouteUpdate, 64), make(chan netlink.AddrUpdate, 64)
	failed := make(chan error, 2)
	done := make(chan struct{})
	defer close(done)
	onError := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &h, ErrorCallback: onError}); err != nil {
		return Privileged(fmt.Errorf("following links: %w", err))
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &h, ErrorCallback: onError}); err != nil {
		return Privileged(fmt.Errorf("following routes: %w", err))
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &h, ErrorCallback: onError}); err != nil {
		return Privileged(fmt.Errorf("following addresses: %w", err))
	}
	name := map[int32]string{} // interface names, by index
	up := map[int32]bool{}     // carrying traffic, by interface index
	overflowed := false
	send := func(c Change) {
		if overflowed {
			select {
			case changed <- Change{All: true}:
				overflowed = false
			default:
				return
			}
		}
		select {
		case changed <- c:
		default:
			overflowed = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("following links and routes: %w", err)
		case l, ok := <-links:
			if !ok {
				return fmt.Errorf("following links: the subscription ended")
			}
			now := l.Header.Type == unix.RTM_NEWLINK && l.Flags&unix.IFF_UP != 0 && l.Flags&unix.IFF_LOWER_UP != 0
			if was, known := up[l.Index]; known && was == now {
				continue
			}
			up[l.Index], name[l.Index] = now, l.Attrs().Name
			send(Change{Link: l.Attrs().Name})
		case a, ok := <-addrs:
			if !ok {
				return fmt.Errorf("following addresses: the subscription ended")
			}
			// An uplink's own address: what natpool's rules for its own
			// packets say.
			// A global IPv6 one: the prefix a pool6 from-interface takes.
			x, _ := netip.AddrFromSlice(a.LinkAddress.IP)
			if v4 := a.LinkAddress.IP.To4() != nil; v4 || Global6(x) {
				n := name[int32(a.LinkIndex)]
				if n == "" {
					if l, err := r.handle.LinkByIndex(a.LinkIndex); err == nil {
						n = l.Attrs().Name
					}
				}
				send(Change{Link: n, Addr6: !v4})
			}
		case rt, ok := <-routes:
			if !ok {
				return fmt.Errorf("following routes: the subscription ended")
			}
			if rt.Family != unix.AF_INET {
				continue
			}
			c := Change{Route: true, Table: rt.Table, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0)}
			if rt.Dst != nil {
				if a, ok := netip.AddrFromSlice(rt.Dst.IP.To4()); ok {
					ones, _ := rt.Dst.Mask.Size()
					c.Dst = netip.PrefixFrom(a, ones)
				}
			}
			send(c)
		}
	}
}
