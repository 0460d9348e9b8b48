//go:build linux

// Package nft loads natpool's ruleset into nf_tables over netlink, in one
// transaction, and reads natpool's table back to compare it with a plan.
// It changes only natpool's own table. It builds on Linux only.
package nft

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/compiler/linux"
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
func Dial(netns string) (_ *Kernel, err error) {
	defer func() { err = linux.Privileged(err) }()
	k := &Kernel{bufSize: minBuffer}
	opts := []nftables.ConnOption{nftables.WithSockOptions(k.setBuffers)}
	if netns != "" {
		f, err := linux.OpenNetNS(netns)
		if err != nil {
			return nil, err
		}
		k.netns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		k.Close()
		return nil, linux.Privileged(err)
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
	batchGCPercent = 50
	minBuffer      = 1 << 20
	// bytesPerElement bounds the netlink bytes of one kernel set element
	// with its attributes (40 at most), to size the socket buffers from the
	// batch; a ruleset element is two kernel elements in an interval map.
	bytesPerElement = 48
	// elementsPerMessage keeps a message's element list (at most two kernel
	// elements of at most 40 bytes each per ruleset element) inside a
	// netlink attribute's 64 KiB.
	elementsPerMessage = 750
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
				sockErr = linux.Privileged(fmt.Errorf("socket buffer of %d bytes: %w", k.bufSize, e))
			}
		}
	})
	if err != nil {
		return err
	}
	if sockErr != nil {
		return sockErr
	}
	return widenDumps(raw)
}

// widenDumps makes the kernel fill dump replies on this socket up to
// linux.DumpBuffer. It sizes them by the largest recvmsg the socket has
// made, and the netlink library reads with page-sized buffers; a dump of a
// large set, whose walk the kernel restarts every round, then takes eight
// times the rounds. One read of a small reply into a full-size buffer (the
// generation, which nft asks for too) sets the size.
func widenDumps(raw syscall.RawConn) error {
	req := make([]byte, unix.NLMSG_HDRLEN+4) // nlmsghdr, then nfgenmsg
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	req[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC
	err := linux.Send(raw, req)
	if err == nil {
		_, err = linux.Recv(raw, make([]byte, linux.DumpBuffer))
	}
	if err != nil {
		return fmt.Errorf("widening netlink dumps: %w", err)
	}
	return nil
}

// TableStamp is what the kernel's copy of a table says about its owner.
type TableStamp struct {
	Exists  bool
	Natpool bool   // a rule of the table carries natpool's stamp
	Digest  string // the digest the stamp names; "" when unknown
	// Digest6 is the digest natpool's ip6 table of the same name names,
	// "" when there is none.
	Digest6 string
}

// Stamp reads the stamp natpool writes on its rules (Ruleset.Comment) from
// the table of that name, and from its ip6 table.
func (k *Kernel) Stamp(table string) (TableStamp, error) {
	st, err := k.stamp(table, nftables.TableFamilyIPv4)
	if err != nil {
		return st, err
	}
	st6, err := k.stamp(table, nftables.TableFamilyIPv6)
	st.Digest6 = st6.Digest
	return st, err
}

// stamp reads natpool's stamp from the table of that name and family.
func (k *Kernel) stamp(table string, family nftables.TableFamily) (_ TableStamp, err error) {
	defer func() { err = linux.Privileged(err) }()
	t, err := k.conn.ListTableOfFamily(table, family)
	if errors.Is(err, unix.ENOENT) {
		return TableStamp{}, nil
	}
	if err != nil {
		return TableStamp{}, err
	}
	st := TableStamp{Exists: true}
	chains, err := k.conn.ListChainsOfTableFamily(family)
	if err != nil {
		return st, err
	}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		rules, err := k.conn.GetRules(t, ch)
		if err != nil {
			return st, err
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if digest, ok := compiler.Stamp(comment); ok {
				st.Natpool = true
				st.Digest = cmp.Or(st.Digest, digest)
			}
		}
	}
	return st, nil
}

// GuardDrops returns, per egress entry, the packets natpool's guard chain
// has dropped since the table was loaded: packets from inside hosts that
// would have left their uplink untranslated. Nothing when the table or its
// guard is missing.
func (k *Kernel) GuardDrops(table string) (_ map[string]uint64, err error) {
	defer func() { err = linux.Privileged(err) }()
	t, err := k.conn.ListTableOfFamily(table, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rules, err := k.conn.GetRules(t, &nftables.Chain{Name: compiler.GuardChain, Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	drops := map[string]uint64{}
	for _, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		egress, ok := compiler.GuardEgress(comment)
		if !ok {
			continue
		}
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				drops[egress] += c.Packets
			}
		}
	}
	return drops, nil
}

// NotNatpoolsError is a table natpool refuses to replace or delete: it
// exists and carries no natpool stamp.
type NotNatpoolsError struct{ Family, Table string }

func (e *NotNatpoolsError) Error() string {
	return fmt.Sprintf("table %s %s is not natpool's: none of its rules carries natpool's stamp, and natpool never replaces or deletes a table it did not create (name another with --table)", e.Family, e.Table)
}

// claim refuses a table that exists and is not natpool's, in either
// family, and says whether natpool's ip6 table exists.
func (k *Kernel) claim(table string) (TableStamp, bool, error) {
	st, err := k.stamp(table, nftables.TableFamilyIPv4)
	if err == nil && st.Exists && !st.Natpool {
		err = &NotNatpoolsError{"ip", table}
	}
	if err != nil {
		return st, false, err
	}
	st6, err := k.stamp(table, nftables.TableFamilyIPv6)
	if err == nil && st6.Exists && !st6.Natpool {
		err = &NotNatpoolsError{"ip6", table}
	}
	return st, st6.Exists, err
}

// Apply replaces natpool's table with rs in one transaction: the kernel
// applies all of it or none, so on error the previous table stays as it was,
// and the error names the object the kernel refused. A table of that name
// that natpool did not make is refused and left alone.
func (k *Kernel) Apply(rs *compiler.Ruleset) (err error) {
	defer func() { err = linux.Privileged(err) }()
	_, had6, err := k.claim(rs.Table)
	if err != nil {
		return err
	}
	// A batch of a million elements is as large as the ruleset it comes
	// from, and both are garbage moments later: collect sooner while
	// building it, so the peak stays near what is live.
	defer debug.SetGCPercent(debug.SetGCPercent(batchGCPercent))
	o, err := buildObjects(rs)
	if err != nil {
		return err
	}
	o.drop6 = had6 && o.table6 == nil
	elements := 0
	for _, s := range o.sets {
		elements += s.n
	}
	k.bufSize = max(minBuffer, 2*elements*bytesPerElement)
	if err := k.send(o, -1); err != nil {
		return k.refusal(o, err)
	}
	return nil
}

// step is a part of the batch that replaces natpool's table: a set, a
// message of a set's elements, or a rule. what names it, for an error.
type step struct {
	what  func() string
	queue func(*nftables.Conn) error
}

// steps returns the batch after the table and its chain, in order, its
// elements made a message at a time.
func (o *objects) steps() iter.Seq[step] {
	return func(yield func(step) bool) {
		for _, s := range o.sets {
			// A netlink attribute holds at most 64 KiB, so elements go in
			// several messages of the batch, as nft sends them.
			// google/nftables refuses SetAddElements for an anonymous set
			// only as a guard against changing one after its batch: within
			// the batch that creates it, the kernel finds it by its batch
			// ID, which the copy keeps.
			if s.set.Constant {
				// AddSet sizes a constant set by the elements it is given;
				// declare them all, as nft does. (Constant sets are the
				// small anonymous ones.)
				s.set.Size = uint32(s.n)
			}
			more := *s.set
			more.Anonymous = false
			first := true
			for elems := range s.chunks {
				st := step{func() string {
					if len(elems) == 0 {
						return s.what
					}
					return fmt.Sprintf("elements %s to %s of %s", bytesText(elems[0].Key), bytesText(elems[len(elems)-1].Key), s.what)
				}, func(c *nftables.Conn) error { return c.SetAddElements(&more, elems) }}
				if first {
					st.queue = func(c *nftables.Conn) error { return c.AddSet(s.set, elems) }
					first = false
				}
				if !yield(st) {
					return
				}
			}
			if first && !yield(step{func() string { return s.what }, func(c *nftables.Conn) error { return c.AddSet(s.set, nil) }}) {
				return
			}
		}
		for _, ch := range o.chains {
			for i, r := range ch.rules {
				if !yield(step{func() string { return fmt.Sprintf("rule %d of chain %s", i+1, ch.chain.Name) },
					func(c *nftables.Conn) error { c.AddRule(r); return nil }}) {
					return
				}
			}
		}
	}
}

// send sends, in one batch, what replaces natpool's table: the table and
// its chain, then its steps, or only the first n of them for n >= 0. A
// shortened batch is closed with a message that always fails (deleting
// the table twice), so the kernel takes none of it and reports every
// message it refuses.
func (k *Kernel) send(o *objects, n int) error {
	c := k.conn
	for _, t := range []*nftables.Table{o.table, o.table6} {
		if t != nil {
			c.AddTable(t) // so that deleting it cannot fail on a first apply
			c.DelTable(t)
			c.AddTable(t)
		}
	}
	if o.drop6 {
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: o.table.Name})
	}
	for _, ch := range o.chains {
		c.AddChain(ch.chain)
	}
	queued := 0
	for s := range o.steps() {
		if queued == n {
			break
		}
		if err := s.queue(c); err != nil {
			c.Flush() // drop what was queued
			return err
		}
		queued++
	}
	if n >= 0 {
		c.DelTable(o.table)
		c.DelTable(o.table)
	}
	return c.Flush()
}

// refusal names what the kernel refused of a batch that failed with err:
// the first step whose batch, checked, fails by more than its closing
// message. The batches are checked by bisection, and none is taken.
func (k *Kernel) refusal(o *objects, err error) error {
	refused := func(n int) bool {
		var joined interface{ Unwrap() []error }
		e := k.send(o, n)
		return !errors.As(e, &joined) || len(joined.Unwrap()) > 1
	}
	steps := 0
	for range o.steps() {
		steps++
	}
	what := fmt.Sprintf("table ip %s or its chains", o.table.Name)
	switch {
	case !refused(steps):
		return fmt.Errorf("the kernel refused the ruleset, nothing changed: %w", err)
	case !refused(0):
		lo, hi := 0, steps // the first refused prefix has length in (lo, hi]
		for hi-lo > 1 {
			if mid := (lo + hi) / 2; refused(mid) {
				hi = mid
			} else {
				lo = mid
			}
		}
		for s := range o.steps() {
			if hi--; hi == 0 {
				what = s.what() + " of table ip " + o.table.Name
				break
			}
		}
	}
	return fmt.Errorf("the kernel refused %s, nothing changed: %w", what, err)
}

// Delete removes natpool's table; false when there was none. A table of that
// name that natpool did not make is refused and left alone.
func (k *Kernel) Delete(table string) (_ bool, err error) {
	defer func() { err = linux.Privileged(err) }()
	st, has6, err := k.claim(table)
	if err != nil || !st.Exists && !has6 {
		return false, err
	}
	if st.Exists {
		k.conn.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})
	}
	if has6 {
		k.conn.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: table})
	}
	return true, k.conn.Flush()
}
