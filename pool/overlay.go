package pool

// Overlay is a spec's values given beside its file, as command-line flags:
// each one given replaces the file's, in the table, the ct-label and every
// egress entry. A hosts file given so is read again.
type Overlay struct {
	Table, CTLabel string
	Egress         EgressSpec
	// Given reports whether the value of a key (a flag's name) was given.
	Given func(key string) bool
}

// Apply returns spec with the overlay's values in it.
func (o Overlay) Apply(spec Spec) Spec {
	overlay(o, "table", &spec.Table, o.Table)
	overlay(o, "ct-label", &spec.CTLabel, o.CTLabel)
	spec.Egress = append([]EgressSpec(nil), spec.Egress...)
	for i := range spec.Egress {
		e := &spec.Egress[i]
		overlay(o, "private", &e.Private, o.Egress.Private)
		overlay(o, "pool", &e.Pool, o.Egress.Pool)
		overlay(o, "exclude", &e.Exclude, o.Egress.Exclude)
		overlay(o, "strategy", &e.Strategy, o.Egress.Strategy)
		overlay(o, "oif", &e.OIF, o.Egress.OIF)
		overlay(o, "ports", &e.Ports, o.Egress.Ports)
		given := o.Egress.Options()
		for j, opt := range e.Options() {
			overlay(o, opt.Name, opt.Value, *given[j].Value)
		}
		overlay(o, "hosts", &e.HostsData, nil) // a hosts file given now is read
	}
	return spec
}

// overlay sets *dst to value when the key was given.
func overlay[T any](o Overlay, key string, dst *T, value T) {
	if o.Given(key) {
		*dst = value
	}
}
