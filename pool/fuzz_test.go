package pool

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oneLine fails the test unless err is a single line: natpool's errors are
// printed as one.
func oneLine(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error of more than one line: %q", err)
	}
}

func FuzzParseSpec(f *testing.F) {
	specs, _ := filepath.Glob("../testdata/*.yaml")
	for _, path := range specs {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"spec": {"egress": [{"private": ["10.0.0.0/24"], "pool": ["192.0.2.1=2"]}]}}`))
	f.Add([]byte("egress:\n  - &e {private: 10.0.0.0/24, pool: 192.0.2.1}\n  - *e\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseSpec(data)
		oneLine(t, err)
		if err != nil {
			return
		}
		// Plan what is small enough to plan quickly, without files.
		for i := range spec.Egress {
			e := &spec.Egress[i]
			e.Hosts = ""
			for _, list := range [][]string{e.Private, e.Pool, e.Exclude} {
				for _, s := range list {
					addrs, _, _ := strings.Cut(s, "=")
					if r, err := ParseRange(addrs); err != nil || spanOf(r).size() > 1<<12 {
						return
					}
				}
			}
		}
		_, err = NewPlan(spec)
		oneLine(t, err)
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"10.16.0.0/12", "10.16.0.1-10.16.0.9", "192.0.2.1", "10.16.0.1/12", "::1", "1.2.3.4-1.2.3.3", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		oneLine(t, err)
		if err != nil {
			return
		}
		if r.To().Less(r.From()) || !r.From().Is4() {
			t.Fatalf("%q parses as %v", s, r)
		}
		back, err := ParseRange(fmt.Sprintf("%s-%s", r.From(), r.To()))
		if err != nil || back != r {
			t.Errorf("%q: %v does not round-trip: %v %v", s, r, back, err)
		}
	})
}

func FuzzParsePoolEntry(f *testing.F) {
	for _, s := range []string{"192.76.8.0/26", "192.76.9.1=2", "192.76.8.1-192.76.8.51=1000", "1.2.3.4=0", "1.2.3.4==2", "=3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		entries, err := parseDisjoint("pool", []string{s})
		oneLine(t, err)
		if err == nil && (len(entries) != 1 || entries[0].weight < 1 || entries[0].weight > 1000) {
			t.Errorf("%q parses as %+v", s, entries)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"10.16.3.7", "198.18.3.7:40123", "198.18.3.7:0", "::1", "[::1]:80", "1.2.3.4:65536", "1.2.3.4:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, port, hasPort, err := ParseQuery(s)
		oneLine(t, err)
		if err != nil {
			return
		}
		if addr.Is6() { // an IPv6 address, as written, without a port
			if a, err := netip.ParseAddr(s); err != nil || a != addr || hasPort {
				t.Errorf("%q parses as %s port %d (%v)", s, addr, port, hasPort)
			}
			return
		}
		want := addr.String()
		if hasPort {
			want = netip.AddrPortFrom(addr, port).String()
		}
		if !addr.Is4() || (hasPort && port == 0) || want != s {
			t.Errorf("%q parses as %s port %d (%v)", s, addr, port, hasPort)
		}
	})
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"1024-65535", "80", "0-1", "2000-1999", "1-65536", "-5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortRange(s)
		oneLine(t, err)
		if err == nil && (p.Lo == 0 || p.Hi < p.Lo) {
			t.Errorf("%q parses as %v", s, p)
		}
	})
}

func FuzzParseHosts(f *testing.F) {
	for _, s := range []string{"10.16.0.1\n10.16.0.2,3 # printer\n", "\uFEFF# leases\n10.16.1.1\r\n", "10.16.0.1\n10.16.0.1\n", "10.17.0.1\n", "10.16.0.1,99999999999\n", ""} {
		f.Add([]byte(s))
	}
	inside := insideOf(f, "10.16.0.0/16")
	f.Fuzz(func(t *testing.T, data []byte) {
		seen := map[uint32]bool{}
		err := parseHosts(bytes.NewReader(data), "leases", inside, func(x uint32, _ uint64) {
			if seen[x] || !inside.Contains(AddrFromUint32(x)) {
				t.Fatalf("host %s passed twice or from outside", AddrFromUint32(x))
			}
			seen[x] = true
		})
		oneLine(t, err)
	})
}

// FuzzStrategyOptions plans a small entry with fuzzed strategy options: a
// plan is refused with one line, or every inside host looks up to an
// address of the pool whose reverse lookup names it.
func FuzzStrategyOptions(f *testing.F) {
	f.Add("octet", "8", "1-254", "", "", "", "", "")
	f.Add("hash", "", "", "64", "0x1234abcd", "", "", "2000-3000")
	f.Add("block", "", "", "", "", "64", "", "")
	f.Add("block", "", "", "", "", "", "700", "1024-65535")
	f.Add("persistent", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, strategy, bits, octets, buckets, seed, hostsPerIP, blockSize, ports string) {
		es := EgressSpec{Private: []string{"10.16.0.0/24", "10.16.1.7-10.16.1.90"}, Pool: []string{"192.76.8.0/28"}, Exclude: []string{"10.16.0.9"},
			Strategy: strategy, Bits: bits, Octets: octets, Buckets: buckets, Seed: seed, HostsPerIP: hostsPerIP, BlockSize: blockSize, Ports: ports}
		p, err := NewPlan(Spec{Egress: []EgressSpec{es}})
		oneLine(t, err)
		if err != nil {
			return
		}
		e := p.Egress[0]
		for h := range e.Hosts() {
			if !e.Carries(h.Public) || !e.Ports.Contains(h.Ports.Lo) || !e.Ports.Contains(h.Ports.Hi) {
				t.Fatalf("%s -> %s ports %s: not in the pool and port range", h.Addr, h.Public, h.Ports)
			}
		}
	})
}
