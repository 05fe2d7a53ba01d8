package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// packOpts packs chunks of up to 64 KiB in packs sealed at packSize.
func packOpts(packSize int64) Options {
	return Options{Capacity: 1 << 30, PackThreshold: 64 << 10, PackSize: packSize}
}

func openPacked(t *testing.T, fsys vfs.FS, dir string, opts Options) *Store {
	t.Helper()
	s, err := OpenWith(fsys, dir, opts)
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// packID returns the i-th of many distinct chunk IDs.
func packID(t *testing.T, i int) rpc.ChunkID {
	t.Helper()
	id, err := rpc.ParseChunkID(fmt.Sprintf("%032x_%d", i+1, i))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// packData is chunk i's bytes: sizes vary around a few frames.
func packData(i int) []byte { return chunkData(100+i*1237%(20*testFrame), byte(i)) }

// holdsChunk checks that s serves chunk id with exactly data, and that
// Verify passes.
func holdsChunk(t *testing.T, s *Store, id rpc.ChunkID, data []byte) {
	t.Helper()
	is := is.NewRelaxed(t)
	got, err := readChunk(t, s, id)
	is.NoErr(err)                                     // the chunk opens and reads
	is.True(bytes.Equal(got, data))                   // byte for byte
	is.NoErr(s.Verify(context.Background(), id, nil)) // and verifies
}

func packFiles(t *testing.T, fsys vfs.FS, dir string) []string {
	t.Helper()
	es, err := fsys.ReadDir(filepath.Join(dir, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, filepath.Join(dir, "packs", e.Name()))
	}
	return out
}

// firstPack returns, sorted, the chunks s holds in its first pack.
func firstPack(s *Store) []rpc.ChunkID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []rpc.ChunkID
	for id, l := range s.packed {
		if l.p.seq == 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestPackedChunks: small chunks go to a pack, large ones to files; both
// read, verify, stat, list and delete alike, and a restarted store finds
// the same chunks.
func TestPackedChunks(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		s := openPacked(t, fsys, dir, packOpts(0))
		want := map[rpc.ChunkID][]byte{}
		for i := range 20 {
			id, data := packID(t, i), packData(i)
			put(t, s, id, data)
			want[id] = data
		}
		big := packID(t, 100)
		want[big] = chunkData(100<<10, 7) // above the threshold: a file
		put(t, s, big, want[big])
		_, err := fsys.Stat(s.ChunkPath(big))
		is.NoErr(err)                                 // the large chunk is a file
		_, err = fsys.Stat(s.ChunkPath(packID(t, 0))) // a small one is not
		is.True(err != nil)                           // a small one is not
		is.Equal(len(packFiles(t, fsys, dir)), 1)     // all small ones share one pack

		_, err = s.Create(packID(t, 3), 10, testFrame)
		is.True(rpc.KindOf(err) == rpc.Exists) // a packed chunk is stored once

		for _, i := range []int{2, 5, 9} {
			freed, err := s.Delete(packID(t, i))
			is.NoErr(err)
			is.True(freed > 0) // the packed chunk was there
			delete(want, packID(t, i))
		}
		freed, err := s.Delete(packID(t, 5))
		is.NoErr(err)
		is.Equal(freed, int64(0)) // deleted twice: nothing the second time

		check := func(s *Store) {
			is.Equal(len(s.IDs()), len(want)) // the stored chunks, no more
			for id, data := range want {
				holdsChunk(t, s, id, data)
				m, err := s.Check(id)
				is.NoErr(err)
				is.Equal(m.Size, int64(len(data))) // Check sees it on disk
			}
			inv := s.Inventory()
			is.Equal(len(inv), len(want)) // the inventory lists them
			is.Equal(s.Usage().Chunks, int64(len(want)))
		}
		check(s)
		s.Close()
		s2 := openPacked(t, fsys, dir, packOpts(0))
		check(s2)
		is.Equal(len(s2.Corrupt()), 0) // nothing damaged
		put(t, s2, packID(t, 5), packData(5))
		holdsChunk(t, s2, packID(t, 5), packData(5)) // a deleted chunk is stored again
	})
}

// TestPackSameChunkAtOnce: writers racing to store one small chunk (as
// replications of it may) see it stored once; each other writer is told
// Exists only once the chunk is durable and readable, never while the
// winner's record is still being written.
func TestPackSameChunkAtOnce(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		s := openPacked(t, fsys, dir, packOpts(0))
		for i := range 20 {
			id, data := packID(t, i), packData(i)
			digest, frames := chunkstream.DigestOf(data, testFrame)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var stored int
			var errs []error
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w, err := s.Create(id, int64(len(data)), testFrame)
					if err == nil {
						if _, err = w.Write(data); err == nil {
							err = w.Commit(frames, digest)
						}
					}
					var readErr error
					if rpc.KindOf(err) == rpc.Exists {
						_, readErr = readChunk(t, s, id)
					}
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						stored++
					case rpc.KindOf(err) != rpc.Exists:
						errs = append(errs, err)
					case readErr != nil:
						errs = append(errs, fmt.Errorf("told Exists, but the chunk does not read: %w", readErr))
					}
				}()
			}
			wg.Wait()
			is.Equal(errors.Join(errs...), nil) // every writer stores the chunk or finds it stored
			is.Equal(stored, 1)                 // once
			holdsChunk(t, s, id, data)
		}
		is.Equal(s.Usage().Chunks, int64(20)) // each counted once
	})
}

// TestPackTornTail: bytes of a batch that never completed (a torn write)
// at the end of the last pack are cut off at start-up; every record
// before them stays, and the pack takes new records after them.
func TestPackTornTail(t *testing.T) {
	for _, tail := range []struct {
		name string
		fn   func(rec []byte) []byte
	}{
		{"half a record", func(rec []byte) []byte { return rec[:len(rec)/2] }},
		{"zeros", func(rec []byte) []byte { return make([]byte, len(rec)) }},
		{"bad record checksum", func(rec []byte) []byte { rec[len(rec)-10] ^= 1; return rec }},
	} {
		t.Run(tail.name, func(t *testing.T) {
			forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
				is := is.New(t)
				s := openPacked(t, fsys, dir, packOpts(0))
				for i := range 3 {
					put(t, s, packID(t, i), packData(i))
				}
				s.Close()
				name := packFiles(t, fsys, dir)[0]
				before := readAll(t, fsys, name)
				digest, frames := chunkstream.DigestOf(packData(3), testFrame)
				rec := encodePut(packID(t, 3), testFrame, packData(3), frames, digest)
				f, err := fsys.OpenFile(name, os.O_RDWR, 0)
				is.NoErr(err)
				_, err = f.WriteAt(tail.fn(rec), int64(len(before)))
				is.NoErr(err)
				is.NoErr(f.Sync())
				f.Close()

				s2 := openPacked(t, fsys, dir, packOpts(0))
				is.Equal(len(s2.IDs()), 3)                           // the three acknowledged chunks
				is.True(!s2.Has(packID(t, 3)))                       // not the torn one
				is.Equal(len(s2.Corrupt()), 0)                       // a torn tail is not corruption
				is.True(bytes.Equal(readAll(t, fsys, name), before)) // the pack is cut back
				put(t, s2, packID(t, 4), packData(4))                // and takes new records
				s2.Close()
				s3 := openPacked(t, fsys, dir, packOpts(0))
				for i := range 5 {
					if i != 3 {
						holdsChunk(t, s3, packID(t, i), packData(i)) // all survive the next start
					}
				}
			})
		})
	}
}

// TestPackRotMidPack: in a sealed pack, a record whose data is damaged
// makes its chunk corrupt (listed, not served) at start-up, and so does
// Verify before then; the chunks around it are intact, and Delete drops
// the corrupt one for good. A record whose header is unreadable ends
// that pack's scan.
func TestPackRotMidPack(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		opts := packOpts(100 << 10) // seal after ~100 KiB: several packs
		s := openPacked(t, fsys, dir, opts)
		for i := range 30 {
			put(t, s, packID(t, i), packData(i))
		}
		is.True(len(packFiles(t, fsys, dir)) > 2) // several packs
		bad := packID(t, 1)                       // in the first, sealed, pack
		s.mu.Lock()
		loc := s.packed[bad]
		s.mu.Unlock()
		is.Equal(loc.p.seq, uint64(0)) // the first pack
		first := packFiles(t, fsys, dir)[0]
		b := readAll(t, fsys, first)
		b[loc.dataOff(bad)+10] ^= 0x40
		writeAll(t, fsys, first, b)

		err := s.Verify(context.Background(), bad, nil)
		is.True(IsCorrupt(err))                   // Verify finds it
		is.Equal(s.Corrupt(), []rpc.ChunkID{bad}) // and lists it
		_, err = s.Open(bad)
		is.True(rpc.KindOf(err) == rpc.NotFound) // no longer served
		s.Close()

		s2 := openPacked(t, fsys, dir, opts)
		is.Equal(s2.Corrupt(), []rpc.ChunkID{bad}) // found again at start-up
		is.True(!s2.Has(bad))                      // not stored
		for i := range 30 {
			if i != 1 {
				holdsChunk(t, s2, packID(t, i), packData(i)) // the others are intact
			}
		}
		freed, err := s2.Delete(bad)
		is.NoErr(err)
		is.True(freed > 0)             // the corrupt record is dropped
		is.Equal(len(s2.Corrupt()), 0) // and unlisted
		s2.Close()
		s3 := openPacked(t, fsys, dir, opts)
		is.Equal(len(s3.Corrupt()), 0) // for good
		is.Equal(len(s3.IDs()), 29)

		// Wreck the header of the first pack's third record: the rest of
		// that pack is not read, the other packs are.
		s3.mu.Lock()
		loc = s3.packed[packID(t, 2)]
		var inFirst []rpc.ChunkID
		for id, l := range s3.packed {
			if l.p.seq == 0 && l.off >= loc.off {
				inFirst = append(inFirst, id)
			}
		}
		s3.mu.Unlock()
		s3.Close()
		b = readAll(t, fsys, first)
		copy(b[loc.off:], "XXXX")
		writeAll(t, fsys, first, b)
		s4 := openPacked(t, fsys, dir, opts)
		is.Equal(len(s4.IDs()), 29-len(inFirst)) // what follows the bad header in that pack is missing
		for i := range 30 {
			if id := packID(t, i); i != 1 && !slices.Contains(inFirst, id) {
				holdsChunk(t, s4, id, packData(i))
			}
		}
	})
}

func writeAll(t *testing.T, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestPackLost: a pack file removed behind the store's back makes its
// chunks lost (FindLost, Check), not the others.
func TestPackLost(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		s := openPacked(t, fsys, dir, packOpts(100<<10))
		for i := range 30 {
			put(t, s, packID(t, i), packData(i))
		}
		inFirst := firstPack(s)
		is.True(len(inFirst) > 0)
		is.NoErr(fsys.Remove(packFiles(t, fsys, dir)[0]))
		_, err := s.Check(inFirst[0])
		is.True(IsLost(err)) // Check finds the pack gone
		var lost []rpc.ChunkID
		is.NoErr(s.FindLost(context.Background(), nil, func(id rpc.ChunkID, err error) { lost = append(lost, id) }))
		is.Equal(lost, inFirst[1:])             // the disk check reports the rest of them
		is.Equal(len(s.IDs()), 30-len(inFirst)) // they leave the index
		put(t, s, packID(t, 40), packData(40))  // the store takes more
		holdsChunk(t, s, packID(t, 40), packData(40))
	})
}

// TestPackCompaction: a sealed pack half dead is compacted: its live
// chunks move to the active pack, the file goes, space is given back, and
// a restart sees the same chunks; a chunk deleted before it is not
// resurrected, even when its delete record sat in the removed pack.
func TestPackCompaction(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		opts := packOpts(100 << 10)
		s := openPacked(t, fsys, dir, opts)
		want := map[rpc.ChunkID][]byte{}
		for i := range 40 {
			put(t, s, packID(t, i), packData(i))
			want[packID(t, i)] = packData(i)
		}
		s.Compact() // quiesce a background compaction
		packsBefore := packFiles(t, fsys, dir)
		is.True(len(packsBefore) > 3)
		// Delete most of the first pack's chunks, the deletes landing in
		// the active pack.
		first := firstPack(s)
		usedBefore := s.Usage().Used
		for _, id := range first[1:] {
			_, err := s.Delete(id)
			is.NoErr(err)
			delete(want, id)
		}
		is.NoErr(s.Compact())
		is.True(!slices.Contains(packFiles(t, fsys, dir), packsBefore[0])) // the first pack is gone
		is.True(s.Usage().Used < usedBefore)                               // its space is given back
		for id, data := range want {
			holdsChunk(t, s, id, data) // every live chunk still reads
		}
		s.Close()
		s2 := openPacked(t, fsys, dir, opts)
		is.Equal(len(s2.IDs()), len(want)) // a restart sees the same chunks
		for id, data := range want {
			holdsChunk(t, s2, id, data)
		}
		is.Equal(len(s2.Corrupt()), 0)
	})
}

// crashFS counts the steps that change a MemFS (as chunkstoretest's hook
// does) and crashes it before step k: from then on calls still succeed
// on the live file system, but what the crash left is kept.
type crashFS struct {
	*vfs.MemFS
	mu      sync.Mutex
	n, k    int
	crashed *vfs.MemFS
}

func (c *crashFS) step() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n++; c.n == c.k {
		c.crashed = c.MemFS.CrashClone()
	}
}

func (c *crashFS) result() (*vfs.MemFS, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed == nil {
		return c.MemFS.CrashClone(), false
	}
	return c.crashed, true
}

func (c *crashFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE) != 0 {
		c.step()
	}
	f, err := c.MemFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &crashFile{File: f, c: c}, nil
}

func (c *crashFS) Remove(name string) error  { c.step(); return c.MemFS.Remove(name) }
func (c *crashFS) Rename(a, b string) error  { c.step(); return c.MemFS.Rename(a, b) }
func (c *crashFS) SyncDir(name string) error { c.step(); return c.MemFS.SyncDir(name) }
func (c *crashFS) Mkdir(name string, perm fs.FileMode) error {
	c.step()
	return c.MemFS.Mkdir(name, perm)
}

type crashFile struct {
	vfs.File
	c *crashFS
}

func (f *crashFile) Write(p []byte) (int, error)            { f.c.step(); return f.File.Write(p) }
func (f *crashFile) WriteAt(p []byte, o int64) (int, error) { f.c.step(); return f.File.WriteAt(p, o) }
func (f *crashFile) Sync() error                            { f.c.step(); return f.File.Sync() }
func (f *crashFile) Truncate(n int64) error                 { f.c.step(); return f.File.Truncate(n) }

// TestPackCrashAtEveryStep crashes the disk before each step of a run of
// concurrent small puts (group-committed in batches), deletes and a
// compaction, and opens a store on what is left: every acknowledged chunk
// is there and verifies unless its deletion was acknowledged, an
// acknowledged deletion stays done, and whatever else is there is whole.
func TestPackCrashAtEveryStep(t *testing.T) {
	opts := packOpts(40 << 10)
	const n = 24
	type outcome struct {
		stored, deleted map[rpc.ChunkID]bool
		// deleting: a deletion asked for, acknowledged or not.
		deleting map[rpc.ChunkID]bool
	}
	// scenario runs on s; ack records an outcome as it is acknowledged,
	// ask a deletion as it is asked for.
	scenario := func(t *testing.T, s *Store, ack, ask func(func(*outcome))) {
		var wg sync.WaitGroup
		for w := range 4 { // 4 writers: batches of several records
			wg.Go(func() {
				for i := w; i < n; i += 4 {
					id, data := packID(t, i), packData(i)
					wr, err := s.Create(id, int64(len(data)), testFrame)
					if err != nil {
						t.Error(err)
						return
					}
					wr.Write(data)
					digest, frames := chunkstream.DigestOf(data, testFrame)
					if err := wr.Commit(frames, digest); err != nil {
						t.Error(err)
						return
					}
					ack(func(o *outcome) { o.stored[id] = true })
				}
			})
		}
		wg.Wait()
		for i := range n {
			if i%3 == 2 {
				continue
			}
			id := packID(t, i)
			ask(func(o *outcome) { o.deleting[id] = true })
			if _, err := s.Delete(id); err != nil {
				t.Error(err)
			}
			ack(func(o *outcome) { o.deleted[id] = true })
		}
		if err := s.Compact(); err != nil {
			t.Error(err)
		}
		id := packID(t, 0)
		put(t, s, id, packData(0)) // stored again after its deletion
		ack(func(o *outcome) { o.stored[id], o.deleted[id], o.deleting[id] = true, false, false })
		ask(func(o *outcome) { o.deleting[packID(t, 2)] = true })
		if _, err := s.Delete(packID(t, 2)); err != nil {
			t.Error(err)
		}
		ack(func(o *outcome) { o.deleted[packID(t, 2)] = true })
	}
	newDisk := func(t *testing.T, k int) (*crashFS, *Store) {
		m := vfs.NewCrashableMem()
		for _, err := range []error{m.MkdirAll("/data", 0o750), m.SyncDir("/")} {
			if err != nil {
				t.Fatal(err)
			}
		}
		c := &crashFS{MemFS: m, k: -1}
		s, err := OpenWith(c, "/data", opts)
		if err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		c.n, c.k = 0, k
		c.mu.Unlock()
		return c, s
	}
	c, s := newDisk(t, -1)
	scenario(t, s, func(func(*outcome)) {}, func(func(*outcome)) {})
	if len(packFiles(t, c, "/data")) >= int(s.nextSeq) {
		t.Fatalf("the scenario compacted no pack: %d packs of %d made", len(packFiles(t, c, "/data")), s.nextSeq)
	}
	s.Close()
	steps := c.n
	if steps < 20 {
		t.Fatalf("the scenario took %d steps; the hook misses some", steps)
	}
	for k := 1; k <= steps+1; k++ {
		t.Run(fmt.Sprintf("before step %d", k), func(t *testing.T) {
			is := is.New(t)
			c, s := newDisk(t, k)
			o := &outcome{stored: map[rpc.ChunkID]bool{}, deleted: map[rpc.ChunkID]bool{}, deleting: map[rpc.ChunkID]bool{}}
			scenario(t, s, func(fn func(*outcome)) {
				c.mu.Lock()
				defer c.mu.Unlock()
				if c.crashed == nil { // acknowledged before the crash
					fn(o)
				}
			}, func(fn func(*outcome)) {
				c.mu.Lock()
				defer c.mu.Unlock()
				fn(o)
			})
			s.Close()
			crashed, _ := c.result()
			s2, err := OpenWith(crashed, "/data", opts)
			is.NoErr(err)
			defer s2.Close()
			is.Equal(len(s2.Corrupt()), 0) // no chunk is left damaged
			for i := range n {
				id := packID(t, i)
				switch {
				case o.stored[id] && !o.deleting[id]:
					is.True(s2.Has(id)) // an acknowledged chunk survives
				case o.deleted[id]:
					is.True(!s2.Has(id)) // an acknowledged deletion too
				}
				if s2.Has(id) {
					holdsChunk(t, s2, id, packData(i)) // whatever is there is whole
				}
			}
		})
	}
}
