package cmd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/natpool/natpool/cmd/internal/box"
	"github.com/natpool/natpool/cmd/internal/daemon"
	"github.com/natpool/natpool/cmd/internal/flags"
	"github.com/natpool/natpool/pool"
	"github.com/natpool/natpool/pool/translog"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type watchOptions struct {
	apply    applyOptions // the spec, namespace, encoding and journal watch applies with
	metrics  string
	holdDown time.Duration
	resync   time.Duration
	refresh  time.Duration
	probe    string
	probeTo  netip.Addr // --probe, parsed by check
	log      string
	logDst   string
	logKeep  time.Duration
	ipfix    []string
	collect  []netip.AddrPort // --ipfix, resolved by check
}

func newWatchCmd(w *world, stdout, stderr io.Writer) *cobra.Command {
	o := &watchOptions{apply: applyOptions{world: w}}
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Keep the plan in force: follow the uplinks, flush what they strand, export port use",
		Long: `Watch applies the plan (as apply, journaled), reports its status, and stays
to look after it. It is out of the data path: killed, NAT goes on exactly as
applied.

  SIGHUP, natpool reload
                  re-read the spec file, apply it, then flush the stale
                  entries (as apply and flush --stale) and log what moved;
                  natpool reload waits for the outcome and exits 2 on failure
  links, routes   after --hold-down without further change, an egress entry
                  whose interface is down or has no carrier, or whose inside
                  hosts the kernel now routes through another interface, has
                  its conntrack entries flushed: no connection keeps a source
                  address its uplink no longer carries. The route is the
                  kernel's for a packet from the entry's first inside host to
                  --probe (no packet is sent).
  peers           with --node, after --hold-down: a peer whose routing table
                  empties (its BGP session dropped) or fills again is logged
                  ("peer nat2 went down", "came up"): while it is down this
                  node translates the hosts it steered to the peer, to the
                  same addresses.
  --metrics ADDR  serve Prometheus metrics on http://ADDR/metrics: the plan in
                  force; per public address the connections, distinct inside
                  hosts and the share of the port range its busiest
                  destination takes; block utilisation; uplinks; peers;
                  flushes; the translation log.
  --log DIR       log every translation natpool's rules make (start, end,
                  protocol, inside, public and destination address and port)
                  from conntrack's events, in hourly zstd segments with an
                  index; natpool lookup --at TIME PUBLIC:PORT --log DIR
                  answers from it. Destinations are kept as a keyed hash of
                  the address (the key is made once, in DIR) unless
                  --log-destination plain.
  --ipfix HOST:PORT
                  send each NAT44 session's creation and deletion to this
                  IPFIX collector (RFC 8158 over UDP, as nfcapd reads it);
                  repeat for several.

The counts follow conntrack's events and are rebuilt from a full dump every
--resync and whenever the kernel dropped events. Only entries natpool's rules
made are ever flushed. Every action is one line on stderr. Under systemd
(Type=notify) watch says when it is ready; natpool.service ships beside the
command.`,
		Example: `  natpool watch -f /etc/natpool/site.yaml --metrics 127.0.0.1:9733
  natpool watch -f site.yaml --netns nat0 --hold-down 5s
  natpool watch -f cluster.yaml --node nat1 --metrics 127.0.0.1:9733
  natpool watch -f campus.yaml --log /var/log/natpool --log-keep 4320h   # 180 days
  systemctl reload natpool     # natpool reload: apply the edited spec, flush what moved`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runWatch(o, stdout, stderr)
		},
	}
	addSpecFlags(cmd, &o.apply.spec)
	flags.Netns(cmd, &o.apply.netns)
	flags.Node(cmd, &o.apply.node)
	flags.Encoding(cmd, &o.apply.encoding)
	journalFlag(cmd, &o.apply.journal, false)
	f := cmd.Flags()
	f.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on this ADDR:PORT (default: none)")
	f.DurationVar(&o.holdDown, "hold-down", 2*time.Second, "how long links and routes must be still before watch acts")
	f.DurationVar(&o.resync, "resync", 5*time.Minute, "how often the counts are rebuilt from a full conntrack dump")
	f.DurationVar(&o.refresh, "refresh", 5*time.Second, "how often the guard's drop counters are read (port use is counted at each scrape)")
	f.StringVar(&o.probe, "probe", "8.8.8.8", "destination whose route says which interface carries an egress entry's hosts")
	f.StringVar(&o.log, "log", "", "log every translation in this directory (default: the spec's log key, else none)")
	_ = cmd.MarkFlagDirname("log")
	f.StringVar(&o.logDst, "log-destination", "hash", "how the log keeps destinations: hash (a keyed hash of the address, the port in clear) or plain")
	_ = cmd.RegisterFlagCompletionFunc("log-destination", cobra.FixedCompletions([]string{"hash", "plain"}, cobra.ShellCompDirectiveNoFileComp))
	f.DurationVar(&o.logKeep, "log-keep", 0, "prune the log's hourly segments older than this (default: keep all)")
	f.StringArrayVar(&o.ipfix, "ipfix", nil, "send NAT44 session events to this IPFIX collector HOST:PORT (UDP); repeat for several")
	return cmd
}

// check refuses durations and a probe watch cannot work with.
func (o *watchOptions) check() error {
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{{"--hold-down", o.holdDown, 0}, {"--resync", o.resync, time.Second}, {"--refresh", o.refresh, 10 * time.Millisecond}} {
		if d.v < d.min {
			return fmt.Errorf("%s %s: want %s or more", d.name, d.v, d.min)
		}
	}
	var err error
	if o.probeTo, err = netip.ParseAddr(o.probe); err != nil || !o.probeTo.Is4() {
		return fmt.Errorf("--probe %q: want an IPv4 address", o.probe)
	}
	if o.logDst != "hash" && o.logDst != "plain" {
		return fmt.Errorf("--log-destination %q: want hash or plain", o.logDst)
	}
	for _, c := range o.ipfix {
		a, err := net.ResolveUDPAddr("udp4", c)
		if err != nil || a.Port == 0 {
			return fmt.Errorf("--ipfix %q: want HOST:PORT of an IPFIX collector", c)
		}
		ap := a.AddrPort()
		o.collect = append(o.collect, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	if o.logKeep < 0 || o.logKeep > 0 && o.logKeep < time.Hour {
		return fmt.Errorf("--log-keep %s: want an hour or more (the log prunes hourly segments), or 0 to keep all", o.logKeep)
	}
	return nil
}

func runWatch(o *watchOptions, stdout, stderr io.Writer) error {
	// watch lives long with a large heap that changes slowly, the counts,
	// and allocates little between dumps: a low GC target keeps its memory
	// near the counts for little CPU (a million connections: 123 MB, 145
	// at GOGC=50), and one processor keeps its few goroutines on one
	// thread rather than waking another for each batch of events. GOGC
	// and GOMAXPROCS in the environment still decide.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	defer signal.Stop(hup)
	reloads := make(chan daemon.Reload, 1)
	go func() {
		for range hup {
			select {
			case reloads <- daemon.Reload{}:
			default:
			}
		}
	}()

	metrics := daemon.NewMetrics(Version)
	if o.metrics != "" {
		// Before anything is applied: a port in use is bad input.
		listener, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", o.metrics, err)
		}
		defer daemon.Serve(listener, metrics)()
		fmt.Fprintf(stderr, "serving metrics on http://%s/metrics\n", listener.Addr())
	}
	plan := func() (*pool.Plan, error) { return o.apply.spec.plan(stderr) }
	first, err := plan()
	if err != nil {
		return err
	}
	path, err := o.apply.world.onePath(o.apply.journal, first.Spec.Journal)
	if err != nil {
		return err
	}
	b, err := o.apply.world.openBox(o.apply.netns, path, stderr)
	if err != nil {
		return err
	}
	var logged *daemon.TranslationLog
	if dir := cmp.Or(o.log, first.Spec.Log); dir != "" {
		logged = &daemon.TranslationLog{Dir: dir, Options: translog.Options{Plain: o.logDst == "plain", Keep: o.logKeep}}
	}
	return daemon.Run(ctx, daemon.Config{
		Box: b, Options: box.Options{Node: o.apply.node, Encoding: flags.Encodings[o.apply.encoding]},
		Plan: plan, Metrics: metrics, HoldDown: o.holdDown, Resync: o.resync, Refresh: o.refresh, Probe: o.probeTo,
		Log: stderr, Clock: daemon.RealClock{}, Notify: daemon.Notify,
		Moved:        func(old, new *pool.Plan) uint64 { return pool.PlanChurn(old, new).Moved },
		Translations: logged,
		Collectors:   o.collect,
	}, first, reloads)
}
