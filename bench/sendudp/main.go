// Command sendudp sends one UDP packet from each of count consecutive
// source addresses starting at first, from any source address, so that
// each leaves a conntrack entry: the benchmark's traffic. Run it inside the
// namespace under test (ip netns exec NAME sendudp FIRST COUNT); it needs
// root, a default route and a resolved gateway (see compiler/netnstest).
package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler/netnstest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "sendudp: %v\n", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: sendudp FIRST-ADDRESS COUNT")
	}
	first, err := netip.ParseAddr(args[0])
	if err != nil || !first.Is4() {
		return fmt.Errorf("%q is not an IPv4 address", args[0])
	}
	count, err := strconv.Atoi(args[1])
	if err != nil || count < 1 {
		return fmt.Errorf("count %q is not a positive number", args[1])
	}
	srcs := make([]netip.AddrPort, 0, count)
	for a := first; len(srcs) < count && a.IsValid(); a = a.Next() {
		srcs = append(srcs, netip.AddrPortFrom(a, 40000))
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return netnstest.WriteUDP(fd, srcs)
}
