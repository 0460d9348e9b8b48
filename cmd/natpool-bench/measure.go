//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
)

// sample is one measured run of a command.
type sample struct {
	seconds float64
	rssKB   int64 // peak resident set, from the kernel's accounting of the process
}

// measure runs a command, stdin from a file when stdin is not empty and
// stdout discarded, and returns its wall time and peak RSS as
// /usr/bin/time reports them: a process this program started directly
// would count this program's memory in its peak, for it starts children
// sharing its address space until they exec. A failure returns the sample
// and the command's stderr.
func measure(stdin string, name string, args ...string) (sample, error) {
	report, err := os.CreateTemp("", "natpool-bench-time")
	if err != nil {
		return sample{}, err
	}
	defer os.Remove(report.Name())
	report.Close()
	cmd := exec.Command("/usr/bin/time", append([]string{"-q", "-f", "%e %M", "-o", report.Name(), name}, args...)...)
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
	runErr := cmd.Run()
	var s sample
	text, err := os.ReadFile(report.Name())
	if err == nil {
		_, err = fmt.Sscanf(string(text), "%f %d", &s.seconds, &s.rssKB)
	}
	if runErr != nil {
		return s, fmt.Errorf("%s %v: %w: %s", name, args, runErr, errOut.String())
	}
	return s, err
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
