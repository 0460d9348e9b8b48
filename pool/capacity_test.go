package pool

import (
	"math"
	"strings"
	"testing"
)

func TestCapacityModelsThePortBudget(t *testing.T) {
	tests := []struct {
		name        string
		spec        EgressSpec
		demand      Demand
		utilisation float64 // of the busiest address
	}{
		{
			// 256 hosts on each of 4 addresses, 100 x 0.1 connections to one
			// destination each: 2,560 of 64,512 ports.
			name:        "address strategy shares the range per destination",
			spec:        EgressSpec{Strategy: "octet", Private: []string{"10.0.0.0/22"}, Pool: []string{"192.0.2.0/30"}},
			demand:      Demand{SessionsPerHost: 100, SameDestinationShare: 0.1, Target: 0.8},
			utilisation: 2560.0 / 64512,
		},
		{
			// 1,024 hosts per address, 63-port blocks, 80 connections to one
			// destination: every block overflows.
			name:        "block mode compares a host's demand with its block",
			spec:        EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/10"}, Pool: []string{"198.18.0.0/20"}, HostsPerIP: "1024"},
			demand:      Demand{SessionsPerHost: 400, SameDestinationShare: 0.2, Target: 0.8},
			utilisation: 80.0 / 63,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c := mustPlan(t, tt.spec).capacity(tt.demand, false); math.Abs(c.MaxUtilisation-tt.utilisation) > 1e-9 {
				t.Errorf("utilisation %v, want %v", c.MaxUtilisation, tt.utilisation)
			}
		})
	}
}

// The recommended number of addresses is found by planning again: a pool
// of that size meets the target with the strategy's real spread and block
// layout, and one address fewer does not.
func TestCapacityRecommendationMeetsItsTarget(t *testing.T) {
	demand := Demand{SessionsPerHost: 200, SameDestinationShare: 0.2, Target: 0.8}
	for name, es := range map[string]EgressSpec{
		"octet":           {Strategy: "octet", Private: []string{"10.16.0.0/16"}, Pool: []string{"192.76.8.0/28"}},
		"octet few ports": {Strategy: "octet", Private: []string{"10.0.0.0/22"}, Pool: []string{"192.0.2.0/30"}, Ports: "10000-10999"},
		"hash":            {Strategy: "hash", Private: []string{"10.16.0.0/16"}, Pool: []string{"192.76.8.0/28"}},
		"persistent":      {Strategy: "persistent", Private: []string{"10.16.0.0/16"}, Pool: []string{"192.76.8.0/28"}},
		"block":           {Strategy: "block", Private: []string{"100.64.0.0/14"}, Pool: []string{"198.18.0.0/26"}},
		// About 4 of 64 addresses are needed: far below the pool.
		"hash far more than needed": {Strategy: "hash", Private: []string{"100.64.0.0/20"}, Pool: []string{"198.51.100.0/26"}},
		"octet one is enough":       {Strategy: "octet", Private: []string{"10.0.0.0/24"}, Pool: []string{"192.0.2.0/26"}},
	} {
		t.Run(name, func(t *testing.T) {
			e := mustPlan(t, es)
			c := e.capacity(demand, true)
			n := c.AddressesNeeded
			if n < 1 {
				t.Fatalf("no recommendation (%d)", n)
			}
			at, err := e.withPool(n)
			if err != nil {
				t.Fatal(err)
			}
			if u := at.capacity(demand, false).MaxUtilisation; u > demand.Target {
				t.Errorf("%d addresses recommended, but planned with %d the busiest is at %.1f%%", n, n, 100*u)
			}
			if n > 1 {
				fewer, err := e.withPool(n - 1)
				if err == nil && fewer.capacity(demand, false).MaxUtilisation <= demand.Target {
					t.Errorf("%d addresses recommended, but %d meet the target too", n, n-1)
				}
			}
		})
	}
	// No block holds 1,000 connections to one destination in 76 ports.
	e := mustPlan(t, EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/22"}, Pool: []string{"198.18.0.0/24"}, Ports: "1024-1099"})
	if n := e.capacity(Demand{SessionsPerHost: 1000, SameDestinationShare: 1, Target: 0.8}, true).AddressesNeeded; n != -1 {
		t.Errorf("a demand no block can carry: %d addresses recommended", n)
	}
}

func TestDemandRefusesMeaninglessFigures(t *testing.T) {
	for _, d := range []Demand{{0, 0.1, 0.8}, {100, 0, 0.8}, {100, 1.5, 0.8}, {100, 0.1, 0}, {100, 0.1, 1.2}, {math.NaN(), 0.1, 0.8}, {math.Inf(1), 0.1, 0.8}} {
		if d.Check() == nil {
			t.Errorf("%+v accepted", d)
		}
	}
}

// A demand no pool can meet is refused with the most one can hold, and the
// recommendation never names more addresses than a pool may have.
func TestDemandNoPoolCanMeetIsRefused(t *testing.T) {
	p, err := NewPlan(Spec{Egress: []EgressSpec{{Name: "campus", Private: []string{"10.16.0.0/12"}, Pool: []string{"192.76.8.0/26"}, Strategy: "octet"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		sessions float64
		want     string
	}{
		{1e12, "the most any pool can hold is 3.226e+04"},
		{1e308, "no pool of public addresses can hold it for egress campus"},
		{100, ""},
	} {
		d := DefaultDemand
		d.SessionsPerHost = tt.sessions
		err := p.CheckDemand(d)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%v sessions: %v, want %q", tt.sessions, err, tt.want)
		}
	}
	d := DefaultDemand
	d.SessionsPerHost = 32000 // just under what 65,536 addresses hold evenly; octet's spread is not even
	if n := p.Capacity(d)[0].AddressesNeeded; n > MaxPool {
		t.Errorf("%d addresses recommended, more than a pool may have", n)
	}
}
