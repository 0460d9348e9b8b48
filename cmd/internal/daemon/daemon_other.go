//go:build !linux

package daemon

import (
	"context"
	"fmt"
	"runtime"

	"github.com/natpool/natpool/pool"
)

// Run needs Linux: watch follows nf_tables, conntrack and rtnetlink.
func Run(context.Context, Config, *pool.Plan, <-chan struct{}) error {
	return fmt.Errorf("natpool watch needs Linux: it follows nf_tables, conntrack and rtnetlink, which %s lacks", runtime.GOOS)
}

// Notify tells systemd nothing here.
func Notify(string) {}
