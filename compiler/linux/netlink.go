//go:build linux

package linux

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DumpBuffer is the largest reply the kernel builds for one round of a
// netlink dump: it sizes each round by the reader's largest buffer.
const DumpBuffer = 32 << 10

// Recv reads one datagram of a netlink socket into buf, waiting for it.
func Recv(raw syscall.RawConn, buf []byte) (int, error) { return recv(raw, buf, true) }

// TryRecv reads one datagram of a netlink socket into buf if one is
// waiting; unix.EAGAIN if none is.
func TryRecv(raw syscall.RawConn, buf []byte) (int, error) { return recv(raw, buf, false) }

func recv(raw syscall.RawConn, buf []byte, wait bool) (int, error) {
	var n int
	var opErr error
	err := raw.Read(func(fd uintptr) bool {
		n, _, opErr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return !wait || opErr != unix.EAGAIN
	})
	if err == nil {
		err = opErr
	}
	return n, err
}

// Send writes one datagram to the kernel on a netlink socket.
func Send(raw syscall.RawConn, msg []byte) error {
	var opErr error
	err := raw.Write(func(fd uintptr) bool {
		opErr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return opErr != unix.EAGAIN
	})
	if err == nil {
		err = opErr
	}
	return err
}

// ErrPrivilege is what the kernel's refusals for want of privilege wrap.
var ErrPrivilege = errors.New("talking to the kernel needs root, or CAP_NET_ADMIN (and CAP_SYS_ADMIN for --netns)")

// Privileged turns a refusal for want of privilege into one error that
// says so, whichever system call made it; other errors pass unchanged.
func Privileged(err error) error {
	if errors.Is(err, os.ErrPermission) && !errors.Is(err, ErrPrivilege) {
		return fmt.Errorf("%w: %v", ErrPrivilege, err)
	}
	return err
}
