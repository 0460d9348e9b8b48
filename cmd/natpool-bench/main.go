//go:build linux

// Command natpool-bench measures natpool against the way people do the same
// jobs today, side by side in one run on this machine: each pair of
// commands alternates -runs times in scratch network namespaces, and the
// report gives medians of wall time and peak RSS and the ratios natpool /
// incumbent, as a Markdown table for the README.
//
// It needs root, nftables, ipset, conntrack and iproute2, and builds natpool
// from this repository unless -natpool names a binary:
//
//	go run ./cmd/natpool-bench            # everything, a few minutes
//	go run ./cmd/natpool-bench -only flush
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "natpool-bench: %v\n", err)
		os.Exit(2)
	}
}

// bench is one run of the benchmarks.
type bench struct {
	natpool string // the binary measured
	runs    int
	work    string // scratch directory
	rows    []string
	notes   []string // tables other than the main one
}

func run() error {
	runs := flag.Int("runs", 3, "alternated runs of each pair; the report gives medians")
	binary := flag.String("natpool", "", "natpool binary to measure (default: build this repository's)")
	only := flag.String("only", "", "run only the benchmarks whose name matches this regular expression")
	flag.Parse()
	filter, err := regexp.Compile(*only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the benchmarks make network namespaces")
	}
	for _, tool := range []string{"ip", "nft", "ipset", "conntrack", "awk", "diff"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing", tool)
		}
	}
	work, err := os.MkdirTemp("", "natpool-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &bench{natpool: *binary, runs: *runs, work: work}
	if b.natpool == "" {
		b.natpool = filepath.Join(work, "natpool")
		progress("building natpool")
		if out, err := exec.Command("go", "build", "-o", b.natpool, "./cmd/natpool").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	defer deleteNamespaces()
	for _, j := range jobs {
		if !filter.MatchString(j.name) {
			continue
		}
		progress(j.name + ": " + j.what)
		if err := j.run(b); err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
	}
	version, _ := exec.Command(b.natpool, "--version").Output()
	fmt.Printf("%s on %d cores, Linux %s, %s; medians of %d alternated runs\n\n",
		strings.TrimSpace(string(version)), runtime.NumCPU(), kernelRelease(), time.Now().UTC().Format("2006-01-02"), b.runs)
	fmt.Println("| job | natpool | incumbent | time ratio | memory ratio | notes |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range b.rows {
		fmt.Println(r)
	}
	for _, n := range b.notes {
		fmt.Printf("\n%s", n)
	}
	return nil
}

func progress(msg string) { fmt.Fprintf(os.Stderr, "natpool-bench: %s\n", msg) }

func kernelRelease() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(data))
}
