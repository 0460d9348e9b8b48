//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
)

// 10. natpool watch over a CGNAT box with 1,000,000 conntrack entries and
// 5,000 new connections a second: scrape time, watch's CPU and memory, and
// its counts against conntrack's after a resync. Targets: scrapes under
// 100 ms, under 10% of a core and 200 MB, counts within 1%.
//
// A million entries need net.netfilter.nf_conntrack_max above the kernel's
// default, which only the host's own namespace may set: the job raises it
// for the run and puts it back.
func benchWatch(b *bench) error {
	const entries, rate, load = 1_000_000, 5000, 20 * time.Second
	restore, err := raiseConntrackMax(entries + 2*rate*int(load/time.Second) + 50_000)
	if err != nil {
		return err
	}
	defer restore()
	ns, err := newNamespace("watch")
	if err != nil {
		return err
	}
	spec := []string{"--private", "100.64.0.0/12", "--pool", "198.18.0.0/22", "--strategy", "block", "--oif", netnstest.Uplink, "--netns", ns}
	if _, err := measure("", b.natpool, append([]string{"apply", "--journal", filepath.Join(b.work, "journal")}, spec...)...); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "natpool-bench: watch: filling %d conntrack entries\n", entries)
	if err := sendUDP(ns, netip.MustParseAddr("100.64.0.0"), entries); err != nil {
		return err
	}

	addr := fmt.Sprintf("127.0.0.1:%d", 30000+os.Getpid()%10000)
	const resync = time.Minute // after the load, not during it
	started := time.Now()
	watch, _, stop, err := b.startWatch("watch.log", "watching ", append([]string{"--journal", filepath.Join(b.work, "journal"), "--metrics", addr,
		"--resync", resync.String()}, spec...)...)
	if err != nil {
		return err
	}
	defer stop()
	// Steady state: the first count, from a dump, is published.
	if err := waitFor(func() bool { n, _ := scrapeTotal(addr); return n >= entries }, time.Minute); err != nil {
		return fmt.Errorf("natpool watch did not count the entries: %w", err)
	}
	fmt.Fprintf(os.Stderr, "natpool-bench: watch: counted %d entries %.1f s after its start; %d new connections a second for %s\n",
		entries, time.Since(started).Seconds(), rate, load)

	// New connections from the hosts' next source ports, paced, while
	// the metrics are scraped every second.
	cpu0, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	sent := make(chan error, 1)
	go func() { sent <- pace(ns, 40001, rate, load) }()
	var scrapes series
	for time.Since(t0) < load {
		time.Sleep(time.Second)
		start := time.Now()
		if _, err := scrapeTotal(addr); err != nil {
			return err
		}
		scrapes = append(scrapes, sample{seconds: time.Since(start).Seconds()})
	}
	if err := <-sent; err != nil {
		return err
	}
	cpu1, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return err
	}
	busy := float64(cpu1-cpu0) / 100 / time.Since(t0).Seconds() // clock ticks are 1/100 s
	peak, err := peakRSS(watch.Process.Pid)
	if err != nil {
		return err
	}

	// Lag: how long after conntrack holds a burst of new connections the
	// metrics count them all, once the load has been counted.
	var lags series
	settled := -1.0
	if err := waitFor(func() bool { n, _ := scrapeTotal(addr); was := settled; settled = n; return n == was }, time.Minute); err != nil {
		return fmt.Errorf("natpool watch did not settle after the load: %w", err)
	}
	for burst := range 5 {
		const size = 1000
		if err := pace(ns, 42001+uint16(burst), 100*size, 10*time.Millisecond); err != nil { // one tick of size
			return err
		}
		// Scraped back to back: each scrape is part of the lag.
		sent := time.Now()
		for n := 0.0; n < settled+size; {
			if n, err = scrapeTotal(addr); err != nil {
				return err
			}
			if time.Since(sent) > 10*time.Second {
				return fmt.Errorf("natpool watch did not count a burst of %d connections in 10 s", size)
			}
		}
		lags = append(lags, sample{seconds: time.Since(sent).Seconds()})
		settled += size
	}

	// After the next resync, the counts against conntrack's own.
	if err := waitFor(func() bool { n, _ := scrape(addr, "natpool_conntrack_resyncs_total"); return n >= 2 }, 2*resync); err != nil {
		return fmt.Errorf("natpool watch did not resync: %w", err)
	}
	counted, err := scrapeTotal(addr)
	if err != nil {
		return err
	}
	out, err := output(ns, "conntrack", "-C")
	if err != nil {
		return err
	}
	held, _ := strconv.Atoi(strings.TrimSpace(out))
	off := 100 * (counted - float64(held)) / float64(held)

	// The floor: conntrack -E only printing the same events, nothing
	// counted. The conntrack table then holds 100,000 entries more.
	events := exec.Command("ip", "netns", "exec", ns, "conntrack", "-E", "-e", "NEW,DESTROY")
	if err := events.Start(); err != nil {
		return err
	}
	defer func() {
		events.Process.Kill()
		events.Wait()
	}()
	time.Sleep(time.Second)
	e0, err := cpuTicks(events.Process.Pid)
	if err != nil {
		return err
	}
	t1 := time.Now()
	if err := pace(ns, 41001, rate, load); err != nil {
		return err
	}
	e1, err := cpuTicks(events.Process.Pid)
	if err != nil {
		return err
	}
	floor := float64(e1-e0) / 100 / time.Since(t1).Seconds()

	s := scrapes.median()
	s.rssKB = peak
	b.row(fmt.Sprintf("watch, %d entries + %d new/s: a scrape (natpool: watch's peak RSS)", entries, rate), series{s}, nil,
		fmt.Sprintf("target: 100 ms, 200 MB; watch used %.1f%% of a core (conntrack -E, printing the same events: %.1f%%); a burst of 1000 new connections is in the metrics %.0f ms after conntrack holds it (median of 5; target 100 ms); after a resync it counts %.0f, conntrack -C %d (%+.2f%%)",
			100*busy, 100*floor, 1000*lags.median().seconds, counted, held, off))
	return nil
}

// startWatch starts natpool watch with args, its output in the file
// logName of the work directory, and returns it once that says ready; stop
// ends it (SIGTERM) and waits for it.
func (b *bench) startWatch(logName, ready string, args ...string) (watch *exec.Cmd, logPath string, stop func(), err error) {
	log, err := os.Create(filepath.Join(b.work, logName))
	if err != nil {
		return nil, "", nil, err
	}
	defer log.Close()
	watch = exec.Command(b.natpool, append([]string{"watch"}, args...)...)
	watch.Stdout, watch.Stderr = log, log
	if err := watch.Start(); err != nil {
		return nil, "", nil, err
	}
	stop = func() {
		watch.Process.Signal(unix.SIGTERM)
		watch.Wait()
	}
	if err := waitFor(func() bool { s, _ := os.ReadFile(log.Name()); return strings.Contains(string(s), ready) }, time.Minute); err != nil {
		stop()
		return nil, "", nil, fmt.Errorf("natpool watch did not start (%q): %w", ready, err)
	}
	return watch, log.Name(), stop, nil
}

// raiseConntrackMax raises the host's conntrack limit to at least n and
// returns what puts it back.
func raiseConntrackMax(n int) (func(), error) {
	const path = "/proc/sys/net/netfilter/nf_conntrack_max"
	was, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if cur, _ := strconv.Atoi(strings.TrimSpace(string(was))); cur >= n {
		return func() {}, nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "natpool-bench: watch: nf_conntrack_max raised from %s to %d for the run\n", strings.TrimSpace(string(was)), n)
	return func() { os.WriteFile(path, was, 0o644) }, nil
}

// pace sends rate new UDP connections a second for d, from the hosts of
// 100.64.0.0/12 in turn, from source port sport on (each pace its own).
func pace(ns string, sport uint16, rate int, d time.Duration) error {
	return linux.Within(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		const tick = 10 * time.Millisecond
		per := rate * int(tick) / int(time.Second)
		first := pool.Uint32(netip.MustParseAddr("100.64.0.0"))
		n := 0
		for start := time.Now(); time.Since(start) < d; {
			srcs := make([]netip.AddrPort, per)
			for i := range srcs {
				srcs[i] = netip.AddrPortFrom(pool.AddrFromUint32(first+uint32(n%(1<<20))), sport+uint16(n/(1<<20)))
				n++
			}
			if _, err := netnstest.WriteUDP(fd, srcs); err != nil {
				return err
			}
			time.Sleep(time.Until(start.Add(time.Duration(n/per) * tick)))
		}
		return nil
	})
}

// scrapeTotal scrapes the metrics and returns the connections they count.
func scrapeTotal(addr string) (float64, error) {
	return scrape(addr, "natpool_public_connections")
}

// scrape scrapes the metrics and returns the sum of a metric's series.
func scrape(addr, metric string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, metric+"{") || strings.HasPrefix(line, metric+" ") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				return 0, fmt.Errorf("metrics line %q: %w", line, err)
			}
			total += v
		}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return total, err
}

// cpuTicks is the user and system time of a process, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which may hold spaces.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime, nil
}

// peakRSS is a process's peak resident set in KB (VmHWM).
func peakRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// waitFor polls cond until it holds or d passes.
func waitFor(cond func() bool, d time.Duration) error {
	for end := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			return fmt.Errorf("gave up after %s", d)
		}
	}
	return nil
}
