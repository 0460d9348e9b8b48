package translog

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// campus makes n translations of a campus at rate a second: 30,000
// devices behind 64 public addresses, each device keeping its address;
// destinations from a million; the kernel keeps a device's source port
// when free. It returns the conns in order of start and their lifetimes.
func campus(n, rate int) ([]Conn, []time.Duration) {
	r := rand.New(rand.NewPCG(5, 6))
	conns := make([]Conn, n)
	lives := make([]time.Duration, n)
	for i := range conns {
		dev := r.IntN(30000)
		inside := netip.AddrFrom4([4]byte{10, 16 + byte(dev>>16), byte(dev >> 8), byte(dev)})
		port := uint16(32768 + r.IntN(28232))
		dst := netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		conns[i] = Conn{Proto: []uint8{6, 6, 6, 17}[r.IntN(4)], Inside: netip.AddrPortFrom(inside, port),
			Public: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 76, 8, byte(dev % 64)}), port),
			Dst:    netip.AddrPortFrom(dst, []uint16{443, 443, 443, 80, 53}[r.IntN(5)])}
		lives[i] = time.Duration(r.ExpFloat64()*30) * time.Second
	}
	return conns, lives
}

// BenchmarkWriter logs a campus's translations, 20,000 a second, their
// ends as they come, and reports the bytes a translation takes on disk.
func BenchmarkWriter(b *testing.B) {
	const rate = 20000
	conns, lives := campus(200_000, rate)
	dir := b.TempDir()
	w, _, err := Open(dir, Options{}, epoch)
	if err != nil {
		b.Fatal(err)
	}
	type end struct {
		at time.Time
		c  Conn
	}
	var ends []end // by time, roughly: a bucket per second
	buckets := map[int64][]end{}
	alive := map[key]bool{}
	b.ResetTimer()
	logged := 0
	for i := 0; i < b.N; i++ {
		k := i % len(conns)
		at := epoch.Add(time.Duration(logged) * time.Second / rate)
		c := conns[k]
		// The kernel keeps the source port unless the public address,
		// port and destination are taken.
		for alive[key{proto: c.Proto, public: ap(c.Public), dst: ap(c.Dst)}] {
			c.Public = netip.AddrPortFrom(c.Public.Addr(), c.Public.Port()+1)
		}
		alive[key{proto: c.Proto, public: ap(c.Public), dst: ap(c.Dst)}] = true
		w.Start(at, c)
		e := at.Add(lives[k])
		buckets[e.Unix()] = append(buckets[e.Unix()], end{e, c})
		logged++
		if logged%rate == 0 {
			sec := at.Unix()
			for s := range buckets {
				if s <= sec {
					for _, x := range buckets[s] {
						w.End(x.at, x.c)
						delete(alive, key{proto: x.c.Proto, public: ap(x.c.Public), dst: ap(x.c.Dst)})
					}
					delete(buckets, s)
				}
			}
			if err := w.Flush(at); err != nil {
				b.Fatal(err)
			}
		}
	}
	_ = ends
	if err := w.Close(epoch.Add(time.Duration(logged) * time.Second / rate)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	var size int64
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			size += st.Size()
		}
	}
	b.ReportMetric(float64(size)/float64(b.N), "bytes/translation")
}
