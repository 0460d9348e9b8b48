//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/natpool/natpool/compiler/netnstest"
)

// 12. natpool watch --log at 20,000 new translations a second, each ended
// 10 s later by conntrack's UDP timeout, for TRANSLOG_LOAD (10 minutes by
// default), beside conntrack -E -e NEW,DESTROY -o timestamp writing the
// same events to a file. Targets: no event lost; at most 1.25 times
// conntrack -E's CPU; at most 12 bytes a translation on disk; lookup --at
// of one PUBLIC:PORT in at most 200 ms and 100 MB.
func benchTranslog(b *bench) error {
	const rate = 20000
	load := 10 * time.Minute
	if s := os.Getenv("TRANSLOG_LOAD"); s != "" {
		var err error
		if load, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("TRANSLOG_LOAD %q: %w", s, err)
		}
	}
	restore, err := raiseConntrackMax(rate*40 + 50_000)
	if err != nil {
		return err
	}
	defer restore()
	ns, err := newNamespace("translog")
	if err != nil {
		return err
	}
	if err := inNamespace(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=10"); err != nil {
		return err
	}
	spec := []string{"--private", "100.64.0.0/12", "--pool", "198.18.0.0/26", "--strategy", "hash", "--oif", "uplink0", "--netns", ns}
	dir := filepath.Join(b.work, "translog")
	addr := fmt.Sprintf("127.0.0.1:%d", 30000+(os.Getpid()+1)%10000)
	watch, _, stop, err := b.startWatch("translog-watch.log", "logging translations", append([]string{"--journal", filepath.Join(b.work, "translog-journal"), "--metrics", addr,
		"--resync", "1h", "--log", dir}, spec...)...)
	if err != nil {
		return err
	}
	defer stop()
	eventsFile, err := os.Create(filepath.Join(b.work, "translog-conntrack-E"))
	if err != nil {
		return err
	}
	defer eventsFile.Close()
	events := exec.Command("ip", "netns", "exec", ns, "conntrack", "-E", "-e", "NEW,DESTROY", "-o", "timestamp")
	events.Stdout = eventsFile
	var eventsErr strings.Builder
	events.Stderr = &eventsErr
	if err := events.Start(); err != nil {
		return err
	}
	defer func() {
		events.Process.Kill()
		events.Wait()
	}()
	time.Sleep(2 * time.Second)
	fmt.Fprintf(os.Stderr, "natpool-bench: translog: %d new translations a second for %s\n", rate, load)
	w0, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return err
	}
	e0, err := cpuTicks(events.Process.Pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := pace(ns, 40001, rate, load); err != nil {
		return err
	}
	time.Sleep(15 * time.Second) // the last ones ended, and logged
	w1, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return err
	}
	e1, err := cpuTicks(events.Process.Pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(t0).Seconds()
	watchCPU, eventsCPU := float64(w1-w0)/100/elapsed, float64(e1-e0)/100/elapsed
	records, err := scrape(addr, "natpool_log_records_total")
	if err != nil {
		return err
	}
	lost, err := scrape(addr, "natpool_log_events_lost_total")
	if err != nil {
		return err
	}
	var bytes int64
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			bytes += st.Size()
		}
	}

	// A lookup of a public address and port from the middle of the load,
	// as conntrack -E saw it.
	public, at, err := middleTranslation(eventsFile.Name(), t0.Add(load/2))
	if err != nil {
		return err
	}
	args := []string{"lookup", "--at", at.Format(time.RFC3339Nano), public.String(), "--log", dir}
	answer, _ := exec.Command(b.natpool, args...).CombinedOutput()
	fmt.Fprintf(os.Stderr, "natpool-bench: translog: natpool %s:\n%s", strings.Join(args, " "), answer)
	var lookups series
	for range b.runs {
		s, err := measureDiff(b.natpool, args...) // exit 1: the log may miss some
		if err != nil {
			return err
		}
		lookups = append(lookups, s)
	}
	b.row(fmt.Sprintf("lookup --at PUBLIC:PORT in the log of %s at %d new/s (%.0f translations)", load, rate, records), series{lookups.median()}, nil,
		"target: 200 ms, 100 MB")
	b.notes = append(b.notes, fmt.Sprintf("Translation log, %d new translations a second for %s, each ended 10 s later: %.0f logged, %.0f times events lost%s; natpool watch used %.1f%% of a core, conntrack -E -o timestamp writing the same events to a file %.1f%% (ratio %.2f; target 1.25); %d bytes on disk, %.1f a translation (target 12).\n",
		rate, load, records, lost, conntrackLost(eventsErr.String()), 100*watchCPU, 100*eventsCPU, watchCPU/eventsCPU, bytes, float64(bytes)/records))
	return nil
}

// conntrackLost says whether conntrack -E reported lost events.
func conntrackLost(stderr string) string {
	if strings.Contains(stderr, "No buffer space") {
		return " (conntrack -E lost events too)"
	}
	return ""
}

// middleTranslation finds, in conntrack -E -o timestamp's output, the
// first new translation at or after t: its public address and port and
// its time.
func middleTranslation(path string, t time.Time) (netip.AddrPort, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.AddrPort{}, time.Time{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// [1764851234.123456]	    [NEW] udp      17 10 src=... dst=... sport=... dport=... [UNREPLIED] src=... dst=PUBLIC sport=... dport=PORT
		line := sc.Text()
		if !strings.Contains(line, "[NEW]") {
			continue
		}
		ts, err := strconv.ParseFloat(strings.Trim(strings.Fields(line)[0], "[]"), 64)
		if err != nil || time.Unix(0, int64(ts*1e9)).Before(t) {
			continue
		}
		if flow, ok := netnstest.ParseFlow(line); ok {
			return flow.Translated, time.Unix(0, int64(ts*1e9)).Add(time.Second), nil
		}
	}
	return netip.AddrPort{}, time.Time{}, fmt.Errorf("%s: no new translation after %s", path, t)
}
