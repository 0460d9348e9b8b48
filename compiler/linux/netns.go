//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenNetNS opens a named network namespace, as `ip netns` keeps them
// (/run/netns/NAME). Keep the file open for as long as a socket made with
// its descriptor lives: were it collected and closed, the number could be
// reused and a batch sent to another namespace.
func OpenNetNS(name string) (*os.File, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("%q is not a network namespace name", name)
	}
	f, err := os.Open("/run/netns/" + name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no network namespace named %q", name)
	}
	if err != nil {
		return nil, Privileged(fmt.Errorf("network namespace %q: %w", name, err))
	}
	return f, nil
}

// Within runs fn on an OS thread that has entered the named network
// namespace (the current one when netns is empty). Sockets fn opens belong
// to that namespace. The thread is retired afterwards rather than returned
// to the scheduler in a foreign namespace.
func Within(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		f, err := OpenNetNS(netns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- Privileged(fmt.Errorf("entering network namespace %q: %w", netns, err))
			return
		}
		done <- fn()
	}()
	return <-done
}

// Interfaces returns the names of the network interfaces of a namespace.
func Interfaces(netns string) ([]string, error) {
	var names []string
	err := Within(netns, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	return names, err
}
