//go:build unix

package journal

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Lock takes the journal's write lock, waiting for another writer to finish
// (waiting is called first when one holds it), and returns its release.
// Writers hold it from their intent to their outcome, so applies are
// recorded one after another, never interleaved.
func (j *Journal) Lock(waiting func()) (func(), error) {
	f, err := os.OpenFile(j.path(lockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.Dir, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		waiting()
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: lock: %w", j.Dir, err)
	}
	return func() { f.Close() }, nil
}
