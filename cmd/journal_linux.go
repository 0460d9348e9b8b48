//go:build linux

package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/compiler/nft"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// journalWriter writes this machine's changes to the journal at path:
// interrupted changes are settled by the stamps on their tables, and said
// on stderr.
func journalWriter(path string, stderr io.Writer) (*journal.Writer, error) {
	m, err := thisMachine()
	if err != nil {
		return nil, err
	}
	return &journal.Writer{Dir: path, Machine: m, Version: Version, Now: now, Waiting: waiting(path, stderr),
		Stamp: func(t journal.Target) (string, bool, error) {
			k, err := nft.Dial(t.Netns)
			if err != nil {
				return "", false, err
			}
			defer k.Close()
			st, err := k.Stamp(t.Table)
			return st.Digest, st.Exists, err
		},
		Settled: func(r journal.Resolved) {
			fmt.Fprintf(stderr, "natpool: journal %s: the %s of entry %d (%s), interrupted, %s\n", path, r.Op, r.Seq, render.TargetText(r.Host, r.Target),
				map[string]string{journal.Commit: "took effect", journal.Abort: "did not take effect"}[r.Outcome])
		},
	}, nil
}
