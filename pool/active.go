package pool

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// ActiveHost is an inside host actually seen (from DHCP leases, say), with
// how many of it were seen: a weight for balancing and reporting.
type ActiveHost struct {
	Addr  netip.Addr
	Count uint64
}

// readActiveHosts reads a hosts file: one address per line, or
// "address,count"; blank lines and lines starting with # are skipped. Every
// host must be a mapped inside host. Repeated addresses add up.
func readActiveHosts(path string, inside *netipx.IPSet) ([]ActiveHost, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	defer f.Close()
	counts := map[netip.Addr]uint64{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		addr, count, hasCount := strings.Cut(text, ",")
		a, err := ParseAddr(strings.TrimSpace(addr))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		n := uint64(1)
		if hasCount {
			if n, err = strconv.ParseUint(strings.TrimSpace(count), 10, 32); err != nil {
				return nil, fmt.Errorf("%s:%d: count %q is not a whole number", path, line, count)
			}
		}
		if !inside.Contains(a) {
			return nil, fmt.Errorf("%s:%d: %s is not a mapped inside host", path, line, a)
		}
		counts[a] += n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("hosts file %s: %w", path, err)
	}
	hosts := make([]ActiveHost, 0, len(counts))
	for a, n := range counts {
		hosts = append(hosts, ActiveHost{a, n})
	}
	slices.SortFunc(hosts, func(a, b ActiveHost) int { return a.Addr.Compare(b.Addr) })
	return hosts, nil
}
