package journal

import (
	"bytes"
	"encoding/json"
	"time"
)

// parseEvent reads one line of the events file into ev, as json.Unmarshal
// would. Lines as natpool writes them (a flat object of Event's keys with
// plain strings, integers and booleans) are read directly; anything else
// (escapes, other keys, null, another layout) goes to json.Unmarshal, the
// reference, which FuzzParseEvent holds the direct reading to. Reading the
// journal is most of the time lookup --at takes, and reflection most of
// json.Unmarshal's.
//
// names holds the strings read so far (host, table, version, digest, ...):
// they repeat from line to line, and are made once.
func parseEvent(line []byte, ev *Event, names map[string]string) error {
	if !parseFlat(line, ev, names) {
		*ev = Event{}
		return json.Unmarshal(line, ev)
	}
	return nil
}

// parseFlat reads a line natpool wrote; false when it cannot say the line
// means what json.Unmarshal would make of it.
func parseFlat(line []byte, ev *Event, names map[string]string) bool {
	name := func(v []byte) string {
		if s, ok := names[string(v)]; ok {
			return s
		}
		s := string(v)
		names[s] = s
		return s
	}
	p := bytes.Trim(line, " \t\r\n") // JSON's whitespace, not Unicode's
	if len(p) < 2 || p[0] != '{' || p[len(p)-1] != '}' {
		return false
	}
	p = p[1 : len(p)-1]
	for len(p) > 0 {
		key, rest, ok := plainString(p)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		p = rest[1:]
		switch string(key) {
		case "seq":
			n, rest, ok := plainInt(p)
			if !ok {
				return false
			}
			ev.Seq, p = n, rest
		case "recovered":
			switch {
			case bytes.HasPrefix(p, []byte("true")):
				ev.Recovered, p = true, p[4:]
			case bytes.HasPrefix(p, []byte("false")):
				ev.Recovered, p = false, p[5:]
			default:
				return false
			}
		default:
			v, rest, ok := plainString(p)
			if !ok {
				return false
			}
			p = rest
			if dst := ev.text(key); dst != nil {
				*dst = name(v)
			} else if t := ev.when(key); t == nil || t.UnmarshalText(v) != nil {
				return false
			}
		}
		if len(p) > 0 {
			if p[0] != ',' || len(p) == 1 {
				return false
			}
			p = p[1:]
		}
	}
	return true
}

// text is the string field of ev that key names, nil for none.
func (ev *Event) text(key []byte) *string {
	switch string(key) {
	case "event":
		return &ev.Kind
	case "op":
		return &ev.Op
	case "host":
		return &ev.Host
	case "netns":
		return &ev.Netns
	case "table":
		return &ev.Table
	case "version":
		return &ev.Version
	case "digest":
		return &ev.Digest
	case "error":
		return &ev.Error
	case "node":
		return &ev.Node
	case "peer":
		return &ev.Peer
	case "machine":
		return &ev.Machine
	case "egress":
		return &ev.Egress
	case "state":
		return &ev.State
	case "why":
		return &ev.Why
	}
	return nil
}

// when is the time field of ev that key names, nil for none.
func (ev *Event) when(key []byte) *time.Time {
	switch string(key) {
	case "time":
		return &ev.Time
	case "since":
		return &ev.Since
	}
	return nil
}

// plainInt reads a non-negative JSON integer below a million million at the
// start of p: a sequence number.
func plainInt(p []byte) (n int, rest []byte, ok bool) {
	i := 0
	for i < len(p) && i < 12 && '0' <= p[i] && p[i] <= '9' {
		n = n*10 + int(p[i]-'0')
		i++
	}
	if i == 0 || i == 12 || p[0] == '0' && i > 1 || i < len(p) && p[i] != ',' {
		return 0, nil, false
	}
	return n, p[i:], true
}

// plainString reads a JSON string at the start of p that needs no
// unescaping: printable ASCII without quotes or backslashes.
func plainString(p []byte) (s, rest []byte, ok bool) {
	if len(p) == 0 || p[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return p[1:i], p[i+1:], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}
