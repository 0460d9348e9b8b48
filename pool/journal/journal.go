// Package journal keeps the history of the plans natpool puts in force on a
// NAT box, so that who had a public address at a time can be answered long
// after the spec and its hosts files have changed.
//
// A journal is a directory:
//
//	events               JSON lines: a header, then an event a line, appended only
//	plans/DIGEST.json.gz the pool.Record of each plan an event names, written once
//	lock                 held by a writer from its intent to its outcome
//
// An apply writes its intent (and the plan) and syncs it to disk before the
// kernel commit, and its outcome after. An outcome lost to a crash is found
// on the next write by reading the digest natpool stamps on its table
// (Recover). Nothing is rewritten or dropped but by Prune, on request.
package journal

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/natpool/natpool/pool"
)

// Format is the version of the journal's layout. A journal of a later
// format is refused: an older natpool cannot know what it holds. Format 2
// (natpool 0.2.0) added peer events and the machine identity; a natpool
// that writes to a format-1 journal raises its header to 2 first, so that
// 0.1.0 refuses it by its format instead of calling it damaged.
const Format = 2

// DefaultPath is where a NAT box keeps its journal unless told otherwise.
const DefaultPath = "/var/lib/natpool/journal"

const (
	eventsFile = "events"
	plansDir   = "plans"
	lockFile   = "lock"
)

type header struct {
	Journal int       `json:"natpool_journal"`
	Created time.Time `json:"created"`
}

// Event is one line of the events file.
type Event struct {
	Seq  int    `json:"seq"`
	Kind string `json:"event"` // "intent", "commit", "abort", "peer-down" or "peer-up"
	// Time is when the event was written, UTC.
	Time time.Time `json:"time"`
	// An intent names what is to change.
	Op      string `json:"op,omitempty"` // "apply" or "delete"
	Host    string `json:"host,omitempty"`
	Netns   string `json:"netns,omitempty"`
	Table   string `json:"table,omitempty"`
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"` // the plan applied
	// An outcome may have been found after an interruption, from the
	// kernel's stamp, and an abort says why.
	Recovered bool   `json:"recovered,omitempty"`
	Error     string `json:"error,omitempty"`
	// A peer event (Seq 0) says that node Node of a cluster saw its peer
	// Peer go down or come up: a failover of the peer's hosts to Node, or
	// back. Host, Netns and Table say where Node runs.
	Node string `json:"node,omitempty"`
	Peer string `json:"peer,omitempty"`
	// Machine identifies the machine that wrote the event, whatever its
	// host name (/etc/machine-id); Host is the name it had then. Events
	// before format 2 have none, and are the machine's whose later events
	// carry their host name.
	Machine string `json:"machine,omitempty"`
	// Since, on a peer-down event, is the earliest the peer may have gone
	// silent: a BGP hold time before Node saw it down, at Time.
	Since time.Time `json:"since,omitzero"`
	// An uplink event says that the uplink of egress entry Egress is now
	// State (up, degraded or down), and Why.
	Egress string `json:"egress,omitempty"`
	State  string `json:"state,omitempty"`
	Why    string `json:"why,omitempty"`
}

// The kinds of event and of operation.
const (
	Intent   = "intent"
	Commit   = "commit"
	Abort    = "abort"
	PeerDown = "peer-down"
	PeerUp   = "peer-up"
	Uplink   = "uplink"
	Apply    = "apply"
	Delete   = "delete"
)

// PeerEvent is a peer of a cluster's node going down or coming up, as that
// node saw it.
type PeerEvent struct {
	Time       time.Time
	Target     Target // where the node runs
	Host       string // its host name then
	Node, Peer string
	Up         bool
	// Since is the earliest a peer seen down may have gone silent; zero
	// for a peer that came up, and in events before natpool 0.2.0.
	Since time.Time
	Line  int // in the events file
}

// UplinkEvent is the uplink of an egress entry of a site going up, down
// or degraded, as watch saw it.
type UplinkEvent struct {
	Time   time.Time
	Target Target // where watch runs
	Host   string // its host name then
	Egress string
	State  string // "up", "degraded" or "down"
	Why    string
	Line   int // in the events file
}

// Target is the table a plan is put in force in: on a machine, in a network
// namespace ("" for the machine's own).
type Target struct {
	Machine, Netns, Table string
}

// Entry is an intent with its outcome.
type Entry struct {
	Seq     int
	Op      string
	Target  Target
	Host    string // the machine's host name when it wrote the intent
	Digest  string
	Version string
	// Intended is when the intent was written; From is when the change
	// took effect: the commit, or the intent when the commit was only
	// found later (Recovered), since it happened after the intent.
	Intended, From time.Time
	Outcome        string // Commit, Abort, or "" while the outcome is unknown
	Recovered      bool
	Error          string
	Line           int // of the intent in the events file
}

// Journal is an open journal directory.
type Journal struct {
	Dir    string
	format int // of the header, once read
}

// Open opens the journal at dir, which must exist and be natpool's.
func Open(dir string) (*Journal, error) {
	j := &Journal{Dir: dir}
	f, err := os.Open(j.path(eventsFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("journal %s: %w", dir, serr)
		}
		return nil, fmt.Errorf("journal %s: not a natpool journal (no events file)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", dir, err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadBytes('\n')
	var h header
	if err != nil || len(line) > maxLine || json.Unmarshal(line, &h) != nil || h.Journal == 0 {
		return nil, fmt.Errorf("journal %s: not a natpool journal (line 1 is no journal header)", dir)
	}
	if h.Journal > Format {
		return nil, fmt.Errorf("journal %s: written in format %d by a newer natpool; this one reads format %d", dir, h.Journal, Format)
	}
	j.format = h.Journal
	return j, nil
}

// maxLine bounds a line of the events file: natpool writes lines of a few
// hundred bytes, and a line of 50 MB is none of its own.
const maxLine = 64 << 10

// Create opens the journal at dir for writing, making it if there is none,
// and returns it locked (see Lock) with the lock's release. It refuses a
// directory that holds anything but a journal.
func Create(dir string, now time.Time, waiting func()) (*Journal, func(), error) {
	// Refused before anything is made in it: /etc is no journal.
	if err := mayHoldJournal(dir); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, plansDir), 0o750); err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", dir, err)
	}
	j := &Journal{Dir: dir}
	unlock, err := j.Lock(waiting)
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(j.path(eventsFile)); err == nil {
		opened, err := Open(dir)
		if err == nil && opened.format < Format {
			err = j.raiseFormat()
		}
		if err != nil {
			unlock()
			return nil, nil, err
		}
		return j, unlock, nil
	}
	// A new journal, in a directory that holds nothing else (checked again
	// under the lock).
	if err := mayHoldJournal(dir); err != nil {
		unlock()
		return nil, nil, err
	}
	line, _ := json.Marshal(header{Journal: Format, Created: now.UTC()})
	if err := writeFile(j.path(eventsFile), append(line, '\n')); err != nil {
		unlock()
		return nil, nil, fmt.Errorf("journal %s: %w", dir, err)
	}
	return j, unlock, nil
}

// mayHoldJournal refuses a directory that holds anything but a journal or
// what Create makes first; one that does not exist may become a journal.
// The temporary file of a Create racing this one (writeFile's) is its own.
func mayHoldJournal(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() == eventsFile {
			return nil // a journal, or not: Open tells
		}
	}
	for _, e := range entries {
		if e.Name() != lockFile && e.Name() != plansDir && !strings.HasPrefix(e.Name(), tmpPrefix) {
			return fmt.Errorf("journal %s: not a natpool journal, and not empty (it holds %s)", dir, e.Name())
		}
	}
	return nil
}

// raiseFormat rewrites the header of an older journal as this format's,
// before this natpool writes what an older one cannot read.
func (j *Journal) raiseFormat() error {
	data, err := os.ReadFile(j.path(eventsFile))
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	first, rest, _ := bytes.Cut(data, []byte{'\n'})
	var h header
	if err := json.Unmarshal(first, &h); err != nil {
		return fmt.Errorf("journal %s: line 1: %w", j.Dir, err)
	}
	h.Journal = Format
	line, _ := json.Marshal(h)
	if err := writeFile(j.path(eventsFile), append(append(line, '\n'), rest...)); err != nil {
		return fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	return nil
}

func (j *Journal) path(name string) string { return filepath.Join(j.Dir, name) }

func (j *Journal) planPath(digest string) string {
	return filepath.Join(j.Dir, plansDir, digest+".json.gz")
}

// Contents is what a journal holds.
type Contents struct {
	Entries []Entry       // the intents, oldest first, each with its outcome
	Peers   []PeerEvent   // oldest first
	Uplinks []UplinkEvent // oldest first
	// Notes say what the reader passed over: a last line a crash or a full
	// disk cut short (absent: the next write trims it), and events of
	// kinds this natpool does not know.
	Notes []string
}

// Read reads the events. A line that does not parse, or an outcome without
// its intent, is an error naming the line and its byte offset.
func (j *Journal) Read() (*Contents, error) {
	// Read whole, the events are counted before they are parsed, and the
	// entries are allocated once: growing a slice of them costs more than
	// parsing them. Each line must hold exactly one event.
	data, err := os.ReadFile(j.path(eventsFile))
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	c := &Contents{Entries: make([]Entry, 0, bytes.Count(data, []byte{'\n'})/2)} // an intent and its outcome
	entries := c.Entries
	names := map[string]string{}
	machineOf := map[string]string{} // host name -> machine, from the events that carry both
	for n, next := 1, 0; next < len(data); n++ {
		at := next
		bad := func(why string) error {
			return fmt.Errorf("journal %s: line %d (offset %d) %s", j.path(eventsFile), n, at, why)
		}
		end := at + bytes.IndexByte(data[at:], '\n')
		if end < at {
			if n == 1 {
				return nil, bad("is cut short: the journal's header was never written whole")
			}
			c.Notes = append(c.Notes, fmt.Sprintf("journal %s: line %d (offset %d) is cut short: a write was interrupted (a crash, a full disk); it counts as never written, and the next write trims it", j.path(eventsFile), n, at))
			break
		}
		next = end + 1
		if end-at > maxLine {
			return nil, bad(fmt.Sprintf("is %d bytes long: natpool writes no line over %d", end-at, maxLine))
		}
		if n == 1 {
			continue // the header, checked by Open
		}
		var ev Event
		if err := parseEvent(data[at:end], &ev, names); err != nil {
			return nil, bad("does not parse: " + err.Error())
		}
		if ev.Machine != "" && ev.Host != "" {
			machineOf[ev.Host] = ev.Machine
		}
		target := Target{ev.Machine, ev.Netns, ev.Table}
		// Intents are numbered in the order they are written, so the
		// entries are in Seq order and an intent is found by bisection;
		// an outcome mostly follows its own intent, the last.
		i, known := len(entries)-1, len(entries) > 0 && entries[len(entries)-1].Seq == ev.Seq
		if !known {
			i, known = slices.BinarySearchFunc(entries, ev.Seq, func(e Entry, seq int) int { return cmp.Compare(e.Seq, seq) })
		}
		switch {
		case (ev.Kind == PeerDown || ev.Kind == PeerUp) && ev.Seq == 0 && ev.Node != "" && ev.Peer != "":
			c.Peers = append(c.Peers, PeerEvent{Time: ev.Time, Target: target, Host: ev.Host, Node: ev.Node, Peer: ev.Peer, Up: ev.Kind == PeerUp, Since: ev.Since, Line: n})
		case ev.Kind == Uplink && ev.Seq == 0 && ev.Egress != "" && ev.State != "":
			c.Uplinks = append(c.Uplinks, UplinkEvent{Time: ev.Time, Target: target, Host: ev.Host, Egress: ev.Egress, State: ev.State, Why: ev.Why, Line: n})
		case ev.Kind == Intent && i == len(entries) && (ev.Op == Apply && validDigest(ev.Digest) || ev.Op == Delete):
			entries = append(entries, Entry{Seq: ev.Seq, Op: ev.Op, Target: target, Host: ev.Host,
				Digest: ev.Digest, Version: ev.Version, Intended: ev.Time, Line: n})
		case (ev.Kind == Commit || ev.Kind == Abort) && known && entries[i].Outcome == "":
			e := &entries[i]
			e.Outcome, e.Recovered, e.Error = ev.Kind, ev.Recovered, ev.Error
			e.From = ev.Time
			if ev.Recovered {
				e.From = e.Intended
			}
		case !slices.Contains(kinds, ev.Kind):
			c.Notes = append(c.Notes, fmt.Sprintf("journal %s: line %d: event %q is of a kind this natpool does not know; passed over", j.path(eventsFile), n, ev.Kind))
		default:
			return nil, bad(fmt.Sprintf("is no intent, outcome of one, or peer event (event %q, seq %d)", ev.Kind, ev.Seq))
		}
	}
	// Events written before the machine was named are its, by host name.
	for i := range entries {
		entries[i].Target.Machine = machineFor(entries[i].Target.Machine, entries[i].Host, machineOf)
	}
	for i := range c.Peers {
		c.Peers[i].Target.Machine = machineFor(c.Peers[i].Target.Machine, c.Peers[i].Host, machineOf)
	}
	for i := range c.Uplinks {
		c.Uplinks[i].Target.Machine = machineFor(c.Uplinks[i].Target.Machine, c.Uplinks[i].Host, machineOf)
	}
	c.Entries = entries
	return c, nil
}

// kinds are the kinds of event this natpool knows.
var kinds = []string{Intent, Commit, Abort, PeerDown, PeerUp, Uplink}

// machineFor names the machine of an event: its own, else the one a later
// event names for its host, else its host name.
func machineFor(machine, host string, machineOf map[string]string) string {
	if machine != "" {
		return machine
	}
	if m, ok := machineOf[host]; ok {
		return m
	}
	return "host " + host
}

// validDigest reports whether d is a plan digest: 16 lower-case hex digits.
func validDigest(d string) bool {
	if len(d) != 16 {
		return false
	}
	for _, c := range d {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Begin records the intent of e (Seq is set here) and, for an apply, the
// plan's record, and syncs both to disk. The caller holds the lock.
func (j *Journal) Begin(e Event, rec *pool.Record) (int, error) {
	c, err := j.Read()
	if err != nil {
		return 0, err // a damaged journal is a person's to mend
	}
	e.Seq, e.Kind = 1, Intent
	if n := len(c.Entries); n > 0 {
		e.Seq = c.Entries[n-1].Seq + 1
	}
	if rec != nil {
		if err := j.writePlan(e.Digest, rec); err != nil {
			return 0, err
		}
	}
	return e.Seq, j.append(e)
}

// End records the outcome of intent seq: Commit, or Abort with why.
func (j *Journal) End(seq int, kind string, now time.Time, why error, recovered bool) error {
	ev := Event{Seq: seq, Kind: kind, Time: now.UTC(), Recovered: recovered}
	if why != nil {
		ev.Error = why.Error()
	}
	return j.append(ev)
}

// Peer records that node ev.Node saw its peer ev.Peer go down (PeerDown) or
// come up (PeerUp), or that the uplink of egress ev.Egress is now ev.State
// (Uplink), and syncs it to disk. The caller holds the lock.
func (j *Journal) Peer(ev Event) error {
	peer := (ev.Kind == PeerDown || ev.Kind == PeerUp) && ev.Node != "" && ev.Peer != ""
	if !peer && (ev.Kind != Uplink || ev.Egress == "" || ev.State == "") {
		return fmt.Errorf("journal %s: a peer event needs event peer-down or peer-up, a node and a peer; an uplink event an egress and a state", j.Dir)
	}
	if _, err := j.Read(); err != nil {
		return err // a damaged journal is a person's to mend
	}
	ev.Seq, ev.Time = 0, ev.Time.UTC()
	return j.append(ev)
}

// append writes ev as the events' last line and syncs it. A last line an
// interrupted write cut short is trimmed first; a write that fails is
// trimmed back, so the file ends in a whole line whatever happens.
func (j *Journal) append(ev Event) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(j.path(eventsFile), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	defer f.Close()
	whole, err := wholeLines(f)
	if err == nil {
		if err = f.Truncate(whole); err == nil {
			_, err = f.WriteAt(append(line, '\n'), whole)
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Truncate(whole) // nothing of a failed write stays
		}
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	return nil
}

// wholeLines returns the length of f up to the end of its last whole line.
func wholeLines(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := st.Size()
	buf := make([]byte, 4096)
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return end - n + int64(i) + 1, nil
		}
		end -= n
	}
	return 0, nil
}

// writePlan stores the record under its digest, unless it is there.
func (j *Journal) writePlan(digest string, rec *pool.Record) error {
	path := j.planPath(digest)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(rec); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	if err := writeFile(path, buf.Bytes()); err != nil {
		return fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	return nil
}

// Plan reads the record of the plan with this digest.
func (j *Journal) Plan(digest string) (pool.Record, error) {
	var rec pool.Record
	f, err := os.Open(j.planPath(digest))
	if err != nil {
		return rec, fmt.Errorf("journal %s: plan %s: %w", j.Dir, digest, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err == nil {
		err = json.NewDecoder(zr).Decode(&rec)
	}
	if err != nil {
		return rec, fmt.Errorf("journal %s: plan %s: %w", j.Dir, digest, err)
	}
	return rec, nil
}

// tmpPrefix begins the names of writeFile's temporary files.
const tmpPrefix = ".tmp-"

// writeFile writes data to path through a temporary file, synced and
// renamed into place, then syncs the directory: the file is whole or absent.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), tmpPrefix+"*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
