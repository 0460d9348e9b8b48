package compiler

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel talks to nf_tables in one network namespace. It changes only
// natpool's own table.
type Kernel struct {
	// netns is held open for the connection's whole life: nftables keeps
	// only its number, and were the file collected and closed, the number
	// could be reused and a batch sent to another namespace.
	netns   *os.File
	conn    *nftables.Conn
	bufSize int // socket buffer for the next batch, set from its size
}

// Dial connects to nf_tables in the named network namespace
// (/run/netns/NAME), or in the current one when netns is empty.
func Dial(netns string) (*Kernel, error) {
	k := &Kernel{bufSize: minBuffer}
	opts := []nftables.ConnOption{nftables.WithSockOptions(k.setBuffers)}
	if netns != "" {
		f, err := os.Open("/run/netns/" + netns)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no network namespace named %q", netns)
		}
		if err != nil {
			return nil, fmt.Errorf("network namespace %q: %w", netns, err)
		}
		k.netns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		k.Close()
		return nil, err
	}
	k.conn = conn
	return k, nil
}

// Close releases the namespace.
func (k *Kernel) Close() error {
	if k.netns != nil {
		return k.netns.Close()
	}
	return nil
}

const (
	minBuffer = 1 << 20
	// bytesPerElement bounds the netlink bytes of one set element with its
	// attributes, to size the socket buffers from the batch.
	bytesPerElement = 96
	// elementsPerMessage splits large sets into several messages of one batch.
	elementsPerMessage = 2000
)

// setBuffers raises the socket buffers to hold the batch, as nft does: one
// batch is one sendmsg, and the kernel acks every message of it. The FORCE
// variants pass the system limit (root only).
func (k *Kernel) setBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, k.bufSize); e != nil && sockErr == nil {
				sockErr = fmt.Errorf("socket buffer of %d bytes: %w", k.bufSize, e)
			}
		}
	})
	if err != nil {
		return err
	}
	return sockErr
}

// Apply replaces natpool's table with rs in one transaction: the kernel
// applies all of it or none, so on error the previous table stays as it was.
func (k *Kernel) Apply(rs *Ruleset) error {
	o, err := buildObjects(rs)
	if err != nil {
		return err
	}
	c := k.conn
	c.AddTable(o.table) // so that deleting it cannot fail on a first apply
	c.DelTable(o.table)
	c.AddTable(o.table)
	c.AddChain(o.chain)
	elements := 0
	for _, s := range o.sets {
		first := s.elements[:min(len(s.elements), elementsPerMessage)]
		if err := c.AddSet(s.set, first); err != nil {
			return err
		}
		for i := len(first); i < len(s.elements); i += elementsPerMessage {
			if err := c.SetAddElements(s.set, s.elements[i:min(i+elementsPerMessage, len(s.elements))]); err != nil {
				return err
			}
		}
		elements += len(s.elements)
	}
	for _, r := range o.rules {
		c.AddRule(r)
	}
	k.bufSize = max(minBuffer, 2*elements*bytesPerElement)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("the kernel refused the ruleset, nothing changed: %w", err)
	}
	return nil
}

// Delete removes natpool's table; false when there was none.
func (k *Kernel) Delete(table string) (bool, error) {
	t, err := k.conn.ListTableOfFamily(table, nftables.TableFamilyIPv4)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	k.conn.DelTable(t)
	return true, k.conn.Flush()
}
