package compiler

import (
	"errors"
	"net/netip"
	"os"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/natpool/natpool/pool"
)

// Conntrack reads and deletes entries of one namespace's connection
// tracking table.
type Conntrack struct {
	netns *os.File // held open for the connection's life, as in Kernel
	conn  *conntrack.Conn
}

// DialConntrack connects to the conntrack table of the named network
// namespace, or of the current one when netns is empty.
func DialConntrack(netns string) (*Conntrack, error) {
	c := &Conntrack{}
	cfg := &netlink.Config{}
	if netns != "" {
		f, err := openNetNS(netns)
		if err != nil {
			return nil, err
		}
		c.netns, cfg.NetNS = f, int(f.Fd())
	}
	conn, err := conntrack.Dial(cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.conn = conn
	return c, nil
}

// Close releases the connection and the namespace.
func (c *Conntrack) Close() error {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.netns != nil {
		return c.netns.Close()
	}
	return nil
}

// SNAT is an IPv4 source-NATed conntrack entry as natpool sees it: the
// inside host and the public address and port it left as.
type SNAT struct {
	Host   netip.Addr
	Public netip.AddrPort
	flow   conntrack.Flow
}

// SNATs returns the IPv4 source-NATed entries, and how many entries the
// table holds in all.
func (c *Conntrack) SNATs() ([]SNAT, int, error) {
	flows, err := c.conn.Dump(nil)
	if err != nil {
		return nil, 0, err
	}
	var out []SNAT
	for _, f := range flows {
		if !f.Status.SrcNAT() || !f.TupleOrig.IP.SourceAddress.Is4() {
			continue
		}
		out = append(out, SNAT{
			Host:   f.TupleOrig.IP.SourceAddress,
			Public: netip.AddrPortFrom(f.TupleReply.IP.DestinationAddress, f.TupleReply.Proto.DestinationPort),
			flow:   f,
		})
	}
	return out, len(flows), nil
}

// Delete removes one entry; an entry that has gone meanwhile is no error.
func (c *Conntrack) Delete(s SNAT) error {
	err := c.conn.Delete(s.flow)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Selector decides which source-NATed entries a flush deletes. Every
// selector keeps to natpool's own entries: those of the plan's inside hosts.
type Selector func(SNAT) bool

// StaleIn selects the entries of natpool's inside hosts whose translation
// the plan no longer gives: after a pool change, the hosts that moved.
func StaleIn(p *pool.Plan) Selector {
	return func(s SNAT) bool { return p.Classify(s.Host, s.Public.Addr(), s.Public.Port()) == pool.Stale }
}

// TranslatedTo selects the entries of natpool's inside hosts translated to
// one of addrs; entries others made to the same addresses stay.
func TranslatedTo(p *pool.Plan, addrs []netip.Addr) Selector {
	set := map[netip.Addr]bool{}
	for _, a := range addrs {
		set[a] = true
	}
	return func(s SNAT) bool {
		return set[s.Public.Addr()] && p.Classify(s.Host, s.Public.Addr(), s.Public.Port()) != pool.Foreign
	}
}

// Of selects the entries of one egress entry: its inside hosts leaving
// through its pool.
func Of(e *pool.Egress) Selector {
	return func(s SNAT) bool { return e.Inside.Contains(s.Host) && e.Carries(s.Public.Addr()) }
}
