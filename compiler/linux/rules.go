//go:build linux

package linux

import (
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
)

// PolicyRules returns the namespace's IPv4 policy rules that mine says are
// natpool's, in the kernel's order.
func (r *Routing) PolicyRules(mine func(compiler.PolicyRule) bool) ([]compiler.PolicyRule, error) {
	rules, err := r.handle.RuleList(unix.AF_INET)
	if err != nil {
		return nil, Privileged(fmt.Errorf("listing policy rules: %w", err))
	}
	var out []compiler.PolicyRule
	for _, rule := range rules {
		if rule.Mask != nil && *rule.Mask != ^uint32(0) || rule.Src != nil || rule.Dst != nil || rule.IifName != "" || rule.OifName != "" || rule.Invert {
			continue // natpool's rules match the whole mark and nothing else
		}
		pr := compiler.PolicyRule{Priority: rule.Priority, Mark: rule.Mark, Table: rule.Table}
		if rule.Mark != 0 && mine(pr) {
			out = append(out, pr)
		}
	}
	return out, nil
}

// SetPolicyRules makes natpool's policy rules (those mine says are) exactly
// want: it adds the missing ones first, then deletes the others, so that a
// packet never meets a gap between two sets of rules. Rules mine disowns
// are never touched.
func (r *Routing) SetPolicyRules(want []compiler.PolicyRule, mine func(compiler.PolicyRule) bool) error {
	have, err := r.PolicyRules(mine)
	if err != nil {
		return err
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

func rule(pr compiler.PolicyRule) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority, r.Mark, r.Table = pr.Priority, pr.Mark, pr.Table
	all := ^uint32(0)
	r.Mask = &all
	return r
}

// TableHasRoutes reports whether routing table has an IPv4 route: for a
// peer's table, whether BIRD learned the peer's routes, so its BGP session
// is up.
func (r *Routing) TableHasRoutes(table int) (bool, error) {
	routes, err := r.handle.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, Privileged(fmt.Errorf("listing routing table %d: %w", table, err))
	}
	return len(routes) > 0, nil
}
