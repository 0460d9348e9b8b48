//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/netnstest"
)

// 11. natpool watch probing 8 uplinks, 3 targets each (ICMP, TCP, DNS),
// every second: its share of a core. Target: at most 1%.
//
// The box's uplinks lead to one namespace that routes for all of them and
// holds the targets: an address answering ICMP and, a closed port, TCP
// with a reset, and a DNS server of the bench's own.
func benchProbes(b *bench) error {
	const uplinks, load = 8, 30 * time.Second
	box := fmt.Sprintf("natpool-bench-%d-probes", os.Getpid())
	isp := box + "-isp"
	namespaces = append(namespaces, box, isp)
	steps := [][]string{{"netns", "add", box}, {"netns", "add", isp}, {"-n", isp, "link", "set", "lo", "up"},
		{"-n", isp, "addr", "add", "198.18.0.1/32", "dev", "lo"}, {"-n", isp, "addr", "add", "198.18.0.53/32", "dev", "lo"}}
	// The spec with probes, and without: the watch's own share beside them.
	var spec, bare strings.Builder
	for _, b := range []*strings.Builder{&spec, &bare} {
		b.WriteString("egress:\n")
	}
	for i := range uplinks {
		wan, gw := fmt.Sprintf("wan%d", i), fmt.Sprintf("192.0.%d.254", 2+i)
		steps = append(steps,
			[]string{"link", "add", wan, "netns", box, "type", "veth", "peer", "name", fmt.Sprintf("box%d", i), "netns", isp},
			[]string{"-n", box, "addr", "add", fmt.Sprintf("192.0.%d.1/24", 2+i), "dev", wan},
			[]string{"-n", box, "link", "set", wan, "up"},
			[]string{"-n", isp, "addr", "add", gw + "/24", "dev", fmt.Sprintf("box%d", i)},
			[]string{"-n", isp, "link", "set", fmt.Sprintf("box%d", i), "up"},
			[]string{"-n", box, "route", "add", "default", "via", gw, "metric", fmt.Sprint(i)})
		entry := fmt.Sprintf("  - name: isp%d\n    oif: %s\n    private: [10.0.0.0/16]\n    pool: [203.0.%d.0/29]\n", i, wan, 100+i)
		bare.WriteString(entry)
		spec.WriteString(entry + "    probe: {targets: [\"icmp:198.18.0.1\", \"tcp:198.18.0.1:443\", \"dns:198.18.0.53\"], interval: 1s}\n")
	}
	for _, b := range []*strings.Builder{&spec, &bare} {
		b.WriteString("uplinks: {policy: priority}\n")
	}
	for _, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	stop, err := serveDNS(isp, "198.18.0.53:53")
	if err != nil {
		return err
	}
	defer stop()
	var busy [2]float64
	changes := 0
	for k, text := range []string{bare.String(), spec.String()} {
		var err error
		if busy[k], err = watchShare(b, box, text, load, &changes); err != nil {
			return err
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("Probing %d uplinks, 3 targets each (ICMP, TCP, DNS) every second, for %s: natpool watch used %.2f%% of a core, %.2f%% without the probes: the probes' share %.2f%% (target: 1%%); %d uplink state changes.\n",
		uplinks, load, 100*busy[1], 100*busy[0], 100*(busy[1]-busy[0]), changes))
	return nil
}

// watchShare runs natpool watch of spec in the box namespace for load and
// returns its share of a core; changes counts the uplink state changes it
// logged.
func watchShare(b *bench, box, spec string, load time.Duration, changes *int) (float64, error) {
	path := filepath.Join(b.work, "probes.yaml")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		return 0, err
	}
	watch, logPath, stop, err := b.startWatch("probes.log", "watching ", "-f", path, "--netns", box, "--journal", filepath.Join(b.work, "probes-journal"))
	if err != nil {
		return 0, err
	}
	defer stop()
	time.Sleep(3 * time.Second) // past the first rounds
	cpu0, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(load)
	cpu1, err := cpuTicks(watch.Process.Pid)
	if err != nil {
		return 0, err
	}
	text, _ := os.ReadFile(logPath)
	*changes += strings.Count(string(text), "uplink isp")
	return float64(cpu1-cpu0) / 100 / time.Since(t0).Seconds(), nil
}

// serveDNS answers every DNS query to addr in namespace ns, refused, until
// stop is called.
func serveDNS(ns, addr string) (stop func(), err error) {
	var c net.PacketConn
	err = linux.Within(ns, func() (err error) {
		c, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go netnstest.AnswerDNS(c)
	return func() { c.Close() }, nil
}
