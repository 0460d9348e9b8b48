package pool

import (
	"fmt"
	"strings"
	"testing"
)

// siteWithServices is a two-uplink site, each uplink with one address,
// and services.
func siteWithServices(services ...ServiceSpec) Spec {
	s := site("10.0.0.0/24", UplinksSpec{Policy: "balance"}, "192.0.2.1", "198.51.100.1")
	s.Services = services
	return s
}

func TestAServiceIsReachedAtEachUplinksAddressAndLookupNamesIt(t *testing.T) {
	p, err := NewPlan(siteWithServices(
		ServiceSpec{Name: "web", Protocol: "tcp", Inside: "10.0.0.250:8080", Public: []string{"ispa=192.0.2.1:80", "ispb=:443"}},
		ServiceSpec{Name: "rtp", Protocol: "udp", Inside: "10.0.0.251:10000-10099"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query string
		want  []string // service, egress, inside port range
	}{
		{"192.0.2.1:80", []string{"web ispa 8080-8080"}},
		{"198.51.100.1:443", []string{"web ispb 8080-8080"}},
		{"198.51.100.1:10042", []string{"rtp ispb 10042-10042"}},
		{"192.0.2.1:10000", []string{"rtp ispa 10000-10000"}},
		{"10.0.0.250", []string{"web ispa 8080-8080", "web ispb 8080-8080"}},
	} {
		answers, err := p.Lookup(c.query, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range answers {
			if a.Kind == ServiceAnswer {
				got = append(got, a.Service+" "+a.Egress+" "+a.Ports.String())
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("lookup %s: %v, want %v", c.query, got, c.want)
		}
	}
	// The record brings the services back.
	q, err := p.Record().Plan()
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Services) != 2 || q.Services[0].Public[1].Ports != (PortRange{443, 443}) {
		t.Errorf("from the record: %+v", q.Services)
	}
}

func TestServiceSpecErrorsNameTheValue(t *testing.T) {
	web := func(mod func(*ServiceSpec)) Spec {
		s := ServiceSpec{Name: "web", Protocol: "tcp", Inside: "10.0.0.250:80"}
		mod(&s)
		return siteWithServices(s)
	}
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{web(func(s *ServiceSpec) { s.Protocol = "sctp" }), `service web: protocol "sctp": want tcp or udp`},
		{web(func(s *ServiceSpec) { s.Inside = "10.0.0.250" }), `inside "10.0.0.250": want ADDR:PORT`},
		{web(func(s *ServiceSpec) { s.Inside = "10.0.0.250:70000" }), `port range "70000" is not LO-HI within 1-65535`},
		{web(func(s *ServiceSpec) { s.Inside = "fd00::1:80" }), `"fd00" is not an IPv4 address`},
		{web(func(s *ServiceSpec) { s.Public = []string{"ispa=2001:db8::1"} }), `public "ispa=2001:db8::1"`},
		{web(func(s *ServiceSpec) { s.Public = []string{"ispc"} }), `public "ispc": no egress entry is named "ispc"`},
		{web(func(s *ServiceSpec) { s.Public = []string{"ispa", "ispa"} }), "egress ispa is given twice"},
		{web(func(s *ServiceSpec) { s.Public = []string{"ispa=10.0.0.9"} }), "10.0.0.9 is an inside host of egress ispa"},
		{web(func(s *ServiceSpec) { s.Inside = "10.0.0.250:80-89"; s.Public = []string{"ispa=:8000-8009"} }), "ports 8000-8009 reach inside ports 80-89"},
		{web(func(s *ServiceSpec) { s.Public = []string{"ispa=:0"} }), `port range "0"`},
		{siteWithServices(ServiceSpec{Name: "a", Protocol: "tcp", Inside: "10.0.0.250:80"}, ServiceSpec{Name: "b", Protocol: "tcp", Inside: "10.0.0.251:8080", Public: []string{"ispb=:80"}}),
			"services a and b both take tcp 198.51.100.1:80"},
		{siteWithServices(ServiceSpec{Name: "a", Protocol: "udp", Inside: "10.0.0.250:80"}, ServiceSpec{Name: "a", Protocol: "tcp", Inside: "10.0.0.251:80"}),
			`service name "a" is used twice`},
		{web(func(s *ServiceSpec) { s.Name = "" }), "service 1: service name"},
	} {
		if _, err := NewPlan(c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
	// A pool of several addresses has no one address to default to.
	s := siteWithServices(ServiceSpec{Name: "web", Protocol: "tcp", Inside: "10.0.0.250:80"})
	s.Egress[0].Pool = []string{"192.0.2.0/29"}
	if _, err := NewPlan(s); err == nil || !strings.Contains(err.Error(), "egress ispa has 8 pool addresses: give the service's (ispa=ADDR)") {
		t.Errorf("%v", err)
	}
}

func TestServiceChurnNamesWhatIsAddedRemovedAndChanged(t *testing.T) {
	web := ServiceSpec{Name: "web", Protocol: "tcp", Inside: "10.0.0.250:80"}
	mail := ServiceSpec{Name: "mail", Protocol: "tcp", Inside: "10.0.0.251:25"}
	dns := ServiceSpec{Name: "dns", Protocol: "udp", Inside: "10.0.0.252:53"}
	moved := web
	moved.Inside = "10.0.0.249:80"
	old, err := NewPlan(siteWithServices(web, mail))
	if err != nil {
		t.Fatal(err)
	}
	new, err := NewPlan(siteWithServices(moved, dns))
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(ServiceChurn(old, new))
	if want := "[{web changed} {dns added} {mail removed}]"; got != want {
		t.Errorf("churn %s, want %s", got, want)
	}
	if c := ServiceChurn(old, old); len(c) != 0 {
		t.Errorf("churn of a plan against itself: %v", c)
	}
}
