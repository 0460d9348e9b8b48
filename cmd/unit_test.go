package cmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The unit file shipped beside the command is one systemd accepts, and says
// what the NAT box needs: rules before the network, reload as SIGHUP,
// CAP_NET_ADMIN only, a read-only system and a state directory.
func TestUnitFileIsOneSystemdAccepts(t *testing.T) {
	t.Parallel()
	unit, err := os.ReadFile("natpool/natpool.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify",
		"Before=network-pre.target",
		"ExecStart=/usr/local/bin/natpool watch -f /etc/natpool/natpool.yaml",
		"ExecReload=/usr/local/bin/natpool reload -f /etc/natpool/natpool.yaml",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n",
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW\n",
		"ProtectSystem=strict",
		"StateDirectory=natpool",
		"ProtectKernelTunables=yes",
		"RestrictNamespaces=yes",
		"SystemCallFilter=@system-service",
		"SystemCallErrorNumber=EPERM",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("natpool.service lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing: CI must verify the unit")
		}
		t.Skip("systemd-analyze is missing")
	}
	// verify wants ExecStart's program to exist: any executable will do.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "natpool.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/natpool", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
