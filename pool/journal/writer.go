package journal

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/natpool/natpool/pool"
)

// Machine is who writes to a journal: ID names its targets whatever its
// host name; Host is the name it has now, for people.
type Machine struct{ ID, Host string }

// machineIDFiles are where a Linux machine keeps its identity: systemd's,
// then D-Bus's.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// ThisMachine returns this machine's identity: its machine ID, or without
// one its host name, and its host name.
func ThisMachine() (Machine, error) {
	host, err := os.Hostname()
	if err != nil {
		return Machine{}, err
	}
	for _, path := range machineIDFiles {
		if b, err := os.ReadFile(path); err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return Machine{ID: id, Host: host}, nil
			}
		}
	}
	return Machine{ID: "host " + host, Host: host}, nil
}

// Writer writes one machine's changes to the journal at Dir: each change's
// intent, synced before the kernel acts, then its outcome, and peer
// events. Before it writes, it settles the changes of its machine that an
// interruption left without an outcome, from the stamps on their tables.
type Writer struct {
	Dir     string
	Machine Machine
	Version string // natpool's, written on each intent
	Now     func() time.Time
	// Stamp reads the digest natpool stamped on a target's table ("" if
	// none) and whether the table exists.
	Stamp func(Target) (digest string, exists bool, err error)
	// Waiting is called when another writer holds the journal; Settled
	// with each change an interruption left that the writer settled.
	Waiting func()
	Settled func(Resolved)
}

// OutcomeError is a change that took effect in the kernel but whose outcome
// the journal could not take (a full disk): the next writer settles it from
// the table's stamp.
type OutcomeError struct {
	Dir string
	Seq int
	Err error
}

func (e *OutcomeError) Error() string {
	return fmt.Sprintf("the kernel change took effect, but journal %s could not record its outcome (entry %d): %v; the next apply, status or watch records it from the table's stamp",
		e.Dir, e.Seq, e.Err)
}

func (e *OutcomeError) Unwrap() error { return e.Err }

// Target returns the target of this writer's machine for a table in netns.
func (w *Writer) Target(netns, table string) Target {
	return Target{Machine: w.Machine.ID, Netns: netns, Table: table}
}

// open opens the journal for writing (making it if there is none, when
// make says so), takes its lock and settles what interruptions left; the
// caller releases the lock.
func (w *Writer) open(make bool) (*Journal, func(), error) {
	var j *Journal
	var unlock func()
	var err error
	if make {
		j, unlock, err = Create(w.Dir, w.Now(), w.Waiting)
	} else if j, err = Open(w.Dir); err == nil {
		unlock, err = j.Lock(w.Waiting)
	}
	if err != nil {
		return nil, nil, err
	}
	settled, err := j.Recover(w.Machine.ID, w.Now(), w.Stamp)
	for _, r := range settled {
		if w.Settled != nil {
			w.Settled(r)
		}
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return j, unlock, nil
}

// Change records a change of a table in netns (op Apply of the plan rec
// with digest, or Delete) around do, which makes it in the kernel: the
// intent synced to disk first, do's outcome after. If the journal cannot
// take the intent, do does not run; if do succeeds and the outcome cannot
// be written, the error is an *OutcomeError.
func (w *Writer) Change(op, netns, table, digest string, rec *pool.Record, do func() error) error {
	j, unlock, err := w.open(true)
	if err != nil {
		return err
	}
	defer unlock()
	seq, err := j.Begin(Event{Time: w.Now().UTC(), Op: op, Host: w.Machine.Host, Machine: w.Machine.ID,
		Netns: netns, Table: table, Version: w.Version, Digest: digest}, rec)
	if err != nil {
		return err
	}
	if err := do(); err != nil {
		if jerr := j.End(seq, Abort, w.Now(), err, false); jerr != nil {
			return fmt.Errorf("%w (and the journal did not take the outcome: %v)", err, jerr)
		}
		return err
	}
	if err := j.End(seq, Commit, w.Now(), nil, false); err != nil {
		return &OutcomeError{Dir: w.Dir, Seq: seq, Err: err}
	}
	return nil
}

// Peer records that node saw its peer go down or come up (kind PeerDown or
// PeerUp) at at, on this machine's table in netns; since is the earliest a
// peer seen down may have gone silent (zero for one that came up).
func (w *Writer) Peer(kind, netns, table, node, peer string, at, since time.Time) error {
	j, unlock, err := w.open(true)
	if err != nil {
		return err
	}
	defer unlock()
	return j.Peer(Event{Kind: kind, Time: at, Host: w.Machine.Host, Machine: w.Machine.ID, Netns: netns, Table: table, Node: node, Peer: peer, Since: since})
}

// Uplink records that the uplink of egress entry egress, on this machine's
// table in netns, is state (up, degraded or down) since at, and why.
func (w *Writer) Uplink(netns, table, egress, state, why string, at time.Time) error {
	j, unlock, err := w.open(true)
	if err != nil {
		return err
	}
	defer unlock()
	return j.Peer(Event{Kind: Uplink, Time: at, Host: w.Machine.Host, Machine: w.Machine.ID, Netns: netns, Table: table, Egress: egress, State: state, Why: why})
}

// InForce settles the journal and returns what it holds, with the span of
// the plan in force now in this machine's table in netns (nil if none):
// the last change written. A journal that does not exist is an error that
// wraps fs.ErrNotExist, and is not made.
func (w *Writer) InForce(netns, table string) (*Contents, *Span, error) {
	j, unlock, err := w.open(false)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	c, err := j.Read()
	if err != nil {
		return nil, nil, err
	}
	var last *Span
	target := w.Target(netns, table)
	for _, s := range Spans(c.Entries) {
		if s.Target == target && s.Current {
			last = &s
		}
	}
	return c, last, nil
}
