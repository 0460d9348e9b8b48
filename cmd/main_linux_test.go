package cmd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// natpoolBinary is natpool built for the tests that need it as a process of
// its own (another user, a daemon); TestMain builds it.
var natpoolBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natpool-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	natpoolBinary = filepath.Join(dir, "natpool")
	testWorld.journal = filepath.Join(dir, "journal") // never the NAT box's own
	if out, err := exec.Command("go", "build", "-o", natpoolBinary, "./natpool").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building natpool: %v\n%s", err, out)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
