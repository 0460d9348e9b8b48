package pool

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
)

// The hash strategy's defaults.
const (
	// DefaultBuckets is the jhash modulus unless the spec sets one. nft's
	// jhash takes the top of the hash (reciprocal_scale), so the modulus
	// sets only how finely the ring is cut: bucket b of 2^k is buckets 2b
	// and 2b+1 of 2^(k+1). It is still the same for every pool, and the
	// finest: a modulus that followed the pool would round every cut again
	// when the pool crossed a power of two: one address joining 64 moved
	// 7.3% of a /12's hosts going from 2^18 to 2^19 buckets, against 1.6%
	// at a fixed modulus. The kernel holds runs of buckets, about one per
	// ring point.
	DefaultBuckets = 1 << 20
	MaxBuckets     = 1 << 20
	DefaultSeed    = 0x6e617470 // "natp": fixed, since nft picks a random seed when given none
	// DefaultMaxImbalance bounds each address's hosts per unit of weight
	// over the mean.
	DefaultMaxImbalance = 1.02
)

// HashMapping sends inside host x to bucket NftJhash(x, Seed, len(Owners)),
// exactly as nft's `jhash ip saddr mod B seed S` does, and bucket b to
// Pool[Owners[b]].
//
// The buckets form a consistent-hashing ring: each public address puts
// PointsPerWeight points per unit of weight at fixed places on it, and the
// arc of buckets up to each point goes to that point's address, arc after
// arc in bucket order, while the address stays within MaxImbalance times its
// fair share of the hosts (the inside hosts, or the active ones of a hosts
// file: hosts, not buckets, are balanced). An arc that does not fit is
// split: its buckets go on clockwise to the next addresses with room. So a
// pool change moves little more than the hosts it must: the arcs the new
// address's points cut off, or the removed one held, and what the bound
// shifts at the margin.
type HashMapping struct {
	Seed         uint32
	Owners       []uint16 // bucket -> Pool index
	MaxImbalance float64
	// Unbalanced is set when the hosts could not be placed within the
	// bound (too few hosts per address, or buckets too coarse for them).
	Unbalanced bool
	runs       []Run
}

// Run is a run of consecutive buckets of one public address (a Pool index).
type Run struct {
	Lo, Hi uint32
	Owner  int
}

// Runs returns the buckets as runs: what the kernel holds, a run at a time.
func (m *HashMapping) Runs() []Run {
	if m.runs == nil {
		// A run starts at every bucket whose owner differs from the one
		// before; counting them first sizes the slice once.
		starts := func(b int) bool { return b == 0 || m.Owners[b] != m.Owners[b-1] }
		n := 0
		for b := range m.Owners {
			if starts(b) {
				n++
			}
		}
		m.runs = make([]Run, 0, n)
		for b, o := range m.Owners {
			if starts(b) {
				m.runs = append(m.runs, Run{uint32(b), uint32(b), int(o)})
			} else {
				m.runs[len(m.runs)-1].Hi = uint32(b)
			}
		}
	}
	return m.runs
}

func (m *HashMapping) owner(x uint32) int {
	return int(m.Owners[NftJhash(x, m.Seed, uint32(len(m.Owners)))])
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

func newHashMapping(e *Egress, bucketsOpt, seedOpt, imbalanceOpt string, warnings *[]string) (*HashMapping, error) {
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
	m := &HashMapping{Seed: DefaultSeed, Owners: make([]uint16, buckets), MaxImbalance: DefaultMaxImbalance}
	if seedOpt != "" {
		s, err := strconv.ParseUint(seedOpt, 0, 32)
		if err != nil {
			return nil, fmt.Errorf("seed %q must be a 32-bit number (decimal or 0x hex)", seedOpt)
		}
		m.Seed = uint32(s)
	}
	if imbalanceOpt != "" {
		f, err := strconv.ParseFloat(imbalanceOpt, 64)
		if err != nil || !(f >= 1 && f <= 10) {
			return nil, fmt.Errorf("max-imbalance %q must be a number from 1 to 10 (1.02: within 2%% of even)", imbalanceOpt)
		}
		m.MaxImbalance = f
	}
	loads := m.assign(e)
	if e.hosts != nil {
		e.Active = m.perAddress(len(e.Pool), loads)
	}
	if m.Unbalanced {
		*warnings = append(*warnings, m.unbalanced(e, loads))
	}
	return m, nil
}

// assign counts the hosts of each bucket and places the buckets; it returns
// the counts.
func (m *HashMapping) assign(e *Egress) []uint64 {
	loads := m.loads(e)
	m.place(e.Pool, loads)
	return loads
}

// perAddress sums the loads of each address's buckets.
func (m *HashMapping) perAddress(n int, loads []uint64) []uint64 {
	out := make([]uint64, n)
	for b, o := range m.Owners {
		out[o] += loads[b]
	}
	return out
}

// unbalanced explains a plan that misses its bound, and names what would
// meet it: more buckets, or failing that the bound that was met.
func (m *HashMapping) unbalanced(e *Egress, loads []uint64) string {
	head := fmt.Sprintf("egress %s: the hosts cannot be spread within %g of even over %d addresses with %d buckets",
		e.Name, m.MaxImbalance, len(e.Pool), len(m.Owners))
	for n := 2 * len(m.Owners); n <= 2*MaxBuckets; n *= 2 {
		n = min(n, MaxBuckets)
		t := &HashMapping{Seed: m.Seed, Owners: make([]uint16, n), MaxImbalance: m.MaxImbalance}
		if t.assign(e); !t.Unbalanced {
			return fmt.Sprintf("%s: %d buckets would (--buckets %d)", head, n, n)
		}
		if n == MaxBuckets {
			break
		}
	}
	met := math.Ceil(e.imbalance(m.perAddress(len(e.Pool), loads))*100) / 100
	return fmt.Sprintf("%s: too few hosts per address; the plan is within %.2f (--max-imbalance %.2f)", head, met, met)
}

// loads counts the hosts of each bucket: the active hosts of a hosts file,
// or every inside host. The inside hosts are hashed on every core.
func (m *HashMapping) loads(e *Egress) []uint64 {
	n := uint32(len(m.Owners))
	if e.hosts != nil {
		return e.hosts.countBy(int(n), func(x uint32) int { return int(NftJhash(x, m.Seed, n)) })
	}
	// Each worker hashes every host but counts only those of its own share
	// of the buckets, into the one array: a copy per worker would be
	// megabytes more to fault in, which costs more than hashing again. A
	// second worker, faulting in the other half at once, pays only beyond
	// 2 MB of counts: counting a /12 took 23 ms with two and 37-41 ms with
	// one at 2^20 buckets, but 23 ms against 10-12 ms at 2^17, where the
	// branch on the share costs more than the faults. More than two would
	// only hash every host once more each.
	workers := 1
	if n > 1<<18 {
		workers = min(runtime.GOMAXPROCS(0), 2)
	}
	loads := make([]uint64, n)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := uint32(w*int(n)/workers), uint32((w+1)*int(n)/workers)
		wg.Go(func() {
			for _, s := range e.inside {
				for x := s.lo; ; x++ {
					if b := NftJhash(x, m.Seed, n); b >= lo && b < hi {
						loads[b]++
					}
					if x == s.hi {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	return loads
}

// place gives every bucket an owner, balancing loads within the bound.
func (m *HashMapping) place(pool []Public, loads []uint64) {
	var total, weights uint64
	for _, l := range loads {
		total += l
	}
	for _, p := range pool {
		weights += uint64(p.Weight)
	}
	room := make([]float64, len(pool)) // hosts each address may still take
	for i, p := range pool {
		room[i] = m.MaxImbalance * float64(total) * float64(p.Weight) / float64(weights)
	}
	r := newRing(pool, len(loads))
	// First each address takes its own arcs, in bucket order, while they
	// fit; of an arc that does not fit whole it takes the buckets up to the
	// first that does not. What an address keeps so depends on its own
	// arcs alone, and a pool change shifts it only at the margin.
	type rest struct{ k, lo, hi int }
	var rests []rest
	for k := range r.arcs() {
		lo, hi := r.arc(k)
		best := r.owner(k)
		b := lo
		for ; b < hi && float64(loads[b]) <= room[best]; b++ {
			room[best] -= float64(loads[b])
			m.Owners[b] = uint16(best)
		}
		r.fill(best, room[best])
		if b < hi {
			rests = append(rests, rest{k, b, hi})
		}
	}
	// Then the rest of each arc goes on clockwise, each bucket to the
	// address reached if it has room, else to the next that has. An
	// address passed over gets no more of the arc, so a split arc is a
	// few runs in the kernel.
	passed := make([]int, len(pool)) // the arc an address was last passed over for, plus one
	for _, a := range rests {
		w := r.walk(a.k)
		next := w.next()
		for b := a.lo; b < a.hi; b++ {
			load := float64(loads[b])
			for next >= 0 && (passed[next] == a.k+1 || load > room[next]) {
				passed[next] = a.k + 1
				next = w.next()
			}
			owner := next
			if owner < 0 { // no address has room: the most left, per weight
				m.Unbalanced = true
				owner = 0
				for i := range room {
					if room[i]/float64(pool[i].Weight) > room[owner]/float64(pool[owner].Weight) {
						owner = i
					}
				}
			}
			room[owner] -= load
			m.Owners[b] = uint16(owner)
			r.fill(owner, room[owner])
		}
	}
}

// PointsPerWeight is how many points each unit of weight puts on the hash
// ring while the pool's total weight is at most 4096; beyond it, the largest
// power of two that keeps the ring at 2^22 points. About 1,000 arcs per
// address put each address's first choices within about 3% of its share,
// which the bound then trims with little churn.
const PointsPerWeight = 1024

// A ring is consistent hashing over the buckets: each address has points
// at fixed places, and an arc of buckets, up to and including a point's
// bucket, belongs to that point's address unless it is full. A point's place
// depends only on its address and its number, so a pool change adds or
// takes away only the points of the addresses changed.
type ring struct {
	// points, in ring order: 48 bits of a fixed hash of address and point
	// number (its place on the ring), then 16 bits of Pool index.
	points  []uint64
	buckets int
	// skip leads past the points of full addresses: a union-find of
	// the next point whose address still has room.
	skip []int32
	// of lists the points of each address: address i's are
	// of[start[i]:start[i+1]].
	of, start []int32
	full      []bool
}

func newRing(pool []Public, buckets int) *ring {
	var weights int
	for _, p := range pool {
		weights += p.Weight
	}
	per := PointsPerWeight
	for per > 1 && per*weights > 1<<22 {
		per /= 2
	}
	r := &ring{buckets: buckets, points: make([]uint64, 0, per*weights), full: make([]bool, len(pool))}
	for i, p := range pool {
		base := uint64(Uint32(p.Addr)) << 32
		for j := range per * p.Weight {
			r.points = append(r.points, mix64(base|uint64(j))&^0xffff|uint64(i))
		}
	}
	r.points = sortByTop16(r.points)
	// The points of each address, listed address by address.
	r.start = make([]int32, len(pool)+1)
	for _, p := range r.points {
		r.start[p&0xffff+1]++
	}
	for i := range pool {
		r.start[i+1] += r.start[i]
	}
	r.of = make([]int32, len(r.points))
	at := slices.Clone(r.start)
	r.skip = make([]int32, len(r.points)+1)
	for k, p := range r.points {
		r.skip[k] = int32(k)
		i := p & 0xffff
		r.of[at[i]] = int32(k)
		at[i]++
	}
	r.skip[len(r.points)] = int32(len(r.points))
	return r
}

// sortByTop16 sorts points: by their top 16 bits into a new slice, then
// each run of equal top bits in place.
func sortByTop16(points []uint64) []uint64 {
	start := make([]int, 1<<16+1)
	for _, p := range points {
		start[p>>48+1]++
	}
	for i := range 1 << 16 {
		start[i+1] += start[i]
	}
	out := make([]uint64, len(points))
	at := slices.Clone(start)
	for _, p := range points {
		out[at[p>>48]] = p
		at[p>>48]++
	}
	for i := range 1 << 16 {
		slices.Sort(out[start[i]:start[i+1]])
	}
	return out
}

// place is the bucket of point k.
func (r *ring) place(k int) int { return int((r.points[k] >> 32) * uint64(r.buckets) >> 32) }

// owner is the Pool index of point k's address; point len(points) stands
// for the first point, whose arc wraps round past the last.
func (r *ring) owner(k int) int { return int(r.points[k%len(r.points)] & 0xffff) }

// arcs yields the arcs in bucket order: arc k (k < len(points)) ends at
// point k's bucket, and the last, len(points), runs from past the last
// point to the end of the buckets and belongs to the first point.
func (r *ring) arcs() iter.Seq[int] {
	return func(yield func(int) bool) {
		for k := range len(r.points) + 1 {
			if !yield(k) {
				return
			}
		}
	}
}

// arc returns the buckets [lo, hi) of arc k.
func (r *ring) arc(k int) (lo, hi int) {
	n := len(r.points)
	if k > 0 {
		lo = r.place(k-1) + 1
	}
	if k == n {
		return lo, r.buckets
	}
	return lo, r.place(k) + 1
}

// fill takes address i's points off the ring once it has no room for
// another host.
func (r *ring) fill(i int, room float64) {
	if room >= 1 || r.full[i] {
		return
	}
	r.full[i] = true
	for _, k := range r.of[r.start[i]:r.start[i+1]] {
		r.skip[k] = k + 1
	}
}

// find returns the first point at or after k whose address has room, or
// len(points).
func (r *ring) find(k int) int {
	root := int32(k)
	for r.skip[root] != root {
		root = r.skip[root]
	}
	for int32(k) != root { // compress the path
		k, r.skip[k] = int(r.skip[k]), root
	}
	return int(root)
}

// walk starts a walk clockwise from arc k, over the points of addresses
// with room, once round.
func (r *ring) walk(k int) *walk { return &walk{r: r, at: k % len(r.points), left: len(r.points)} }

// A walk goes clockwise round the ring once.
type walk struct {
	r    *ring
	at   int // the next point to look at
	left int // how many points the walk may still pass
}

// next returns the address of the walk's next point with room, or -1 when
// the walk is back where it started.
func (w *walk) next() int {
	n := len(w.r.points)
	for w.left > 0 {
		k := w.r.find(w.at)
		if k == n { // past the last point: on from the first
			w.left -= n - w.at
			w.at = 0
			continue
		}
		w.left -= k - w.at + 1
		if w.left < 0 {
			break
		}
		w.at = k + 1
		return w.r.owner(k)
	}
	w.left = 0
	return -1
}

// mix64 is the splitmix64 finaliser: a fixed bijection that scatters bits, so
// ring places never change between versions or machines.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

var hashKind = StrategyKind{
	Name:    Hash,
	Options: []string{"hosts", "buckets", "seed", "max-imbalance"},
	plan: func(e *Egress, es EgressSpec, warnings *[]string) (Mapping, error) {
		return newHashMapping(e, es.Buckets, es.Seed, es.MaxImbalance, warnings)
	},
	restore: func(e *Egress, er EgressRecord) (Mapping, error) {
		if er.Hash == nil {
			return nil, fmt.Errorf("strategy hash without its pins")
		}
		return er.Hash.mapping(len(e.Pool))
	},
}

func (m *HashMapping) settings() []Setting {
	return []Setting{{"buckets", fmt.Sprint(len(m.Owners))}, {"seed", fmt.Sprintf("%#08x", m.Seed)}, {"max-imbalance", fmt.Sprint(m.MaxImbalance)}}
}

func (m *HashMapping) pin(er *EgressRecord) {
	er.Hash = &HashPins{Seed: m.Seed, Buckets: len(m.Owners)}
	runs := m.Runs()
	for i, run := range runs {
		end := uint32(len(m.Owners))
		if i+1 < len(runs) {
			end = runs[i+1].Lo
		}
		er.Hash.Runs = binary.AppendUvarint(er.Hash.Runs, uint64(end-run.Lo))
		er.Hash.Runs = binary.AppendUvarint(er.Hash.Runs, uint64(run.Owner))
	}
}

func (m *HashMapping) canonical(e *Egress, c *Canonical) {
	c.Line("hash", fmt.Sprintf("%#x", m.Seed), len(m.Owners))
	for _, run := range m.Runs() { // up to a million: the line written in place
		b := strconv.AppendUint(append(c.b[:0], "buckets "...), uint64(run.Lo), 10)
		b = strconv.AppendUint(append(b, '-'), uint64(run.Hi), 10)
		c.b = e.Pool[run.Owner].Addr.AppendTo(append(b, ' '))
		c.w.Write(append(c.b, '\n'))
	}
}

// HashPins are the bucket owners of a hash mapping, a run at a time from
// bucket 0 on. Runs holds two unsigned varints a run, its length in buckets
// and its owner's pool index: a ring of 2^20 buckets is some 100,000 runs,
// which this keeps to 2-3 bytes each (base64 in JSON), quick to read back.
type HashPins struct {
	Seed    uint32 `json:"seed"`
	Buckets int    `json:"buckets"`
	Runs    []byte `json:"runs"`
}

func (h *HashPins) mapping(n int) (*HashMapping, error) {
	if h.Buckets < 1 || h.Buckets > MaxBuckets {
		return nil, fmt.Errorf("hash: %d buckets", h.Buckets)
	}
	m := &HashMapping{Seed: h.Seed, Owners: make([]uint16, h.Buckets)}
	next, buf := 0, h.Runs
	for i := 0; next < h.Buckets; i++ {
		size, k := binary.Uvarint(buf)
		if k <= 0 {
			return nil, fmt.Errorf("hash: run %d is cut short at bucket %d of %d", i, next, h.Buckets)
		}
		owner, l := binary.Uvarint(buf[k:])
		if l <= 0 || size == 0 || size > uint64(h.Buckets-next) || owner >= uint64(n) {
			return nil, fmt.Errorf("hash: run %d (from bucket %d) does not fit %d buckets and %d addresses", i, next, h.Buckets, n)
		}
		buf = buf[k+l:]
		for b := range int(size) {
			m.Owners[next+b] = uint16(owner)
		}
		next += int(size)
	}
	if len(buf) > 0 {
		return nil, fmt.Errorf("hash: %d bytes after the last run", len(buf))
	}
	return m, nil
}
