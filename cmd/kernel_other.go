//go:build !linux

package cmd

import (
	"fmt"
	"io"

	"github.com/natpool/natpool/pool"
)

// The kernel commands talk to nf_tables and conntrack over netlink, which
// only Linux has; elsewhere they say so. plan, lookup, render, diff and the
// static capacity report work everywhere.

func needsLinux(command string) error {
	return fmt.Errorf("natpool %s needs Linux: it talks to nf_tables and conntrack over netlink (plan, lookup, render, diff and capacity work here)", command)
}

func runApply(*applyOptions, io.Writer, io.Writer) error { return needsLinux("apply") }

func runStatus(*statusOptions, io.Writer, io.Writer) error { return needsLinux("status") }

func runFlush(*flushOptions, io.Writer, io.Writer) error { return needsLinux("flush") }

func runWatch(*watchOptions, io.Writer, io.Writer) error { return needsLinux("watch") }

func runLiveCapacity(*capacityOptions, *pool.Plan, io.Writer) error {
	return needsLinux("capacity --live")
}
