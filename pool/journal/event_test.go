package journal

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzParseEvent holds the direct reading of event lines to json.Unmarshal:
// for any line, both fail or both give the same event.
func FuzzParseEvent(f *testing.F) {
	for _, ev := range []Event{
		{Seq: 1, Kind: Intent, Time: time.Date(2026, 11, 17, 14, 5, 0, 123e6, time.UTC), Op: Apply, Host: "nat1", Netns: "ns0", Table: "natpool", Version: "0.1.0", Digest: "0123456789abcdef"},
		{Seq: 2, Kind: Commit, Time: time.Date(2026, 11, 17, 14, 5, 1, 0, time.UTC), Recovered: true},
		{Seq: 3, Kind: Abort, Time: time.Date(2026, 11, 17, 14, 5, 2, 0, time.UTC), Error: "the kernel said \"no\"\n"},
	} {
		line, _ := json.Marshal(ev)
		f.Add(line)
	}
	f.Add([]byte(`{"seq":-0,"event":"intent"}`))
	f.Add([]byte(`{"seq":01}`))
	f.Add([]byte(`{"seq":123456789012345678901}`))
	f.Add([]byte(`{"SEQ":1, "seq" : 2 ,"recovered":true}`))
	f.Add([]byte(`{"seq":1,"time":"2026-11-17T14:05:00+01:00","op":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var want, got Event
		werr := json.Unmarshal(line, &want)
		gerr := parseEvent(line, &got, map[string]string{})
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: json.Unmarshal says %v, parseEvent %v", line, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%q: json.Unmarshal gives %+v, parseEvent %+v", line, want, got)
		}
	})
}
