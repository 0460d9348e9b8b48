package pool

import (
	"net/netip"
	"strings"
	"testing"
)

func TestIPv6PrefixTranslationKeepsTheInterfaceIdentifierBothWays(t *testing.T) {
	s := site("10.0.0.0/24", UplinksSpec{}, "192.0.2.1", "198.51.100.1")
	s.Uplinks = UplinksSpec{Policy: "balance"}
	s.Egress[0].Private6, s.Egress[0].Pool6 = []string{"fd00:1::/64", "fd00:2::/60"}, []string{"2001:db8:a::/64", "2001:db8:b0::/60"}
	s.Egress[1].Private6, s.Egress[1].Pool6 = []string{"fd00:1::/64"}, []string{FromInterface}
	p, err := NewPlan(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ query, want string }{
		{"fd00:1::a5", "ispa fd00:1::a5 2001:db8:a::a5; ispb fd00:1::a5 invalid IP"},
		{"2001:db8:a::a5", "ispa fd00:1::a5 2001:db8:a::a5"},
		{"fd00:2:0:7:1:2:3:4", "ispa fd00:2:0:7:1:2:3:4 2001:db8:b0:7:1:2:3:4"},
		{"2001:db8:b0:9::1", "ispa fd00:2:0:9::1 2001:db8:b0:9::1"},
	} {
		answers, err := p.Lookup(c.query, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range answers {
			got = append(got, a.Egress+" "+a.Private.String()+" "+a.Public.String())
		}
		if strings.Join(got, "; ") != c.want {
			t.Errorf("lookup %s: %q, want %q", c.query, strings.Join(got, "; "), c.want)
		}
	}
	if a, _ := p.Lookup("2001:db8:ff::1", ""); a[0].Kind != NoMapping {
		t.Errorf("an address of no prefix: %+v", a)
	}
	// Known, the uplink's address gives the prefix of the inside's length.
	n := p.Egress[1].NPT[0].WithPublic(netip.MustParseAddr("2001:db8:c::1"))
	if n.Public != netip.MustParsePrefix("2001:db8:c::/64") || n.Out(netip.MustParseAddr("fd00:1::a5")) != netip.MustParseAddr("2001:db8:c::a5") {
		t.Errorf("from the interface: %+v", n)
	}
	q, err := p.Record().Plan()
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Egress[0].NPT) != 2 || !q.Egress[1].NPT[0].FromInterface {
		t.Errorf("from the record: %+v %+v", q.Egress[0].NPT, q.Egress[1].NPT)
	}
}

func TestIPv6SpecErrorsNameTheValue(t *testing.T) {
	v6 := func(private6, pool6 []string, mod ...func(*EgressSpec)) Spec {
		s := Spec{Egress: []EgressSpec{{Name: "isp", OIF: "wan0", Private: []string{"10.0.0.0/24"}, Pool: []string{"192.0.2.1"}, Private6: private6, Pool6: pool6}}}
		for _, m := range mod {
			m(&s.Egress[0])
		}
		return s
	}
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{v6([]string{"fd00:1::/64", "10.1.0.0/16"}, []string{"2001:db8:a::/64"}), `private6 "10.1.0.0/16" is IPv4 in a list of IPv6 prefixes: IPv4 goes in private`},
		{v6([]string{"fd00:1::/64"}, []string{"192.0.2.0/24"}), `pool6 "192.0.2.0/24" is IPv4 in a list of IPv6 prefixes: IPv4 goes in pool`},
		{v6(nil, nil, func(e *EgressSpec) { e.Private = []string{"10.0.0.0/24", "fd00::/64"} }), `"fd00::/64" is IPv6 in a list of IPv4: IPv6 prefixes go in private6 and pool6`},
		{v6([]string{"fd00:1::/64"}, []string{"2001:db8:a::/56"}), `pool6 "2001:db8:a::/56" is a /56 for private6 fd00:1::/64, a /64`},
		{v6([]string{"fd00:1::/64"}, []string{"2001:db8:a::/64", "2001:db8:b::/64"}), "1 private6 prefixes and 2 pool6 prefixes"},
		{v6([]string{"fd00:1::1/64"}, []string{"2001:db8:a::/64"}), `private6 "fd00:1::1/64" has host bits set: the prefix is fd00:1::/64`},
		{v6([]string{"fd00:1::/96"}, []string{"2001:db8:a::/96"}), `private6 "fd00:1::/96": a prefix of /1 to /64`},
		{v6([]string{"fd00:1::/64", "fd00:1::/48"}, []string{"2001:db8:a::/64", "2001:db8::/48"}), `private6 "fd00:1::/48" overlaps fd00:1::/64`},
		{v6([]string{"fd00:1::/64"}, []string{"fd00:1::/64"}), `pool6 "fd00:1::/64" overlaps private6 fd00:1::/64`},
		{v6(nil, []string{"2001:db8:a::/64"}), "pool6 without private6"},
		{v6([]string{"fd00:1::/64", "fd00:2::/64"}, []string{FromInterface}), "give one private6 prefix, not 2"},
		{v6([]string{"fd00:1::/64"}, []string{FromInterface}, func(e *EgressSpec) { e.OIF = "" }), "pool6 from-interface reads the uplink's address: give oif"},
		{v6([]string{"fd00:1::/64"}, []string{"nonsense"}), `pool6 "nonsense" is not an IPv6 prefix`},
	} {
		if _, err := NewPlan(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
}
