//go:build linux

package linux

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

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

// Batch receives many datagrams of a socket in one system call
// (recvmmsg): a busy NAT box sends tens of thousands of conntrack events a
// second, one datagram each, and a call for each would be most of what
// reading them costs.
type Batch struct {
	bufs [][]byte
	iovs []unix.Iovec
	hdrs []mmsghdr
	out  [][]byte
}

// mmsghdr is the kernel's struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// NewBatch returns a batch of n datagrams of up to size bytes each.
func NewBatch(n, size int) *Batch {
	b := &Batch{bufs: make([][]byte, n), iovs: make([]unix.Iovec, n), hdrs: make([]mmsghdr, n)}
	mem := make([]byte, n*size)
	for i := range n {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
	}
	return b
}

// Recv waits for datagrams and returns those waiting, up to the batch's
// number; they are valid until the next call. A datagram cut short by its
// buffer's size is an error: unix.EMSGSIZE.
func (b *Batch) Recv(raw syscall.RawConn) ([][]byte, error) {
	var n int
	var opErr error
	err := raw.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		n, opErr = int(r), nil
		if e != 0 {
			opErr = e
		}
		return opErr != unix.EAGAIN
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return nil, err
	}
	b.out = b.out[:0]
	for i := range n {
		if b.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			return nil, unix.EMSGSIZE
		}
		b.out = append(b.out, b.bufs[i][:b.hdrs[i].len])
	}
	return b.out, nil
}
