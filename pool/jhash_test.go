package pool

import (
	"net/netip"
	"testing"
)

// kernelVector is a translation the kernel (Linux 6.18) made for a UDP packet
// sent from src in a network namespace, read back from conntrack.
type kernelVector struct{ src, translated string }

func checkVectors(t *testing.T, base string, vectors []kernelVector, index func(src uint32) uint32) {
	t.Helper()
	for _, v := range vectors {
		got := AddrFromUint32(Uint32(netip.MustParseAddr(base)) + index(Uint32(netip.MustParseAddr(v.src))))
		if got.String() != v.translated {
			t.Errorf("%s: model says %s, kernel translated to %s", v.src, got, v.translated)
		}
	}
}

// Rule: `ip saddr 10.0.0.0/8 snat to jhash ip saddr mod 61 seed 0x6e617470 map { N : 203.0.113.N, ... }`.
func TestNftJhashMatchesKernel(t *testing.T) {
	vectors := []kernelVector{
		{"10.0.0.0", "203.0.113.7"},
		{"10.124.41.153", "203.0.113.12"},
		{"10.147.37.60", "203.0.113.9"},
		{"10.153.127.92", "203.0.113.12"},
		{"10.157.92.52", "203.0.113.47"},
		{"10.165.77.202", "203.0.113.38"},
		{"10.174.179.254", "203.0.113.35"},
		{"10.187.29.109", "203.0.113.6"},
		{"10.19.44.222", "203.0.113.45"},
		{"10.20.39.160", "203.0.113.8"},
		{"10.203.25.113", "203.0.113.21"},
		{"10.214.35.123", "203.0.113.55"},
		{"10.214.73.60", "203.0.113.58"},
		{"10.214.84.175", "203.0.113.4"},
		{"10.23.68.148", "203.0.113.43"},
		{"10.233.35.47", "203.0.113.6"},
		{"10.238.232.185", "203.0.113.11"},
		{"10.24.37.48", "203.0.113.57"},
		{"10.253.175.229", "203.0.113.54"},
		{"10.254.218.160", "203.0.113.21"},
		{"10.255.255.255", "203.0.113.27"},
		{"10.32.30.105", "203.0.113.33"},
		{"10.46.217.30", "203.0.113.52"},
		{"10.63.114.31", "203.0.113.14"},
		{"10.77.250.215", "203.0.113.27"},
		{"10.96.190.49", "203.0.113.58"},
	}
	checkVectors(t, "203.0.113.0", vectors, func(src uint32) uint32 { return NftJhash(src, 0x6e617470, 61) })
}

// The vectors of shared/notes/kernel.md: `jhash ip saddr mod 16 seed 0x1234abcd`.
func TestNftJhashMatchesNotes(t *testing.T) {
	vectors := []kernelVector{
		{"10.32.0.1", "0.0.0.15"},
		{"10.32.0.2", "0.0.0.6"},
		{"10.32.7.9", "0.0.0.6"},
		{"10.47.255.255", "0.0.0.11"},
	}
	checkVectors(t, "0.0.0.0", vectors, func(src uint32) uint32 { return NftJhash(src, 0x1234abcd, 16) })
}

// Rule: `ip saddr 100.64.0.0/10 snat to 192.76.8.0/26 persistent`; the first
// three vectors are the ones in shared/notes/kernel.md.
func TestPersistentIndexMatchesKernel(t *testing.T) {
	vectors := []kernelVector{
		{"10.64.0.1", "192.76.8.6"},
		{"10.64.0.2", "192.76.8.32"},
		{"10.64.1.77", "192.76.8.42"},
		{"100.100.197.177", "192.76.8.23"},
		{"100.112.118.77", "192.76.8.5"},
		{"100.114.254.41", "192.76.8.20"},
		{"100.127.255.255", "192.76.8.41"},
		{"100.64.0.0", "192.76.8.52"},
		{"100.66.236.181", "192.76.8.47"},
		{"100.71.111.147", "192.76.8.41"},
		{"100.71.158.228", "192.76.8.16"},
		{"100.80.126.203", "192.76.8.3"},
		{"100.85.229.205", "192.76.8.20"},
		{"100.85.59.252", "192.76.8.2"},
		{"100.98.242.33", "192.76.8.23"},
		{"100.99.212.183", "192.76.8.41"},
		{"100.99.70.220", "192.76.8.18"},
	}
	checkVectors(t, "192.76.8.0", vectors, func(src uint32) uint32 { return PersistentIndex(src, 64) })
}

// nft's jhash scales the hash to the modulus (reciprocal_scale) rather than
// taking a remainder, so a power-of-two modulus only sets the resolution:
// the hosts of bucket b of 2^k are those of buckets 2b and 2b+1 of 2^(k+1).
func TestDoublingTheBucketsSplitsEachBucketInTwo(t *testing.T) {
	for k := uint32(1); k < 20; k++ {
		for x := uint32(0x0a000000); x < 0x0a000000+4096; x++ {
			if coarse, fine := NftJhash(x, DefaultSeed, 1<<k), NftJhash(x, DefaultSeed, 1<<(k+1)); fine/2 != coarse {
				t.Fatalf("%s: bucket %d of 2^%d but %d of 2^%d", AddrFromUint32(x), coarse, k, fine, k+1)
			}
		}
	}
}
