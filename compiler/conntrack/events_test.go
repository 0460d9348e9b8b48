//go:build linux

package conntrack_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/natpool/natpool/compiler/conntrack"
	"github.com/natpool/natpool/compiler/netnstest"
)

// Events that come faster than they are read overflow the socket; Run
// then says they were lost, so that the counts are rebuilt from a dump.
func TestRunSaysWhenEventsWereLost(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddUplink()
	// Connection tracking runs in a namespace once a rule needs it.
	ns.MustRun("table ip track {\n\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tct state new accept\n\t}\n}\n", "nft", "-f", "-")
	sub, err := conntrack.Subscribe(ns.Name, 127)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// 60,000 new connections, unread: more than the 8 MiB buffer holds.
	srcs := make([]netip.AddrPort, 60000)
	for i := range srcs {
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
	}
	ns.SendUDPFrom(srcs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Run(ctx, func(conntrack.Change) {}); !errors.Is(err, conntrack.ErrEventsLost) {
		t.Fatalf("Run after an overflow: %v, want ErrEventsLost", err)
	}
}
