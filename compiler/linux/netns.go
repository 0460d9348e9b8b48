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

// home is the network namespace natpool started in, opened before any
// thread could leave it: where Within brings its threads back.
var home, _ = os.Open("/proc/thread-self/ns/net")

// Within runs fn on an OS thread that has entered the named network
// namespace (the current one when netns is empty). Sockets fn opens belong
// to that namespace. The thread goes back home afterwards and serves other
// goroutines again; one that cannot is retired rather than returned to the
// scheduler in a foreign namespace.
func Within(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // unlocked only once back home
		f, err := OpenNetNS(netns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- Privileged(fmt.Errorf("entering network namespace %q: %w", netns, err))
			return
		}
		err = fn()
		if home != nil && unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// Claim takes name for this process inside the named network namespace
// (the current one when empty) until release is called or the process
// ends: an abstract unix socket bound there, which the kernel frees with
// the process. A name another process holds is refused, naming its pid.
// serve, when not nil, is handed each connection Dial makes to name from
// a process of root or of this process's user; any other is closed.
func Claim(netns, name string, serve func(net.Conn)) (release func() error, err error) {
	addr := claimAddr(name)
	var l *net.UnixListener
	err = Within(netns, func() (err error) {
		l, err = net.ListenUnix("unix", addr)
		return err
	})
	if errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("another natpool (pid %d) holds %s in %s", holder(netns, name), name, where(netns))
	}
	if err != nil {
		return nil, Privileged(fmt.Errorf("claiming %s: %w", name, err))
	}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			// Anyone in the namespace may connect to an abstract socket.
			if cred, err := peerCred(c); serve == nil || err != nil || cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
				c.Close()
				continue
			}
			go serve(c)
		}
	}()
	return l.Close, nil
}

// Dial connects to the process that claimed name in the named network
// namespace (the current one when empty).
func Dial(netns, name string) (*net.UnixConn, error) {
	var c *net.UnixConn
	err := Within(netns, func() (err error) {
		c, err = net.DialUnix("unix", nil, claimAddr(name))
		return err
	})
	if errors.Is(err, unix.ECONNREFUSED) {
		return nil, fmt.Errorf("nothing holds %s in %s", name, where(netns))
	}
	return c, err
}

// claimAddr is the abstract socket of name.
func claimAddr(name string) *net.UnixAddr {
	return &net.UnixAddr{Name: "@natpool/" + name, Net: "unix"}
}

// holder returns the pid of the process that claimed name, 0 if unknown.
func holder(netns, name string) int32 {
	c, err := Dial(netns, name)
	if err != nil {
		return 0
	}
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		return 0
	}
	return cred.Pid
}

// peerCred returns the credentials of the process at the other end of c.
func peerCred(c *net.UnixConn) (cred *unix.Ucred, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	if cerr := raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil {
		return nil, cerr
	}
	return cred, err
}

// where names a namespace for messages.
func where(netns string) string {
	if netns == "" {
		return "this network namespace"
	}
	return "network namespace " + netns
}
