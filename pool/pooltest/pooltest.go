// Package pooltest draws egress entries at random, for property tests of
// the plan and of what the kernel makes of it.
package pooltest

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/natpool/natpool/pool"
)

// RandomSpec draws an egress entry of the given strategy with at most about
// maxHosts inside hosts:
//   - one to three inside ranges, some a power of two in size and aligned,
//     others of any size at any address;
//   - a pool of 1, 2, 3, 5 or 100 addresses or a number drawn up to 300,
//     written as a range, an address or a prefix (a /31 and a /32 among
//     them), its addresses weighted now and then where the strategy weighs;
//   - now and then some inside hosts and a public address excluded, a port
//     range, and the strategy's sizes given explicitly.
//
// Not every draw plans (a pool too small for its hosts is refused): callers
// skip those NewPlan refuses.
func RandomSpec(rng *rand.Rand, strategy pool.Strategy, maxHosts int) pool.EgressSpec {
	es := pool.EgressSpec{Strategy: string(strategy)}
	base := uint32(10<<24) + rng.Uint32N(1<<16)<<8
	var inside [][2]uint32
	for range 1 + rng.IntN(3) {
		var size uint32
		if rng.IntN(2) == 0 { // a power of two, aligned
			size = 1 << rng.IntN(1+bitsOf(maxHosts)-1)
			base = (base + size - 1) &^ (size - 1)
		} else {
			size = 1 + rng.Uint32N(uint32(maxHosts))
		}
		size = max(1, min(size, uint32(maxHosts)/2))
		inside = append(inside, [2]uint32{base, base + size - 1})
		base += size + rng.Uint32N(300)
	}
	for _, r := range inside {
		es.Private = append(es.Private, rangeText(r[0], r[1]))
	}
	n := []int{1, 2, 3, 5, 100, 1 + rng.IntN(300)}[rng.IntN(6)]
	first := uint32(198<<24|18<<16) + rng.Uint32N(1<<14)
	switch rng.IntN(3) {
	case 0:
		es.Pool = []string{rangeText(first, first+uint32(n)-1)}
	case 1: // a prefix: /32, /31, ... as large as n allows
		bits := min(bitsOf(n)-1, 8)
		if n == 2 {
			bits = 1
		}
		first &^= 1<<bits - 1
		n = 1 << bits
		es.Pool = []string{fmt.Sprintf("%s/%d", pool.AddrFromUint32(first), 32-bits)}
	default: // addresses one by one
		for i := range n {
			es.Pool = append(es.Pool, pool.AddrFromUint32(first+uint32(i)).String())
		}
	}
	weighs := strategy == pool.Octet || strategy == pool.Hash
	if weighs && rng.IntN(3) == 0 {
		es.Pool = append(es.Pool, fmt.Sprintf("%s=%d", pool.AddrFromUint32(first+uint32(n)+1), 2+rng.IntN(3)))
		n++
	}
	if rng.IntN(3) == 0 {
		for range 1 + rng.IntN(4) {
			r := inside[rng.IntN(len(inside))]
			es.Exclude = append(es.Exclude, pool.AddrFromUint32(r[0]+rng.Uint32N(r[1]-r[0]+1)).String())
		}
		if n > 1 && strategy != pool.Persistent {
			es.Exclude = append(es.Exclude, pool.AddrFromUint32(first).String())
		}
		slices.Sort(es.Exclude)
		es.Exclude = slices.Compact(es.Exclude)
	}
	if rng.IntN(4) == 0 {
		lo := 1024 + rng.IntN(20000)
		es.Ports = fmt.Sprintf("%d-%d", lo, lo+rng.IntN(65535-lo))
	}
	switch strategy {
	case pool.Block:
		switch rng.IntN(3) {
		case 1:
			es.HostsPerIP = fmt.Sprint(1 + rng.IntN(2048))
		case 2:
			es.BlockSize = fmt.Sprint(1 + rng.IntN(4096))
		}
	case pool.Octet:
		if rng.IntN(2) == 0 {
			lo := rng.IntN(200)
			es.Octets = fmt.Sprintf("%d-%d", lo, lo+rng.IntN(256-lo))
		}
	case pool.Hash:
		if rng.IntN(2) == 0 {
			es.Buckets = fmt.Sprint(1 << (6 + rng.IntN(10)))
		}
	}
	return es
}

// bitsOf is the number of bits n takes.
func bitsOf(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

func rangeText(lo, hi uint32) string {
	if lo == hi {
		return pool.AddrFromUint32(lo).String()
	}
	return fmt.Sprintf("%s-%s", pool.AddrFromUint32(lo), pool.AddrFromUint32(hi))
}
