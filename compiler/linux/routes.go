//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
)

// Routes returns natpool's routes, in every table (those of protocol 78,
// as its rules are), and, as `ip route` lists them, the others in tables.
func (r *Routing) Routes(tables []int) (mine []compiler.Route, foreign []string, err error) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		all, err := r.handle.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: RuleProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, nil, Privileged(fmt.Errorf("listing natpool's routes: %w", err))
		}
		for _, rt := range all {
			cr, err := r.route(rt, rt.Table)
			if err != nil {
				return nil, nil, err
			}
			mine = append(mine, cr)
		}
	}
	for _, table := range tables {
		routes, err := r.tableRoutes(table)
		if err != nil {
			return nil, nil, err
		}
		for _, rt := range routes {
			if rt.Protocol != RuleProtocol {
				cr, err := r.route(rt, table)
				if err != nil {
					return nil, nil, err
				}
				foreign = append(foreign, fmt.Sprintf("route %s (proto %d)", cr, rt.Protocol))
			}
		}
	}
	return mine, foreign, nil
}

// route reads a kernel route of table as natpool writes routes.
func (r *Routing) route(rt netlink.Route, table int) (compiler.Route, error) {
	family, any := unix.AF_INET, netip.IPv4Unspecified()
	if rt.Family == unix.AF_INET6 {
		family, any = unix.AF_INET6, netip.IPv6Unspecified()
	}
	cr := compiler.Route{Table: table, Dst: netip.PrefixFrom(any, 0), Throw: rt.Type == unix.RTN_THROW}
	if rt.Dst != nil {
		ones, _ := rt.Dst.Mask.Size()
		a, _ := ipOf(rt.Dst.IP, family)
		cr.Dst = netip.PrefixFrom(a, ones)
	}
	if gw, ok := ipOf(rt.Gw, family); ok {
		cr.Gateway = gw
	}
	if rt.LinkIndex > 0 && !cr.Throw {
		link, err := r.handle.LinkByIndex(rt.LinkIndex)
		if err != nil {
			return cr, fmt.Errorf("route %s: interface %d: %w", cr.Dst, rt.LinkIndex, err)
		}
		cr.OIF = link.Attrs().Name
	}
	return cr, nil
}

// SetRoutes makes natpool's routes exactly want: the missing ones added
// (replacing a route of natpool's to the same destination), then the
// others, in any table, deleted. A route natpool did not make in tables is
// refused (a ForeignError) before anything changes, and never touched.
func (r *Routing) SetRoutes(tables []int, want []compiler.Route) error {
	have, foreign, err := r.Routes(tables)
	if err != nil {
		return err
	}
	if len(foreign) > 0 {
		return &ForeignError{foreign}
	}
	for _, cr := range want {
		if slices.Contains(have, cr) {
			continue
		}
		rt, err := r.kernelRoute(cr)
		if err == nil {
			err = r.handle.RouteReplace(rt)
		}
		if err != nil {
			return Privileged(fmt.Errorf("adding route %s: %w", cr, err))
		}
	}
	for _, cr := range have {
		// A route replaced above is gone in its old form already.
		if slices.Contains(want, cr) || slices.ContainsFunc(want, func(w compiler.Route) bool { return w.Table == cr.Table && w.Dst == cr.Dst }) {
			continue
		}
		if err := r.deleteRoute(cr); err != nil {
			return err
		}
	}
	return nil
}

// DeleteRoutes deletes every route natpool made, and returns how many:
// what goes with its table.
func (r *Routing) DeleteRoutes() (int, error) {
	mine, _, err := r.Routes(nil)
	if err != nil {
		return 0, err
	}
	for i, cr := range mine {
		if err := r.deleteRoute(cr); err != nil {
			return i, err
		}
	}
	return len(mine), nil
}

func (r *Routing) deleteRoute(cr compiler.Route) error {
	rt, err := r.kernelRoute(cr)
	if err == nil {
		err = r.handle.RouteDel(rt)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return Privileged(fmt.Errorf("deleting route %s: %w", cr, err))
	}
	return nil
}

// kernelRoute is cr as the kernel takes it, marked natpool's.
func (r *Routing) kernelRoute(cr compiler.Route) (*netlink.Route, error) {
	rt := &netlink.Route{Table: cr.Table, Protocol: RuleProtocol, Family: unix.AF_INET,
		Dst: &net.IPNet{IP: cr.Dst.Addr().AsSlice(), Mask: net.CIDRMask(cr.Dst.Bits(), cr.Dst.Addr().BitLen())}}
	if cr.Dst.Addr().Is6() {
		rt.Family = unix.AF_INET6
	}
	if cr.Throw {
		rt.Type = unix.RTN_THROW
		return rt, nil
	}
	link, err := r.handle.LinkByName(cr.OIF)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cr.OIF, err)
	}
	rt.LinkIndex = link.Attrs().Index
	if cr.Gateway.IsValid() {
		rt.Gw = cr.Gateway.AsSlice()
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	return rt, nil
}

// Uplink returns what the kernel says of interface oif as an uplink: its
// first IPv4 address, and the gateway of the main table's preferred default
// route through it (invalid when it has none).
func (r *Routing) Uplink(oif string) (addr, gateway netip.Addr, err error) {
	return r.uplink(oif, unix.AF_INET)
}

// Uplink6 is Uplink for IPv6: the first global address on oif that is not
// unique-local (whose prefix a pool6 from-interface takes), and the gateway
// of the main table's preferred IPv6 default route through it.
func (r *Routing) Uplink6(oif string) (addr, gateway netip.Addr, err error) {
	return r.uplink(oif, unix.AF_INET6)
}

func (r *Routing) uplink(oif string, family int) (addr, gateway netip.Addr, err error) {
	link, err := r.handle.LinkByName(oif)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return addr, gateway, nil
		}
		return addr, gateway, Privileged(fmt.Errorf("interface %s: %w", oif, err))
	}
	addrs, err := r.handle.AddrList(link, family)
	if err != nil {
		return addr, gateway, Privileged(fmt.Errorf("addresses of %s: %w", oif, err))
	}
	for _, a := range addrs {
		if x, ok := ipOf(a.IP, family); ok && a.Scope == unix.RT_SCOPE_UNIVERSE && (family == unix.AF_INET || Global6(x)) {
			addr = x
			break
		}
	}
	routes, err := r.handle.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: link.Attrs().Index},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil {
		return addr, gateway, Privileged(fmt.Errorf("routes through %s: %w", oif, err))
	}
	best := -1
	for _, rt := range routes {
		if rt.Dst != nil {
			if ones, _ := rt.Dst.Mask.Size(); ones != 0 {
				continue // not a default route
			}
		}
		if gw, ok := ipOf(rt.Gw, family); ok && (best < 0 || rt.Priority < best) {
			gateway, best = gw, rt.Priority
		}
	}
	return addr, gateway, nil
}

// ipOf reads an address of family (AF_INET or AF_INET6) from ip.
func ipOf(ip net.IP, family int) (netip.Addr, bool) {
	if family == unix.AF_INET {
		return netip.AddrFromSlice(ip.To4())
	}
	if ip.To4() != nil {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(ip.To16())
}

// RPFilter returns the reverse-path filter in force on interface oif:
// the larger of the interface's and all interfaces' settings (0 off, 1
// strict, 2 loose).
func (r *Routing) RPFilter(oif string) (int, error) {
	most := 0
	err := Within(r.name, func() error {
		for _, conf := range []string{"all", oif} {
			data, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + conf + "/rp_filter")
			if err != nil {
				return err
			}
			v, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				return err
			}
			most = max(most, v)
		}
		return nil
	})
	return most, err
}

// Global6 reports whether a is an IPv6 address a delegated prefix may
// hold: global unicast, not unique-local (fc00::/7).
func Global6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && !a.IsPrivate()
}
