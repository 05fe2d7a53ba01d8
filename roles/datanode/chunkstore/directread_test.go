package chunkstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
)

// TestColdReadsAroundTheCache: a frame-sized read of a chunk that is not
// in the page cache returns the chunk's bytes and leaves them out of the
// cache; a chunk that is cached is read from the cache; reads that cannot
// be direct (small, unaligned) read the same bytes.
func TestColdReadsAroundTheCache(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	s, err := Open(vfs.Default, dir, 16<<20)
	is.NoErr(err)
	id := chunkID(t, 1)
	data := chunkData(3<<20/2+1000, 7) // a frame and a half, and a tail under a block
	put(t, s, id, data)

	raw, err := os.Open(s.path(id))
	is.NoErr(err)
	defer raw.Close()
	probe := aligned(1 << 20)
	if _, err := raw.ReadAt(probe, 0); err != nil {
		t.Fatal(err)
	}
	if uncached(raw, 0, len(probe)) {
		t.Skip("this kernel does not tell cached bytes apart (no cachestat)")
	}
	if d, err := os.OpenFile(s.path(id), os.O_RDONLY|unix.O_DIRECT, 0); err != nil {
		t.Skipf("this file system reads nothing directly: %v", err)
	} else {
		d.Close()
	}
	drop := func() {
		t.Helper()
		is.NoErr(unix.Fadvise(int(raw.Fd()), 0, 0, unix.FADV_DONTNEED))
		if !uncached(raw, 0, 4096) {
			t.Skip("the page cache kept the chunk after FADV_DONTNEED")
		}
	}
	drop()

	c, err := s.Open(id)
	is.NoErr(err)
	defer c.Close()
	first := aligned(1 << 20)
	n, err := c.ReadAt(first, 0)
	is.NoErr(err)
	is.Equal(n, len(first))
	is.True(bytes.Equal(first, data[:1<<20]))
	for off := int64(0); off < 1<<20; off += 4096 {
		is.True(uncached(raw, off, 4096)) // read around the cache, which holds no page of it
	}

	rest := aligned(len(data) - 1<<20) // the aligned part direct, the tail of 1000 bytes through the cache
	n, err = c.ReadAt(rest, 1<<20)
	is.True(err == nil || n == len(rest))
	is.Equal(n, len(rest))
	is.True(bytes.Equal(rest, data[1<<20:]))

	// A second pass over the chunk, its file still kept open, goes
	// through the cache, which then holds it for the reads after.
	clear(first)
	n, err = c.ReadAt(first, 0)
	is.NoErr(err)
	is.True(bytes.Equal(first[:n], data[:1<<20]))
	is.True(!uncached(raw, 0, len(first)))
	clear(rest)
	_, err = c.ReadAt(rest, 1<<20)
	is.True(err == nil || errors.Is(err, io.EOF))
	is.True(bytes.Equal(rest, data[1<<20:]))
	is.True(!uncached(raw, 1<<20, len(rest)))

	// A chunk opened anew (the scrubber's way) is read around the cache
	// again.
	drop()
	v, err := s.openFile(id)
	is.NoErr(err)
	defer v.Close()
	n, err = v.ReadAt(first, 0)
	is.NoErr(err)
	is.True(bytes.Equal(first[:n], data[:1<<20]))
	is.True(uncached(raw, 0, len(first)))

	// Reads that cannot be direct read the same bytes, cold or not.
	small := make([]byte, 4096)
	_, err = c.ReadAt(small, 8192)
	is.NoErr(err)
	is.True(bytes.Equal(small, data[8192:8192+4096]))
	odd := aligned(1<<20 + 1)[1:] // not on a block boundary
	_, err = c.ReadAt(odd, 4096)
	is.NoErr(err)
	is.True(bytes.Equal(odd, data[4096:4096+1<<20]))
}
