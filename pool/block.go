package pool

import (
	"fmt"
	"iter"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"

	"go4.org/netipx"
)

// BlockMapping gives every inside host one public address and a port block
// of its own (RFC 7422 deterministic NAT).
//
// Hosts are numbered in address order over the Private ranges as given,
// before exclusions, so excluding a host leaves its block unused rather than
// moving every later host. The numbers are cut into windows of Window hosts,
// a power of two, and each window into contiguous groups, a group per public
// address, in pool order: windows before Split follow Patterns[0], the rest
// Patterns[1]. A host's block is its place in its group. Where the Private
// ranges start on window boundaries (Aligned), the kernel finds a host's
// group by its address and its block by its low bits, whatever the split.
type BlockMapping struct {
	Ports    PortRange  // the egress port range the blocks are cut from
	Window   uint64     // hosts per window, a power of two
	Split    uint64     // windows cut by Patterns[0]; the rest by Patterns[1]
	Patterns [2]Pattern // equal when every window is cut alike

	private []span
	starts  []uint64 // starts[i]: hosts numbered before private[i]
	space   uint64   // hosts numbered
	windows uint64   // windows holding numbered hosts
}

// Pattern is how a window is cut into groups.
type Pattern []Group

// Group is one group of a window: Size hosts from Offset, each with a block
// of BlockSize ports.
type Group struct {
	Offset, Size uint64
	BlockSize    int
}

// group returns the index in p of the group that holds offset o.
func (p Pattern) group(o uint64) int {
	i, _ := slices.BinarySearchFunc(p, o+1, func(g Group, x uint64) int {
		if g.Offset < x {
			return -1
		}
		return 1
	})
	return i - 1
}

func (m *BlockMapping) owner(x uint32) int {
	n, ok := m.number(x)
	if !ok {
		return -1
	}
	g, _ := m.place(n)
	return g
}

// place returns the group (the Pool index) and the group's entry of host
// number n.
func (m *BlockMapping) place(n uint64) (int, Group) {
	c, o := n/m.Window, n%m.Window
	p := m.pattern(c)
	j := p.group(o)
	return int(m.groupsBefore(c)) + j, p[j]
}

func (m *BlockMapping) pattern(window uint64) Pattern {
	if window < m.Split {
		return m.Patterns[0]
	}
	return m.Patterns[1]
}

// groupsBefore is the number of groups in the windows before window c.
func (m *BlockMapping) groupsBefore(c uint64) uint64 {
	first := min(c, m.Split)
	return first*uint64(len(m.Patterns[0])) + (c-first)*uint64(len(m.Patterns[1]))
}

// groupAt returns the window and pattern entry of group g; false past the
// last group that holds a numbered host.
func (m *BlockMapping) groupAt(g uint64) (uint64, Group, bool) {
	var c uint64
	var p Pattern
	if first := m.Split * uint64(len(m.Patterns[0])); g < first {
		p = m.Patterns[0]
		c = g / uint64(len(p))
	} else {
		p = m.Patterns[1]
		c = m.Split + (g-first)/uint64(len(p))
	}
	gr := p[g-m.groupsBefore(c)]
	return c, gr, c*m.Window+gr.Offset < m.space
}

// GroupCount returns the number of groups that hold numbered hosts: the
// public addresses the layout uses.
func (m *BlockMapping) GroupCount() int {
	last := m.windows - 1
	p := m.pattern(last)
	return int(m.groupsBefore(last)) + p.group(m.space-1-last*m.Window) + 1
}

func (m *BlockMapping) describe(n int) []string {
	out := make([]string, n)
	for g := range min(n, m.GroupCount()) {
		c, gr, _ := m.groupAt(uint64(g))
		first := c*m.Window + gr.Offset
		last := min(first+gr.Size, m.space) - 1
		out[g] = fmt.Sprintf("%s-%s", AddrFromUint32(m.host(first)), AddrFromUint32(m.host(last)))
	}
	return out
}

// HostPorts returns the port block of inside host x.
func (m *BlockMapping) HostPorts(x uint32) PortRange {
	n, _ := m.number(x)
	_, gr := m.place(n)
	return m.block(gr, n%m.Window-gr.Offset)
}

// block returns the ports of block b of a group.
func (m *BlockMapping) block(gr Group, b uint64) PortRange {
	lo := int(m.Ports.Lo) + int(b)*gr.BlockSize
	return PortRange{uint16(lo), uint16(lo + gr.BlockSize - 1)}
}

// BlockSizes returns the smallest and largest block of any group that
// holds numbered hosts.
func (m *BlockMapping) BlockSizes() (lo, hi int) {
	return m.groupSpread(func(g Group) int { return g.BlockSize })
}

// HostsPerAddress returns the fewest and most hosts of any group that holds
// numbered hosts: a group's Size, or fewer in the last window.
func (m *BlockMapping) HostsPerAddress() (lo, hi int) {
	return m.groupSpread(func(g Group) int { return int(g.Size) })
}

// groupSpread returns the least and greatest of f over the groups that
// hold numbered hosts: every group of a pattern that cuts a whole window,
// and those of the last window that its hosts reach.
func (m *BlockMapping) groupSpread(f func(Group) int) (lo, hi int) {
	lo = math.MaxInt
	use := func(p Pattern, held uint64) {
		for _, g := range p {
			if g.Offset < held {
				lo, hi = min(lo, f(g)), max(hi, f(g))
			}
		}
	}
	last := m.windows - 1
	if min(m.Split, last) > 0 {
		use(m.Patterns[0], m.Window)
	}
	if m.Split < last {
		use(m.Patterns[1], m.Window)
	}
	use(m.pattern(last), m.space-last*m.Window)
	return lo, hi
}

// WindowPorts returns, for each offset of a window that Patterns[p] cuts,
// the ports of the block of the host at that offset.
func (m *BlockMapping) WindowPorts(p int) []PortRange {
	out := make([]PortRange, 0, m.Window)
	for _, gr := range m.Patterns[p] {
		for b := range gr.Size {
			out = append(out, m.block(gr, b))
		}
	}
	return out
}

// Cuts returns the patterns that cut the windows holding numbered hosts,
// as indices into Patterns: [0] or [1] when every window is cut alike (by
// Patterns[1] when Split is 0), [0 1] when the two differ. Two equal
// patterns count as the first.
func (m *BlockMapping) Cuts() []int {
	var cuts []int
	if m.Split > 0 {
		cuts = append(cuts, 0)
	}
	if m.Split < m.windows && (len(cuts) == 0 || !slices.Equal(m.Patterns[0], m.Patterns[1])) {
		cuts = append(cuts, 1)
	}
	return cuts
}

// PortBlock returns the ports the group of public address index g gives
// each of its hosts.
func (m *BlockMapping) PortBlock(g int) int {
	_, gr, _ := m.groupAt(uint64(g))
	return gr.BlockSize
}

// Owner returns the inside host that leaves through public address index g
// with port, false if no numbered host owns the port.
func (m *BlockMapping) Owner(g int, port uint16) (netip.Addr, bool) {
	c, gr, ok := m.groupAt(uint64(g))
	if !ok || !m.Ports.Contains(port) {
		return netip.Addr{}, false
	}
	b := uint64(int(port)-int(m.Ports.Lo)) / uint64(gr.BlockSize)
	n := c*m.Window + gr.Offset + b
	if b >= gr.Size || n >= m.space {
		return netip.Addr{}, false
	}
	return AddrFromUint32(m.host(n)), true
}

// Aligned reports whether a host's place in its window follows from its
// address alone: every Private range starts at an address congruent to its
// first host number modulo Window. Then host x has offset x & (Window-1),
// which lets the kernel find its ports with maps of Window elements.
func (m *BlockMapping) Aligned() bool {
	for i, s := range m.private {
		if uint64(s.lo)%m.Window != m.starts[i]%m.Window {
			return false
		}
	}
	return true
}

// GroupRanges returns, in address order, every range of inside addresses
// that one group holds, with the group's Pool index. A group spans several
// ranges where it crosses from one Private range to the next.
func (m *BlockMapping) GroupRanges() iter.Seq2[netipx.IPRange, int] {
	return func(yield func(netipx.IPRange, int) bool) {
		for g := range m.GroupCount() {
			c, gr, _ := m.groupAt(uint64(g))
			first := c*m.Window + gr.Offset
			for r := range m.ranges(first, min(first+gr.Size, m.space)-1) {
				if !yield(r, g) {
					return
				}
			}
		}
	}
}

// PatternRanges returns the inside address ranges of the windows that
// Patterns[p] cuts.
func (m *BlockMapping) PatternRanges(p int) []netipx.IPRange {
	lo, hi := uint64(0), min(m.Split*m.Window, m.space)
	if p == 1 {
		lo, hi = hi, m.space
	}
	if lo >= hi {
		return nil
	}
	return slices.Collect(m.ranges(lo, hi-1))
}

// ranges returns the address ranges of host numbers first to last.
func (m *BlockMapping) ranges(first, last uint64) iter.Seq[netipx.IPRange] {
	return func(yield func(netipx.IPRange) bool) {
		i, _ := slices.BinarySearch(m.starts, first+1) // the Private range that holds first
		for i--; i < len(m.private) && m.starts[i] <= last; i++ {
			s := m.private[i]
			lo, hi := max(first, m.starts[i]), min(last, m.starts[i]+s.size()-1)
			if lo <= hi && !yield(span{s.lo + uint32(lo-m.starts[i]), s.lo + uint32(hi-m.starts[i])}.ipRange()) {
				return
			}
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

// host returns the address of host number n (n < space).
func (m *BlockMapping) host(n uint64) uint32 {
	i, found := slices.BinarySearch(m.starts, n)
	if !found {
		i--
	}
	return m.private[i].lo + uint32(n-m.starts[i])
}

// Fair is the share of the ideal ports (every usable port of every public
// address, spread evenly over the numbered hosts) that the default layout
// gives nearly every host: at least this share of hosts get at least this
// share of the ideal.
const Fair = 0.95

// maxWindow bounds the window: the kernel holds two port maps of this many
// elements for each pattern.
const maxWindow = 1 << 16

func newBlockMapping(e *Egress, hostsPerIPOpt, blockSizeOpt string, warnings *[]string) (*BlockMapping, error) {
	if e.weighted() {
		return nil, fmt.Errorf("strategy block cannot weight addresses: every host gets the same block")
	}
	m := &BlockMapping{Ports: e.Ports}
	m.setPrivate(e.Private)
	ports := e.Ports.Len()
	var err error
	switch {
	case hostsPerIPOpt != "" && blockSizeOpt != "":
		return nil, fmt.Errorf("give hosts-per-ip or block-size, not both")
	case hostsPerIPOpt != "":
		h, perr := strconv.Atoi(hostsPerIPOpt)
		if perr != nil || h < 1 {
			return nil, fmt.Errorf("hosts-per-ip %q must be a whole number of hosts", hostsPerIPOpt)
		}
		if h > ports {
			return nil, fmt.Errorf("hosts-per-ip %d is more than the %d ports of %s", h, ports, e.Ports)
		}
		err = m.cutEvery(uint64(h), ports/h)
	case blockSizeOpt != "":
		b, perr := strconv.Atoi(blockSizeOpt)
		if perr != nil || b < 1 {
			return nil, fmt.Errorf("block-size %q must be a whole number of ports", blockSizeOpt)
		}
		if b > ports {
			return nil, fmt.Errorf("block-size %d is larger than the port range %s (%d ports)", b, e.Ports, ports)
		}
		err = m.cutEvery(uint64(ports/b), b)
	default:
		err = m.cutFair(uint64(len(e.Pool)))
		if err == nil {
			ideal := float64(ports) * float64(len(e.Pool)) / float64(m.space)
			if share := m.fairShare(ideal); share < Fair {
				lo, hi := m.BlockSizes()
				*warnings = append(*warnings, fmt.Sprintf("egress %s: %.0f%% of hosts get %.0f%% of the ideal %.2f ports per host (all ports of %d addresses over %d hosts), short of %.0f%%: blocks are %s ports; more addresses, fewer hosts or a wider --ports would close the gap",
					e.Name, 100*share, 100*Fair, ideal, len(e.Pool), m.space, 100*Fair, between(lo, hi)))
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if need := m.GroupCount(); need > len(e.Pool) {
		lo, hi := m.BlockSizes()
		return nil, fmt.Errorf("a pool of %d addresses is too small for %d inside hosts in blocks of %s ports: %d addresses are needed",
			len(e.Pool), m.space, between(lo, hi), need)
	}
	return m, nil
}

// between writes lo-hi, or lo when they are equal.
func between(lo, hi int) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// cutEvery cuts every window into groups of exactly h hosts (the last
// group of a window keeps what is left), each host with a block of b
// ports: what --hosts-per-ip and --block-size ask for. The window is the
// smallest power of two that wastes at most 1% of the groups on the short
// last one, so that the kernel still finds ports by low bits.
func (m *BlockMapping) cutEvery(h uint64, b int) error {
	w := uint64(1) << bits.Len64(h-1)
	for ; w < maxWindow; w *= 2 {
		if groups := (w + h - 1) / h; float64(groups) <= 1.01*float64(w)/float64(h) {
			break
		}
	}
	var p Pattern
	for o := uint64(0); o < w; o += h {
		p = append(p, Group{o, min(h, w-o), b})
	}
	m.setWindow(w, 0, p, p)
	return nil
}

// setPrivate numbers the hosts over the inside ranges as given.
func (m *BlockMapping) setPrivate(private []netipx.IPRange) {
	for _, r := range private {
		s := spanOf(r)
		m.private = append(m.private, s)
		m.starts = append(m.starts, m.space)
		m.space += s.size()
	}
}

// setWindow sets the cut and counts the windows.
func (m *BlockMapping) setWindow(w, split uint64, p0, p1 Pattern) {
	m.Window, m.Split, m.Patterns = w, split, [2]Pattern{p0, p1}
	m.windows = (m.space + w - 1) / w
}

// evenly cuts a window of w hosts into k groups of nearly equal size, the
// larger first, each host's block the ports over the group's hosts.
func evenly(w, k uint64, ports int) Pattern {
	p := make(Pattern, k)
	o := uint64(0)
	for j := range k {
		size := w / k
		if j < w%k {
			size++
		}
		p[j] = Group{o, size, ports / int(size)}
		o += size
	}
	return p
}

// cutFair cuts the hosts over n addresses so that every address carries
// hosts and the ports per host come close to the ideal: windows are cut
// into g+1 groups (the first ones) or g, as many of each as n allows. It
// takes the smallest window where at least Fair of the hosts get Fair of the
// ideal ports, preferring one the Private ranges are aligned to (so the
// kernel's encoding stays compact). Without one, it takes the layout whose
// smallest block is largest, then the fairest: 65,536 hosts on 3 addresses
// get 2 ports each, not 1 for half of them and 3 for the rest.
func (m *BlockMapping) cutFair(n uint64) error {
	ports := m.Ports.Len()
	if n == 0 || (m.space+n-1)/n > uint64(ports) {
		return fmt.Errorf("a pool of %d addresses is too small for %d inside hosts: at least one port each needs %d addresses",
			n, m.space, (m.space+uint64(ports)-1)/uint64(ports))
	}
	ideal := float64(ports) * float64(n) / float64(m.space)
	type cut struct {
		w, split  uint64
		p0, p1    Pattern
		fair      float64
		smallest  int // the smallest block of a host
		aligned   bool
		addresses int
	}
	var best, roomiest, firstAligned *cut // the fairest; the one whose smallest block is largest
	for w := uint64(1); w <= maxWindow; w *= 2 {
		windows := (m.space + w - 1) / w
		g := min(n/windows, w) // groups in most windows; at most a host each
		if g == 0 {
			continue
		}
		split := min(n-g*windows, windows)
		if g == w {
			split = 0
		}
		c := &cut{w: w, split: split, p0: evenly(w, min(g+1, w), ports), p1: evenly(w, g, ports)}
		m.setWindow(c.w, c.split, c.p0, c.p1)
		for m.GroupCount() > int(n) && m.Split > 0 { // the last window may not need its extra group
			m.Split--
		}
		c.split, c.addresses, c.aligned = m.Split, m.GroupCount(), m.Aligned()
		if c.addresses > int(n) {
			continue
		}
		c.fair = m.fairShare(ideal)
		c.smallest, _ = m.BlockSizes()
		if best == nil || c.fair > best.fair+1e-9 {
			best = c
		}
		if roomiest == nil || c.smallest > roomiest.smallest || c.smallest == roomiest.smallest && c.fair > roomiest.fair+1e-9 {
			roomiest = c
		}
		if c.aligned && c.fair >= Fair && firstAligned == nil {
			firstAligned = c
		}
		if w >= m.space && best.fair >= Fair {
			break
		}
	}
	chosen := best
	switch {
	case firstAligned != nil:
		chosen = firstAligned
	case best != nil && best.fair < Fair:
		chosen = roomiest
	}
	if chosen == nil {
		return fmt.Errorf("no layout of %d inside hosts over %d addresses", m.space, n)
	}
	m.setWindow(chosen.w, chosen.split, chosen.p0, chosen.p1)
	return nil
}

// fairShare is the share of numbered hosts whose block holds at least Fair
// of the ideal ports: whole windows by pattern, the last window as far as it
// holds hosts.
func (m *BlockMapping) fairShare(ideal float64) float64 {
	fairIn := func(p Pattern, hosts uint64) uint64 { // fair hosts among a window's first hosts
		var n uint64
		for _, gr := range p {
			if gr.Offset < hosts && float64(gr.BlockSize) >= Fair*ideal {
				n += min(gr.Offset+gr.Size, hosts) - gr.Offset
			}
		}
		return n
	}
	last := m.windows - 1
	first := min(m.Split, last) // whole windows of Patterns[0]
	fair := first*fairIn(m.Patterns[0], m.Window) + (last-first)*fairIn(m.Patterns[1], m.Window) +
		fairIn(m.pattern(last), m.space-last*m.Window)
	return float64(fair) / float64(m.space)
}

var blockKind = StrategyKind{
	Name:    Block,
	Options: []string{"hosts", "hosts-per-ip", "block-size"},
	plan: func(e *Egress, es EgressSpec, warnings *[]string) (Mapping, error) {
		return newBlockMapping(e, es.HostsPerIP, es.BlockSize, warnings)
	},
	restore: func(e *Egress, er EgressRecord) (Mapping, error) {
		if er.Block == nil {
			return nil, fmt.Errorf("strategy block without its pins")
		}
		return er.Block.mapping(e)
	},
}

func (m *BlockMapping) settings() []Setting {
	hlo, hhi := m.HostsPerAddress()
	blo, bhi := m.BlockSizes()
	return []Setting{{"hosts-per-ip", between(hlo, hhi)}, {"block-size", between(blo, bhi)}, {"window", fmt.Sprint(m.Window)}}
}

func (m *BlockMapping) pin(er *EgressRecord) {
	er.Block = &BlockPins{Window: m.Window, Split: m.Split}
	for i, p := range m.Patterns {
		for _, g := range p {
			er.Block.Patterns[i] = append(er.Block.Patterns[i], [3]uint64{g.Offset, g.Size, uint64(g.BlockSize)})
		}
	}
}

// canonical includes the inside ranges as given and the pool: hosts are
// numbered over the former, and the groups take the latter in order.
func (m *BlockMapping) canonical(e *Egress, c *Canonical) {
	c.Line("block", m.Window, m.Split)
	for p, cut := range m.Patterns {
		for _, g := range cut {
			c.Line("cut", p, g.Offset, g.Size, g.BlockSize)
		}
	}
	for _, r := range e.Private {
		c.Line("hosts", r.From().String()+"-"+r.To().String())
	}
	for _, a := range e.Pool {
		c.Line("public", a.Addr)
	}
}

// BlockPins are the window and its cuts of a block mapping: each group is
// [offset, size, block size].
type BlockPins struct {
	Window   uint64         `json:"window"`
	Split    uint64         `json:"split"`
	Patterns [2][][3]uint64 `json:"patterns"`
}

func (bp *BlockPins) mapping(e *Egress) (*BlockMapping, error) {
	m := &BlockMapping{Ports: e.Ports}
	m.setPrivate(e.Private)
	var p [2]Pattern
	for i, groups := range bp.Patterns {
		next := uint64(0)
		for _, g := range groups {
			if g[0] != next || g[1] == 0 || g[2] == 0 || g[1]*g[2] > uint64(e.Ports.Len()) {
				return nil, fmt.Errorf("block: group %v of pattern %d", g, i)
			}
			p[i] = append(p[i], Group{Offset: g[0], Size: g[1], BlockSize: int(g[2])})
			next = g[0] + g[1]
		}
		if next != bp.Window {
			return nil, fmt.Errorf("block: pattern %d covers %d of a window of %d", i, next, bp.Window)
		}
	}
	if bp.Window == 0 || bp.Window > maxWindow {
		return nil, fmt.Errorf("block: window %d", bp.Window)
	}
	m.setWindow(bp.Window, bp.Split, p[0], p[1])
	if need := m.GroupCount(); need > len(e.Pool) {
		return nil, fmt.Errorf("block: %d groups for %d addresses", need, len(e.Pool))
	}
	return m, nil
}
