// Package translog keeps the translations natpool's rules make, as
// conntrack reports their beginnings and ends, in a directory of
// append-only segment files, and answers who had a public address and port
// at a time. A segment is a header and blocks, each block the events of
// about a second compressed as one zstd frame behind its length, so that a
// process killed at any moment loses at most the block it was gathering and
// a torn tail is found at a block's edge. A segment ends (is sealed) after
// an hour or a size, and its index then lists, for each public address and
// port, the blocks that hold its events. The next segment opens with the
// translations still open, so that a lookup reads one segment back, not
// the log's whole history.
//
// By default a destination is kept as a keyed hash of its address (with
// its port in clear): the log can confirm a destination a request names
// without holding anyone's browsing history. The key is made once per
// directory and kept in it.
package translog

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Conn is a translated connection as conntrack reports it: the inside
// source, the public source it was given, and the destination. Among the
// connections alive at one moment, Proto, Public and Dst name one.
type Conn struct {
	Proto  uint8
	Inside netip.AddrPort
	Public netip.AddrPort
	Dst    netip.AddrPort
}

// Translation is a connection as the log knows it, from its beginning to
// its end.
type Translation struct {
	Conn
	// DstHash is the keyed hash of Dst's address; Dst's address is the
	// zero Addr when the log keeps only the hash (its port is kept).
	DstHash uint32
	// Start is when it began; Before that it was there when the log
	// began (or resumed) at Start, and began earlier.
	Start  time.Time
	Before bool
	// End is when it ended; zero while the log says it has not.
	End time.Time
}

// keyFile is the name of the key of destination hashes in a log directory.
const keyFile = "key"

// hasher hashes destination addresses with a directory's key: one AES
// block, a pseudorandom function of the address under the key.
type hasher struct{ block cipher.Block }

// loadKey reads dir's key, making it first when dir has none.
func loadKey(dir string) (hasher, error) {
	path := filepath.Join(dir, keyFile)
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 16)
		rand.Read(key)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) { // made meanwhile: read that one
			return loadKey(dir)
		}
		if err != nil {
			return hasher{}, err
		}
		if _, err = f.Write(key); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return hasher{}, err
		}
	} else if err != nil {
		return hasher{}, err
	}
	if len(key) != 16 {
		return hasher{}, fmt.Errorf("%s: a key is 16 bytes, not %d", path, len(key))
	}
	b, err := aes.NewCipher(key)
	return hasher{b}, err
}

// hash returns the keyed hash of a destination address.
func (h hasher) hash(a netip.Addr) uint32 {
	var in, out [16]byte
	s := a.As16()
	copy(in[:], s[:])
	h.block.Encrypt(out[:], in[:])
	return binary.BigEndian.Uint32(out[:4])
}
