package pool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// readHostCounts reads a hosts file (see parseHosts) and counts its hosts by
// key: key(x) in [0, keys) is what the strategy needs of host x (its octet
// value, its hash bucket or its public address), so a file of a million
// leases is reduced as it is read, never held.
func readHostCounts(path string, inside *netipx.IPSet, keys int, key func(x uint32) int) ([]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	defer f.Close()
	counts := make([]uint64, keys)
	err = parseHosts(f, path, inside, func(x uint32, n uint64) {
		if k := key(x); k >= 0 {
			counts[k] += n
		}
	})
	return counts, err
}

// parseHosts reads a hosts file: one inside address per line, or
// "address,count" for a weight; blank lines and everything after a '#' are
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
		a, err := ParseAddr(strings.TrimSpace(addr))
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		n := uint64(1)
		if hasCount {
			if n, err = strconv.ParseUint(strings.TrimSpace(count), 10, 32); err != nil {
				return fmt.Errorf("%s:%d: count %q is not a whole number", name, line, strings.TrimSpace(count))
			}
		}
		if !inside.Contains(a) {
			return fmt.Errorf("%s:%d: %s is not a mapped inside host", name, line, a)
		}
		x := Uint32(a)
		if seen.testAndSet(x) {
			return fmt.Errorf("%s:%d: %s is listed twice", name, line, a)
		}
		fn(x, n)
		hosts++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("hosts file %s: %w", name, err)
	}
	if hosts == 0 {
		return fmt.Errorf("hosts file %s lists no hosts", name)
	}
	return nil
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
