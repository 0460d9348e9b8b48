// Command natpool-docs writes natpool's manual pages, one per command
// (natpool.1, natpool-lookup.1, ...), and its bash, zsh and fish
// completions, from its cobra commands: what the Debian package installs.
//
//	go run ./cmd/natpool-docs -out DIR
//
// writes DIR/man/*.1 and DIR/completions/{natpool.bash,_natpool,natpool.fish}.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra/doc"

	"github.com/natpool/natpool/cmd"
)

func main() {
	out := flag.String("out", "dist/docs", "directory to write man/ and completions/ into")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintf(os.Stderr, "natpool-docs: %v\n", err)
		os.Exit(1)
	}
}

func write(out string) error {
	root := cmd.Root(io.Discard, io.Discard)
	root.DisableAutoGenTag = true // byte-stable pages: no date of generation
	man := filepath.Join(out, "man")
	comp := filepath.Join(out, "completions")
	for _, dir := range []string{man, comp} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	header := &doc.GenManHeader{Title: "NATPOOL", Section: "1", Source: "natpool " + cmd.Version, Manual: "natpool manual"}
	// Reproducible builds date what they make by SOURCE_DATE_EPOCH.
	if epoch, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		date := time.Unix(epoch, 0).UTC()
		header.Date = &date
	}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("manual pages: %w", err)
	}
	for name, gen := range map[string]func(io.Writer) error{
		"natpool.bash": func(w io.Writer) error { return root.GenBashCompletionV2(w, true) },
		"_natpool":     root.GenZshCompletion,
		"natpool.fish": func(w io.Writer) error { return root.GenFishCompletion(w, true) },
	} {
		f, err := os.Create(filepath.Join(comp, name))
		if err != nil {
			return err
		}
		if err := gen(f); err != nil {
			f.Close()
			return fmt.Errorf("completion %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
