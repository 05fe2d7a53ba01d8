package client

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// digests returns n distinct frame digests.
func digests(n int, seed byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{seed, byte(i)}, rpc.DigestSize/2)
	}
	return out
}

// TestDigestCache: the cache keeps copies of what it is given, at most
// its size in bytes, dropping the chunks used least recently.
func TestDigestCache(t *testing.T) {
	is := is.New(t)
	c := newDigestCache(3 * 4 * digestCost) // three chunks of 4 frames
	for i := range 3 {
		c.put(fmt.Sprint(i), digests(4, byte(i)))
	}
	given := digests(4, 9)
	c.put("copied", given)
	given[0][0] ^= 1
	is.Equal(c.get("copied"), digests(4, 9)) // a copy was kept
	is.Equal(c.get("0"), nil)                // the least recently used chunk made room
	is.Equal(c.size, 3*4*digestCost)         // within the bound
	c.get("1")                               // used again: now the most recent
	c.put("more", digests(4, 7))
	is.Equal(c.get("2"), nil)              // the least recently used went
	is.Equal(c.get("1"), digests(4, 1))    // not the one used lately
	c.put("huge", digests(13, 1))          // larger than the whole cache
	is.Equal(c.get("huge"), nil)           // is not kept
	is.Equal(c.get("more"), digests(4, 7)) // and drops nothing
	c.put("more", digests(4, 8))           // a chunk kept already
	is.Equal(c.get("more"), digests(4, 7)) // keeps what it had
	is.Equal(c.size, 3*4*digestCost)       // counted once
	c.put("none", nil)
	is.Equal(c.get("none"), nil) // nothing to keep
}
