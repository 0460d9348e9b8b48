package journal

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Time layouts without a UTC offset, taken in --tz.
var localLayouts = []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"}

// ParseTime reads a time given as RFC 3339 with an offset (in either case),
// seconds since the epoch ("@1763388300"), "now", or a local time in zone
// tz. A local time that a daylight-saving change skips or repeats is
// refused with the UTC times it could mean. A time in the future is
// refused: no journal can answer for it.
func ParseTime(what, s, tz string, t0 time.Time) (time.Time, error) {
	var t time.Time
	var err error
	switch {
	case s == "":
		return t, fmt.Errorf("%s needs a time (RFC 3339, @SECONDS, now, or a local time with --tz)", what)
	case s == "now":
		return t0, nil
	case strings.HasPrefix(s, "@"):
		secs, perr := strconv.ParseInt(s[1:], 10, 64)
		if perr != nil {
			return t, fmt.Errorf("%s %q is not seconds since the epoch (@1763388300)", what, s)
		}
		t = time.Unix(secs, 0)
	case strings.ContainsAny(s[min(len(s), 10):], "Zz+-"):
		if t, err = time.Parse(time.RFC3339Nano, strings.ToUpper(s)); err != nil {
			return t, fmt.Errorf("%s %q is not an RFC 3339 time (2026-11-17T14:05:00+01:00)", what, s)
		}
	default:
		if tz == "" {
			return t, fmt.Errorf("%s %q has no UTC offset: add one (Z, +01:00) or give --tz", what, s)
		}
		loc, err := LoadZone(tz)
		if err != nil {
			return t, err
		}
		if t, err = localTime(what, s, loc); err != nil {
			return t, err
		}
	}
	if t.After(t0) {
		return t, fmt.Errorf("%s %s is in the future", what, t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// LoadZone reads a time zone given with --tz.
func LoadZone(tz string) (*time.Location, error) {
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("--tz %q is not a time zone (Europe/Berlin, UTC, Local)", tz)
	}
	return loc, nil
}

// localTime reads a wall-clock time in loc. The times it may mean are
// those of each UTC offset loc has near it: none when a daylight-saving
// change skipped it, two when one repeated it, and then it is refused.
func localTime(what, s string, loc *time.Location) (time.Time, error) {
	var wall time.Time
	var err error
	for _, layout := range localLayouts {
		if wall, err = time.Parse(layout, s); err == nil {
			break
		}
	}
	if err != nil {
		return wall, fmt.Errorf("%s %q is not a time (2026-11-17 14:05:00)", what, s)
	}
	var offsets []int
	for _, probe := range []time.Duration{-36 * time.Hour, 0, 36 * time.Hour} {
		if _, off := wall.Add(probe).In(loc).Zone(); !slices.Contains(offsets, off) {
			offsets = append(offsets, off)
		}
	}
	// Each offset's reading of the wall time, as RFC 3339 with that offset
	// and in UTC; the readings loc itself gives are what s may mean.
	var means, all []time.Time
	for _, off := range offsets {
		t := wall.Add(-time.Duration(off) * time.Second).In(time.FixedZone("", off))
		all = append(all, t)
		if t.In(loc).Format(time.DateTime) == wall.Format(time.DateTime) {
			means = append(means, t)
		}
	}
	readings := func(ts []time.Time) string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Format(time.RFC3339)+" ("+t.UTC().Format("15:04:05Z")+")")
		}
		return strings.Join(out, " or ")
	}
	switch len(means) {
	case 1:
		return means[0], nil
	case 0:
		return wall, fmt.Errorf("%s %q does not exist in %s: the clocks skipped it; give an offset: %s", what, s, loc, readings(all))
	}
	return wall, fmt.Errorf("%s %q happened twice in %s: the clocks went back over it; give an offset: %s", what, s, loc, readings(means))
}

// Zones returns the time zones that begin with prefix: Local, UTC and
// the system's tz database (Europe/Berlin, ...), without its posix/ and
// right/ copies.
func Zones(prefix string) []string {
	const tzdata = "/usr/share/zoneinfo"
	names := []string{"Local", "UTC"}
	_ = filepath.WalkDir(tzdata, func(path string, d fs.DirEntry, err error) error {
		name, _ := filepath.Rel(tzdata, path)
		switch {
		case err != nil || name == ".":
			return nil
		case d.IsDir() && (name == "posix" || name == "right"):
			return filepath.SkipDir
		case !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0:
			return nil
		}
		// Zones are capitalised (Europe/Berlin, EST5EDT); the database's
		// own files (zone.tab, leapseconds) are not.
		if first := filepath.Base(name)[0]; 'A' <= first && first <= 'Z' && !strings.Contains(name, ".") {
			names = append(names, name)
		}
		return nil
	})
	names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, prefix) })
	slices.Sort(names)
	return slices.Compact(names) // the database has a UTC of its own
}
