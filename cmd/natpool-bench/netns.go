//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/linux"
	"github.com/natpool/natpool/compiler/netnstest"
	"github.com/natpool/natpool/pool"
)

var namespaces []string

// newNamespace makes a scratch namespace with a veth uplink to a peer, a
// default route, a permanent neighbour for the gateway so that raw packets
// from any source leave and leave conntrack entries, and UDP entries that
// live ten minutes. It returns the namespace's name.
func newNamespace(name string) (string, error) {
	ns := fmt.Sprintf("natpool-bench-%d-%s", os.Getpid(), name)
	peer := ns + "-peer"
	namespaces = append(namespaces, ns, peer)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"netns", "add", peer},
		{"link", "add", netnstest.Uplink, "netns", ns, "type", "veth", "peer", "name", "down0", "netns", peer},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", netnstest.Uplink, "up"},
		{"-n", peer, "link", "set", "down0", "up"},
		{"-n", ns, "addr", "add", "192.0.2.1/24", "dev", netnstest.Uplink},
		{"-n", ns, "route", "add", "default", "via", "192.0.2.254"},
		{"-n", ns, "neigh", "add", "192.0.2.254", "lladdr", "02:00:00:00:00:01", "dev", netnstest.Uplink, "nud", "permanent"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := inNamespace(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600"); err != nil {
		return "", err
	}
	return ns, nil
}

func deleteNamespaces() {
	for _, ns := range namespaces {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// inNamespace runs a command inside a namespace.
func inNamespace(ns string, name string, args ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// output runs a command inside a namespace and returns its output.
func output(ns string, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// sendUDP sends one UDP packet from each of count consecutive source
// addresses from first, each leaving a conntrack entry.
func sendUDP(ns string, first netip.Addr, count int) error {
	srcs := make([]netip.AddrPort, count)
	for i := range srcs {
		srcs[i] = netip.AddrPortFrom(pool.AddrFromUint32(pool.Uint32(first)+uint32(i)), 40000)
	}
	return linux.Within(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = netnstest.WriteUDP(fd, srcs)
		return err
	})
}
