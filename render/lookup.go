package render

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"go4.org/netipx"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// LookupOptions says how lookup answers are written.
type LookupOptions struct {
	Egress bool // name the egress entry of each answer
	All    bool // list every host of a reverse lookup
}

// uplinkSuffix says, for a site's uplink, whether the host leaves by it.
func uplinkSuffix(a pool.Answer) string {
	switch {
	case a.Uplink == 0:
		return ""
	case a.InUse:
		return fmt.Sprintf(", by its uplink %d (in use)", a.Uplink)
	}
	return fmt.Sprintf(", by its uplink %d (not in use)", a.Uplink)
}

// nodesSuffix names the nodes serving an answer's address, for a cluster's
// plan: " on nodes nat1 > nat3 > nat2", the owner first.
func nodesSuffix(a pool.Answer) string {
	if a.Nodes == nil {
		return ""
	}
	return " on nodes " + NodesText(a.Nodes)
}

// shownRanges bounds the ranges a reverse lookup prints as text without All.
const shownRanges = 8

// LookupText writes one answer per line; a reverse answer lists its ranges
// (or, with All, its hosts) indented below.
func LookupText(w io.Writer, answers []pool.Answer, o LookupOptions) error {
	for _, a := range answers {
		if o.Egress && a.Egress != "" { // an address no entry has names none
			fmt.Fprintf(w, "[%s] ", a.Egress)
		}
		switch a.Kind {
		case pool.Forward:
			fmt.Fprintf(w, "%s -> %s ports %s%s%s\n", a.Private, a.Public, a.Ports, nodesSuffix(a), uplinkSuffix(a))
		case pool.PortOwner:
			owner := "no host"
			if a.Private.IsValid() {
				owner = a.Private.String()
			}
			fmt.Fprintf(w, "%s <- %s%s\n", netip.AddrPortFrom(a.Public, a.Port), owner, nodesSuffix(a))
		case pool.NoMapping:
			fmt.Fprintf(w, "%s: no mapping: %s\n", a.Query, a.Reason)
		case pool.ServiceAnswer:
			fmt.Fprintf(w, "%s %s:%s -> %s:%s: service %s\n", a.Protocol, a.Public, a.PublicPorts.Spec(), a.Private, a.Ports.Spec(), a.Service)
		case pool.PrefixAnswer:
			fmt.Fprintf(w, "%s <-> %s (prefix %s <-> %s)\n", a.Private, publicText(a.Public), a.NPT.Inside, prefixText6(a.NPT, "the uplink"))
		case pool.Reverse:
			fmt.Fprintf(w, "%s <- %s in %s%s\n", a.Public, Plural(a.Hosts, "host"), Plural(uint64(len(a.Ranges)), "range"), nodesSuffix(a))
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

// Plural writes a count of a noun: "1 host", "2 hosts", "3 entries".
func Plural(n uint64, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, noun[:len(noun)-1])
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
	Nodes   []string `json:"nodes,omitempty"`
	Uplink  int      `json:"uplink,omitempty"`
	InUse   *bool    `json:"in_use,omitempty"`
}

// answerNone is an address with no mapping.
type answerNone struct {
	Query  string `json:"query"`
	Mapped bool   `json:"mapped"`
	Reason string `json:"reason"`
}

// answerService is a service answer.
type answerService struct {
	Egress       string `json:"egress,omitempty"`
	Service      string `json:"service"`
	Protocol     string `json:"protocol"`
	Public       string `json:"public"`
	PublicPorts  string `json:"public_ports"`
	Private      string `json:"private"`
	PrivatePorts string `json:"private_ports"`
}

// answerPrefix is an IPv6 prefix translation's answer: its "public" is
// null while an uplink's prefix is not known.
type answerPrefix struct {
	Egress       string  `json:"egress,omitempty"`
	Private      string  `json:"private"`
	Public       *string `json:"public"`
	InsidePrefix string  `json:"inside_prefix"`
	PublicPrefix string  `json:"public_prefix"`
}

// publicText writes a public IPv6 address, or that it is not known.
func publicText(a netip.Addr) string {
	if !a.IsValid() {
		return "(not known here)"
	}
	return a.String()
}

// prefixText6 writes the public prefix of a translation, or where it
// comes from: the address of uplink (a name, or "the uplink").
func prefixText6(n pool.NPT, uplink string) string {
	if n.Public.IsValid() {
		return n.Public.String()
	}
	return "the prefix of " + uplink + "'s global address"
}

// answerOwner is a port answer: its "private" is null when no host owns the port.
type answerOwner struct {
	Egress  string   `json:"egress,omitempty"`
	Public  string   `json:"public"`
	Port    uint16   `json:"port"`
	Private *string  `json:"private"`
	Nodes   []string `json:"nodes,omitempty"`
}

// LookupJSON writes the answers as JSON: one object for a single answer, an
// array of them, in the order given, otherwise.
func LookupJSON(w io.Writer, answers []pool.Answer, o LookupOptions) error {
	out := answersJSON(answers, o)
	if len(out) == 1 {
		return JSON(w, out[0])
	}
	return JSON(w, out)
}

// PlanAnswers are the answers of a plan a journal held, with the time it
// was in force.
type PlanAnswers struct {
	Journal string
	Span    journal.Span
	Answers []pool.Answer
}

// LookupAtText writes the answers of each plan under a line naming the plan
// and its time in force, [from, until) in UTC.
func LookupAtText(w io.Writer, plans []PlanAnswers, o LookupOptions) error {
	for _, p := range plans {
		s := p.Span
		fmt.Fprintf(w, "plan %s in %s, in force %s (journal %s)", s.Digest, TargetText(s.Host, s.Target), Interval(s.From, s.Until), p.Journal)
		if s.Pending {
			fmt.Fprintf(w, ", if its interrupted apply took effect: natpool status on %s settles it", s.Host)
		}
		fmt.Fprintln(w)
		if err := LookupText(w, p.Answers, o); err != nil {
			return err
		}
	}
	return nil
}

type planAnswersJSON struct {
	Journal string     `json:"journal"`
	Host    string     `json:"host"`
	Machine string     `json:"machine"`
	Netns   string     `json:"netns"`
	Table   string     `json:"table"`
	Digest  string     `json:"digest"`
	From    time.Time  `json:"from"`
	Until   *time.Time `json:"until"` // null while in force
	Pending bool       `json:"pending,omitempty"`
	Answers []any      `json:"answers"`
}

// LookupAtJSON writes an array of the plans, each with its answers.
func LookupAtJSON(w io.Writer, plans []PlanAnswers, o LookupOptions) error {
	out := []planAnswersJSON{}
	for _, p := range plans {
		s := p.Span
		pj := planAnswersJSON{Journal: p.Journal, Host: s.Host, Machine: s.Target.Machine, Netns: s.Target.Netns, Table: s.Target.Table,
			Digest: s.Digest, From: s.From.UTC(), Pending: s.Pending, Answers: answersJSON(p.Answers, o)}
		if !s.Until.IsZero() {
			until := s.Until.UTC()
			pj.Until = &until
		}
		out = append(out, pj)
	}
	return JSON(w, out)
}

// TargetText names a journal's target for a person, on the machine that
// was host then.
func TargetText(host string, t journal.Target) string {
	s := "table " + t.Table + " on " + host
	if t.Netns != "" {
		s += " (netns " + t.Netns + ")"
	}
	return s
}

// Interval writes a time in force, [from, until), in UTC; "now" for an
// open end.
func Interval(from, until time.Time) string {
	end := "now"
	if !until.IsZero() {
		end = TimeText(until)
	}
	return fmt.Sprintf("[%s, %s)", TimeText(from), end)
}

// TimeText writes a journal time: RFC 3339 in UTC, to the millisecond, as
// a change and a report a second apart must be told apart.
func TimeText(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func answersJSON(answers []pool.Answer, o LookupOptions) []any {
	out := make([]any, 0, len(answers))
	for _, a := range answers {
		egress := ""
		if o.Egress {
			egress = a.Egress
		}
		switch a.Kind {
		case pool.Forward:
			private := a.Private.String()
			aj := answerJSON{Egress: egress, Private: &private, Public: a.Public.String(), Ports: a.Ports.String(), Nodes: a.Nodes, Uplink: a.Uplink}
			if a.Uplink > 0 {
				aj.InUse = &a.InUse
			}
			out = append(out, aj)
		case pool.PortOwner:
			ao := answerOwner{Egress: egress, Public: a.Public.String(), Port: a.Port, Nodes: a.Nodes}
			if a.Private.IsValid() {
				s := a.Private.String()
				ao.Private = &s
			}
			out = append(out, ao)
		case pool.NoMapping:
			out = append(out, answerNone{Query: a.Query.String(), Reason: a.Reason})
		case pool.PrefixAnswer:
			ap := answerPrefix{Egress: egress, Private: a.Private.String(), InsidePrefix: a.NPT.Inside.String(), PublicPrefix: prefixText6(a.NPT, "the uplink")}
			if a.Public.IsValid() {
				s := a.Public.String()
				ap.Public = &s
			}
			out = append(out, ap)
		case pool.ServiceAnswer:
			out = append(out, answerService{egress, a.Service, a.Protocol, a.Public.String(), a.PublicPorts.Spec(), a.Private.String(), a.Ports.Spec()})
		case pool.Reverse:
			aj := answerJSON{Egress: egress, Public: a.Public.String(), Hosts: &a.Hosts, Ranges: []string{}, Nodes: a.Nodes}
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
	return out
}
