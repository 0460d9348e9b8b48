// Package linux holds what natpool's kernel packages share: network
// namespaces, raw netlink reads and the privilege they need. It builds on
// Linux only.
package linux
