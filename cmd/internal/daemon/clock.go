package daemon

import (
	"sync"
	"time"
)

// Clock is the daemon's time: the real one, or in tests one they advance.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// the timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a call AfterFunc waits to make.
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// RealClock is the system's clock.
type RealClock struct{}

// Now returns the current time.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// every calls f every d until the returned stop is called.
func every(c Clock, d time.Duration, f func()) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t Timer
	tick := func() {
		f()
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(d)
		}
	}
	mu.Lock()
	t = c.AfterFunc(d, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
