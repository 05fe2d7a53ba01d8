package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// TestPackRotLastPack: a damaged record in the middle of the last pack
// is rot, not a torn tail: the acknowledged puts and the delete after it
// survive a restart, its chunk is listed corrupt, and the pack keeps
// taking records.
func TestPackRotLastPack(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		opts := packOpts(0)
		s := openPacked(t, fsys, dir, opts)
		for i := range 10 {
			put(t, s, packID(t, i), packData(i))
		}
		_, err := s.Delete(packID(t, 0))
		is.NoErr(err)
		bad := packID(t, 2)
		s.mu.Lock()
		loc := s.packed[bad]
		s.mu.Unlock()
		s.Close()
		name := packFiles(t, fsys, dir)[0]
		b := readAll(t, fsys, name)
		b[loc.dataOff(bad)+10] ^= 0x40
		writeAll(t, fsys, name, b)

		s2 := openPacked(t, fsys, dir, opts)
		is.Equal(len(s2.IDs()), 8)                    // the other acknowledged puts are there
		is.True(!s2.Has(packID(t, 0)))                // the deleted chunk stays deleted
		is.Equal(s2.Corrupt(), []rpc.ChunkID{bad})    // the damaged one is corrupt
		is.Equal(len(readAll(t, fsys, name)), len(b)) // nothing is cut off
		for i := 3; i < 10; i++ {
			holdsChunk(t, s2, packID(t, i), packData(i)) // the chunks after it read
		}
		put(t, s2, packID(t, 10), packData(10)) // the pack takes more
		s2.Close()
		s3 := openPacked(t, fsys, dir, opts)
		is.Equal(len(s3.IDs()), 9)     // and all of it survives the next start
		is.True(!s3.Has(packID(t, 0))) // still deleted
		holdsChunk(t, s3, packID(t, 10), packData(10))
	})
}

// TestPackUnreadNotCompacted: a pack whose scan stopped at an unreadable
// header is not compacted however dead it is (its unread delete records
// would be lost).
func TestPackUnreadNotCompacted(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		opts := packOpts(100 << 10)
		s := openPacked(t, fsys, dir, opts)
		for i := range 30 {
			put(t, s, packID(t, i), packData(i))
		}
		is.NoErr(s.Compact())
		first := firstPack(s)
		is.True(len(first) > 2) // several chunks in the first pack
		s.mu.Lock()
		loc := s.packed[first[1]]
		s.mu.Unlock()
		s.Close()
		name := packFiles(t, fsys, dir)[0]
		b := readAll(t, fsys, name)
		copy(b[loc.off:], "XXXX") // the second record's header
		writeAll(t, fsys, name, b)

		s2 := openPacked(t, fsys, dir, opts)
		is.True(!s2.Has(first[1])) // the rest of that pack is unread
		is.NoErr(s2.Compact())
		is.True(slices.Contains(packFiles(t, fsys, dir), name))     // yet it is not compacted
		holdsChunk(t, s2, first[0], packData(indexOf(t, first[0]))) // what was read still reads
	})
}

// indexOf returns i such that packID(t, i) is id.
func indexOf(t *testing.T, id rpc.ChunkID) int {
	t.Helper()
	for i := range 1000 {
		if packID(t, i) == id {
			return i
		}
	}
	t.Fatalf("no index for %s", id)
	return 0
}

// TestPackOpenRacesCompaction: readers opening packed chunks while
// compaction moves them and removes their pack always find them, and read
// their bytes.
func TestPackOpenRacesCompaction(t *testing.T) {
	is := is.New(t)
	fsys := vfs.NewCrashableMem()
	is.NoErr(fsys.MkdirAll("/data", 0o750))
	opts := packOpts(100 << 10)
	s := openPacked(t, fsys, "/data", opts)
	n := 0
	for round := range 8 {
		for range 30 {
			put(t, s, packID(t, n), packData(n))
			n++
		}
		is.NoErr(s.Compact())
		// Delete all but two chunks of every sealed pack, so that
		// compaction moves those two.
		s.mu.Lock()
		byPack := map[*pack][]rpc.ChunkID{}
		for id, l := range s.packed {
			if l.p != s.active {
				byPack[l.p] = append(byPack[l.p], id)
			}
		}
		s.mu.Unlock()
		var keep []rpc.ChunkID
		for _, ids := range byPack {
			slices.Sort(ids)
			for i, id := range ids {
				if i < 2 {
					keep = append(keep, id)
					continue
				}
				_, err := s.Delete(id)
				is.NoErr(err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		done := make(chan struct{})
		for r := range 2 {
			wg.Go(func() {
				for i := range 100_000 { // until compaction is done
					select {
					case <-done:
						return
					default:
					}
					id := keep[(i+r)%len(keep)]
					got, err := readChunk(t, s, id)
					if err == nil && !bytes.Equal(got, packData(indexOf(t, id))) {
						err = errors.New("wrong bytes")
					}
					if err != nil {
						errs <- fmt.Errorf("round %d: chunk %s: %w", round, id, err)
						return
					}
				}
			})
		}
		is.NoErr(s.Compact())
		close(done)
		wg.Wait()
		close(errs)
		for err := range errs {
			is.NoErr(err) // a chunk being moved opens and reads
		}
	}
}

// removeFailFS fails the removal of pack files.
type removeFailFS struct {
	vfs.FS
}

func (f removeFailFS) Remove(name string) error {
	if strings.HasSuffix(name, packSuffix) {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EIO}
	}
	return f.FS.Remove(name)
}

// TestPackRemoveFails: a compacted pack whose file cannot be removed
// stays known and compaction stops; a restart finds the live chunks, and
// the deleted ones stay deleted.
func TestPackRemoveFails(t *testing.T) {
	is := is.New(t)
	mem := vfs.NewCrashableMem()
	is.NoErr(mem.MkdirAll("/data", 0o750))
	opts := packOpts(100 << 10)
	s := openPacked(t, removeFailFS{mem}, "/data", opts)
	want := map[rpc.ChunkID][]byte{}
	for i := range 40 {
		put(t, s, packID(t, i), packData(i))
		want[packID(t, i)] = packData(i)
	}
	is.True(s.Compact() == nil) // nothing to compact yet
	first := firstPack(s)
	for _, id := range first[1:] {
		_, err := s.Delete(id)
		is.NoErr(err)
		delete(want, id)
	}
	s.Compact() // fails, unless a background compaction failed first
	s.mu.Lock()
	_, known := s.packs[0]
	stopped := s.compactErr != nil
	s.mu.Unlock()
	is.True(stopped)                                                                 // the removal failed
	is.True(known)                                                                   // the pack stays known
	is.True(slices.Contains(packFiles(t, mem, "/data"), packName("/data/packs", 0))) // and on disk
	is.NoErr(s.Compact())                                                            // compaction has stopped
	for id, data := range want {
		holdsChunk(t, s, id, data) // every live chunk reads
	}
	put(t, s, packID(t, 50), packData(50)) // puts go on
	want[packID(t, 50)] = packData(50)
	s.Close()
	s2 := openPacked(t, mem, "/data", opts)
	is.Equal(len(s2.IDs()), len(want)) // a restart finds the live chunks, no deleted one
	for id, data := range want {
		holdsChunk(t, s2, id, data)
	}
	is.NoErr(s2.Compact()) // and compacts the pack now
	is.True(!slices.Contains(packFiles(t, mem, "/data"), packName("/data/packs", 0)))
}
