package render

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"go4.org/netipx"

	"github.com/natpool/natpool/pool"
)

// LookupOptions says how lookup answers are written.
type LookupOptions struct {
	Egress bool // name the egress entry of each answer
	All    bool // list every host of a reverse lookup
}

// shownRanges bounds the ranges a reverse lookup prints as text without All.
const shownRanges = 8

// LookupText writes one answer per line; a reverse answer lists its ranges
// (or, with All, its hosts) indented below.
func LookupText(w io.Writer, answers []pool.Answer, o LookupOptions) error {
	for _, a := range answers {
		if o.Egress {
			fmt.Fprintf(w, "[%s] ", a.Egress)
		}
		switch a.Kind {
		case pool.Forward:
			fmt.Fprintf(w, "%s -> %s ports %s\n", a.Private, a.Public, a.Ports)
		case pool.PortOwner:
			owner := "no host"
			if a.Private.IsValid() {
				owner = a.Private.String()
			}
			fmt.Fprintf(w, "%s <- %s\n", netip.AddrPortFrom(a.Public, a.Port), owner)
		case pool.NoMapping:
			fmt.Fprintf(w, "%s: no mapping: %s\n", a.Query, a.Reason)
		case pool.Reverse:
			fmt.Fprintf(w, "%s <- %s in %s\n", a.Public, plural(a.Hosts, "host"), plural(uint64(len(a.Ranges)), "range"))
			if o.All {
				for _, r := range a.Ranges {
					for h := r.From(); r.Contains(h); h = h.Next() {
						fmt.Fprintf(w, "  %s\n", h)
					}
				}
				continue
			}
			for i, r := range a.Ranges {
				if i == shownRanges {
					fmt.Fprintf(w, "  ... %d more ranges (-o json lists them all, --all lists every host)\n", len(a.Ranges)-i)
					break
				}
				fmt.Fprintf(w, "  %s\n", compact(r))
			}
		}
	}
	return nil
}

func plural(n uint64, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// compact writes a range as an address or prefix when it is one, as nft and
// iptables take it.
func compact(r netipx.IPRange) string {
	if p, ok := r.Prefix(); ok {
		return prefixText(p)
	}
	return r.String()
}

// prefixText writes a prefix, or its address alone when it holds one.
func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

type answerJSON struct {
	Egress  string   `json:"egress,omitempty"`
	Private *string  `json:"private,omitempty"`
	Public  string   `json:"public"`
	Ports   string   `json:"ports,omitempty"`
	Port    uint16   `json:"port,omitempty"`
	Hosts   *uint64  `json:"hosts,omitempty"`
	Ranges  []string `json:"ranges,omitempty"`
	Addrs   []string `json:"addrs,omitempty"`
}

// answerNone is an address with no mapping.
type answerNone struct {
	Query  string `json:"query"`
	Mapped bool   `json:"mapped"`
	Reason string `json:"reason"`
}

// answerOwner is a port answer: its "private" is null when no host owns the port.
type answerOwner struct {
	Egress  string  `json:"egress,omitempty"`
	Public  string  `json:"public"`
	Port    uint16  `json:"port"`
	Private *string `json:"private"`
}

// LookupJSON writes the answers as JSON: one object for a single answer, an
// array of them, in the order given, otherwise.
func LookupJSON(w io.Writer, answers []pool.Answer, o LookupOptions) error {
	out := make([]any, 0, len(answers))
	for _, a := range answers {
		egress := ""
		if o.Egress {
			egress = a.Egress
		}
		switch a.Kind {
		case pool.Forward:
			private := a.Private.String()
			out = append(out, answerJSON{Egress: egress, Private: &private, Public: a.Public.String(), Ports: a.Ports.String()})
		case pool.PortOwner:
			ao := answerOwner{Egress: egress, Public: a.Public.String(), Port: a.Port}
			if a.Private.IsValid() {
				s := a.Private.String()
				ao.Private = &s
			}
			out = append(out, ao)
		case pool.NoMapping:
			out = append(out, answerNone{Query: a.Query.String(), Reason: a.Reason})
		case pool.Reverse:
			aj := answerJSON{Egress: egress, Public: a.Public.String(), Hosts: &a.Hosts, Ranges: []string{}}
			for _, r := range a.Ranges {
				aj.Ranges = append(aj.Ranges, compact(r))
				if o.All {
					for h := r.From(); r.Contains(h); h = h.Next() {
						aj.Addrs = append(aj.Addrs, h.String())
					}
				}
			}
			out = append(out, aj)
		}
	}
	if len(out) == 1 {
		return JSON(w, out[0])
	}
	return JSON(w, out)
}
