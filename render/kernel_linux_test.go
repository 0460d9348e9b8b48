package render

import (
	"bytes"
	"cmp"
	"io"
	"strings"
	"testing"

	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
)

// translationCases cover every strategy over more than a thousand inside
// hosts, with exclusions, unmapped values, a weighted address, a narrowed
// port range and port blocks both aligned and not.
var translationCases = []struct {
	name    string
	spec    pool.EgressSpec
	nftOnly bool // too many hosts for iptables' per-host rules, walked in order
}{
	{"octet", pool.EgressSpec{Strategy: "octet", Octets: "0-254",
		Private: []string{"10.16.0.0/22", "10.20.0.0-10.20.0.99"}, Pool: []string{"192.76.8.1-192.76.8.51"}}, false},
	{"octet-ports", pool.EgressSpec{Strategy: "octet", Ports: "2000-3000",
		Private: []string{"10.16.0.0/22"}, Pool: []string{"192.76.8.0/29"}, Exclude: []string{"192.76.8.0", "10.16.1.7"}}, false},
	{"hash", pool.EgressSpec{Strategy: "hash", Buckets: "64", Seed: "0xdecafbad",
		Private: []string{"10.16.0.0/22", "10.20.0.0-10.20.0.99"}, Pool: []string{"192.76.8.1-192.76.8.7", "192.76.9.1=3"}}, false},
	{"persistent", pool.EgressSpec{Strategy: "persistent",
		Private: []string{"10.16.0.0/22"}, Pool: []string{"192.76.8.0/26"}, Exclude: []string{"192.76.8.0", "192.76.8.63"}}, false},
	{"block", pool.EgressSpec{Strategy: "block", HostsPerIP: "64",
		Private: []string{"10.16.0.0/22"}, Pool: []string{"192.76.8.0/28"}, Exclude: []string{"10.16.2.2"}}, false},
	{"block-unaligned", pool.EgressSpec{Strategy: "block", BlockSize: "1000",
		Private: []string{"10.16.0.5-10.16.4.4"}, Pool: []string{"192.76.8.0/28"}}, false},
	// Windows cut two ways: two groups of 63-port blocks, or one of 31.
	{"block-mixed-groups", pool.EgressSpec{Strategy: "block",
		Private: []string{"100.64.0.0/16"}, Pool: []string{"198.18.0.0/26"}, Exclude: []string{"198.18.0.0"}}, true},
	// "uplink*" is a wildcard: nft's, and iptables' "uplink+".
	{"wildcard-oif", pool.EgressSpec{Strategy: "octet", OIF: netnstest.Uplink[:len(netnstest.Uplink)-1] + "*",
		Private: []string{"10.16.0.0/22"}, Pool: []string{"192.76.8.0/29"}}, false},
}

// Every format of every case, loaded into a namespace with an uplink:
// packets from every inside host (and the excluded and unmapped ones) leave
// with the public address `natpool lookup` predicts, and with a source port
// inside the host's block or the egress port range.
func TestRenderedRulesetsTranslateAsPlanned(t *testing.T) {
	netnstest.Require(t, "nft", "iptables-restore", "ipset", "conntrack")
	for _, c := range translationCases {
		c.spec.OIF = cmp.Or(c.spec.OIF, netnstest.Uplink)
		p := plan(t, c.spec)
		hosts := netnstest.Hosts(p)
		for _, format := range []string{"nft", "nft-json", "iptables"} {
			if format == "nft-json" && c.spec.Strategy == "block" || format != "nft" && c.nftOnly {
				continue // refused: see TestFormatsRefuseWhatTheyCannotCarry
			}
			t.Run(c.name+"/"+format, func(t *testing.T) {
				ns := netnstest.New(t)
				ns.AddUplink()
				load(t, ns, p, format)
				dropped := ns.SendUDP(hosts, 40000)
				// iptables cannot drop after source NAT: only nft carries the guard.
				if n := netnstest.CheckFlows(t, p, hosts, ns.Flows(), dropped, format != "iptables"); n < 1000 {
					t.Errorf("checked %d flows, want at least 1000", n)
				}
			})
		}
	}
}

func load(t *testing.T, ns *netnstest.NS, p *pool.Plan, format string) {
	t.Helper()
	text := func(format string) string {
		var b bytes.Buffer
		if err := Ruleset(&b, io.Discard, p, format, Options{Version: version}); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	switch format {
	case "nft":
		ns.MustRun(text(format), "nft", "-f", "-")
	case "nft-json":
		ns.MustRun(text(format), "nft", "-j", "-f", "-")
	case "iptables":
		if p.Egress[0].Strategy == pool.Hash {
			ns.MustRun(text("ipset"), "ipset", "restore")
		}
		ns.MustRun(text(format), "iptables-restore", "--noflush")
	}
}

// Every golden ruleset loads with the kernel's own tools in a scratch
// namespace: nft -c, nft -j -c (a crash fails too), iptables-restore --test
// after ipset restore of the sets it matches.
func TestRenderedRulesetsLoad(t *testing.T) {
	ns := netnstest.New(t, "nft", "iptables-restore", "ipset")
	out := rendered(t)
	for _, c := range cases {
		if text, ok := out[c.name+".ipset"]; ok {
			ns.MustRun(text, "ipset", "restore")
		}
	}
	for name, text := range out {
		var args []string
		switch {
		case strings.HasSuffix(name, ".nft"):
			args = []string{"nft", "-c", "-f", "-"}
		case strings.HasSuffix(name, ".nft.json"):
			args = []string{"nft", "-j", "-c", "-f", "-"}
		case strings.HasSuffix(name, ".iptables"):
			args = []string{"iptables-restore", "--test", "--noflush"}
		default:
			continue
		}
		if msg, err := ns.Run(text, args[0], args[1:]...); err != nil {
			t.Errorf("%s does not load with %s: %v\n%s", name, strings.Join(args, " "), err, msg)
		}
	}
}

// nft text and nft JSON are one ruleset: loaded in turn, they list alike.
// Port blocks are the exception by design: nft text carries them per host,
// nft JSON in the compact encoding, whose translations the kernel tests check
// with packets.
func TestNFTAndNFTJSONLoadTheSameTable(t *testing.T) {
	ns := netnstest.New(t, "nft")
	out := rendered(t)
	// A site with uplinks and services too.
	site, err := pool.PlanFile("../testdata/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"nft", "nft-json"} {
		var b bytes.Buffer
		if err := Ruleset(&b, io.Discard, site, format, Options{Version: version}); err != nil {
			t.Fatal(err)
		}
		out["site."+extensions[format]] = b.String()
	}
	for _, c := range append(cases, struct {
		name string
		spec pool.EgressSpec
	}{"site", pool.EgressSpec{}}) {
		if c.spec.Strategy == "block" {
			continue
		}
		text, js := out[c.name+".nft"], out[c.name+".nft.json"]
		ns.MustRun(text, "nft", "-f", "-")
		fromText := ns.MustRun("", "nft", "list", "table", "ip", "natpool")
		ns.MustRun(js, "nft", "-j", "-f", "-")
		fromJSON := ns.MustRun("", "nft", "list", "table", "ip", "natpool")
		if fromText != fromJSON {
			t.Errorf("%s: nft and nft-json list differently:\n%s", c.name, UnifiedDiff("nft", "nft-json", fromText, fromJSON))
		}
		ns.MustRun("", "nft", "delete", "table", "ip", "natpool")
	}
}
