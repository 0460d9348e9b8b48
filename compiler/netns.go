package compiler

import (
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

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
		f, err := openNetNS(netns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
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
