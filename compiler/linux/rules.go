//go:build linux

package linux

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
)

// RuleProtocol marks the policy rules natpool makes (`ip rule ... protocol
// 78`): natpool tells its own by it, never by their place alone.
const RuleProtocol = 78

// rtprotBIRD is the protocol BIRD gives the routes it puts in the kernel's
// tables (RTPROT_BIRD).
const rtprotBIRD = 12

// ForeignError is what natpool refuses to work beside: policy rules or
// routes in the priorities, routing tables or marks a cluster gives it that
// natpool did not make. natpool changes nothing then.
type ForeignError struct{ What []string }

func (e *ForeignError) Error() string {
	more := ""
	if len(e.What) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(e.What)-1)
	}
	return fmt.Sprintf("%s%s sits in natpool's policy-routing ranges (the spec's cluster: priority, table and mark) but is not natpool's: natpool changed nothing; move it, or give natpool other ranges", e.What[0], more)
}

// PolicyRules returns natpool's policy rules, IPv4 then IPv6, each in the kernel's order,
// and, as `ip rule` lists them, the other rules that sit where reserved
// says natpool's go.
func (r *Routing) PolicyRules(reserved func(compiler.PolicyRule) bool) (mine []compiler.PolicyRule, foreign []string, err error) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := r.handle.RuleList(family)
		if err != nil {
			return nil, nil, Privileged(fmt.Errorf("listing policy rules: %w", err))
		}
		for _, rule := range rules {
			pr := compiler.PolicyRule{Priority: rule.Priority, Mark: rule.Mark, Table: rule.Table, Suppress: rule.SuppressPrefixlen == 0, V6: family == unix.AF_INET6}
			if rule.Src != nil {
				ones, _ := rule.Src.Mask.Size()
				if a, ok := ipOf(rule.Src.IP, family); ok {
					pr.From = netip.PrefixFrom(a, ones)
				}
			}
			switch {
			case rule.Protocol == RuleProtocol:
				mine = append(mine, pr)
			case reserved(pr):
				foreign = append(foreign, ruleText(rule))
			}
		}
	}
	return mine, foreign, nil
}

// ruleText writes a policy rule as `ip rule` lists it, near enough to find
// it there.
func ruleText(rule netlink.Rule) string {
	s := fmt.Sprintf("policy rule %d: from ", rule.Priority)
	if rule.Src != nil {
		s += rule.Src.String()
	} else {
		s += "all"
	}
	if rule.Dst != nil {
		s += " to " + rule.Dst.String()
	}
	if rule.Mark != 0 {
		s += fmt.Sprintf(" fwmark %#x", rule.Mark)
	}
	if rule.IifName != "" {
		s += " iif " + rule.IifName
	}
	return s + fmt.Sprintf(" lookup %d proto %d", rule.Table, rule.Protocol)
}

// SetPolicyRules makes natpool's policy rules exactly want: it adds the
// missing ones first, then deletes the others, so that a packet never
// meets a gap between two sets of rules. A rule that sits where reserved
// says natpool's go but is not natpool's is refused (a ForeignError) before
// anything changes, and never touched.
func (r *Routing) SetPolicyRules(want []compiler.PolicyRule, reserved func(compiler.PolicyRule) bool) error {
	have, foreign, err := r.PolicyRules(reserved)
	if err != nil {
		return err
	}
	if len(foreign) > 0 {
		return &ForeignError{foreign}
	}
	for _, pr := range want {
		if !slices.Contains(have, pr) {
			if err := r.handle.RuleAdd(rule(pr)); err != nil {
				return Privileged(fmt.Errorf("adding policy rule %s: %w", pr, err))
			}
		}
	}
	for _, pr := range have {
		if !slices.Contains(want, pr) {
			if err := r.handle.RuleDel(rule(pr)); err != nil {
				return Privileged(fmt.Errorf("deleting policy rule %s: %w", pr, err))
			}
		}
	}
	return nil
}

// DeletePolicyRules deletes every policy rule natpool made, whatever its
// cluster, and returns how many: what goes with its table.
func (r *Routing) DeletePolicyRules() (int, error) {
	mine, _, err := r.PolicyRules(func(compiler.PolicyRule) bool { return false })
	if err != nil {
		return 0, err
	}
	for i, pr := range mine {
		if err := r.handle.RuleDel(rule(pr)); err != nil {
			return i, Privileged(fmt.Errorf("deleting policy rule %s: %w", pr, err))
		}
	}
	return len(mine), nil
}

func rule(pr compiler.PolicyRule) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	if pr.V6 {
		r.Family = unix.AF_INET6
	}
	r.Priority, r.Table = pr.Priority, pr.Table
	if pr.Mark != 0 {
		all := ^uint32(0)
		r.Mark, r.Mask = pr.Mark, &all
	}
	if pr.From.IsValid() {
		r.Src = &net.IPNet{IP: pr.From.Addr().AsSlice(), Mask: net.CIDRMask(pr.From.Bits(), pr.From.Addr().BitLen())}
	}
	if pr.Suppress {
		r.SuppressPrefixlen = 0
	}
	r.Protocol = RuleProtocol
	return r
}

// HasBIRDRoutes reports whether routing table holds an IPv4 route BIRD put
// there: for a peer's table, whether BIRD learned the peer's routes, so its
// BGP session is up. Routes others put there do not count.
func (r *Routing) HasBIRDRoutes(table int) (bool, error) {
	routes, err := r.tableRoutes(table)
	return slices.ContainsFunc(routes, func(rt netlink.Route) bool { return rt.Protocol == rtprotBIRD }), err
}

// ForeignRoutes returns, as `ip route` lists them, the IPv4 routes of the
// tables that BIRD did not put there.
func (r *Routing) ForeignRoutes(tables []int) ([]string, error) {
	var out []string
	for _, table := range tables {
		routes, err := r.tableRoutes(table)
		if err != nil {
			return nil, err
		}
		for _, rt := range routes {
			if rt.Protocol != rtprotBIRD {
				out = append(out, fmt.Sprintf("route %s in routing table %d (proto %d)", rt.Dst, table, rt.Protocol))
			}
		}
	}
	return out, nil
}

func (r *Routing) tableRoutes(table int) ([]netlink.Route, error) {
	routes, err := r.handle.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, Privileged(fmt.Errorf("listing routing table %d: %w", table, err))
	}
	return routes, nil
}
