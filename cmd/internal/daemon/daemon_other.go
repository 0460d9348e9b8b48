//go:build !linux

package daemon

import (
	"context"
	"fmt"
	"runtime"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/pool"
)

// Run needs Linux: watch follows nf_tables, conntrack and rtnetlink.
func Run(context.Context, Config, *pool.Plan, <-chan Reload) error {
	return fmt.Errorf("natpool watch needs Linux: it follows nf_tables, conntrack and rtnetlink, which %s lacks", runtime.GOOS)
}

// RequestReload needs Linux, as watch does.
func RequestReload(*box.Box, string) (Outcome, error) {
	return Outcome{}, fmt.Errorf("natpool reload needs Linux, as natpool watch does")
}

// Notify tells systemd nothing here.
func Notify(string) {}
