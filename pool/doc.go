// Package pool plans deterministic source NAT: it parses a spec (inside
// ranges, a public pool, a strategy), computes which public address (and,
// for port blocks, which ports) every inside host leaves through, and
// reports the load, the churn between two plans and the port budget. It
// answers lookups both ways. It never touches the kernel and builds
// anywhere; package compiler turns a Plan into a ruleset.
//
// Each strategy is one file (octet.go, hash.go, persistent.go, block.go):
// its StrategyKind (options, planning, restoring from a record) and its
// Mapping (owners, report, record pins, digest lines). Only its kernel
// encoding lives elsewhere, in compiler.
package pool
