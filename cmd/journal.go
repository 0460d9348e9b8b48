package cmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// now and hostname are the clock and the host name journal entries carry,
// and defaultJournal the journal used when none is named; tests set the
// clock and keep their journals to themselves.
var (
	now            = time.Now
	hostname       = os.Hostname
	defaultJournal = journal.DefaultPath
)

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
func journalPaths(given []string, fromSpec string) []string {
	switch {
	case len(given) > 0:
		return given
	case fromSpec != "":
		return []string{fromSpec}
	}
	return []string{defaultJournal}
}

// onePath refuses several journals where one is written.
func onePath(given []string, fromSpec string) (string, error) {
	paths := journalPaths(given, fromSpec)
	if len(paths) > 1 {
		return "", fmt.Errorf("--journal given %d times: this command writes one journal", len(paths))
	}
	return paths[0], nil
}

// rebuild reads the plan with this digest from journal j and checks that it
// is the plan the digest names.
func rebuild(j *journal.Journal, digest string) (*pool.Plan, error) {
	rec, err := j.Plan(digest)
	if err != nil {
		return nil, err
	}
	p, err := rec.Plan()
	if err != nil {
		return nil, fmt.Errorf("journal %s: plan %s: %w", j.Dir, digest, err)
	}
	if got := compiler.Digest(p); got != digest {
		return nil, fmt.Errorf("journal %s: plan %s rebuilds as %s: the stored plan is damaged", j.Dir, digest, got)
	}
	return p, nil
}

// Time layouts without a UTC offset, taken in --tz.
var localLayouts = []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"}

// parseTime reads a time given as RFC 3339 with an offset, "now", or a
// local time in zone tz. A time in the future is refused: no journal can
// answer for it.
func parseTime(what, s, tz string, t0 time.Time) (time.Time, error) {
	var t time.Time
	var err error
	switch {
	case s == "now":
		return t0, nil
	case strings.ContainsAny(s[min(len(s), 10):], "Zz+-"):
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return t, fmt.Errorf("%s %q is not an RFC 3339 time (2026-11-17T14:05:00+01:00)", what, s)
		}
	default:
		if tz == "" {
			return t, fmt.Errorf("%s %q has no UTC offset: add one (Z, +01:00) or give --tz", what, s)
		}
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return t, fmt.Errorf("--tz %q is not a time zone (Europe/Berlin, UTC, Local)", tz)
		}
		ok := false
		for _, layout := range localLayouts {
			if t, err = time.ParseInLocation(layout, s, loc); err == nil {
				ok = true
				break
			}
		}
		if !ok {
			return t, fmt.Errorf("%s %q is not a time (2026-11-17 14:05:00)", what, s)
		}
	}
	if t.After(t0) {
		return t, fmt.Errorf("%s %s is in the future", what, t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// timeZoneFlag adds --tz, the zone of times given without a UTC offset.
func timeZoneFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "tz", "", "time zone of times given without a UTC offset (Europe/Berlin, UTC, Local)")
}

// waiting tells the user why natpool pauses: another holds the journal.
func waiting(path string, stderr io.Writer) func() {
	return func() { fmt.Fprintf(stderr, "natpool: waiting for another natpool to finish with journal %s\n", path) }
}
