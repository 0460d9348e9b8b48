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

// Claim takes name for this process inside the named network namespace
// (the current one when empty) until release is called or the process
// ends: an abstract unix socket bound there, which the kernel frees with
// the process. A name another process holds is refused, naming its pid.
func Claim(netns, name string) (release func() error, err error) {
	addr := &net.UnixAddr{Name: "@natpool/" + name, Net: "unix"}
	var l *net.UnixListener
	err = Within(netns, func() (err error) {
		l, err = net.ListenUnix("unix", addr)
		return err
	})
	if errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("another natpool (pid %d) holds %s in %s", holder(netns, addr), name, where(netns))
	}
	if err != nil {
		return nil, Privileged(fmt.Errorf("claiming %s: %w", name, err))
	}
	go func() { // answer holder's question, and nothing else
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Close, nil
}

// holder returns the pid of the process listening on addr, 0 if unknown.
func holder(netns string, addr *net.UnixAddr) int32 {
	var pid int32
	Within(netns, func() error {
		c, err := net.DialUnix("unix", nil, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		return raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				pid = cred.Pid
			}
		})
	})
	return pid
}

// where names a namespace for messages.
func where(netns string) string {
	if netns == "" {
		return "this network namespace"
	}
	return "network namespace " + netns
}
