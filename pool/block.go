package pool

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
)

// BlockMapping gives every inside host one public address and a port block
// of its own (RFC 7422 deterministic NAT). Hosts are numbered in address
// order over the Private ranges as given, before exclusions; host n leaves
// through Pool[n / HostsPerIP] with ports Block(n % HostsPerIP). Excluding a
// host leaves its block unused rather than moving every later host.
type BlockMapping struct {
	HostsPerIP int
	BlockSize  int
	Ports      PortRange // the egress port range the blocks are cut from

	private []span
	starts  []uint64 // starts[i]: hosts numbered before private[i]
}

func (m *BlockMapping) owner(x uint32) int {
	n, _ := m.number(x)
	return int(n / uint64(m.HostsPerIP))
}

func (m *BlockMapping) describe(n int) []string {
	out := make([]string, n)
	for i := range out {
		first := uint64(i) * uint64(m.HostsPerIP)
		if first >= m.space() {
			break // the addresses after the last host's carry none
		}
		last := min(first+uint64(m.HostsPerIP), m.space()) - 1
		out[i] = fmt.Sprintf("%s-%s", AddrFromUint32(m.host(first)), AddrFromUint32(m.host(last)))
	}
	return out
}

// Block returns the ports of block b.
func (m *BlockMapping) Block(b int) PortRange {
	lo := int(m.Ports.Lo) + b*m.BlockSize
	return PortRange{uint16(lo), uint16(lo + m.BlockSize - 1)}
}

// HostPorts returns the port block of inside host x.
func (m *BlockMapping) HostPorts(x uint32) PortRange {
	n, _ := m.number(x)
	return m.Block(int(n % uint64(m.HostsPerIP)))
}

// Aligned reports whether a host's block follows from its address alone:
// HostsPerIP is a power of two and every Private range starts at an address
// congruent to its first host number modulo HostsPerIP. Then host x uses
// block x & (HostsPerIP-1), and its public address depends only on
// x &^ (HostsPerIP-1), which lets the kernel find both with two small maps.
func (m *BlockMapping) Aligned() bool {
	h := uint64(m.HostsPerIP)
	if h&(h-1) != 0 {
		return false
	}
	for i, s := range m.private {
		if uint64(s.lo)%h != m.starts[i]%h {
			return false
		}
	}
	return true
}

// Groups calls fn, in address order, for every aligned group of HostsPerIP
// addresses that holds hosts of Private, with the Pool index of its hosts.
// Meaningful when Aligned.
func (m *BlockMapping) Groups(fn func(first netip.Addr, public int)) {
	h := uint64(m.HostsPerIP)
	last := uint64(1) << 32 // no group yet
	for i, s := range m.private {
		for g := uint64(s.lo) &^ (h - 1); g <= uint64(s.hi); g += h {
			if g == last {
				continue // the group began in the previous range
			}
			first := max(g, uint64(s.lo))
			fn(AddrFromUint32(uint32(g)), int((m.starts[i]+first-uint64(s.lo))/h))
			last = g
		}
	}
}

// number returns the number of host x, false if x lies outside Private.
func (m *BlockMapping) number(x uint32) (uint64, bool) {
	i, found := slices.BinarySearchFunc(m.private, x, func(s span, x uint32) int {
		switch {
		case s.hi < x:
			return -1
		case s.lo > x:
			return 1
		}
		return 0
	})
	if !found {
		return 0, false
	}
	return m.starts[i] + uint64(x-m.private[i].lo), true
}

// host returns the address of host number n (n < space()).
func (m *BlockMapping) host(n uint64) uint32 {
	i, found := slices.BinarySearch(m.starts, n)
	if !found {
		i--
	}
	return m.private[i].lo + uint32(n-m.starts[i])
}

func (m *BlockMapping) space() uint64 {
	last := len(m.private) - 1
	return m.starts[last] + m.private[last].size()
}

func newBlockMapping(e *Egress, hostsPerIPOpt, blockSizeOpt string) (*BlockMapping, error) {
	if e.weighted() {
		return nil, fmt.Errorf("strategy block cannot weight addresses: every host gets the same block")
	}
	m := &BlockMapping{Ports: e.Ports}
	var n uint64
	for _, r := range e.Private {
		s := spanOf(r)
		m.private = append(m.private, s)
		m.starts = append(m.starts, n)
		n += s.size()
	}
	ports := e.Ports.Len()
	switch {
	case hostsPerIPOpt != "" && blockSizeOpt != "":
		return nil, fmt.Errorf("give hosts-per-ip or block-size, not both")
	case hostsPerIPOpt != "":
		h, err := strconv.Atoi(hostsPerIPOpt)
		if err != nil || h < 1 || h&(h-1) != 0 {
			return nil, fmt.Errorf("hosts-per-ip %q must be a power of two", hostsPerIPOpt)
		}
		if h > ports {
			return nil, fmt.Errorf("hosts-per-ip %d is more than the %d ports of %s", h, ports, e.Ports)
		}
		m.HostsPerIP = h
	case blockSizeOpt != "":
		s, err := strconv.Atoi(blockSizeOpt)
		if err != nil || s < 1 {
			return nil, fmt.Errorf("block-size %q must be a whole number of ports", blockSizeOpt)
		}
		if s > ports {
			return nil, fmt.Errorf("block-size %d is larger than the port range %s (%d ports)", s, e.Ports, ports)
		}
		m.HostsPerIP = ports / s
	default:
		// The fewest hosts per address (so the largest blocks) that fit the
		// pool, rounded up to a power of two.
		need := (n + uint64(len(e.Pool)) - 1) / uint64(len(e.Pool))
		m.HostsPerIP = 1 << bits.Len64(need-1)
		if m.HostsPerIP > ports {
			m.HostsPerIP = 1 << (bits.Len(uint(ports)) - 1)
		}
	}
	m.BlockSize = ports / m.HostsPerIP
	if need := (n + uint64(m.HostsPerIP) - 1) / uint64(m.HostsPerIP); need > uint64(len(e.Pool)) {
		return nil, fmt.Errorf("a pool of %d addresses is too small for %d inside hosts at %d hosts per address (%d-port blocks): %d addresses are needed",
			len(e.Pool), n, m.HostsPerIP, m.BlockSize, need)
	}
	return m, nil
}
