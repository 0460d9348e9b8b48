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
	ns     *os.File // nil: the current namespace
	handle *netlink.Handle
}

// OpenRouting opens the routing of the named namespace (the current one
// when empty).
func OpenRouting(name string) (_ *Routing, err error) {
	defer func() { err = Privileged(err) }()
	r := &Routing{}
	h := netns.None()
	if name != "" {
		if r.ns, err = OpenNetNS(name); err != nil {
			return nil, err
		}
		h = netns.NsHandle(r.ns.Fd())
	}
	if r.handle, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE); err != nil {
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

// Follow sends a value on changed, without blocking, whenever a link of
// the namespace comes, goes, or gains or loses its carrier or up state, or
// an IPv4 route changes, until ctx ends or the subscription fails. Other
// news (IPv6 routes, statistics, address configuration) is not a change:
// it would hold off the hold-down.
func (r *Routing) Follow(ctx context.Context, changed chan<- struct{}) error {
	h := netns.None()
	if r.ns != nil {
		h = netns.NsHandle(r.ns.Fd())
	}
	links, routes := make(chan netlink.LinkUpdate, 64), make(chan netlink.RouteUpdate, 64)
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
	up := map[int32]bool{} // carrying traffic, by interface index
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
			up[l.Index] = now
		case r, ok := <-routes:
			if !ok {
				return fmt.Errorf("following routes: the subscription ended")
			}
			if r.Family != unix.AF_INET {
				continue
			}
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}
