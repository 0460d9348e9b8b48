//go:build !unix

package journal

import "fmt"

// Lock takes the journal's write lock: on Unix systems only, where natpool
// applies plans.
func (j *Journal) Lock(func()) (func(), error) {
	return nil, fmt.Errorf("journal %s: writing a journal needs a Unix system", j.Dir)
}
