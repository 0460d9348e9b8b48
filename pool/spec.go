package pool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DefaultTable is the nftables table natpool owns unless told otherwise.
const DefaultTable = "natpool"

// Spec is natpool's input as written in a spec file or given as flags: the
// table natpool owns and its egress entries. NewPlan checks and parses it.
type Spec struct {
	Table string `yaml:"table" json:"table"`
	// CTLabel is the conntrack label bit natpool's rules set on the
	// connections they translate, so that flush and capacity tell them from
	// other tools' (0-127; empty for DefaultCTLabel).
	CTLabel string       `yaml:"ct-label" json:"ct-label,omitempty"`
	Egress  []EgressSpec `yaml:"egress" json:"egress"`
}

// EgressSpec is one egress entry as written. Every value is kept as text so
// that a spec file and command-line flags are parsed, checked and reported by
// the same code; an empty option means the strategy's default.
type EgressSpec struct {
	Name     string   `yaml:"name" json:"name"`
	OIF      string   `yaml:"oif" json:"oif,omitempty"`
	Private  []string `yaml:"private" json:"private"`
	Pool     []string `yaml:"pool" json:"pool"`
	Exclude  []string `yaml:"exclude" json:"exclude,omitempty"`
	Strategy string   `yaml:"strategy" json:"strategy"`
	Ports    string   `yaml:"ports" json:"ports,omitempty"`

	Hosts      string `yaml:"hosts" json:"hosts,omitempty"`
	Bits       string `yaml:"bits" json:"bits,omitempty"`
	Octets     string `yaml:"octets" json:"octets,omitempty"`
	Buckets    string `yaml:"buckets" json:"buckets,omitempty"`
	Seed       string `yaml:"seed" json:"seed,omitempty"`
	HostsPerIP string `yaml:"hosts-per-ip" json:"hosts-per-ip,omitempty"`
	BlockSize  string `yaml:"block-size" json:"block-size,omitempty"`
}

// Option names an egress option by its flag name, with a pointer to its value.
type Option struct {
	Name  string
	Value *string
}

// Options lists the strategy options of e, by flag name, in a fixed order.
func (e *EgressSpec) Options() []Option {
	return []Option{
		{"hosts", &e.Hosts},
		{"bits", &e.Bits},
		{"octets", &e.Octets},
		{"buckets", &e.Buckets},
		{"seed", &e.Seed},
		{"hosts-per-ip", &e.HostsPerIP},
		{"block-size", &e.BlockSize},
	}
}

// LoadSpec reads a YAML spec file strictly: unknown keys are errors, and
// errors name the file and line. A relative hosts file is taken relative to
// the spec file's directory.
func LoadSpec(path string) (Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, err
	}
	spec, err := ParseSpec(data)
	var se *SpecError
	if errors.As(err, &se) {
		se.File = path
	}
	if err != nil {
		return Spec{}, err
	}
	for i := range spec.Egress {
		if h := spec.Egress[i].Hosts; h != "" && !filepath.IsAbs(h) {
			spec.Egress[i].Hosts = filepath.Join(filepath.Dir(path), h)
		}
	}
	return spec, nil
}

// SpecError is a spec file that does not parse: the first problem, on one line.
type SpecError struct {
	File string // empty when the spec did not come from a file
	Line int    // 0 when the problem has no line
	Msg  string
}

func (e *SpecError) Error() string {
	where := e.File
	if where == "" {
		where = "spec"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", where, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", where, e.Msg)
}

var (
	yamlLine    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknown = regexp.MustCompile(`^field (\S+) not found in type .*$`)
)

// ParseSpec parses a YAML (or JSON) spec strictly; its errors are *SpecError.
// The JSON of `natpool plan -o json` is taken too: its "spec" is the spec.
func ParseSpec(data []byte) (Spec, error) {
	var saved struct {
		Spec *Spec `yaml:"spec"`
	}
	if yaml.Unmarshal(data, &saved) == nil && saved.Spec != nil {
		return *saved.Spec, nil
	}
	var spec Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&spec)
	switch {
	case err == nil:
		return spec, nil
	case errors.Is(err, io.EOF):
		return Spec{}, &SpecError{Msg: "the spec is empty"}
	}
	// yaml reports every problem, over several lines; the first one is what a
	// person needs to fix.
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return Spec{}, &SpecError{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	why := m[2]
	if u := yamlUnknown.FindStringSubmatch(why); u != nil {
		why = fmt.Sprintf("unknown key %q", u[1])
	}
	return Spec{}, &SpecError{Line: line, Msg: why}
}
