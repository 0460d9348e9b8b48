package pool

import (
	"fmt"
	"strings"
	"testing"

	"go4.org/netipx"
)

func insideOf(t testing.TB, ranges ...string) *netipx.IPSet {
	t.Helper()
	var b netipx.IPSetBuilder
	for _, s := range ranges {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		b.AddRange(r)
	}
	set, _ := b.IPSet()
	return set
}

func TestHostsFile(t *testing.T) {
	inside := insideOf(t, "10.16.0.0/24")
	tests := []struct {
		name, text string
		hosts      int    // hosts read, when it parses
		err        string // else the error names this
	}{
		{"comments and counts", "# leases\n10.16.0.1\n\n10.16.0.2,3  # a printer\n", 4, ""},
		{"byte order mark", "\uFEFF10.16.0.1\n10.16.0.2\n", 2, ""},
		{"windows line ends", "10.16.0.1\r\n10.16.0.2\r\n", 2, ""},
		{"listed twice", "10.16.0.1\n10.16.0.2\n10.16.0.1\n", 0, "leases:3: 10.16.0.1 is listed twice"},
		{"outside", "10.16.0.1\n10.17.0.1\n", 0, "leases:2: 10.17.0.1 is not a mapped inside host"},
		{"bad count", "10.16.0.1,x\n", 0, `leases:1: count "x"`},
		{"not an address", "10.16.0\n", 0, `leases:1: "10.16.0" is not an IPv4 address`},
		{"a range, each host once", "10.16.0.1-10.16.0.4\n10.16.0.8/30,2\n", 12, ""},
		{"a range over a host listed", "10.16.0.3\n10.16.0.1-10.16.0.4\n", 0, "leases:2: 10.16.0.3 is listed twice"},
		{"a range leaving the inside", "10.16.0.250-10.16.1.3\n", 0, "leases:1: 10.16.1.0 is not a mapped inside host"},
		{"empty", "# nothing yet\n\n", 0, "hosts file leases lists no hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := 0
			err := parseHosts(strings.NewReader(tt.text), "leases", inside, func(_ uint32, n uint64) { hosts += int(n) })
			switch {
			case tt.err == "" && (err != nil || hosts != tt.hosts):
				t.Errorf("read %d hosts, %v; want %d", hosts, err, tt.hosts)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("error %v, want one naming %q", err, tt.err)
			}
		})
	}
}

// What a plan records of a hosts file reads back as the same hosts.
func TestHostsDataReadsBackAsTheHosts(t *testing.T) {
	inside := insideOf(t, "10.16.0.0/16")
	text := "10.16.0.1\n10.16.0.2\n10.16.0.3\n10.16.0.9,4\n10.16.0.10\n10.16.3.0/30\n10.16.7.7,2\n"
	var read activeHosts
	add := func(x uint32, n uint64) { read = append(read, activeHost{x, uint32(n)}) }
	if err := parseHosts(strings.NewReader(text), "leases", inside, add); err != nil {
		t.Fatal(err)
	}
	data := read.lines()
	back, err := loadHosts(EgressSpec{HostsData: data}, inside)
	if err != nil || fmt.Sprint(back) != fmt.Sprint(read) {
		t.Errorf("hosts-data %q read back as %v (%v), want %v", data, back, err, read)
	}
	if want := "[10.16.0.1-10.16.0.3 10.16.0.9,4 10.16.0.10 10.16.3.0-10.16.3.3 10.16.7.7,2]"; fmt.Sprint(data) != want {
		t.Errorf("hosts-data %q, want %s", data, want)
	}
}
