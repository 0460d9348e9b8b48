//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/natpool/natpool/compiler"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/journal"
)

// 9. A journal of 10,000 applies, a minute apart, of 100 hash plans of a
// /16 taken in turn: lookup --at a time in its middle, forward and reverse.
// Target: under 100 ms and 50 MB.
func benchJournal(b *bench) error {
	const entries, plans = 10000, 100
	path := filepath.Join(b.work, "journal")
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	j, unlock, err := journal.Create(path, start, func() {})
	if err != nil {
		return err
	}
	defer unlock()
	var digests []string
	var records []pool.Record
	for i := range plans {
		p, err := pool.NewPlan(pool.Spec{Egress: []pool.EgressSpec{{Private: []string{"10.16.0.0/16"},
			Pool: []string{fmt.Sprintf("192.76.8.0-192.76.8.%d", 15+i)}, Strategy: "hash"}}})
		if err != nil {
			return err
		}
		digests, records = append(digests, compiler.Digest(p)), append(records, p.Record())
	}
	at := start
	for i := range entries {
		seq, err := j.Begin(journal.Event{Time: at, Op: journal.Apply, Host: "nat1", Table: "natpool", Digest: digests[i%plans]}, &records[i%plans])
		if err == nil {
			err = j.End(seq, journal.Commit, at, nil, false)
		}
		if err != nil {
			return err
		}
		at = at.Add(time.Minute)
	}
	middle := start.Add(entries / 2 * time.Minute).Add(30 * time.Second).Format(time.RFC3339)
	for _, q := range []string{"10.16.3.7", "192.76.8.9"} {
		s, err := b.alternate(nil, func() (sample, error) {
			return measure("", b.natpool, "lookup", "--journal", path, "--at", middle, q)
		})
		if err != nil {
			return err
		}
		b.row(fmt.Sprintf("lookup --at %s in a journal of %d entries", q, entries), s[0], nil, "target: 100 ms, 50 MB")
	}
	return nil
}
