package pool

import "math/bits"

// The kernel's Jenkins hash (include/linux/jhash.h), reproduced so that the
// planner predicts exactly what nft's jhash expression and the NAT core's
// persistent address selection compute for a source address.

const jhashInitval = 0xdeadbeef

func jhashFinal(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// le is the 32-bit word the CPU (little-endian x86, as on every NAT box this
// models) reads from the network-order bytes of addr.
func le(addr uint32) uint32 { return bits.ReverseBytes32(addr) }

// reciprocalScale maps v uniformly onto [0, n) as the kernel's reciprocal_scale does.
func reciprocalScale(v, n uint32) uint32 { return uint32(uint64(v) * uint64(n) >> 32) }

// NftJhash is nft's `jhash ip saddr mod n seed seed` for source address addr:
// the byte-wise jhash of the 4 address bytes, scaled onto [0, n).
func NftJhash(addr, seed, n uint32) uint32 {
	v := uint32(jhashInitval) + 4 + seed
	return reciprocalScale(jhashFinal(v+le(addr), v, v), n)
}

// PersistentIndex is the offset into a range of n addresses that the kernel's
// `snat to A-B persistent` picks for source address addr: jhash2 over the four
// words of the 16-byte nf_inet_addr (the IPv4 address, then zeros), initval 0.
func PersistentIndex(addr, n uint32) uint32 {
	v := uint32(jhashInitval) + 4<<2
	a, b, c := jhashMix(v+le(addr), v, v)
	return reciprocalScale(jhashFinal(a, b, c), n)
}
