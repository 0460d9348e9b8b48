package cmd

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
)

// watchProcess is natpool watch running as a process of its own.
type watchProcess struct {
	cmd     *exec.Cmd
	log     *syncBuffer
	journal string
}

// syncBuffer is a bytes.Buffer the process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startWatch starts natpool watch with its own journal and notify socket,
// as systemd would run it, and waits until it says it is ready. The test's
// end stops it by its pid.
func startWatch(t *testing.T, args ...string) *watchProcess {
	t.Helper()
	dir := t.TempDir()
	w := &watchProcess{log: &syncBuffer{}, journal: filepath.Join(dir, "journal")}
	args = append([]string{"watch", "--journal", w.journal}, args...)
	w.cmd = exec.Command(natpoolBinary, args...)
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	w.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("natpool %s:\n%s", strings.Join(args, " "), w.log)
		}
	})
	notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if n, err := notify.Read(buf); err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("natpool watch told systemd %q (%v), want READY=1\n%s", buf[:n], err, w.log)
	}
	w.waitLog(t, time.Second, "watching ")
	return w
}

// stop stops watch by its pid, as systemd would, and waits for it to end.
func (w *watchProcess) stop() {
	if w.cmd.ProcessState == nil {
		w.cmd.Process.Signal(syscall.SIGTERM)
		w.cmd.Wait()
	}
}

// metricsAddr returns the address watch says it serves metrics on.
func (w *watchProcess) metricsAddr(t *testing.T) string {
	t.Helper()
	served := regexp.MustCompile(`serving metrics on http://(\S+)/metrics`).FindStringSubmatch(w.log.String())
	if served == nil {
		t.Fatalf("watch does not say where it serves metrics:\n%s", w.log)
	}
	return served[1]
}

// waitLog waits until the log holds want (after the first skip of it).
func (w *watchProcess) waitLog(t *testing.T, within time.Duration, want string) {
	t.Helper()
	waitFor(t, within, "watch to log "+want, func() bool { return strings.Contains(w.log.String(), want) })
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("waited %s for %s", within, what)
		}
	}
}

// hostRange is count inside hosts from a.
func hostRange(a string, count int) []netip.Addr {
	h := netip.MustParseAddr(a)
	out := make([]netip.Addr, count)
	for i := range out {
		out[i] = h
		h = h.Next()
	}
	return out
}

// checkLeftBy asserts that each host has a conntrack entry translated as
// the plan's egress entry egress says.
func checkLeftBy(t *testing.T, p *pool.Plan, egress string, hosts []netip.Addr, flows map[netip.Addr]netnstest.Flow) {
	t.Helper()
	for _, h := range hosts {
		a, err := p.Lookup(h.String(), egress)
		if err != nil {
			t.Fatal(err)
		}
		f, ok := flows[h]
		switch {
		case !ok:
			t.Errorf("%s: no conntrack entry", h)
		case f.Translated.Addr() != a[0].Public || !a[0].Ports.Contains(f.Translated.Port()):
			t.Errorf("%s left as %s; egress %s gives %s ports %s", h, f.Translated, egress, a[0].Public, a[0].Ports)
		}
	}
}

// checkGone asserts which hosts have lost their entries: gone ones none,
// kept ones theirs.
func checkGone(t *testing.T, flows map[netip.Addr]netnstest.Flow, gone, kept []netip.Addr) {
	t.Helper()
	for _, h := range gone {
		if f, ok := flows[h]; ok {
			t.Errorf("%s kept its entry (as %s)", h, f.Translated)
		}
	}
	for _, h := range kept {
		if _, ok := flows[h]; !ok {
			t.Errorf("%s lost its entry", h)
		}
	}
}

// The two-ISP box: the same inside hosts leave by uplink0 (preferred,
// isp-a) or uplink1 (isp-b) as routing decides, a lab egress entry leaves by
// any interface, and another table masquerades other hosts. When routing
// moves, watch flushes the entries of the egress entry that lost its hosts
// and nothing else, and new flows leave by the other uplink with its
// pool's addresses.
func TestWatchFlushesOnlyTheEgressAnUplinkChangeStrands(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	ns := netnstest.New(t)
	ns.AddUplinks(2)
	ns.SetUplink(0, false) // isp-a's uplink starts down
	ns.MustRun(`table ip foreign {
	chain post {
		type nat hook postrouting priority srcnat - 10; policy accept;
		ip saddr 10.16.2.0/28 masquerade
	}
}
`, "nft", "-f", "-")
	spec := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, spec, `egress:
  - name: isp-a
    oif: uplink0
    private: [10.16.0.0/25]
    pool: [203.0.113.8/30]
  - name: isp-b
    oif: uplink1
    private: [10.16.0.0/25]
    pool: [198.51.100.32/30]
  - name: lab
    private: [10.16.1.0/28]
    pool: [192.76.8.0/30]
`)
	plan := loadPlan(t, spec)
	const holdDown = time.Second
	w := startWatch(t, "-f", spec, "--netns", ns.Name, "--hold-down", holdDown.String())

	first, second := hostRange("10.16.0.0", 64), hostRange("10.16.0.64", 64)
	lab, foreign := hostRange("10.16.1.0", 16), hostRange("10.16.2.0", 16)
	ns.SendUDP(append(append(first, lab...), foreign...), 40000)
	flows := ns.Flows()
	checkLeftBy(t, plan, "isp-b", first, flows)
	checkLeftBy(t, plan, "lab", lab, flows)

	// uplink0 comes back and takes the default route: isp-b's entries
	// go, the lab's and the foreign ones stay.
	ns.SetUplink(0, true)
	w.waitLog(t, holdDown+time.Second, "egress isp-b: its hosts (10.16.0.0) are routed through uplink0; flushed 64 of its conntrack entries")
	checkGone(t, ns.Flows(), first, append(lab, foreign...))
	ns.SendUDP(second, 40000)
	checkLeftBy(t, plan, "isp-a", second, ns.Flows())

	// uplink0 goes down: isp-a's entries go, and the same hosts leave by
	// uplink1 with isp-b's addresses.
	ns.SetUplink(0, false)
	w.waitLog(t, holdDown+time.Second, "egress isp-a: uplink0 is down or has no carrier; flushed 64 of its conntrack entries")
	checkGone(t, ns.Flows(), second, append(lab, foreign...))
	ns.SendUDP(second, 40000)
	checkLeftBy(t, plan, "isp-b", second, ns.Flows())
	if out := ns.MustRun("", "nft", "list", "table", "ip", "foreign"); !strings.Contains(out, "masquerade") {
		t.Errorf("the foreign table changed:\n%s", out)
	}
}

// A reload (natpool reload, waiting for the outcome, or SIGHUP) applies
// the edited spec and cuts only the entries of the hosts it moved; kill -9
// then leaves the table and the translations as they were.
func TestWatchReloadCutsOnlyTheMovedHostsAndKillLeavesNATInForce(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	ns := netnstest.New(t)
	ns.AddUplinks(1)
	spec := filepath.Join(t.TempDir(), "site.yaml")
	write := func(pool string) *pool.Plan {
		t.Helper()
		writeFile(t, spec, "egress:\n  - name: isp\n    oif: uplink0\n    private: [10.16.0.0/24]\n    pool: ["+pool+"]\n    strategy: octet\n")
		return loadPlan(t, spec)
	}
	old := write("203.0.113.8/30")
	w := startWatch(t, "-f", spec, "--netns", ns.Name)
	hosts := hostRange("10.16.0.0", 256)
	ns.SendUDP(hosts, 40000)

	// A spec that does not plan is logged, the plan in force stays, and
	// natpool reload (systemctl reload) says so and fails.
	writeFile(t, spec, "egress:\n  - pool: [203.0.113.8/33]\n")
	failed := "reload failed, plan " + compiler.Digest(old) + " stays in force"
	if code, stdout, stderr := run("reload", "--netns", ns.Name); code != exitTrouble || !strings.Contains(stdout, failed) {
		t.Errorf("natpool reload of a spec that does not plan: exit %d\n%s%s", code, stdout, stderr)
	}
	w.waitLog(t, time.Second, failed)
	if got := len(ns.Flows()); got != len(hosts) {
		t.Fatalf("a failed reload left %d of %d entries", got, len(hosts))
	}

	changed := write("203.0.113.8/29")
	var moved, stayed []netip.Addr
	for _, h := range hosts {
		a, _ := old.Lookup(h.String(), "")
		b, _ := changed.Lookup(h.String(), "")
		if a[0].Public != b[0].Public {
			moved = append(moved, h)
		} else {
			stayed = append(stayed, h)
		}
	}
	if len(moved) == 0 || len(stayed) == 0 {
		t.Fatalf("%d hosts move and %d stay: the test needs both", len(moved), len(stayed))
	}
	w.cmd.Process.Signal(syscall.SIGHUP)
	w.waitLog(t, 10*time.Second, fmt.Sprintf("hosts moved; flushed %d stale conntrack entries", len(moved)))
	if !strings.Contains(w.log.String(), fmt.Sprintf(": %d hosts moved;", len(moved))) {
		t.Errorf("the reload does not say %d hosts moved", len(moved))
	}
	flows := ns.Flows()
	checkGone(t, flows, moved, stayed)
	checkLeftBy(t, changed, "isp", stayed, flows)

	// kill -9: nothing of natpool's state goes with it.
	before := ns.MustRun("", "nft", "list", "ruleset")
	w.cmd.Process.Kill()
	w.cmd.Wait()
	if after := ns.MustRun("", "nft", "list", "ruleset"); after != before {
		t.Errorf("kill -9 changed the ruleset:\n%s\nwas:\n%s", after, before)
	}
	ns.SendUDP(moved, 40000)
	checkLeftBy(t, changed, "isp", hosts, ns.Flows())
}

// Scraped during traffic, /metrics parses with Prometheus's own parser and
// says per public address what conntrack holds: connections, distinct
// hosts, the busiest destination's share of the port range, and in block
// mode the hosts' block use.
func TestWatchMetricsAgreeWithConntrack(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	ns := netnstest.New(t)
	ns.AddUplinks(1)
	spec := filepath.Join(t.TempDir(), "cgnat.yaml")
	// 64 subscribers on 4 addresses, 16 each with 4 ports of 1024-1087.
	writeFile(t, spec, "egress:\n  - name: cgnat\n    oif: uplink0\n    private: [100.64.0.0/26]\n    pool: [198.18.0.0/30]\n    strategy: block\n    ports: 1024-1087\n")
	plan := loadPlan(t, spec)
	// Port 0: the kernel picks a free one, and watch says which.
	w := startWatch(t, "-f", spec, "--netns", ns.Name, "--metrics", "127.0.0.1:0", "--refresh", "100ms")
	addr := w.metricsAddr(t)
	t.Cleanup(func() { promtoolCheck(t, addr) })
	// The first count, from a dump, is in: from here on the events keep it.
	waitFor(t, 5*time.Second, "the first count", func() bool { _, ok := scrape(t, addr)["natpool_public_connections"]; return ok })

	// Every subscriber one flow; the first eight four (their whole block).
	hosts := hostRange("100.64.0.0", 64)
	var srcs []netip.AddrPort
	for i, h := range hosts {
		for port := range uint16(map[bool]int{true: 4, false: 1}[i < 8]) {
			srcs = append(srcs, netip.AddrPortFrom(h, 40000+port))
		}
	}
	ns.SendUDPFrom(srcs)

	// What conntrack holds, per public address: every flow goes to one
	// destination, so the busiest takes all of an address's connections.
	type figures struct{ connections, hosts, portUse float64 }
	want := map[string]*figures{}
	seen := map[netnstest.Flow]bool{}
	flows := ns.AllFlows()
	for _, f := range flows {
		public := f.Translated.Addr().String()
		g := want[public]
		if g == nil {
			g = &figures{}
			want[public] = g
		}
		g.connections++
		g.portUse = g.connections / 64
		if host := (netnstest.Flow{Src: netip.AddrPortFrom(f.Src.Addr(), 0), Translated: netip.AddrPortFrom(f.Translated.Addr(), 0)}); !seen[host] {
			seen[host] = true
			g.hosts++
		}
	}
	if len(want) != 4 || len(flows) != len(srcs) {
		t.Fatalf("conntrack has %d flows through %d addresses, want %d through 4", len(flows), len(want), len(srcs))
	}

	var families map[string]*dto.MetricFamily
	waitFor(t, 5*time.Second, "the metrics to count every flow", func() bool {
		families = scrape(t, addr)
		total := 0.0
		for _, m := range families["natpool_public_connections"].GetMetric() {
			total += m.GetGauge().GetValue()
		}
		return total == float64(len(srcs))
	})
	for name, field := range map[string]func(*figures) float64{
		"natpool_public_connections":    func(f *figures) float64 { return f.connections },
		"natpool_public_hosts":          func(f *figures) float64 { return f.hosts },
		"natpool_public_port_use_ratio": func(f *figures) float64 { return f.portUse },
	} {
		for _, m := range families[name].GetMetric() {
			public := label(m, "public")
			if g := want[public]; g == nil || m.GetGauge().GetValue() != field(g) {
				t.Errorf("%s{public=%q} = %g; conntrack says %+v", name, public, m.GetGauge().GetValue(), g)
			}
		}
	}
	h := families["natpool_block_use_ratio"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 64 || h.GetBucket()[1].GetCumulativeCount() != 0 || h.GetBucket()[2].GetCumulativeCount() != 56 {
		t.Errorf("block use histogram: %v; want 64 hosts, 56 of them at 1/4 (<= 0.3), 8 at 1", h)
	}
	if full := families["natpool_block_full_hosts"].GetMetric()[0].GetGauge().GetValue(); full != 8 {
		t.Errorf("natpool_block_full_hosts = %g, want 8", full)
	}
	if info := families["natpool_plan_info"].GetMetric(); len(info) != 1 || label(info[0], "table") != plan.Table {
		t.Errorf("natpool_plan_info: %v", info)
	}
}

// scrape reads and parses the metrics as Prometheus would.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the metrics do not parse: %v\n%s", err, body)
	}
	return families
}

// promtoolCheck has Prometheus's promtool check a scrape of the metrics:
// names, help, types, units.
func promtoolCheck(t *testing.T, addr string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing: CI must check the metrics with it")
		}
		t.Log("promtool is missing: the metrics go unchecked")
		return
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = resp.Body
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// A flow that began before natpool's rules could see it (here: its host
// was excluded from the plan, which then took it in) keeps an untranslated
// conntrack entry: its later packets must not leave the uplink with the
// inside address. The guard drops them, the kernel counts them, and watch
// exports the count; a new flow of the same host is translated.
func TestGuardDropsFlowsThatBeganUntranslated(t *testing.T) {
	keepHostState(t)
	netnstest.Require(t, "conntrack")
	early := []netip.Addr{netip.MustParseAddr("10.16.0.1"), netip.MustParseAddr("10.16.0.2")}
	spec := pool.EgressSpec{Strategy: "hash", Private: []string{"10.16.0.0/28"}, Pool: []string{"192.76.8.0/30"}, Exclude: []string{"10.16.0.1", "10.16.0.2"}}
	excluding, _ := specFile(t, spec)
	spec.Exclude = nil
	path, p := specFile(t, spec)
	ns := netnstest.New(t)
	ns.AddUplink()
	must(t, 0, "apply", "-f", excluding, "--netns", ns.Name)
	if dropped := ns.SendUDP(early, 40000); len(dropped) > 0 {
		t.Fatalf("excluded hosts dropped: %v", dropped)
	}
	w := startWatch(t, "-f", path, "--netns", ns.Name, "--metrics", "127.0.0.1:0", "--refresh", "50ms")
	if dropped := ns.SendUDP(early, 40000); len(dropped) != len(early) {
		t.Errorf("the untranslated flows' packets: %d of %d dropped at the uplink", len(dropped), len(early))
	}
	for _, f := range ns.AllFlows() {
		if f.Src.Port() == 40000 && f.Translated != f.Src {
			t.Errorf("%s: the early flow's entry changed to %s", f.Src, f.Translated)
		}
	}
	if dropped := ns.SendUDP(early, 40001); len(dropped) > 0 {
		t.Errorf("new flows dropped: %v", dropped)
	}
	translated := map[netip.Addr]netnstest.Flow{}
	for _, f := range ns.AllFlows() {
		if f.Src.Port() == 40001 {
			translated[f.Src.Addr()] = f
		}
	}
	netnstest.CheckFlows(t, p, early, translated, nil, true)
	waitFor(t, 5*time.Second, "natpool_guard_dropped_packets_total 2", func() bool {
		for _, m := range scrape(t, w.metricsAddr(t))["natpool_guard_dropped_packets_total"].GetMetric() {
			if label(m, "egress") == "test" && m.GetCounter().GetValue() == 2 {
				return true
			}
		}
		return false
	})
}

// A second watch of the same table in the same namespace is refused,
// naming the first; natpool's table removed by nft flush ruleset is back
// within two seconds, and watch says so.
func TestWatchKeepsItsTableAndIsAlone(t *testing.T) {
	keepHostState(t)
	ns := netnstest.New(t)
	ns.AddUplinks(1)
	spec := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, spec, "egress:\n  - name: isp\n    oif: uplink0\n    private: [10.16.0.0/24]\n    pool: [203.0.113.8/30]\n")
	w := startWatch(t, "-f", spec, "--netns", ns.Name)
	second := exec.Command(natpoolBinary, "watch", "-f", spec, "--netns", ns.Name, "--journal", filepath.Join(t.TempDir(), "journal"))
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("another natpool (pid %d) holds watch/natpool in network namespace %s", w.cmd.Process.Pid, ns.Name)) {
		t.Errorf("a second watch: %v\n%s", err, out)
	}
	ns.MustRun("", "nft", "flush", "ruleset")
	start := time.Now()
	w.waitLog(t, 3*time.Second, "table ip natpool in network namespace "+ns.Name+" is gone: restored plan")
	t.Logf("the table was back %v after nft flush ruleset", time.Since(start).Round(10*time.Millisecond))
	if time.Since(start) > 2*time.Second {
		t.Errorf("restored after %v, want within 2 s", time.Since(start))
	}
	if out := ns.MustRun("", "nft", "list", "tables"); !strings.Contains(out, "table ip natpool") {
		t.Errorf("no table after the restore:\n%s", out)
	}
}
