//go:build linux

// Package netnstest gives tests scratch network namespaces, made with
// iproute2 and deleted when the test ends, and runs the kernel's own tools
// (nft, iptables-restore, ipset, conntrack) inside them.
//
// A machine that cannot make namespaces (not root, tools missing) skips
// these tests, except under CI=true, where they fail: CI must prove the
// kernel path.
package netnstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// NS is a scratch network namespace.
type NS struct {
	Name string
	t    testing.TB
}

var serial atomic.Int64

// Require fails (under CI=true) or skips the test unless it runs as root
// with every tool named available.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("kernel test needs %s (CI=true: failing, not skipping)", strings.Join(missing, ", "))
	}
	t.Skipf("kernel test needs %s", strings.Join(missing, ", "))
}

// New creates a namespace for the test, deleted when it ends.
func New(t testing.TB, tools ...string) *NS {
	t.Helper()
	Require(t, tools...)
	ns := &NS{Name: fmt.Sprintf("natpool-test-%d-%d", os.Getpid(), serial.Add(1)), t: t}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	return ns
}

// Command is exec.Command, for the tools a test runs in its own namespace.
func Command(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }

// Run runs a command inside the namespace with stdin and returns its
// output: stdout, followed by stderr if it fails.
func (ns *NS) Run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		out.Write(errOut.Bytes())
	}
	return out.String(), err
}

// MustRun is Run, failing the test when the command fails.
func (ns *NS) MustRun(stdin string, name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Run(stdin, name, args...)
	if err != nil {
		ns.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}
