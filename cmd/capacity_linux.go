//go:build linux

package cmd

import (
	"io"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/render"
)

// runLiveCapacity reports the port use of the connections natpool's rules
// translated, counted from a conntrack dump as it is read.
func runLiveCapacity(o *capacityOptions, plan *pool.Plan, stdout io.Writer) error {
	counter, err := countLive(plan, o.netns)
	if err != nil {
		return err
	}
	caps := counter.Capacity()
	if o.output == "json" {
		return render.LiveCapacityJSON(stdout, caps)
	}
	return render.LiveCapacityTable(stdout, caps)
}

// countLive counts the plan's connections in netns from a conntrack dump,
// as it is read.
func countLive(plan *pool.Plan, netns string) (*pool.LiveCounter, error) {
	c, err := conntrack.Dial(netns)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	counter := plan.NewLiveCounter()
	_, err = c.Scan(plan.CTLabel, func(e *conntrack.Entry) error {
		if e.Natpool && e.Translated {
			counter.Count(e.Connection, 1)
		}
		return nil
	})
	return counter, err
}
