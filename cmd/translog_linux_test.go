package cmd

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler/netnstest"
)

// seen is a packet as the upstream saw it: from the public address and
// port, to the destination, sent by the inside host its payload names.
type seen struct {
	public, dst netip.AddrPort
	host        netip.Addr
	at          time.Time
}

// 500 hosts of a /16 leave through a hash plan onto 8 addresses, each to 3
// destinations, half of them from one source port to all three, so that
// public ports are shared by hosts at once. Each of 200 packets, as the
// upstream saw it (public address and port, time, destination), is
// answered from watch's translation log with exactly the inside host and
// port that sent it; without the destination, every host that had the
// port then is listed. The IPFIX collector nfcapd, on loopback, got every
// translation's creation, with the log's inside, public and time.
func TestTheTranslationLogNamesTheHostOfEveryPublicPort(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack", "nfcapd", "nfdump")
	s := netnstest.NewSite(t, sitePools[0])
	spec := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, spec, fmt.Sprintf("egress:\n  - name: isp0\n    oif: wan0\n    private: [10.0.0.0/16]\n    pool: [%s]\n    strategy: hash\n", sitePools[0]))
	logDir := filepath.Join(t.TempDir(), "log")
	collector := startCollector(t)
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", logDir, "--ipfix", collector.addr)
	w.waitLog(t, 5*time.Second, "logging translations in "+logDir)
	// The queries' slack (1s) must not reach back before the log began:
	// that would be a time it does not cover, and an incomplete answer.
	time.Sleep(1200 * time.Millisecond)

	dsts := []netip.AddrPort{netip.AddrPortFrom(netnstest.Target, 10), netip.AddrPortFrom(netnstest.Target, 11), netip.AddrPortFrom(netnstest.DNSServer.Addr(), 12)}
	var mu sync.Mutex
	var arrived []seen
	for _, d := range dsts {
		c := s.Net.ListenUDP(d)
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if n >= 4 {
					mu.Lock()
					arrived = append(arrived, seen{public: from, dst: d, host: netip.AddrFrom4([4]byte(buf[:4])), at: time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(7, 8))
	hosts := map[netip.Addr]bool{}
	for len(hosts) < 500 {
		hosts[netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(255)), byte(1 + r.IntN(254))})] = true
	}
	// port[host][destination] is the source port the host used to it: few
	// ports, so that hosts of one address collide on them.
	port := map[netip.Addr][]uint16{}
	for h := range hosts {
		if h == netip.MustParseAddr("10.0.255.1") { // the box's own LAN address
			continue
		}
		ps := make([]uint16, len(dsts))
		for i := range ps {
			ps[i] = uint16(40000 + r.IntN(8))
			if len(port)%2 == 0 {
				ps[i] = ps[0]
			}
		}
		port[h] = ps
	}
	// A hundred packets at a time, each lot received before the next: a
	// busy machine's upstream sockets would drop a burst of 500.
	sent := 0
	for i, d := range dsts {
		var srcs []netip.AddrPort
		for h, ps := range port {
			srcs = append(srcs, netip.AddrPortFrom(h, ps[i]))
		}
		for lot := range slices.Chunk(srcs, 100) {
			s.LAN.SendUDPTo(d, lot)
			sent += len(lot)
			waitFor(t, 10*time.Second, "every packet upstream", func() bool { mu.Lock(); defer mu.Unlock(); return len(arrived) >= sent })
		}
	}
	// The log covers up to its last flush, each second: a query's time
	// and slack must be behind it.
	time.Sleep(2500 * time.Millisecond)

	shared := 0
	byPublic := map[netip.AddrPort][]seen{}
	for _, a := range arrived {
		byPublic[a.public] = append(byPublic[a.public], a)
	}
	for _, ss := range byPublic {
		if len(ss) > 1 {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("no public port was shared: the test proves nothing")
	}
	t.Logf("%d packets upstream from %d public ports, %d of them shared by several flows", len(arrived), len(byPublic), shared)

	type answer struct {
		Private     string `json:"private"`
		PrivatePort uint16 `json:"private_port"`
		Public      string `json:"public"`
		PublicPort  uint16 `json:"public_port"`
		Protocol    string `json:"protocol"`
		Start, End  string
		Dst         string `json:"dst"`
		Incomplete  bool   `json:"incomplete"`
	}
	ask := func(a seen, dst bool) []answer {
		args := []string{"lookup", "--at", a.at.Format(time.RFC3339Nano), "--slack", "1s", a.public.String(), "--log", logDir, "-o", "json"}
		if dst {
			args = append(args, "--dst", a.dst.String())
		}
		var got []answer
		if err := json.Unmarshal([]byte(must(t, 0, args...)), &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	logged := map[string]string{} // a flow's log start, by the collector's key
	for _, i := range r.Perm(len(arrived))[:200] {
		a := arrived[i]
		sent := netip.AddrPortFrom(a.host, port[a.host][slices.Index(dsts, a.dst)])
		got := ask(a, true)
		if len(got) == 1 {
			logged[fmt.Sprintf("%s %s %s", sent, a.dst, a.public)] = got[0].Start
		}
		if len(got) != 1 || got[0].Private != sent.Addr().String() || got[0].PrivatePort != sent.Port() || got[0].Incomplete ||
			got[0].Protocol != "udp" || got[0].Dst != a.dst.Addr().String() {
			t.Errorf("%s at %s to %s, sent by %s: answered %+v", a.public, a.at.Format(time.RFC3339Nano), a.dst, sent, got)
		}
		var all, wantAll []string
		for _, g := range ask(a, false) {
			all = append(all, fmt.Sprintf("%s:%d", g.Private, g.PrivatePort))
		}
		for _, o := range byPublic[a.public] {
			wantAll = append(wantAll, netip.AddrPortFrom(o.host, port[o.host][slices.Index(dsts, o.dst)]).String())
		}
		slices.Sort(all)
		slices.Sort(wantAll)
		if !slices.Equal(all, wantAll) {
			t.Errorf("%s at %s: answered %v, want every flow that had it: %v", a.public, a.at.Format(time.RFC3339Nano), all, wantAll)
		}
	}

	// The collector: a creation of each flow, as upstream saw it, at the
	// time the log gives.
	w.stop()
	created := collector.created(t)
	for _, a := range arrived {
		sent := netip.AddrPortFrom(a.host, port[a.host][slices.Index(dsts, a.dst)])
		k := fmt.Sprintf("%s %s %s", sent, a.dst, a.public)
		at, ok := created[k]
		if !ok {
			t.Errorf("the collector has no creation of %s to %s as %s", sent, a.dst, a.public)
			continue
		}
		if start, ok := logged[k]; ok {
			if ls, err := time.Parse(time.RFC3339Nano, start); err != nil || !ls.Equal(at) {
				t.Errorf("%s: the collector says created at %s, the log %s", k, at.Format(time.RFC3339Nano), start)
			}
		}
	}
	t.Logf("nfcapd: %d creations, %d of them matched against the log's start", len(created), len(logged))
}

// collector is nfcapd receiving IPFIX on loopback into a directory of its
// own.
type collector struct {
	addr, dir string
	cmd       *exec.Cmd
}

// startCollector starts nfcapd on a free loopback port; the test's end
// stops it by its pid.
func startCollector(t *testing.T) *collector {
	t.Helper()
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	c := &collector{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: t.TempDir()}
	c.cmd = exec.Command("nfcapd", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-l", c.dir, "-t", "3600")
	var out syncBuffer
	c.cmd.Stdout, c.cmd.Stderr = &out, &out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("nfcapd:\n%s", out.String())
		}
	})
	waitFor(t, 5*time.Second, "nfcapd to listen", func() bool { return strings.Contains(out.String(), "Startup") })
	return c
}

func (c *collector) stop() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		c.cmd.Wait()
	}
}

// created stops nfcapd, which writes its file, and returns the time of each
// NAT44 session creation it received, by inside source, destination and
// public source.
func (c *collector) created(t *testing.T) map[string]time.Time {
	t.Helper()
	c.stop()
	cmd := exec.Command("nfdump", "-R", c.dir, "-q", "-o", "fmt:%tevt %nevt %pr %sa %sp %da %dp %xsa %xsp")
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	created := map[string]time.Time{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 10 || f[2] != "ADD" {
			continue
		}
		at, err := time.Parse("2006-01-02 15:04:05.000", f[0]+" "+f[1])
		if err != nil {
			t.Fatalf("nfdump printed %q", line)
		}
		ap := func(a, p string) string { return net.JoinHostPort(a, p) }
		created[fmt.Sprintf("%s %s %s", ap(f[4], f[5]), ap(f[6], f[7]), ap(f[8], f[9]))] = at
	}
	return created
}

// logSite is a site of one ISP whose hosts 10.0.0.0/16 leave through a
// plan of strategy, and the path of its spec.
func logSite(t *testing.T, strategy string) (*netnstest.Site, string) {
	t.Helper()
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	s := netnstest.NewSite(t, sitePools[0])
	spec := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, spec, fmt.Sprintf("egress:\n  - name: isp0\n    oif: wan0\n    private: [10.0.0.0/16]\n    pool: [%s]\n    strategy: %s\n", sitePools[0], strategy))
	return s, spec
}

// flows sends a UDP packet from n hosts of 10.0.third.0/24 (from 1) to
// the internet, and returns the public address and port each left as,
// from the box's conntrack.
func flows(t *testing.T, s *netnstest.Site, third byte, n int) map[netip.AddrPort]netip.AddrPort {
	t.Helper()
	var srcs []netip.AddrPort
	for i := range n {
		srcs = append(srcs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, third + byte((i+1)/256), byte((i + 1) % 256)}), 50000))
	}
	s.LAN.SendUDPTo(netip.AddrPortFrom(netnstest.Target, 10), srcs)
	out := map[netip.AddrPort]netip.AddrPort{}
	waitFor(t, 5*time.Second, "the flows in conntrack", func() bool {
		for _, f := range s.Box.AllFlows() {
			if slices.Contains(srcs, f.Src) {
				out[f.Src] = f.Translated
			}
		}
		return len(out) == n
	})
	return out
}

// lookupLog asks the log who had public at t, and returns natpool's exit
// status and output.
func lookupLog(dir string, public netip.AddrPort, at time.Time) (int, string) {
	code, stdout, stderr := run("lookup", "--at", at.Format(time.RFC3339Nano), "--slack", "200ms", public.String(), "--log", dir)
	return code, stdout + stderr
}

// The log's faults, each provoked: watch killed with kill -9 loses at most
// the last second, and its successor marks the time no one logged; a torn
// tail is reported with its offset and left as it was; a full disk is one
// line, NAT goes on, logging resumes when space is back and the window is
// marked; events lost past the socket's buffer are a window too, and an
// answer in any window says it may be incomplete, exit 1.
func TestTheTranslationLogUnderFaults(t *testing.T) {
	t.Run("kill -9 and a torn tail", func(t *testing.T) {
		s, spec := logSite(t, "hash")
		dir := filepath.Join(t.TempDir(), "log")
		w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", dir)
		w.waitLog(t, 5*time.Second, "logging translations")
		time.Sleep(1200 * time.Millisecond)
		early := flows(t, s, 1, 50)
		tEarly := time.Now()
		time.Sleep(1500 * time.Millisecond)
		flows(t, s, 2, 50)
		time.Sleep(1100 * time.Millisecond) // a block written with them
		late := flows(t, s, 3, 50)
		w.cmd.Process.Kill()
		w.cmd.Wait()
		killed := time.Now()
		// Tear the last block: cut a byte off the segment.
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		last := segs[len(segs)-1]
		st, _ := os.Stat(last)
		if err := os.Truncate(last, st.Size()-1); err != nil {
			t.Fatal(err)
		}
		torn, _ := os.ReadFile(last)
		time.Sleep(500 * time.Millisecond)

		w2 := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", dir)
		w2.waitLog(t, 5*time.Second, "logging translations")
		if !strings.Contains(w2.log.String(), fmt.Sprintf("translation log segment %s: damaged tail at offset", last)) {
			t.Errorf("the torn tail is not reported:\n%s", w2.log)
		}
		if after, _ := os.ReadFile(last); string(after) != string(torn) {
			t.Error("the torn segment was rewritten")
		}
		time.Sleep(2500 * time.Millisecond)
		for src, public := range early {
			if code, out := lookupLog(dir, public, tEarly); code != 0 || !strings.Contains(out, src.String()+" -> "+public.String()) {
				t.Errorf("a flow from more than a second before the kill, %s as %s: exit %d\n%s", src, public, code, out)
			}
			break
		}
		// The time no natpool logged is marked; the flows alive then are
		// found again by the next watch's dump.
		for src, public := range late {
			if code, out := lookupLog(dir, public, killed.Add(200*time.Millisecond)); code != 1 || !strings.Contains(out, "may be missing") {
				t.Errorf("a time between the kill and the restart: exit %d\n%s", code, out)
			}
			if code, out := lookupLog(dir, public, time.Now().Add(-1500*time.Millisecond)); code != 0 || !strings.Contains(out, src.String()+" -> "+public.String()) || !strings.Contains(out, "began before the log") {
				t.Errorf("a flow alive across the restart, %s as %s: exit %d\n%s", src, public, code, out)
			}
			break
		}
	})

	t.Run("a full disk", func(t *testing.T) {
		s, spec := logSite(t, "hash")
		dir := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "natpool-test", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		logDir := filepath.Join(dir, "log")
		w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", logDir, "--metrics", "127.0.0.1:0")
		w.waitLog(t, 5*time.Second, "logging translations")
		time.Sleep(1200 * time.Millisecond) // the lookup's time well after the log began
		filler := filepath.Join(dir, "filler")
		exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=4k").Run() // until the disk is full
		// Enough flows that their block needs pages the disk has not.
		full := flows(t, s, 1, 2000)
		tFull := time.Now()
		w.waitLog(t, 5*time.Second, "no space left on device; translations are not logged until it works again (NAT goes on)")
		if n := len(full); n != 2000 {
			t.Errorf("%d of 2000 flows translated while the disk was full", n)
		}
		families := scrape(t, w.metricsAddr(t))
		if m := families["natpool_log_errors_total"].GetMetric(); len(m) != 1 || m[0].GetCounter().GetValue() == 0 {
			t.Errorf("natpool_log_errors_total %v", m)
		}
		os.Remove(filler)
		w.waitLog(t, 5*time.Second, "translation log: writing works again")
		if strings.Count(w.log.String(), "no space left on device") != 1 {
			t.Errorf("the full disk is said more than once:\n%s", w.log)
		}
		time.Sleep(1500 * time.Millisecond)
		for _, public := range full {
			if code, out := lookupLog(logDir, public, tFull); code != 1 || !strings.Contains(out, "may be missing") {
				t.Errorf("a time the disk was full: exit %d\n%s", code, out)
			}
			break
		}
	})

	t.Run("events lost", func(t *testing.T) {
		s, spec := logSite(t, "hash")
		dir := filepath.Join(t.TempDir(), "log")
		w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", dir)
		w.waitLog(t, 5*time.Second, "logging translations")
		// Stopped, watch reads nothing: the events of 60,000 new flows
		// overflow its socket's buffer.
		w.cmd.Process.Signal(syscall.SIGSTOP)
		var srcs []netip.AddrPort
		for i := range 60000 {
			srcs = append(srcs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(1 + i%250)}), 50001))
		}
		s.LAN.SendUDPTo(netip.AddrPortFrom(netnstest.Target, 10), srcs)
		tBurst := time.Now()
		time.Sleep(200 * time.Millisecond)
		w.cmd.Process.Signal(syscall.SIGCONT)
		w.waitLog(t, 10*time.Second, "translation log: conntrack events were lost; the log marks")
		time.Sleep(2500 * time.Millisecond)
		var public netip.AddrPort
		for _, f := range s.Box.AllFlows() {
			if f.Src == srcs[0] {
				public = f.Translated
			}
		}
		if code, out := lookupLog(dir, public, tBurst); code != 1 || !strings.Contains(out, "may be missing") {
			t.Errorf("a time events were lost: exit %d\n%s", code, out)
		}
	})
}

// In block mode the plan names the owner of a public port: the log's
// answers agree with the journal's plan in force, and say so by exit 0.
func TestTheTranslationLogAgreesWithThePortBlocks(t *testing.T) {
	s, spec := logSite(t, "block")
	dir := filepath.Join(t.TempDir(), "log")
	w := startWatch(t, "-f", spec, "--netns", s.Box.Name, "--log", dir)
	w.waitLog(t, 5*time.Second, "logging translations")
	time.Sleep(1200 * time.Millisecond)
	sent := flows(t, s, 1, 50)
	time.Sleep(2500 * time.Millisecond)
	for src, public := range sent {
		code, stdout, stderr := run("lookup", "--at", time.Now().Add(-1500*time.Millisecond).Format(time.RFC3339Nano), "--slack", "200ms", public.String(), "--log", dir, "--journal", w.journal)
		if code != 0 || !strings.Contains(stdout, src.String()+" -> "+public.String()) || stderr != "" {
			t.Errorf("%s as %s: exit %d\n%s%s", src, public, code, stdout, stderr)
		}
	}
}
