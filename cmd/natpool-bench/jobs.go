//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// job is one benchmark.
type job struct {
	name, what string
	run        func(*bench) error
}

var jobs = []job{
	{"ipset", "10.16.0.0/12 onto 192.76.8.0/26: apply octet and hash, against ipset restore", benchIPSet},
	{"blocks", "port blocks for 10.16.0.0/12: apply compact and per-host, against nft -f", benchBlocks},
	{"flush", "100,000 conntrack entries: flush --stale, against conntrack -D --src-nat", benchFlush},
	{"conntrack", "62,500 to 250,000 conntrack entries: flush and capacity --live, against conntrack -D and -L", benchConntrack},
	{"render", "render block 100.64.0.0/10 as nft text, against awk writing the same lines", benchRender},
	{"diff", "diff of block and hash /10 plans, one address apart, against diff -u of the renders", benchDiff},
	{"plan", "natpool plan -o json, 10.0.0.0/8 onto 198.18.0.0/20", benchPlan},
	{"churn", "churn of one more address on a pool of 64", benchChurn},
	{"journal", "lookup --at in a journal of 10,000 entries", benchJournal},
	{"watch", "natpool watch at 1,000,000 conntrack entries and 5,000 new a second", benchWatch},
	{"probes", "natpool watch probing 8 uplinks, 3 targets each, every second", benchProbes},
	{"translog", "natpool watch --log at 20,000 new translations a second, beside conntrack -E; lookup in its log", benchTranslog},
}

// alternate runs each command of a pair (or set) in turn, runs times, after
// before each round, and returns their samples.
func (b *bench) alternate(before func() error, cmds ...func() (sample, error)) ([]series, error) {
	out := make([]series, len(cmds))
	for range b.runs {
		if before != nil {
			if err := before(); err != nil {
				return nil, err
			}
		}
		for i, c := range cmds {
			s, err := c()
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], s)
		}
	}
	return out, nil
}

// natpoolJSON runs natpool and decodes its -o json output into v.
func (b *bench) natpoolJSON(v any, args ...string) error {
	out, err := exec.Command(b.natpool, append(args, "-o", "json")...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 { // diff exits 1 on a difference
			return fmt.Errorf("natpool %s: %w", strings.Join(args, " "), err)
		}
	}
	return json.Unmarshal(out, v)
}

func (b *bench) elements(args ...string) (int, error) {
	var applied struct{ Elements int }
	err := b.natpoolJSON(&applied, args...)
	return applied.Elements, err
}

// 1. A /12 onto a /26, per source, against ipset restore of one hash:ip set
// per public address (the eduroam blog's alternative).
func benchIPSet(b *bench) error {
	ns, err := newNamespace("ipset")
	if err != nil {
		return err
	}
	restore := filepath.Join(b.work, "ipset.restore")
	if err := writeIPSetRestore(restore); err != nil {
		return err
	}
	spec := []string{"--private", "10.16.0.0/12", "--pool", "192.76.8.0/26", "--oif", "uplink0", "--netns", ns}
	var ipsetKB int
	s, err := b.alternate(nil,
		func() (sample, error) {
			return measure("", b.natpool, append([]string{"apply", "--strategy", "octet"}, spec...)...)
		},
		func() (sample, error) {
			s, err := measure(restore, "ip", "netns", "exec", ns, "ipset", "restore")
			if err != nil {
				return s, err
			}
			list, err := output(ns, "ipset", "list", "-t")
			if err != nil {
				return s, err
			}
			ipsetKB = 0
			for _, l := range strings.Split(list, "\n") {
				if v, ok := strings.CutPrefix(l, "Size in memory: "); ok {
					n, _ := strconv.Atoi(v)
					ipsetKB += n / 1024
				}
			}
			return s, inNamespace(ns, "ipset", "destroy")
		},
		func() (sample, error) {
			return measure("", b.natpool, append([]string{"apply", "--strategy", "hash"}, spec...)...)
		},
	)
	if err != nil {
		return err
	}
	octet, err := b.elements(append([]string{"apply", "--strategy", "octet"}, spec...)...)
	if err != nil {
		return err
	}
	hash, err := b.elements(append([]string{"apply", "--strategy", "hash"}, spec...)...)
	if err != nil {
		return err
	}
	b.row("/12 onto /26, octet: natpool apply vs ipset restore of 1,048,576 adds", s[0], s[1],
		fmt.Sprintf("kernel: %d nft elements vs %d KB of ipset memory", octet, ipsetKB))
	b.row("/12 onto /26, hash: natpool apply vs ipset restore", s[2], s[1], fmt.Sprintf("kernel: %d nft elements", hash))
	return nil
}

// writeIPSetRestore writes ipset restore input putting every host of
// 10.16.0.0/12 in one of 64 hash:ip sets by its last octet.
func writeIPSetRestore(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for s := range 64 {
		fmt.Fprintf(w, "create np%d hash:ip family inet maxelem 65536\n", s)
	}
	for a := 16; a < 32; a++ {
		for b := range 256 {
			for c := range 256 {
				fmt.Fprintf(w, "add np%d 10.%d.%d.%d\n", c*64/256, a, b, c)
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// 2. Port blocks for a /12: compact and per-host over netlink, against
// nft -f of the per-host map.
func benchBlocks(b *bench) error {
	ns, err := newNamespace("blocks")
	if err != nil {
		return err
	}
	spec := []string{"--private", "10.16.0.0/12", "--pool", "192.76.8.0/22", "--strategy", "block"}
	render := filepath.Join(b.work, "perhost.nft")
	if err := b.toFile(render, append([]string{"render", "--format", "nft"}, spec...)...); err != nil {
		return err
	}
	spec = append(spec, "--netns", ns)
	deleteTable := func() error { return inNamespace(ns, "nft", "delete", "table", "ip", "natpool") }
	s, err := b.alternate(nil,
		func() (sample, error) { return measure("", b.natpool, append([]string{"apply"}, spec...)...) },
		func() (sample, error) {
			s, err := measure("", b.natpool, append([]string{"apply", "--encoding", "per-host"}, spec...)...)
			if err == nil {
				err = deleteTable()
			}
			return s, err
		},
		func() (sample, error) {
			s, err := measure(render, "ip", "netns", "exec", ns, "nft", "-f", "-")
			if err == nil {
				err = deleteTable()
			}
			return s, err
		},
	)
	if err != nil {
		return err
	}
	compact, err := b.elements(append([]string{"apply"}, spec...)...)
	if err != nil {
		return err
	}
	perHost, err := b.elements(append([]string{"apply", "--encoding", "per-host"}, spec...)...)
	if err != nil {
		return err
	}
	b.row("block /12, compact: natpool apply vs nft -f per-host map", s[0], s[2], fmt.Sprintf("%d kernel elements vs %d", compact, perHost))
	b.row("block /12, per-host: natpool apply vs nft -f per-host map", s[1], s[2], fmt.Sprintf("the same %d elements", perHost))
	return nil
}

// toFile runs natpool with its output to a file.
func (b *bench) toFile(path string, args ...string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.natpool, args...)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("natpool %s: %w", strings.Join(args, " "), err)
	}
	return f.Close()
}

// 3. After one more public address (hash, 49 -> 50): flush the stale
// entries of 100,000, against conntrack -D --src-nat.
func benchFlush(b *bench) error {
	ns, err := newNamespace("flush")
	if err != nil {
		return err
	}
	old := []string{"--private", "10.16.0.0/15", "--pool", "192.76.8.0-192.76.8.48", "--oif", "uplink0", "--netns", ns}
	moved := []string{"--private", "10.16.0.0/15", "--pool", "192.76.8.0-192.76.8.49", "--oif", "uplink0", "--netns", ns}
	const entries = 100000
	load := func() error { // entries under the old plan, then the new plan applied
		exec.Command("ip", "netns", "exec", ns, "conntrack", "-F").Run()
		if _, err := measure("", b.natpool, append([]string{"apply"}, old...)...); err != nil {
			return err
		}
		if err := sendUDP(ns, netip.MustParseAddr("10.16.0.0"), entries); err != nil {
			return err
		}
		_, err := measure("", b.natpool, append([]string{"apply"}, moved...)...)
		return err
	}
	var natpoolCut, incumbentCut int
	cut := func(n *int) error {
		out, err := output(ns, "conntrack", "-C")
		if err == nil {
			left, _ := strconv.Atoi(strings.TrimSpace(out))
			*n = entries - left
		}
		return err
	}
	s, err := b.alternate(nil,
		func() (sample, error) {
			if err := load(); err != nil {
				return sample{}, err
			}
			s, err := measure("", b.natpool, append([]string{"flush", "--stale"}, moved...)...)
			if err == nil {
				err = cut(&natpoolCut)
			}
			return s, err
		},
		func() (sample, error) {
			if err := load(); err != nil {
				return sample{}, err
			}
			s, err := measure("", "ip", "netns", "exec", ns, "conntrack", "-D", "--src-nat")
			if err == nil {
				err = cut(&incumbentCut)
			}
			return s, err
		},
	)
	if err != nil {
		return err
	}
	b.row("100,000 entries: natpool flush --stale vs conntrack -D --src-nat", s[0], s[1],
		fmt.Sprintf("connections cut: %d vs %d", natpoolCut, incumbentCut))
	return nil
}

// 4. natpool plan -o json for a /8 onto a /20, per strategy (target: 2 s,
// 200 MB).
func benchPlan(b *bench) error {
	for _, strategy := range []string{"octet", "hash", "persistent", "block"} {
		args := []string{"plan", "-o", "json", "--private", "10.0.0.0/8", "--pool", "198.18.0.0/20", "--strategy", strategy}
		if strategy == "octet" {
			args = append(args, "--bits", "12")
		}
		s, err := b.alternate(nil, func() (sample, error) { return measure("", b.natpool, args...) })
		if err != nil {
			return err
		}
		b.row("plan -o json, /8 onto /20, "+strategy, s[0], nil, "target: 2 s, 200 MB")
	}
	return nil
}

// 5. Churn when one public address joins 64, against the ideal 1/65.
func benchChurn(b *bench) error {
	table := "| strategy | one address added to 64 | against the ideal |\n|---|---|---|\n"
	for _, strategy := range []string{"octet", "persistent", "hash"} {
		paths := [2]string{}
		for i, last := range []string{"192.76.8.63", "192.76.8.64"} {
			paths[i] = filepath.Join(b.work, fmt.Sprintf("churn-%s-%d.yaml", strategy, i))
			spec := fmt.Sprintf("egress:\n  - name: e\n    private: [10.16.0.0/12]\n    pool: [192.76.8.0-%s]\n    strategy: %s\n", last, strategy)
			if err := os.WriteFile(paths[i], []byte(spec), 0o644); err != nil {
				return err
			}
		}
		var d struct {
			Churn []struct {
				MovedShare float64 `json:"moved_share"`
			}
		}
		if err := b.natpoolJSON(&d, "diff", paths[0], paths[1]); err != nil {
			return err
		}
		share := d.Churn[0].MovedShare
		table += fmt.Sprintf("| %s | %.2f%% of hosts move | %.2fx the ideal 1/65 (1.54%%) |\n", strategy, 100*share, share*65)
	}
	b.notes = append(b.notes, table)
	return benchHashChurn(b)
}

// benchHashChurn measures the hash strategy's churn on a /12 against the
// ideal, for pools of three sizes: one address added, one removed, and one
// address's weight raised from 1 to 2.
func benchHashChurn(b *bench) error {
	table := "| hash, /12 | addresses | one added | one removed | weight 1 -> 2 on one |\n|---|---|---|---|---|\n"
	for _, n := range []int{64, 256, 1024} {
		first := netip.MustParseAddr("192.76.8.0")
		addrs := make([]string, n+1)
		for i := range addrs {
			addrs[i] = first.String()
			first = first.Next()
		}
		pools := map[string][]string{
			"base":    addrs[:n],
			"added":   addrs,
			"removed": addrs[1:n],
			"weight":  append([]string{addrs[0] + "=2"}, addrs[1:n]...),
		}
		paths := map[string]string{}
		for name, p := range pools {
			paths[name] = filepath.Join(b.work, fmt.Sprintf("hash-%d-%s.yaml", n, name))
			spec := fmt.Sprintf("egress:\n  - name: e\n    private: [10.16.0.0/12]\n    pool: [%s]\n    strategy: hash\n", strings.Join(p, ", "))
			if err := os.WriteFile(paths[name], []byte(spec), 0o644); err != nil {
				return err
			}
		}
		row := fmt.Sprintf("| | %d |", n)
		for _, c := range []struct {
			name  string
			ideal float64
		}{{"added", 1 / float64(n+1)}, {"removed", 1 / float64(n)}, {"weight", 2/float64(n+1) - 1/float64(n)}} {
			var d struct {
				Churn []struct {
					MovedShare float64 `json:"moved_share"`
				}
			}
			if err := b.natpoolJSON(&d, "diff", "--max-lines", "1", paths["base"], paths[c.name]); err != nil {
				return err
			}
			row += fmt.Sprintf(" %.2f%%: %.2fx the ideal %.2f%% |", 100*d.Churn[0].MovedShare, d.Churn[0].MovedShare/c.ideal, 100*c.ideal)
		}
		table += row + "\n"
	}
	b.notes = append(b.notes, table)
	return nil
}

// 6. natpool's conntrack readers at three sizes, against conntrack -L and
// -D: natpool keeps counters and deletions, never the entries, so its
// memory stays flat.
func benchConntrack(b *bench) error {
	ns, err := newNamespace("conntrack")
	if err != nil {
		return err
	}
	old := []string{"--private", "100.64.0.0/14", "--pool", "198.18.0.0-198.18.0.62", "--oif", "uplink0", "--netns", ns}
	moved := []string{"--private", "100.64.0.0/14", "--pool", "198.18.0.0-198.18.0.63", "--oif", "uplink0", "--netns", ns}
	for _, entries := range []int{62500, 125000, 250000} {
		load := func() error { // entries under the old plan, then the new plan applied
			exec.Command("ip", "netns", "exec", ns, "conntrack", "-F").Run()
			if _, err := measure("", b.natpool, append([]string{"apply"}, old...)...); err != nil {
				return err
			}
			if err := sendUDP(ns, netip.MustParseAddr("100.64.0.0"), entries); err != nil {
				return err
			}
			_, err := measure("", b.natpool, append([]string{"apply"}, moved...)...)
			return err
		}
		if err := load(); err != nil {
			return err
		}
		s, err := b.alternate(nil,
			func() (sample, error) {
				return measure("", b.natpool, append([]string{"capacity", "--live"}, moved...)...)
			},
			func() (sample, error) { return measure("", "ip", "netns", "exec", ns, "conntrack", "-L") },
			func() (sample, error) {
				return measure("", b.natpool, append([]string{"flush", "--stale", "--dry-run"}, moved...)...)
			},
		)
		if err != nil {
			return err
		}
		f, err := b.alternate(nil,
			func() (sample, error) {
				if err := load(); err != nil {
					return sample{}, err
				}
				return measure("", b.natpool, append([]string{"flush", "--stale"}, moved...)...)
			},
			func() (sample, error) {
				if err := load(); err != nil {
					return sample{}, err
				}
				return measure("", "ip", "netns", "exec", ns, "conntrack", "-D", "--src-nat")
			},
		)
		if err != nil {
			return err
		}
		n := fmt.Sprintf("%d entries", entries)
		b.row(n+": natpool capacity --live vs conntrack -L", s[0], s[1], "both read every entry")
		b.row(n+": natpool flush --stale --dry-run vs conntrack -L", s[2], s[1], "")
		b.row(n+": natpool flush --stale vs conntrack -D --src-nat", f[0], f[1], "natpool cuts the moved hosts' only")
	}
	return nil
}

// 7. Rendering every host's block of a /10 as nft text, against awk
// writing lines of the same shape.
func benchRender(b *bench) error {
	awk := `BEGIN { for (a = 64; a < 128; a++) for (b = 0; b < 256; b++) for (c = 0; c < 256; c++) ` +
		`printf "\t\t\t100.%d.%d.%d : 198.18.%d.%d . %d-%d,\n", a, b, c, b % 16, c, 1024 + c, 1086 + c }`
	s, err := b.alternate(nil,
		func() (sample, error) {
			return measure("", b.natpool, "render", "--format", "nft", "--private", "100.64.0.0/10", "--pool", "198.18.0.0/20", "--strategy", "block")
		},
		func() (sample, error) { return measure("", "awk", awk) },
	)
	if err != nil {
		return err
	}
	b.row("render block /10 as nft text (4,194,304 elements) vs awk writing as many lines", s[0], s[1], "198 MB of text")
	return nil
}

// 8. diff of two /10 plans one address apart, against diff -u of their
// renders (which natpool render writes first, outside the measure).
func benchDiff(b *bench) error {
	for _, strategy := range []string{"block", "hash"} {
		var paths, renders [2]string
		for i, last := range []string{"198.18.15.254", "198.18.15.255"} {
			paths[i] = filepath.Join(b.work, fmt.Sprintf("diff-%s-%d.yaml", strategy, i))
			spec := fmt.Sprintf("egress:\n  - name: e\n    private: [100.64.0.0/10]\n    pool: [198.18.0.0-%s]\n    strategy: %s\n", last, strategy)
			if err := os.WriteFile(paths[i], []byte(spec), 0o644); err != nil {
				return err
			}
			renders[i] = paths[i] + ".nft"
			if err := b.toFile(renders[i], "render", "-f", paths[i]); err != nil {
				return err
			}
		}
		s, err := b.alternate(nil,
			func() (sample, error) { return measureDiff(b.natpool, "diff", paths[0], paths[1]) },
			func() (sample, error) { return measureDiff("diff", "-u", renders[0], renders[1]) },
		)
		if err != nil {
			return err
		}
		same, err := b.alternate(nil, func() (sample, error) { return measureDiff(b.natpool, "diff", paths[0], paths[0]) })
		if err != nil {
			return err
		}
		b.row(fmt.Sprintf("diff %s /10, one address added: natpool diff vs diff -u of the renders", strategy), s[0], s[1], "natpool renders both sides too")
		b.row(fmt.Sprintf("diff %s /10, identical specs", strategy), same[0], nil, "equal digests")
	}
	return nil
}

// measureDiff measures a diff, whose exit status 1 says the sides differ.
func measureDiff(name string, args ...string) (sample, error) {
	s, err := measure("", name, args...)
	if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() == 1 {
		return s, nil
	}
	return s, err
}
