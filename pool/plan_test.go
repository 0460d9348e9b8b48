package pool

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go4.org/netipx"
)

func mustPlan(t testing.TB, es EgressSpec) *Egress {
	t.Helper()
	p, err := NewPlan(Spec{Egress: []EgressSpec{es}})
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	return p.Egress[0]
}

// forward returns the public address of inside host s.
func forward(t testing.TB, e *Egress, s string) Answer {
	t.Helper()
	a, ok, err := e.lookup(netip.MustParseAddr(s), 0, false)
	if err != nil || !ok || a.Kind != Forward {
		t.Fatalf("lookup %s: %+v %v %v", s, a, ok, err)
	}
	return a
}

func TestNewPlanRejectsBadInput(t *testing.T) {
	base := EgressSpec{Private: []string{"10.16.0.0/12"}, Pool: []string{"192.76.8.0/26"}}
	tests := []struct {
		name   string
		change func(*EgressSpec)
		want   string // the error names this
	}{
		{"prefix length", func(e *EgressSpec) { e.Private = []string{"10.16.0.0/33"} }, `"10.16.0.0/33"`},
		{"short address", func(e *EgressSpec) { e.Private = []string{"10.16.0"} }, `"10.16.0"`},
		{"host bits", func(e *EgressSpec) { e.Private = []string{"10.16.0.1/12"} }, `did you mean 10.16.0.0/12`},
		{"IPv6 mixed in", func(e *EgressSpec) { e.Pool = []string{"192.76.8.0/26", "2001:db8::1"} }, `"2001:db8::1" is IPv6`},
		{"overlapping inside", func(e *EgressSpec) { e.Private = []string{"10.16.0.0/12", "10.20.0.0/16"} }, `"10.16.0.0/12" and "10.20.0.0/16" overlap`},
		{"pool overlaps inside", func(e *EgressSpec) { e.Pool = []string{"10.16.0.1"} }, `pool "10.16.0.1" overlaps private "10.16.0.0/12"`},
		{"empty pool after exclusions", func(e *EgressSpec) { e.Exclude = []string{"192.76.8.0/26"} }, "pool is empty after exclusions"},
		{"everything excluded", func(e *EgressSpec) { e.Exclude = []string{"10.0.0.0/8"} }, "every inside host is excluded"},
		{"unknown strategy", func(e *EgressSpec) { e.Strategy = "random" }, `unknown strategy "random"`},
		{"option of another strategy", func(e *EgressSpec) { e.Strategy, e.Buckets = "octet", "64" }, "option buckets does not apply to strategy octet"},
		{"zero weight", func(e *EgressSpec) { e.Pool = []string{"192.76.8.1=0"} }, `weight "0"`},
		{"negative weight", func(e *EgressSpec) { e.Pool = []string{"192.76.8.1=-2"} }, `weight "-2"`},
		{"port zero", func(e *EgressSpec) { e.Ports = "0-1023" }, `port range "0-1023"`},
		{"port too high", func(e *EgressSpec) { e.Ports = "1024-65536" }, `port range "1024-65536"`},
		{"empty port range", func(e *EgressSpec) { e.Ports = "2000-1999" }, `port range "2000-1999" is empty`},
		{"block larger than ports", func(e *EgressSpec) { e.Strategy, e.Ports, e.BlockSize = "block", "1024-2047", "2000" }, "block-size 2000 is larger than the port range 1024-2047"},
		{"pool too small for blocks", func(e *EgressSpec) { e.Strategy, e.HostsPerIP = "block", "1024" }, "1024 addresses are needed"},
		{"hosts-per-ip zero", func(e *EgressSpec) { e.Strategy, e.HostsPerIP = "block", "0" }, `hosts-per-ip "0"`},
		{"pool larger than values", func(e *EgressSpec) { e.Strategy, e.Bits = "octet", "4" }, "larger than the 16 values"},
		{"bits out of range", func(e *EgressSpec) { e.Strategy, e.Bits = "octet", "17" }, `bits "17"`},
		{"octets outside bits", func(e *EgressSpec) { e.Strategy, e.Octets = "octet", "0-256" }, `octets "0-256"`},
		{"buckets fewer than pool", func(e *EgressSpec) { e.Buckets = "16" }, "16 buckets are fewer than the 64"},
		{"bad seed", func(e *EgressSpec) { e.Seed = "0x1ffffffff" }, `seed "0x1ffffffff"`},
		{"persistent pool not contiguous", func(e *EgressSpec) { e.Strategy, e.Pool = "persistent", []string{"192.76.8.1", "192.76.8.3"} }, "192.76.8.1 and 192.76.8.3 are not adjacent"},
		{"persistent weights", func(e *EgressSpec) { e.Strategy, e.Pool = "persistent", []string{"192.76.8.1=2"} }, "cannot weight"},
		{"oif wildcard alone", func(e *EgressSpec) { e.OIF = "*" }, `oif "*" matches every interface`},
		{"oif wildcard inside", func(e *EgressSpec) { e.OIF = "w*n" }, `oif "w*n": '*' is a wildcard only at the end`},
		{"oif iptables wildcard", func(e *EgressSpec) { e.OIF = "wan+" }, `write the wildcard as "wan*"`},
		{"oif too long", func(e *EgressSpec) { e.OIF = "averyveryverylongname" }, "is not an interface name"},
		{"hosts file missing", func(e *EgressSpec) { e.Hosts = "/nonexistent/leases" }, "/nonexistent/leases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := base
			tt.change(&es)
			_, err := NewPlan(Spec{Egress: []EgressSpec{es}})
			if err == nil {
				t.Fatalf("accepted %+v", es)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line naming %s", err, tt.want)
			}
		})
	}
}

// Two entries for the same inside hosts work only on different interfaces
// (the two-ISP site); otherwise the kernel would only ever use the first.
// One entry's public addresses are never another's inside hosts.
func TestNewPlanRefusesEntriesTheKernelWouldNotRunAsPlanned(t *testing.T) {
	entry := func(name, oif, private, pool string) EgressSpec {
		return EgressSpec{Name: name, OIF: oif, Private: []string{private}, Pool: []string{pool}}
	}
	tests := []struct {
		name   string
		egress []EgressSpec
		want   string // "" when the plan is fine
	}{
		{"two uplinks", []EgressSpec{entry("a", "eth2", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "eth3", "10.16.0.0/24", "198.51.100.0/29")}, ""},
		{"same interface", []EgressSpec{entry("a", "eth2", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "eth2", "10.16.0.128/25", "198.51.100.0/29")},
			"egress b never applies to 10.16.0.128"},
		{"first on every interface", []EgressSpec{entry("a", "", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "eth3", "10.16.0.7", "198.51.100.0/29")},
			"egress a comes first and translates them on every interface"},
		{"every interface second", []EgressSpec{entry("a", "eth3", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "", "10.16.0.0/24", "198.51.100.0/29")}, ""},
		{"wildcard first", []EgressSpec{entry("a", "wan*", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "wan0", "10.16.0.0/24", "198.51.100.0/29")}, "egress b never applies"},
		{"wildcard second", []EgressSpec{entry("a", "wan0", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "wan*", "10.16.0.0/24", "198.51.100.0/29")}, ""},
		{"pool of one is inside of another", []EgressSpec{entry("a", "eth2", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "eth3", "192.76.8.0/24", "198.51.100.0/29")},
			"192.76.8.0 is a public address of egress a and an inside host of egress b"},
		{"a shared pool", []EgressSpec{entry("a", "eth2", "10.16.0.0/24", "192.76.8.0/29"), entry("b", "eth3", "10.17.0.0/24", "192.76.8.0/29")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPlan(Spec{Egress: tt.egress})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestNewPlanRefusesEgressNamesThatCollideInTheKernel(t *testing.T) {
	es := EgressSpec{Private: []string{"10.16.0.0/24"}, Pool: []string{"192.76.8.0/29"}}
	a, b := es, es
	a.Name, b.Name = "isp-a", "isp_a"
	b.OIF = "eth1"
	_, err := NewPlan(Spec{Egress: []EgressSpec{a, b}})
	if err == nil || !strings.Contains(err.Error(), `"isp-a" and "isp_a" both become "isp_a"`) {
		t.Errorf("got %v", err)
	}
}

func TestOctetEduroamGivesFiveConsecutiveValuesPerAddress(t *testing.T) {
	e := mustPlan(t, EgressSpec{Private: []string{"10.16.0.0/12"}, Pool: []string{"192.76.8.1-192.76.8.51"},
		Strategy: "octet", Octets: "0-254"})
	m := e.Mapping.(*OctetMapping)
	for i, v := range m.Values {
		if v.Lo != uint32(5*i) || v.Hi != uint32(5*i+4) {
			t.Errorf("%s carries %s, want %d-%d", e.Pool[i].Addr, v, 5*i, 5*i+4)
		}
	}
	for _, tt := range []struct{ host, public string }{
		{"10.16.0.0", "192.76.8.1"}, {"10.16.0.4", "192.76.8.1"}, {"10.16.7.235", "192.76.8.48"},
		{"10.31.255.239", "192.76.8.48"}, {"10.20.1.254", "192.76.8.51"},
	} {
		if got := forward(t, e, tt.host).Public.String(); got != tt.public {
			t.Errorf("%s -> %s, want %s", tt.host, got, tt.public)
		}
	}
	if a, _, _ := e.lookup(netip.MustParseAddr("10.16.0.255"), 0, false); a.Kind != NoMapping || !strings.Contains(a.Reason, "outside octets 0-254") {
		t.Errorf("value 255 lookup: %+v", a)
	}
	r := e.report()
	if r.Hosts != 51*5*4096 || r.Unmapped != 4096 || r.Imbalance != 1 {
		t.Errorf("report: hosts %d unmapped %d imbalance %v", r.Hosts, r.Unmapped, r.Imbalance)
	}
}

func TestOctetWeightsSizeTheRanges(t *testing.T) {
	e := mustPlan(t, EgressSpec{Private: []string{"10.0.0.0/16"}, Pool: []string{"192.0.2.1=1", "192.0.2.2=3"}, Strategy: "octet"})
	got := e.Mapping.(*OctetMapping).Values
	want := []ValueRange{{0, 63}, {64, 255}}
	if !slices.Equal(got, want) {
		t.Errorf("values %v, want %v", got, want)
	}
}

func TestOctetActiveHostsBalanceDenseRanges(t *testing.T) {
	// Every active host has a last octet below 64: cutting the address space
	// evenly would put them all on the first of four addresses.
	var leases strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&leases, "10.0.%d.%d\n", i/64, i%64)
	}
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, []byte(leases.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	es := EgressSpec{Private: []string{"10.0.0.0/16"}, Pool: []string{"192.0.2.1-192.0.2.4"}, Strategy: "octet"}
	even := mustPlan(t, es).report()
	es.Hosts = path
	balanced := mustPlan(t, es).report()
	if even.ActiveImbalance != 0 || balanced.ActiveImbalance > 1.02 {
		t.Errorf("active imbalance %v with hosts file, want at most 1.02", balanced.ActiveImbalance)
	}
	if balanced.Active != 4000 {
		t.Errorf("active %d, want 4000", balanced.Active)
	}
}

func TestBlockGivesEachHostItsOwnPorts(t *testing.T) {
	e := mustPlan(t, EgressSpec{Private: []string{"100.64.0.0/10"}, Pool: []string{"198.18.0.0/20"},
		Strategy: "block", HostsPerIP: "1024"})
	for _, tt := range []struct{ host, public, ports string }{
		{"100.64.0.0", "198.18.0.0", "1024-1086"},
		{"100.64.0.1", "198.18.0.0", "1087-1149"},
		{"100.64.3.255", "198.18.0.0", "65473-65535"},
		{"100.64.4.0", "198.18.0.1", "1024-1086"},
		{"100.127.255.255", "198.18.15.255", "65473-65535"},
	} {
		a := forward(t, e, tt.host)
		if a.Public.String() != tt.public || a.Ports.String() != tt.ports {
			t.Errorf("%s -> %s ports %s, want %s ports %s", tt.host, a.Public, a.Ports, tt.public, tt.ports)
		}
	}
}

func TestBlockExcludedHostLeavesAHole(t *testing.T) {
	es := EgressSpec{Private: []string{"10.0.0.0/24"}, Pool: []string{"192.0.2.1-192.0.2.4"}, Strategy: "block", HostsPerIP: "64"}
	before := forward(t, mustPlan(t, es), "10.0.0.200")
	es.Exclude = []string{"10.0.0.5"}
	e := mustPlan(t, es)
	if after := forward(t, e, "10.0.0.200"); after.Public != before.Public || after.Ports != before.Ports {
		t.Errorf("excluding another host moved 10.0.0.200 from %+v to %+v", before, after)
	}
	hole := e.Mapping.(*BlockMapping).HostPorts(Uint32(netip.MustParseAddr("10.0.0.5"))).Lo // host 5's block on the first address
	a, ok, err := e.lookup(netip.MustParseAddr("192.0.2.1"), hole, true)
	if err != nil || !ok || a.Private.IsValid() {
		t.Errorf("the excluded host's block has owner %v (%v)", a.Private, err)
	}
}

// randomSpec returns a spec of one to three inside ranges and a pool of 2-64
// addresses drawn from rng, with the given strategy.
func randomSpec(rng *rand.Rand, strategy Strategy) EgressSpec {
	es := EgressSpec{Strategy: string(strategy)}
	base := uint32(10<<24) + rng.Uint32N(1<<20)<<4
	for range 1 + rng.IntN(3) {
		size := uint32(1) << (8 + rng.IntN(6))
		es.Private = append(es.Private, fmt.Sprintf("%s-%s", AddrFromUint32(base), AddrFromUint32(base+size-1)))
		base += size + rng.Uint32N(1024)
	}
	n := 2 + rng.IntN(63)
	first := uint32(198<<24|18<<16) + rng.Uint32N(1<<12)
	es.Pool = []string{fmt.Sprintf("%s-%s", AddrFromUint32(first), AddrFromUint32(first+uint32(n)-1))}
	if strategy == Block {
		es.HostsPerIP = "1024"
		es.Pool = []string{fmt.Sprintf("%s-%s", AddrFromUint32(first), AddrFromUint32(first+160))}
	}
	return es
}

func TestPropertiesOverRandomInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []Strategy{Octet, Hash, Persistent, Block} {
		for range 20 {
			es := randomSpec(rng, s)
			name := fmt.Sprintf("%s/%v/%v", s, es.Private, es.Pool)
			a, b := mustPlan(t, es), mustPlan(t, es)
			if fmt.Sprint(a.report()) != fmt.Sprint(b.report()) {
				t.Errorf("%s: the same spec gave two reports", name)
			}
			for range 50 {
				host := a.inside[rng.IntN(len(a.inside))]
				x := host.lo + rng.Uint32N(uint32(host.size()))
				checkRoundTrip(t, name, a, AddrFromUint32(x))
			}
		}
	}
}

// checkRoundTrip asserts that the public address of host lists host among
// its hosts, and in block mode that a port of host's block names host.
func checkRoundTrip(t *testing.T, name string, e *Egress, host netip.Addr) {
	t.Helper()
	f := forward(t, e, host.String())
	rev, _, _ := e.lookup(f.Public, 0, false)
	if !slices.ContainsFunc(rev.Ranges, func(r netipx.IPRange) bool { return r.Contains(host) }) {
		t.Errorf("%s: %s -> %s, whose hosts do not include it", name, host, f.Public)
	}
	if e.Strategy == Block {
		port := f.Ports.Lo + uint16(rand.IntN(f.Ports.Len()))
		owner, _, err := e.lookup(f.Public, port, true)
		if err != nil || owner.Private != host {
			t.Errorf("%s: %s:%d is owned by %v, want %s", name, f.Public, port, owner.Private, host)
		}
	}
}

func TestEqualWeightsAreWithinCeilOverFloor(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		n := 2 + rng.IntN(100)
		lo := rng.IntN(256 - n)
		hi := lo + n - 1 + rng.IntN(257-lo-n)
		e := mustPlan(t, EgressSpec{Private: []string{"10.0.0.0/16"}, Strategy: "octet", Octets: fmt.Sprintf("%d-%d", lo, hi),
			Pool: []string{fmt.Sprintf("192.0.2.0-%s", AddrFromUint32(Uint32(netip.MustParseAddr("192.0.2.0"))+uint32(n-1)))}})
		values := hi - lo + 1
		floor, ceil := values/n, (values+n-1)/n
		if got := e.report().Imbalance; got > float64(ceil)/float64(floor)+1e-9 {
			t.Errorf("%d addresses over octets %d-%d: imbalance %v above %d/%d", n, lo, hi, got, ceil, floor)
		}
	}
}

// A single value where a list goes is a list of one, and the JSON of a
// saved plan is read for its spec.
func TestSpecFileForms(t *testing.T) {
	for _, text := range []string{
		"egress:\n  - private: 10.16.0.0/24\n    pool: 192.76.8.1\n",
		`{"table": "natpool", "egress": [], "spec": {"egress": [{"private": ["10.16.0.0/24"], "pool": ["192.76.8.1"]}]}}`,
	} {
		spec, err := ParseSpec([]byte(text))
		if err != nil || len(spec.Egress) != 1 || !slices.Equal(spec.Egress[0].Private, []string{"10.16.0.0/24"}) || !slices.Equal(spec.Egress[0].Pool, []string{"192.76.8.1"}) {
			t.Errorf("%s: %+v %v", text, spec, err)
		}
	}
}

func TestSpecFile(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "egress:\n  - name: a\n    pool: [1.2.3.4]\n    colour: red\n", `:4: unknown key "colour"`},
		{"syntax error", "egress:\n  - name: a\n    pool: [1.2.3.4\n", ": line 2: did not find expected ','"},
		{"wrong type", "egress:\n  - name: a\n    pool: {a: 1}\n", ":3: pool must be a list"},
		{"list for a value", "egress:\n  - name: [a, b]\n", ":2: name must be a single value"},
		{"key twice", "egress:\n  - name: a\n    pool: [1.2.3.4]\n    name: b\n", `:4: key "name" is given twice (line 2 too)`},
		{"second document", "egress:\n  - name: a\n---\ntable: x\n", ":3: a second YAML document"},
		{"empty", "", "the spec is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "spec.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o644)
			_, err := LoadSpec(path)
			if err == nil || !strings.HasPrefix(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %s%s", err, path, tt.want)
			}
		})
	}
}

func TestSpecFileHostsAreRelativeToTheSpec(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "leases"), []byte("10.0.0.7,3\n# comment\n10.0.0.9\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "spec.yaml"), []byte("egress:\n  - private: [10.0.0.0/24]\n    pool: [192.0.2.1]\n    hosts: leases\n"), 0o644)
	spec, err := LoadSpec(filepath.Join(dir, "spec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(spec)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Report().Egress[0]; r.Active != 4 {
		t.Errorf("active %d, want 4", r.Active)
	}
}

func TestSpecFileJournalAndLogAreRelativeToTheSpec(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spec.yaml")
	os.WriteFile(path, []byte("journal: j\nlog: /var/log/natpool\negress:\n  - private: [10.0.0.0/24]\n    pool: [192.0.2.1]\n"), 0o644)
	spec, err := LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Journal != filepath.Join(dir, "j") || spec.Log != "/var/log/natpool" {
		t.Errorf("journal %q, log %q", spec.Journal, spec.Log)
	}
}

func TestNewPlanRefusesBadTableNames(t *testing.T) {
	es := EgressSpec{Private: []string{"10.16.0.0/24"}, Pool: []string{"192.76.8.0/29"}}
	for table, want := range map[string]string{
		strings.Repeat("n", 65): "is 65 characters long: at most 64",
		"nat pool":              "use letters, digits",
		"-natpool":              "starting with a letter",
	} {
		if _, err := NewPlan(Spec{Table: table, Egress: []EgressSpec{es}}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("table %q: %v, want an error saying %q", table, err, want)
		}
	}
}

// A plan that maps no host is refused; one that leaves public addresses
// idle says so.
func TestDegenerateOctetPlans(t *testing.T) {
	es := EgressSpec{Strategy: "octet", Private: []string{"10.16.0.0/24"}, Pool: []string{"192.76.8.0/29"}}
	wide := es
	wide.Bits = "16"
	p, err := NewPlan(Spec{Egress: []EgressSpec{wide}})
	if err != nil || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "7 of 8 public addresses carry no inside host") {
		t.Errorf("bits 16 on a /24: %v %q", err, p.Warnings)
	}
	none := es
	none.Private, none.Octets = []string{"10.16.0.0-10.16.0.99"}, "200-255"
	if _, err := NewPlan(Spec{Egress: []EgressSpec{none}}); err == nil || !strings.Contains(err.Error(), "octets 200-255 match no inside host") {
		t.Errorf("octets matching no host: %v", err)
	}
}
