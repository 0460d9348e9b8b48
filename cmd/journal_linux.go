//go:build linux

package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// journaled records change in the journal at path around do, which makes
// it in the kernel: the intent (with rec, the plan of an apply) synced to
// disk first, the outcome after. Changes of this host left unsettled by an
// interruption are settled first. If the journal cannot take the intent,
// nothing is changed.
func journaled(path string, change journal.Event, rec *pool.Record, stderr io.Writer, do func() error) error {
	j, unlock, err := journal.Create(path, now(), waiting(path, stderr))
	if err != nil {
		return err
	}
	defer unlock()
	if err := settle(j, stderr); err != nil {
		return err
	}
	change.Time, change.Version = now().UTC(), Version
	if change.Host, err = hostname(); err != nil {
		return err
	}
	seq, err := j.Begin(change, rec)
	if err != nil {
		return err
	}
	if err := do(); err != nil {
		if jerr := j.End(seq, journal.Abort, now(), err, false); jerr != nil {
			return fmt.Errorf("%w (and the journal did not take the outcome: %v)", err, jerr)
		}
		return err
	}
	return j.End(seq, journal.Commit, now(), nil, false)
}

// settle settles the changes of this host that an interruption left without
// an outcome, by the stamp on each table. The caller holds the lock.
func settle(j *journal.Journal, stderr io.Writer) error {
	host, err := hostname()
	if err != nil {
		return err
	}
	settled, err := j.Recover(host, now(), func(t journal.Target) (string, bool, error) {
		k, err := nft.Dial(t.Netns)
		if err != nil {
			return "", false, err
		}
		defer k.Close()
		st, err := k.Stamp(t.Table)
		return st.Digest, st.Exists, err
	})
	for _, r := range settled {
		fmt.Fprintf(stderr, "natpool: journal %s: the %s of entry %d (%s), interrupted, %s\n", j.Dir, r.Op, r.Seq, render.TargetText(r.Target),
			map[string]string{journal.Commit: "took effect", journal.Abort: "did not take effect"}[r.Outcome])
	}
	return err
}
