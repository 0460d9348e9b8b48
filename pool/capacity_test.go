package pool

import (
	"math"
	"testing"
)

func TestCapacityModelsThePortBudget(t *testing.T) {
	tests := []struct {
		name            string
		spec            EgressSpec
		demand          Demand
		utilisation     float64 // of the busiest address
		addressesNeeded int
	}{
		{
			// 256 hosts on each of 4 addresses, 100 x 0.1 connections to one
			// destination each: 2,560 of 64,512 ports.
			name:            "address strategy shares the range per destination",
			spec:            EgressSpec{Strategy: "octet", Private: []string{"10.0.0.0/22"}, Pool: []string{"192.0.2.0/30"}},
			demand:          Demand{SessionsPerHost: 100, SameDestinationShare: 0.1, Target: 0.8},
			utilisation:     2560.0 / 64512,
			addressesNeeded: 1, // 10,240 connections fit in 80% of one range
		},
		{
			name:            "a narrow port range needs more addresses",
			spec:            EgressSpec{Strategy: "octet", Private: []string{"10.0.0.0/22"}, Pool: []string{"192.0.2.0/30"}, Ports: "10000-10999"},
			demand:          Demand{SessionsPerHost: 100, SameDestinationShare: 0.1, Target: 0.5},
			utilisation:     2560.0 / 1000,
			addressesNeeded: 21, // 10,240 / 500
		},
		{
			// 1,024 hosts per address, 63-port blocks, 80 connections to one
			// destination: every block overflows.
			name:            "block mode compares a host's demand with its block",
			spec:            EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/10"}, Pool: []string{"198.18.0.0/20"}, HostsPerIP: "1024"},
			demand:          Demand{SessionsPerHost: 400, SameDestinationShare: 0.2, Target: 0.8},
			utilisation:     80.0 / 63,
			addressesNeeded: 6503, // 4,194,304 hosts / floor(0.8 x 64,512 / 80) per address
		},
		{
			name:            "block mode that no block can carry",
			spec:            EgressSpec{Strategy: "block", Private: []string{"100.64.0.0/22"}, Pool: []string{"198.18.0.0/24"}, Ports: "1024-1099"},
			demand:          Demand{SessionsPerHost: 1000, SameDestinationShare: 1, Target: 0.8},
			utilisation:     1000.0 / 19, // 76 ports, 4 hosts per address
			addressesNeeded: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustPlan(t, tt.spec).capacity(tt.demand)
			if math.Abs(c.MaxUtilisation-tt.utilisation) > 1e-9 || c.AddressesNeeded != tt.addressesNeeded {
				t.Errorf("utilisation %v, addresses needed %d; want %v and %d", c.MaxUtilisation, c.AddressesNeeded, tt.utilisation, tt.addressesNeeded)
			}
		})
	}
}

func TestDemandRefusesMeaninglessFigures(t *testing.T) {
	for _, d := range []Demand{{0, 0.1, 0.8}, {100, 0, 0.8}, {100, 1.5, 0.8}, {100, 0.1, 0}, {100, 0.1, 1.2}, {math.NaN(), 0.1, 0.8}} {
		if d.Check() == nil {
			t.Errorf("%+v accepted", d)
		}
	}
}
