package cmd

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// world is what natpool takes from outside its command line: the clock
// and this machine's identity, which journal entries carry, and the
// journal used when none is named. Execute runs in the real one; tests run
// commands in worlds of their own.
type world struct {
	now     func() time.Time
	machine func() (journal.Machine, error)
	journal string
}

// realWorld is the world natpool runs in.
func realWorld() *world {
	return &world{now: time.Now, machine: journal.ThisMachine, journal: journal.DefaultPath}
}

// journalFlag adds --journal: one path, or several where many may be read.
func journalFlag(cmd *cobra.Command, dst *[]string, many bool) {
	usage := fmt.Sprintf("journal directory (default: the spec's journal key, else %s)", journal.DefaultPath)
	if many {
		usage += "; repeat to read the journals of several NAT boxes"
	}
	cmd.Flags().StringArrayVar(dst, "journal", nil, usage)
	_ = cmd.MarkFlagDirname("journal")
}

// journalPaths returns the journals to use: those given, else the spec's,
// else the default.
func (w *world) journalPaths(given []string, fromSpec string) []string {
	switch {
	case len(given) > 0:
		return given
	case fromSpec != "":
		return []string{fromSpec}
	}
	return []string{w.journal}
}

// onePath refuses several journals where one is written.
func (w *world) onePath(given []string, fromSpec string) (string, error) {
	paths := w.journalPaths(given, fromSpec)
	if len(paths) > 1 {
		return "", fmt.Errorf("--journal given %d times: this command writes one journal", len(paths))
	}
	return paths[0], nil
}

// waiting tells the user why natpool pauses: another holds the journal.
func waiting(path string, stderr io.Writer) func() {
	return func() { fmt.Fprintf(stderr, "natpool: waiting for another natpool to finish with journal %s\n", path) }
}

// openBox is natpool on this machine, in the kernel of netns, recording in
// the journal at path: interrupted changes are settled by the stamps on
// their tables, and said on stderr.
func (w *world) openBox(netns, path string, stderr io.Writer) (*box.Box, error) {
	m, err := w.machine()
	if err != nil {
		return nil, err
	}
	jw := &journal.Writer{Dir: path, Machine: m, Version: Version, Now: w.now, Waiting: waiting(path, stderr),
		Settled: func(r journal.Resolved) {
			fmt.Fprintf(stderr, "natpool: journal %s: the %s of entry %d (%s), interrupted, %s\n", path, r.Op, r.Seq, render.TargetText(r.Host, r.Target),
				map[string]string{journal.Commit: "took effect", journal.Abort: "did not take effect"}[r.Outcome])
		},
	}
	return box.New(netns, box.LinuxKernels, jw), nil
}
