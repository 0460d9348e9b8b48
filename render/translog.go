package render

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/translog"
)

// LogAnswers is what one translation log answered to one query.
type LogAnswers struct {
	Log    string
	Query  translog.Query
	Result *translog.Result
}

// LogText writes each log's answers: a line naming the log, the query and
// its time, then a line per translation, and why the log may miss some.
func LogText(w io.Writer, answers []LogAnswers) error {
	for _, a := range answers {
		q := a.Query
		fmt.Fprintf(w, "log %s: %s at %s", a.Log, q.Public, q.At.UTC().Format(time.RFC3339Nano))
		if q.Slack > 0 {
			fmt.Fprintf(w, " ± %s", q.Slack)
		}
		if q.Dst.Addr().IsValid() {
			fmt.Fprintf(w, " to %s", dstText(q.Dst))
		}
		fmt.Fprintf(w, ": %s\n", Plural(uint64(len(a.Result.Translations)), "translation"))
		for _, t := range a.Result.Translations {
			fmt.Fprintf(w, "  %s %s -> %s to %s, %s\n", pool.ProtoName(t.Proto), t.Inside, t.Public, translationDst(t, q), spanText(t))
		}
		for _, why := range a.Result.Incomplete {
			fmt.Fprintf(w, "  may be incomplete: %s\n", why)
		}
		for _, c := range a.Result.Clock {
			fmt.Fprintf(w, "  note: %s\n", c)
		}
	}
	return nil
}

// dstText is a destination as asked: ADDR, or ADDR:PORT.
func dstText(d netip.AddrPort) string {
	if d.Port() == 0 {
		return d.Addr().String()
	}
	return d.String()
}

// translationDst is a translation's destination: in clear, the query's
// when the log keeps a hash that matched it, else the hash.
func translationDst(t translog.Translation, q translog.Query) string {
	switch {
	case t.Dst.Addr().IsValid():
		return t.Dst.String()
	case q.Dst.Addr().IsValid():
		return netip.AddrPortFrom(q.Dst.Addr(), t.Dst.Port()).String() + " (its hash)"
	}
	return fmt.Sprintf("hash %08x port %d", t.DstHash, t.Dst.Port())
}

func spanText(t translog.Translation) string {
	s := "from " + t.Start.UTC().Format(time.RFC3339Nano)
	if t.Before {
		s = "there at " + t.Start.UTC().Format(time.RFC3339Nano) + " (began before the log)"
	}
	if t.End.IsZero() {
		return s + ", not ended"
	}
	return s + " until " + t.End.UTC().Format(time.RFC3339Nano)
}

// logAnswerJSON is one translation a log answered.
type logAnswerJSON struct {
	Log         string `json:"log"`
	Private     string `json:"private"`
	PrivatePort uint16 `json:"private_port"`
	Public      string `json:"public"`
	PublicPort  uint16 `json:"public_port"`
	Protocol    string `json:"protocol"`
	Start       string `json:"start"`
	// Before: the translation was there when the log began, at Start.
	Before bool   `json:"began_before_start,omitempty"`
	End    string `json:"end,omitempty"` // empty: not ended
	// Dst is the destination when the log keeps it in clear, or the one
	// asked when its hash matched.
	Dst        string `json:"dst,omitempty"`
	DstPort    uint16 `json:"dst_port"`
	Incomplete bool   `json:"incomplete"`
}

// LogJSON writes every answer of every log as one array of objects.
func LogJSON(w io.Writer, answers []LogAnswers) error {
	out := []logAnswerJSON{}
	for _, a := range answers {
		for _, t := range a.Result.Translations {
			j := logAnswerJSON{Log: a.Log, Private: t.Inside.Addr().String(), PrivatePort: t.Inside.Port(),
				Public: t.Public.Addr().String(), PublicPort: t.Public.Port(), Protocol: pool.ProtoName(t.Proto),
				Start: t.Start.UTC().Format(time.RFC3339Nano), Before: t.Before, DstPort: t.Dst.Port(),
				Incomplete: len(a.Result.Incomplete) > 0}
			if !t.End.IsZero() {
				j.End = t.End.UTC().Format(time.RFC3339Nano)
			}
			if t.Dst.Addr().IsValid() {
				j.Dst = t.Dst.Addr().String()
			} else if a.Query.Dst.Addr().IsValid() {
				j.Dst = a.Query.Dst.Addr().String()
			}
			out = append(out, j)
		}
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(out)
}
