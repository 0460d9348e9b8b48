package pool

import (
	"fmt"
	"net/netip"
)

// PersistentMapping is what the kernel does with `snat to First-Last
// persistent`: the source address alone picks the public address, through
// PersistentIndex. Modelled so that its load and churn can be reported.
type PersistentMapping struct {
	First, Last netip.Addr
}

func (m *PersistentMapping) size() uint32 { return Uint32(m.Last) - Uint32(m.First) + 1 }

func (m *PersistentMapping) owner(x uint32) int { return int(PersistentIndex(x, m.size())) }

func (m *PersistentMapping) describe(n int) []string { return make([]string, n) }

func newPersistentMapping(e *Egress) (*PersistentMapping, error) {
	if e.weighted() {
		return nil, fmt.Errorf("strategy persistent cannot weight addresses: the kernel spreads evenly")
	}
	for i := 1; i < len(e.Pool); i++ {
		if e.Pool[i].Addr != e.Pool[i-1].Addr.Next() {
			return nil, fmt.Errorf("strategy persistent needs one contiguous pool: %s and %s are not adjacent", e.Pool[i-1].Addr, e.Pool[i].Addr)
		}
	}
	return &PersistentMapping{First: e.Pool[0].Addr, Last: e.Pool[len(e.Pool)-1].Addr}, nil
}

var persistentKind = StrategyKind{
	Name:    Persistent,
	Options: []string{"hosts"},
	plan: func(e *Egress, _ EgressSpec, _ *[]string) (Mapping, error) {
		return newPersistentMapping(e)
	},
	// The kernel spreads the hosts over the pool, First to Last: nothing
	// more to pin.
	restore: func(e *Egress, _ EgressRecord) (Mapping, error) { return newPersistentMapping(e) },
}

func (m *PersistentMapping) settings() []Setting { return nil }

func (m *PersistentMapping) pin(*EgressRecord) {}

func (m *PersistentMapping) canonical(_ *Egress, c *Canonical) {
	c.Line("persistent", m.First.String()+"-"+m.Last.String())
}
