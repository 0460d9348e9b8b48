//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

// sample is one measured run of a command.
type sample struct {
	seconds float64
	rssKB   int64 // peak resident set, from the kernel's accounting of the process
}

// measure runs a command, stdin from a file when stdin is not empty and
// stdout discarded, and returns its wall time and peak RSS. A failure
// returns the command's stderr.
func measure(stdin string, name string, args ...string) (sample, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return sample{}, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s %v: %v: %s", name, args, err, errOut.String())
	}
	return sample{elapsed.Seconds(), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss}, nil
}

// series is the samples of one command over the runs.
type series []sample

func (s series) median() sample {
	secs, rss := make([]float64, len(s)), make([]int64, len(s))
	for i, x := range s {
		secs[i], rss[i] = x.seconds, x.rssKB
	}
	slices.Sort(secs)
	slices.Sort(rss)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return sample{secs[m], rss[m]}
	}
	return sample{(secs[m-1] + secs[m]) / 2, (rss[m-1] + rss[m]) / 2}
}

func (x sample) String() string { return fmt.Sprintf("%.2f s, %d MB", x.seconds, x.rssKB/1024) }

// row adds a line to the report: natpool's median against the incumbent's,
// when there is one.
func (b *bench) row(job string, natpool, incumbent series, note string) {
	n := natpool.median()
	if incumbent == nil {
		b.rows = append(b.rows, fmt.Sprintf("| %s | %s | | | | %s |", job, n, note))
		return
	}
	i := incumbent.median()
	b.rows = append(b.rows, fmt.Sprintf("| %s | %s | %s | %.3g | %.3g | %s |", job, n, i,
		n.seconds/i.seconds, float64(n.rssKB)/float64(i.rssKB), note))
}
