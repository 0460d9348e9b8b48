package pool

import (
	"fmt"
	"math"
	"strconv"
)

// The hash strategy's defaults.
const (
	DefaultBuckets = 4096
	DefaultSeed    = 0x6e617470 // "natp": fixed, since nft picks a random seed when given none
	MaxBuckets     = 1 << 20
)

// HashMapping sends inside host x to bucket NftJhash(x, Seed, len(Owners)),
// exactly as nft's `jhash ip saddr mod B seed S` does, and bucket b to
// Pool[Owners[b]].
//
// Buckets go to public addresses by weighted rendezvous hashing: each bucket
// takes the address with the highest score w / -ln(u), u a fixed hash of the
// bucket and the address. Adding an address moves only the buckets it wins
// (about 1/N of them); removing one moves only its own.
type HashMapping struct {
	Seed   uint32
	Owners []int
}

func (m *HashMapping) owner(x uint32) int {
	return m.Owners[NftJhash(x, m.Seed, uint32(len(m.Owners)))]
}

func (m *HashMapping) describe(n int) []string {
	buckets := make([]int, n)
	for _, o := range m.Owners {
		buckets[o]++
	}
	out := make([]string, n)
	for i, b := range buckets {
		out[i] = fmt.Sprintf("%d buckets", b)
	}
	return out
}

// bucketsPerAddr is the fewest buckets per public address that keep the
// rendezvous spread within about a third of even; fewer earn a warning.
const bucketsPerAddr = 16

func newHashMapping(e *Egress, bucketsOpt, seedOpt string, warnings *[]string) (*HashMapping, error) {
	buckets := DefaultBuckets
	if bucketsOpt != "" {
		n, err := strconv.Atoi(bucketsOpt)
		if err != nil || n < 1 || n > MaxBuckets {
			return nil, fmt.Errorf("buckets %q must be 1-%d", bucketsOpt, MaxBuckets)
		}
		buckets = n
	}
	if buckets < len(e.Pool) {
		return nil, fmt.Errorf("%d buckets are fewer than the %d public addresses: raise buckets", buckets, len(e.Pool))
	}
	if buckets < bucketsPerAddr*len(e.Pool) {
		*warnings = append(*warnings, fmt.Sprintf("egress %s: %d buckets over %d public addresses spread the hosts unevenly; %d or more even it out",
			e.Name, buckets, len(e.Pool), bucketsPerAddr*len(e.Pool)))
	}
	m := &HashMapping{Seed: DefaultSeed, Owners: make([]int, buckets)}
	if seedOpt != "" {
		s, err := strconv.ParseUint(seedOpt, 0, 32)
		if err != nil {
			return nil, fmt.Errorf("seed %q must be a 32-bit number (decimal or 0x hex)", seedOpt)
		}
		m.Seed = uint32(s)
	}
	keys := make([]uint64, len(e.Pool))
	for i, p := range e.Pool {
		keys[i] = uint64(Uint32(p.Addr)) << 32
	}
	weighted := e.weighted()
	for b := range m.Owners {
		m.Owners[b] = rendezvous(keys, e.Pool, uint64(b), weighted)
	}
	return m, nil
}

// rendezvous returns the index of the address with the highest score for
// bucket b. Without weights the score w / -ln(u) orders addresses exactly as
// u, and so as the raw hash, does: the cheap comparison gives the same winner.
func rendezvous(keys []uint64, pool []Public, b uint64, weighted bool) int {
	win := 0
	if !weighted {
		var best uint64
		for i, k := range keys {
			if h := mix64(k | b); h > best {
				best, win = h, i
			}
		}
		return win
	}
	best := math.Inf(-1)
	for i, k := range keys {
		u := (float64(mix64(k|b)>>11) + 0.5) / (1 << 53)
		if score := float64(pool[i].Weight) / -math.Log(u); score > best {
			best, win = score, i
		}
	}
	return win
}

// mix64 is the splitmix64 finaliser: a fixed bijection that scatters bits, so
// rendezvous scores never change between versions or machines.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
