package pool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
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
	CTLabel string `yaml:"ct-label" json:"ct-label,omitempty"`
	// Journal is where apply records the plans it puts in force (a path
	// relative to the spec file; empty for the default).
	Journal string `yaml:"journal" json:"journal,omitempty"`
	// Log is where watch logs every translation, and lookup --at reads
	// them (a path relative to the spec file; empty for none).
	Log    string       `yaml:"log" json:"log,omitempty"`
	Egress []EgressSpec `yaml:"egress" json:"egress"`
	// Nodes are the NAT boxes that share the pool, when several do.
	Nodes   []NodeSpec  `yaml:"nodes" json:"nodes,omitempty"`
	Cluster ClusterSpec `yaml:"cluster" json:"cluster,omitzero"`
	// Uplinks are the egress entries of a site that share its inside
	// hosts, each through its own uplink, and how.
	Uplinks UplinksSpec `yaml:"uplinks" json:"uplinks,omitzero"`
	// Services are inside servers reached through the egress entries'
	// public addresses.
	Services []ServiceSpec `yaml:"services" json:"services,omitempty"`
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

	Hosts string `yaml:"hosts" json:"hosts,omitempty"`
	// HostsData are the active hosts themselves, one hosts-file line each
	// ("ADDR", "LO-HI" or "ADDR,COUNT"). A plan records there what it read
	// of Hosts, so that a saved plan needs no file; given, they are used and
	// Hosts is only where they came from.
	HostsData []string `yaml:"hosts-data" json:"hosts-data,omitempty"`
	Bits      string   `yaml:"bits" json:"bits,omitempty"`
	Octets    string   `yaml:"octets" json:"octets,omitempty"`
	Buckets   string   `yaml:"buckets" json:"buckets,omitempty"`
	Seed      string   `yaml:"seed" json:"seed,omitempty"`
	// MaxImbalance bounds each address's hosts per unit of weight over
	// the mean (hash).
	MaxImbalance string `yaml:"max-imbalance" json:"max-imbalance,omitempty"`
	HostsPerIP   string `yaml:"hosts-per-ip" json:"hosts-per-ip,omitempty"`
	BlockSize    string `yaml:"block-size" json:"block-size,omitempty"`

	// Gateway is the uplink's next hop, for the routing table natpool
	// keeps for it when the entry is one of the uplinks; empty: the main
	// table's default route through OIF says.
	Gateway string `yaml:"gateway" json:"gateway,omitempty"`
	// Probe tells watch how to know the uplink carries traffic.
	Probe *ProbeSpec `yaml:"probe" json:"probe,omitempty"`

	// Private6 are inside IPv6 prefixes, each translated to the prefix of
	// the same place in Pool6, of the same length; Pool6 may instead be
	// [from-interface], the prefix of the uplink's global address.
	Private6 []string `yaml:"private6" json:"private6,omitempty"`
	Pool6    []string `yaml:"pool6" json:"pool6,omitempty"`
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
		{"max-imbalance", &e.MaxImbalance},
		{"hosts-per-ip", &e.HostsPerIP},
		{"block-size", &e.BlockSize},
	}
}

// LoadSpec reads a YAML spec file strictly: unknown keys are errors, and
// errors name the file and line. A relative hosts file or journal is taken
// relative to the spec file's directory.
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
	for _, p := range []*string{&spec.Journal, &spec.Log} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return spec, nil
}

// PlanFile loads a spec file (or a saved plan) and plans it; errors name
// the file.
func PlanFile(path string) (*Plan, error) {
	spec, err := LoadSpec(path)
	if err != nil {
		return nil, err
	}
	p, err := NewPlan(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
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

// ParseSpec parses a YAML (or JSON) spec strictly; its errors are *SpecError
// naming the line. Unknown keys, a key given twice and a second document are
// errors. The JSON of `natpool plan -o json` is taken too: its "spec" is the
// spec.
func ParseSpec(data []byte) (Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, extra yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return Spec{}, &SpecError{Msg: "the spec is empty"}
	case err != nil:
		// A syntax error: the parser's own words, which name the line.
		return Spec{}, &SpecError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if err := dec.Decode(&extra); err == nil {
		return Spec{}, &SpecError{Line: extra.Line, Msg: "a second YAML document: a spec is one document"}
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "spec" { // saved plan JSON
				root = root.Content[i+1]
				break
			}
		}
	}
	var spec Spec
	if err := decodeNode(root, reflect.ValueOf(&spec).Elem(), "spec"); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// decodeNode sets v from a YAML node, by the yaml tags of v's fields: a
// mapping for a struct, a sequence (or a single value) for a list of
// strings, a sequence of mappings for a list of structs, and a scalar for a
// string. what names v in errors.
func decodeNode(n *yaml.Node, v reflect.Value, what string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch v.Kind() {
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return &SpecError{Line: n.Line, Msg: fmt.Sprintf("%s must be a single value", what)}
		}
		if n.Tag != "!!null" {
			v.SetString(n.Value)
		}
		return nil
	case reflect.Slice:
		items := []*yaml.Node{n}
		switch {
		case n.Kind == yaml.SequenceNode:
			items = n.Content
		case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
			items = nil
		case n.Kind != yaml.ScalarNode || v.Type().Elem().Kind() != reflect.String:
			return &SpecError{Line: n.Line, Msg: fmt.Sprintf("%s must be a list", what)}
		}
		list := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			if err := decodeNode(item, list.Index(i), fmt.Sprintf("%s[%d]", what, i+1)); err != nil {
				return err
			}
		}
		v.Set(list)
		return nil
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			return &SpecError{Line: n.Line, Msg: fmt.Sprintf("%s must be true or false", what)}
		}
		v.SetBool(b)
		return nil
	case reflect.Pointer:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := decodeNode(n, p.Elem(), what); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &SpecError{Line: n.Line, Msg: fmt.Sprintf("%s must be a mapping of keys to values", what)}
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i], n.Content[i+1]
			if line, twice := seen[key.Value]; twice {
				return &SpecError{Line: key.Line, Msg: fmt.Sprintf("key %q is given twice (line %d too)", key.Value, line)}
			}
			seen[key.Value] = key.Line
			f, ok := fieldByTag(v, key.Value)
			if !ok {
				return &SpecError{Line: key.Line, Msg: fmt.Sprintf("unknown key %q", key.Value)}
			}
			if err := decodeNode(value, f, key.Value); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("decodeNode: no decoding into %s", v.Type())
}

// fieldByTag returns the field of struct v whose yaml tag is name.
func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	for i := range v.NumField() {
		if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}
