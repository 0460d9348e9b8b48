//go:build !linux

package box

import (
	"fmt"
	"runtime"

	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
	"github.com/natpool/natpool/render"
)

// Kernel is a network namespace's kernel, which natpool reaches only on
// Linux.
type Kernel interface{}

// LinuxKernels has no kernel to open here.
func LinuxKernels(string) Kernel { return nil }

// errLinux is what every kernel operation says here: it talks to nf_tables
// and conntrack over netlink, which only Linux has.
var errLinux = fmt.Errorf("this needs Linux: natpool talks to nf_tables and conntrack over netlink, which %s lacks (plan, lookup, render, diff and capacity work here)", runtime.GOOS)

func (b *Box) stamp(journal.Target) (string, bool, error) { return "", false, errLinux }

// Apply needs Linux.
func (b *Box) Apply(*pool.Plan, Options) (Applied, error) { return Applied{}, errLinux }

// DryRun needs Linux.
func (b *Box) DryRun(*pool.Plan, Options) (render.DryRunReport, error) {
	return render.DryRunReport{}, errLinux
}

// Delete needs Linux.
func (b *Box) Delete(string, bool) (render.DeleteReport, error) {
	return render.DeleteReport{}, errLinux
}

// Status needs Linux.
func (b *Box) Status(*pool.Plan, string) (render.StatusReport, error) {
	return render.StatusReport{}, errLinux
}

// Flush needs Linux.
func (b *Box) Flush(*pool.Plan, Selection, bool) (render.FlushReport, error) {
	return render.FlushReport{}, errLinux
}

// TableLoaded needs Linux.
func (b *Box) TableLoaded(string) error { return errLinux }

// Reassert needs Linux.
func (b *Box) Reassert(*pool.Plan, Options) (Applied, error) { return Applied{}, errLinux }

// CountLive needs Linux.
func (b *Box) CountLive(*pool.Plan) (*pool.LiveCounter, error) { return nil, errLinux }

// UplinkPrefixes needs Linux to read the uplinks; their prefixes stay
// unknown.
func (b *Box) UplinkPrefixes(*pool.Plan) error { return nil }
