package pool

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// activeHosts are the active hosts of a hosts file, ascending, each with
// its count: 8 bytes a host, so a million leases take 8 MB.
type activeHosts []activeHost

type activeHost struct{ x, n uint32 }

// loadHosts reads the active hosts of es: its hosts-data if it has them (a
// saved plan carries them), else its hosts file.
func loadHosts(es EgressSpec, inside *netipx.IPSet) (activeHosts, error) {
	var h activeHosts
	add := func(x uint32, n uint64) { h = append(h, activeHost{x, uint32(n)}) }
	var err error
	if es.HostsData != nil {
		err = parseHosts(strings.NewReader(strings.Join(es.HostsData, "\n")), "hosts-data", inside, add)
	} else {
		var f *os.File
		if f, err = os.Open(es.Hosts); err != nil {
			return nil, fmt.Errorf("hosts file: %w", err)
		}
		defer f.Close()
		err = parseHosts(f, es.Hosts, inside, add)
	}
	slices.SortFunc(h, func(a, b activeHost) int { return cmp.Compare(a.x, b.x) })
	return h, err
}

// countBy counts the hosts by key: key(x) in [0, keys) is what a strategy
// needs of host x (its octet value, its hash bucket or its public address),
// or -1 for none.
func (h activeHosts) countBy(keys int, key func(x uint32) int) []uint64 {
	counts := make([]uint64, keys)
	for _, c := range h {
		if k := key(c.x); k >= 0 {
			counts[k] += uint64(c.n)
		}
	}
	return counts
}

// lines writes the hosts as hosts-data: runs of hosts of count 1 as
// "LO-HI", the others as "ADDR,COUNT".
func (h activeHosts) lines() []string {
	var out []string
	for i := 0; i < len(h); {
		if h[i].n != 1 {
			out = append(out, fmt.Sprintf("%s,%d", AddrFromUint32(h[i].x), h[i].n))
			i++
			continue
		}
		j := i
		for j+1 < len(h) && h[j+1].n == 1 && h[j+1].x == h[j].x+1 {
			j++
		}
		if j == i {
			out = append(out, AddrFromUint32(h[i].x).String())
		} else {
			out = append(out, fmt.Sprintf("%s-%s", AddrFromUint32(h[i].x), AddrFromUint32(h[j].x)))
		}
		i = j + 1
	}
	return out
}

// parseHosts reads a hosts file: one inside address (or range of them, each
// host once) per line, or "address,count" for a weight; blank lines and everything after a '#' are
// skipped, and a UTF-8 byte order mark is ignored. Every host must be an
// inside host of the entry and appear once; errors name the file and line.
// fn is called for each host.
func parseHosts(r io.Reader, name string, inside *netipx.IPSet, fn func(x uint32, count uint64)) error {
	sc := bufio.NewScanner(r)
	var seen hostBits
	hosts := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Bytes()
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\uFEFF"))
		}
		if i := bytes.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		addr, count, hasCount := strings.Cut(strings.TrimSpace(string(text)), ",")
		if addr == "" && !hasCount {
			continue
		}
		r, err := ParseRange(strings.TrimSpace(addr))
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		n := uint64(1)
		if hasCount {
			if n, err = strconv.ParseUint(strings.TrimSpace(count), 10, 32); err != nil {
				return fmt.Errorf("%s:%d: count %q is not a whole number", name, line, strings.TrimSpace(count))
			}
		}
		if !inside.ContainsRange(r) {
			return fmt.Errorf("%s:%d: %s is not a mapped inside host", name, line, firstOutside(r, inside))
		}
		for x := spanOf(r); ; x.lo++ {
			if seen.testAndSet(x.lo) {
				return fmt.Errorf("%s:%d: %s is listed twice", name, line, AddrFromUint32(x.lo))
			}
			fn(x.lo, n)
			hosts++
			if x.lo == x.hi {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("hosts file %s: %w", name, err)
	}
	if hosts == 0 {
		return fmt.Errorf("hosts file %s lists no hosts", name)
	}
	return nil
}

// firstOutside returns the first address of r that inside lacks.
func firstOutside(r netipx.IPRange, inside *netipx.IPSet) netip.Addr {
	for a := r.From(); ; a = a.Next() {
		if !inside.Contains(a) || a == r.To() {
			return a
		}
	}
}

// hostBits is a set of addresses kept as bitmap pages of 64Ki addresses,
// made only where there are hosts: a million leases in a /10 take 64 pages.
type hostBits map[uint32]*[1 << 10]uint64

// testAndSet adds x and reports whether it was there already.
func (b *hostBits) testAndSet(x uint32) bool {
	if *b == nil {
		*b = hostBits{}
	}
	page := (*b)[x>>16]
	if page == nil {
		page = new([1 << 10]uint64)
		(*b)[x>>16] = page
	}
	word, bit := &page[x&0xffff>>6], uint64(1)<<(x&63)
	had := *word&bit != 0
	*word |= bit
	return had
}
