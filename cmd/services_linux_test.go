package cmd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/netnstest"
)

// The services of the test site: a TCP service whose public port 80
// reaches the server's 8080, and a UDP echo at the same port outside and
// in, each at both uplinks' own addresses.
const siteServices = `services:
  - {name: web, protocol: tcp, inside: "10.0.0.250:8080", public: ["isp0=192.0.2.1:80", "isp1=192.0.3.1:80"]}
  - {name: echo, protocol: udp, inside: "10.0.0.250:7", public: ["isp0=192.0.2.1", "isp1=192.0.3.1"]}
`

// A service is reached at each uplink's address, from a client behind
// that ISP, and answers from that address through that ISP although the
// box's default route prefers the other; inside hosts reach it at a public
// address too (hairpin). With ISP 0 broken and watch failing its hosts
// over, ISP 1's clients keep their connections and make new ones.
func TestServicesAnswerThroughTheUplinkTheyWereReachedBy(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	s := netnstest.NewSite(t, sitePools[:2]...)
	server, hairpinClient := netip.MustParseAddr("10.0.0.250"), netip.MustParseAddr("10.0.0.7")
	for _, a := range []netip.Addr{server, hairpinClient} {
		s.LAN.MustRun("", "ip", "addr", "add", a.String()+"/32", "dev", "host0")
	}
	// A client behind each ISP: the internet routes each uplink's network
	// through its ISP.
	clients := []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.2.1")}
	publics := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.3.1")}
	for _, c := range clients {
		s.Net.MustRun("", "ip", "addr", "add", c.String()+"/32", "dev", "lo")
	}
	// The internet counts what arrives from each public address by the
	// ISP it came through.
	var seen strings.Builder
	seen.WriteString("table ip seen {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n")
	for i := range 2 {
		for _, a := range publics {
			fmt.Fprintf(&seen, "\t\tiifname \"isp%d\" ip saddr %s counter comment \"isp%d %s\"\n", i, a, i, a)
		}
	}
	seen.WriteString("\t}\n}\n")
	s.Net.MustRun(seen.String(), "nft", "-f", "-")
	serveTCP(t, s.LAN, netip.AddrPortFrom(server, 8080))
	serveUDPEcho(t, s.LAN, netip.AddrPortFrom(server, 7))

	spec := siteSpec(t, 2, "{policy: balance}", fmt.Sprintf(`{targets: ["icmp:%s", "tcp:%s:443", "dns:%s"], interval: 500ms, down: 4, up: 4}`,
		netnstest.Target, netnstest.Target, netnstest.DNSServer))
	text, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, spec, string(text)+siteServices)
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name)
	if out := must(t, 0, "status", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal); !strings.Contains(out, "in sync") {
		t.Errorf("status:\n%s", out)
	}
	for i, pub := range publics {
		if out := must(t, 0, "lookup", "-f", spec, pub.String()+":80"); out != fmt.Sprintf("[isp%d] tcp %s:80 -> 10.0.0.250:8080: service web\n", i, pub) {
			t.Errorf("lookup %s:80: %q", pub, out)
		}
	}

	// Each client through its own ISP, to its address; the server sees
	// the client itself.
	kept := make([]net.Conn, 2)
	for i, c := range clients {
		conn, seenAs := dialService(t, s.Net, c, netip.AddrPortFrom(publics[i], 80))
		if seenAs != c {
			t.Errorf("client %s through ISP %d: the server saw %s", c, i, seenAs)
		}
		kept[i] = conn
		echoUDP(t, s.Net, c, netip.AddrPortFrom(publics[i], 7))
	}
	// Hairpin: an inside host at either public address.
	for _, pub := range publics {
		conn, seenAs := dialService(t, s.LAN, hairpinClient, netip.AddrPortFrom(pub, 80))
		conn.Close()
		if seenAs == hairpinClient {
			t.Errorf("hairpin to %s: the server saw the inside host itself, and would answer it directly", pub)
		}
		echoUDP(t, s.LAN, hairpinClient, netip.AddrPortFrom(pub, 7))
	}
	checkSeen := func() {
		t.Helper()
		counts := nftCounters(t, s.Net, "ip", "seen")
		t.Logf("packets the internet saw, by ISP and source: %v", counts)
		for i := range 2 {
			for j, a := range publics {
				n := counts[fmt.Sprintf("isp%d %s", i, a)]
				if (i == j) != (n > 0) {
					t.Errorf("%d packets from %s came through ISP %d", n, a, i)
				}
			}
		}
		if wrong := s.WrongSources(); wrong[0] != 0 || wrong[1] != 0 {
			t.Errorf("packets with a source not the ISP's, by ISP: %v", wrong)
		}
	}
	checkSeen()

	// ISP 0 breaks: ISP 1's client keeps its connection and makes new ones.
	s.Blackhole(0, true)
	w.waitLog(t, 10*time.Second, "uplink isp0 (wan0) is down")
	time.Sleep(time.Second) // past the failover's flush
	if err := roundTrip(kept[1]); err != nil {
		t.Errorf("ISP 1's connection after ISP 0 broke: %v", err)
	}
	conn, _ := dialService(t, s.Net, clients[1], netip.AddrPortFrom(publics[1], 80))
	conn.Close()
	echoUDP(t, s.Net, clients[1], netip.AddrPortFrom(publics[1], 7))
	checkSeen()
	for _, c := range kept {
		c.Close()
	}

	// A service rule that is gone is drift.
	w.stop()
	s.Box.MustRun("", "nft", "flush", "chain", "ip", "natpool", compiler.ServiceChain)
	if out := must(t, 1, "status", "-f", spec, "--netns", s.Box.Name, "--journal", w.journal); !strings.Contains(out, "chain services") {
		t.Errorf("status with the services chain flushed:\n%s", out)
	}
}

// serveTCP answers each line a connection to addr in ns sends with the
// address the connection came from, until the test ends.
func serveTCP(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	var l net.Listener
	if err := linux.Within(ns.Name, func() (err error) {
		l, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
					if _, err := io.WriteString(c, from.String()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// serveUDPEcho sends back what reaches addr in ns, until the test ends.
func serveUDPEcho(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	c := ns.ListenUDP(addr)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
}

// dialService connects from src in ns to a service and returns the
// connection and the address the server saw it from.
func dialService(t *testing.T, ns *netnstest.NS, src netip.Addr, dst netip.AddrPort) (net.Conn, netip.Addr) {
	t.Helper()
	var c net.Conn
	if err := linux.Within(ns.Name, func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 3 * time.Second}
		c, err = d.Dial("tcp4", dst.String())
		return err
	}); err != nil {
		t.Fatalf("from %s to %s: %v", src, dst, err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	io.WriteString(c, "hello\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("from %s to %s: %v", src, dst, err)
	}
	return c, netip.MustParseAddr(strings.TrimSpace(line))
}

// roundTrip sends a line on a service connection and reads the answer.
func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "again\n"); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

// echoUDP sends a datagram from src in ns to a UDP echo service and waits
// for the answer from dst itself (a connected socket takes no other).
func echoUDP(t *testing.T, ns *netnstest.NS, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := linux.Within(ns.Name, func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 { // UDP: a first packet may meet an ARP resolution
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return
		}
	}
	t.Errorf("no UDP echo from %s to %s", src, dst)
}

// nftCounters reads the packets of each counted rule of a table of family
// in ns, by the rule's comment.
func nftCounters(t *testing.T, ns *netnstest.NS, family, table string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, line := range strings.Split(ns.MustRun("", "nft", "list", "table", family, table), "\n") {
		_, comment, ok := strings.Cut(line, `comment "`)
		i := strings.Index(line, "packets ")
		if !ok || i < 0 {
			continue
		}
		var n int
		fmt.Sscanf(line[i:], "packets %d", &n)
		out[strings.TrimSuffix(comment, `"`)] = n
	}
	return out
}

// A node of a cluster carries the services too: apply --node loads them,
// and status compares them.
func TestServicesLoadOnANodeOfACluster(t *testing.T) {
	keepHostState(t)
	text, err := os.ReadFile("../testdata/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(t.TempDir(), "cluster.yaml")
	writeFile(t, spec, string(text)+`services:
  - {name: web, protocol: tcp, inside: "100.64.0.80:80", public: ["isp=198.51.100.1"]}
`)
	ns := netnstest.New(t, "nft")
	ipIn(t, ns, "link", "set", "lo", "up")
	args := []string{"-f", spec, "--node", "nat1", "--netns", ns.Name, "--journal", filepath.Join(t.TempDir(), "journal")}
	must(t, 0, append([]string{"apply"}, args...)...)
	must(t, 0, append([]string{"status"}, args...)...)
	if chain := ns.MustRun("", "nft", "list", "chain", "ip", "natpool", compiler.ServiceChain); !strings.Contains(chain, "ip daddr 198.51.100.1 tcp dport 80 dnat to 100.64.0.80") {
		t.Errorf("the services chain of node nat1:\n%s", chain)
	}
	// Their replies leave from the node that sent the connection on.
	if chain := ns.MustRun("", "nft", "list", "chain", "ip", "natpool", compiler.SteerChain); !strings.Contains(strings.SplitN(chain, "\n", 5)[3], "ct direction reply accept") {
		t.Errorf("the steer chain of node nat1 does not begin by leaving replies alone:\n%s", chain)
	}
	if text := must(t, 0, append([]string{"render"}, args[:4]...)...); !strings.Contains(text, "ct direction reply accept") {
		t.Errorf("render --node:\n%s", text)
	}
}
