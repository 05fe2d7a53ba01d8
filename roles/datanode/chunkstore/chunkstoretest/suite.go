package chunkstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	FrameSize  = rpc.MinFrameSize // 4 KiB: the frame size of every chunk the helpers write
	testCap    = 1 << 20          // 1 MiB store
	footerSize = 64
)

// Run runs the conformance suite on disks from newDisk, one per test.
func Run(t *testing.T, newDisk Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"CommitOpen", testCommitOpen},
		{"DirectWrite", testDirectWrite},
		{"StoredChunkStreamsVerified", testStoredChunkStreamsVerified},
		{"WriterErrors", testWriterErrors},
		{"SameIDTwice", testSameIDTwice},
		{"CommitFailsWhenDirSyncFails", testCommitFailsWhenDirSyncFails},
		{"ReserveConcurrent", testReserveConcurrent},
		{"ReserveRelease", testReserveRelease},
		{"UsageWithoutCapacity", testUsageWithoutCapacity},
		{"OpenRefusesCorruptMetadata", testOpenRefusesCorruptMetadata},
		{"CorruptDataIsCaughtOnRead", testCorruptDataIsCaughtOnRead},
		{"Delete", testDelete},
		{"IndexRebuiltAtOpen", testIndexRebuiltAtOpen},
		{"OpenRecovers", testOpenRecovers},
		{"OpenErrors", testOpenErrors},
		{"VerifyQuarantines", testVerifyQuarantines},
		{"LostChunk", testLostChunk},
		{"CrashKeepsAcknowledged", testCrashKeepsAcknowledged},
		{"CrashBetweenWriteAndRename", testCrashBetweenWriteAndRename},
		{"CrashAfterRenameBeforeDirSync", testCrashAfterRenameBeforeDirSync},
		{"DeleteDurability", testDeleteDurability},
		{"QuarantineDurability", testQuarantineDurability},
		{"CrashAtEveryStep", testCrashAtEveryStep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newDisk) })
	}
}

// ChunkID returns a valid chunk ID numbered n (one of ten).
func ChunkID(t *testing.T, n int) rpc.ChunkID {
	t.Helper()
	id, err := rpc.ParseChunkID(strings.Repeat("ab", 15) + string(rune('0'+n%10)) + "f_" + string(rune('0'+n%10)))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ChunkData returns size bytes of chunk content that differ with seed.
func ChunkData(size int, seed byte) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = seed + byte(i*31+i/97)
	}
	return b
}

// write creates chunk id and writes data frame by frame, as the upload
// path does, without committing it.
func write(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, data []byte) *chunkstore.Writer {
	t.Helper()
	w, err := s.Create(id, int64(len(data)), FrameSize)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for off := 0; off < len(data); off += FrameSize {
		if _, err := w.Write(data[off:min(off+FrameSize, len(data))]); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	return w
}

// Put stores data as chunk id the way the upload path does: written
// frame by frame (FrameSize), then committed with its frame
// digests and chunk digest.
func Put(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, data []byte) (digest []byte, frames [][]byte) {
	t.Helper()
	w := write(t, s, id, data)
	digest, frames = chunkstream.DigestOf(data, FrameSize)
	if err := w.Commit(frames, digest); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return digest, frames
}

func open(t *testing.T, fsys vfs.FS, dir string, capacity int64) *chunkstore.Store {
	t.Helper()
	s, err := chunkstore.Open(fsys, dir, capacity)
	if err != nil {
		t.Fatalf("chunkstore.Open: %v", err)
	}
	return s
}

// hooked returns d's file system with a hook, and a store opened on it.
func hooked(t *testing.T, d Disk) (*hookFS, *chunkstore.Store) {
	t.Helper()
	h := &hookFS{FS: d.FS}
	return h, open(t, h, d.Dir, testCap)
}

// corrupt rewrites a stored chunk file, durably.
func corrupt(t *testing.T, fsys vfs.FS, s *chunkstore.Store, id rpc.ChunkID, fn func(b []byte) []byte) {
	t.Helper()
	writeFile(t, fsys, s.ChunkPath(id), fn(readFile(t, fsys, s.ChunkPath(id))))
}

// holds checks that s serves chunk id with exactly data, verified.
func holds(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, data []byte) {
	t.Helper()
	is := is.New(t)
	is.NoErr(s.Verify(context.Background(), id, nil)) // the chunk is intact
	c, err := s.Open(id)
	is.NoErr(err) // and served
	defer c.Close()
	got := make([]byte, len(data))
	_, err = c.ReadAt(got, 0)
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // byte for byte
}

func testCommitOpen(t *testing.T, newDisk Factory) {
	for _, size := range []int{1, FrameSize - 1, FrameSize, FrameSize + 1, 3*FrameSize + 17} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			is := is.New(t)
			d := newDisk(t)
			s := open(t, d.FS, d.Dir, testCap)
			id := ChunkID(t, 1)
			data := ChunkData(size, 1)
			is.True(!s.Has(id)) // not there before
			digest, frames := Put(t, s, id, data)

			is.True(s.Has(id)) // visible after Commit
			h := id.Hash()
			p := filepath.Join(d.Dir, "chunks", h[0:2], h[2:3], string(id))
			is.Equal(s.ChunkPath(id), p) // stored in the nested layout
			info, err := d.FS.Stat(p)
			is.NoErr(err)
			is.Equal(info.Size(), chunkstore.FileSize(int64(size), FrameSize)) // file holds data, digests and footer
			is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0)                        // no temporary file left

			c, err := s.Open(id)
			is.NoErr(err) // stored chunk opens
			defer c.Close()
			is.Equal(c.ID, id)                      // Chunk names its ID
			is.Equal(c.Size, int64(size))           // size
			is.Equal(c.FrameSize, int64(FrameSize)) // frame size
			is.Equal(c.Digest, digest)              // chunk digest
			is.Equal(c.Frames, frames)              // frame digests
			got := make([]byte, size)
			_, err = c.ReadAt(got, 0)
			is.NoErr(err)                   // data readable from offset 0
			is.True(bytes.Equal(got, data)) // byte for byte

			m, err := s.Stat(id)
			is.NoErr(err) // Stat
			is.Equal(m.Size, c.Meta.Size)
			is.Equal(m.FrameSize, c.Meta.FrameSize)
			is.Equal(m.Digest, c.Meta.Digest) // same metadata as Open, without frame digests
			m, err = s.Check(id)
			is.NoErr(err)                        // Check finds the file
			is.Equal(m.Digest, c.Digest)         // with the same metadata
			is.Equal(s.IDs(), []rpc.ChunkID{id}) // listed
			is.Equal(len(s.Inventory()), 1)      // and in the inventory

			u := s.Usage()
			is.Equal(u.Chunks, int64(1))                                  // one chunk
			is.Equal(u.Used, chunkstore.FileSize(int64(size), FrameSize)) // used counts the whole file
			is.Equal(u.Capacity, int64(testCap))                          // capacity as configured
			is.Equal(u.Free, testCap-u.Used)                              // free is what is left
		})
	}
}

// testDirectWrite stores a chunk big enough for direct I/O (whole aligned
// blocks, then an unaligned tail).
func testDirectWrite(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, 0)
	id := ChunkID(t, 1)
	data := ChunkData(2<<20+17, 7)
	Put(t, s, id, data)
	holds(t, s, id, data)
	is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0) // no temporary file left
	holds(t, open(t, d.FS, d.Dir, 0), id, data) // and it reopens
}

func testStoredChunkStreamsVerified(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	id := ChunkID(t, 2)
	data := ChunkData(2*FrameSize+5, 2)
	digest, _ := Put(t, s, id, data)
	c, err := s.Open(id)
	is.NoErr(err)
	defer c.Close()
	var buf frameBuf
	is.NoErr(chunkstream.SendStored(context.Background(), &buf, id, c.File, c.Size, c.FrameSize, c.Frames, c.Digest)) // serve the stored chunk
	dst := make([]byte, len(data))
	is.NoErr(chunkstream.ReceiveInto(&buf, chunkstream.Expect{ChunkID: id, Size: c.Size, FrameSize: c.FrameSize, Digest: digest}, dst)) // verified against the committed digest
	is.True(bytes.Equal(dst, data))                                                                                                     // byte for byte
}

// frameBuf is an in-memory download stream.
type frameBuf struct{ frames []*dfspb.ChunkDataStream }

func (b *frameBuf) Send(f *dfspb.ChunkDataStream) error {
	// Copy, as gRPC serializes: SendStored reuses its buffer.
	b.frames = append(b.frames, proto.Clone(f).(*dfspb.ChunkDataStream))
	return nil
}

func (b *frameBuf) Recv() (*dfspb.ChunkDataStream, error) {
	if len(b.frames) == 0 {
		return nil, io.EOF
	}
	f := b.frames[0]
	b.frames = b.frames[1:]
	return f, nil
}

func testWriterErrors(t *testing.T, newDisk Factory) {
	t.Run("exists", func(t *testing.T) {
		is := is.New(t)
		d := newDisk(t)
		s := open(t, d.FS, d.Dir, testCap)
		id := ChunkID(t, 1)
		Put(t, s, id, ChunkData(10, 0))
		_, err := s.Create(id, 10, FrameSize)
		is.True(errors.Is(err, rpc.Exists)) // chunks are immutable: no second Create
	})
	t.Run("write beyond size", func(t *testing.T) {
		is := is.New(t)
		d := newDisk(t)
		s := open(t, d.FS, d.Dir, testCap)
		w, err := s.Create(ChunkID(t, 1), 10, FrameSize)
		is.NoErr(err)
		defer w.Abort()
		n, err := w.Write(make([]byte, 8))
		is.NoErr(err)  // within size
		is.Equal(n, 8) // all written
		n, err = w.Write(make([]byte, 3))
		is.True(errors.Is(err, rpc.Invalid)) // beyond size refused
		is.Equal(n, 0)                       // and nothing written
		n, err = w.Write(make([]byte, 2))
		is.NoErr(err)  // the rest still fits
		is.Equal(n, 2) // written
	})
	t.Run("short commit", func(t *testing.T) {
		is := is.New(t)
		d := newDisk(t)
		s := open(t, d.FS, d.Dir, testCap)
		id := ChunkID(t, 1)
		w, err := s.Create(id, 10, FrameSize)
		is.NoErr(err)
		_, err = w.Write(make([]byte, 9))
		is.NoErr(err)
		err = w.Commit(nil, make([]byte, 32))
		is.True(errors.Is(err, rpc.Invalid))        // a chunk short of its size is not committed
		is.True(!s.Has(id))                         // nor visible
		is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0) // and its temp file is gone
		is.Equal(s.Usage().Chunks, int64(0))        // nor counted
	})
	t.Run("abort", func(t *testing.T) {
		is := is.New(t)
		d := newDisk(t)
		s := open(t, d.FS, d.Dir, testCap)
		id := ChunkID(t, 1)
		w, err := s.Create(id, 10, FrameSize)
		is.NoErr(err)
		_, err = w.Write(make([]byte, 5))
		is.NoErr(err)
		is.Equal(len(tempFiles(t, d.FS, d.Dir)), 1) // partial data lives in a temporary file
		w.Abort()
		is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0) // Abort removes it
		is.True(!s.Has(id))                         // never visible
		_, err = s.Create(id, 10, FrameSize)
		is.NoErr(err) // the ID can be written again
	})
	t.Run("missing", func(t *testing.T) {
		is := is.New(t)
		d := newDisk(t)
		s := open(t, d.FS, d.Dir, testCap)
		_, err := s.Open(ChunkID(t, 3))
		is.True(errors.Is(err, rpc.NotFound)) // Open of a missing chunk
		_, err = s.Stat(ChunkID(t, 3))
		is.True(errors.Is(err, rpc.NotFound)) // Stat of a missing chunk
		_, err = s.Check(ChunkID(t, 3))
		is.True(errors.Is(err, rpc.NotFound))                                                // Check of a missing chunk
		is.True(errors.Is(s.Verify(context.Background(), ChunkID(t, 3), nil), rpc.NotFound)) // Verify of a missing chunk
	})
}

// testSameIDTwice: two writers racing on one chunk ID (both created
// before either committed) must not leave the accounting counting one file
// twice.
func testSameIDTwice(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	id := ChunkID(t, 1)
	data := ChunkData(10, 0)
	digest, frames := chunkstream.DigestOf(data, FrameSize)
	w1, w2 := write(t, s, id, data), write(t, s, id, data)
	is.NoErr(w1.Commit(frames, digest))
	err := w2.Commit(frames, digest)
	is.True(err == nil || errors.Is(err, rpc.Exists))            // the second commit is harmless or refused
	is.Equal(s.Usage().Chunks, int64(1))                         // one file, one chunk
	is.Equal(s.Usage().Used, chunkstore.FileSize(10, FrameSize)) // counted once
	is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0)                  // and no temporary file left
}

// testCommitFailsWhenDirSyncFails: a chunk whose directory entry cannot
// be made durable is not stored, nor left under its name, nor counted.
func testCommitFailsWhenDirSyncFails(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	h, s := hooked(t, d)
	id := ChunkID(t, 2)
	data := ChunkData(10, 0)
	digest, frames := chunkstream.DigestOf(data, FrameSize)
	w := write(t, s, id, data)
	chunkDir := filepath.Dir(s.ChunkPath(id))
	injected := errors.New("injected EIO")
	h.set(func(op, name string) error {
		if op == "syncdir" && name == chunkDir {
			return injected
		}
		return nil
	})
	err := w.Commit(frames, digest)
	is.True(errors.Is(err, injected))                                 // the cause is kept
	is.True(err != nil && strings.Contains(err.Error(), "fsync dir")) // the failed fsync fails the commit
	is.True(errors.Is(err, rpc.Internal))                             // as Internal
	is.True(!s.Has(id))                                               // the chunk is not stored
	_, serr := d.FS.Stat(s.ChunkPath(id))
	is.True(errors.Is(serr, fs.ErrNotExist)) // nor left under its name
	is.Equal(s.Usage().Used, int64(0))       // its bytes are not counted
	is.Equal(s.Usage().Chunks, int64(0))
	h.set(nil)
	Put(t, s, id, data) // once the disk recovers, it can be stored
	holds(t, s, id, data)
}

// testReserveConcurrent: uploads racing for the last free bytes never
// reserve more than there is.
func testReserveConcurrent(t *testing.T, newDisk Factory) {
	const capacity, need, racers = 64 << 10, 4 << 10, 64
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, capacity)
	var wg sync.WaitGroup
	var granted atomic.Int64
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Reserve(need) == nil {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := granted.Load(); got != capacity/need {
		t.Fatalf("%d of %d reservations of %d B granted on a %d B store; want %d", got, racers, need, capacity, capacity/need)
	}
}

func testReserveRelease(t *testing.T, newDisk Factory) {
	is := is.New(t)
	const capacity = 100 << 10
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, capacity)
	is.Equal(s.Usage().Free, int64(capacity)) // empty store: all free

	is.NoErr(s.Reserve(60 << 10))           // room for 60 KiB
	is.Equal(s.Usage().Free, int64(40<<10)) // reservations count against free space
	err := s.Reserve(50 << 10)
	is.True(errors.Is(err, rpc.ResourceExhausted))             // a full node refuses
	is.True(strings.Contains(err.Error(), "datanode is full")) // saying so
	is.NoErr(s.Reserve(40 << 10))                              // exactly what is left fits
	is.Equal(s.Usage().Free, int64(0))                         // nothing free
	is.True(s.Reserve(1) != nil)                               // not even a byte

	s.Release(60 << 10)
	s.Release(40 << 10)
	is.Equal(s.Usage().Free, int64(capacity)) // releases give it back

	Put(t, s, ChunkID(t, 1), ChunkData(FrameSize, 1))
	used := chunkstore.FileSize(FrameSize, FrameSize)
	is.Equal(s.Usage().Free, capacity-used)    // stored chunks use space
	is.True(s.Reserve(capacity-used+1) != nil) // and limit reservations
	is.NoErr(s.Reserve(capacity - used))       // up to what is left
	s.Release(capacity - used)
	is.Equal(s.Usage().Used, used) // Used is stored bytes only
}

func testUsageWithoutCapacity(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, 0)
	u := s.Usage()
	is.True(u.Capacity > 0)       // 0 means the filesystem's size
	is.True(u.Free <= u.Capacity) // free never exceeds capacity
	is.True(u.Free >= 0)          // nor goes negative
}

func testOpenRefusesCorruptMetadata(t *testing.T, newDisk Factory) {
	size := 2*FrameSize + 100 // three frames
	digestsAt := size
	footerAt := size + 3*sha256.Size
	tests := []struct {
		name string
		fn   func(b []byte) []byte
		msg  string
	}{
		{"empty file", func(b []byte) []byte { return nil }, "file of 0 bytes"},
		{"shorter than a footer", func(b []byte) []byte { return b[:footerSize-1] }, "file of 63 bytes"},
		{"truncated by one byte", func(b []byte) []byte { return b[:len(b)-1] }, "corrupt metadata"},
		{"truncated data", func(b []byte) []byte { return append(b[:size-10:size-10], b[size:]...) }, "file of"},
		{"extra byte", func(b []byte) []byte { return append(b, 0) }, "bad magic"},
		{"extra byte before the footer", func(b []byte) []byte {
			out := append(bytes.Clone(b[:footerAt]), 0)
			return append(out, b[footerAt:]...)
		}, "file of"},
		{"flipped byte in a frame digest", func(b []byte) []byte { b[digestsAt+40] ^= 0x01; return b }, "frame digests do not match the chunk digest"},
		{"flipped byte in the chunk digest", func(b []byte) []byte { b[footerAt+40] ^= 0x80; return b }, "frame digests do not match the chunk digest"},
		{"wrong magic", func(b []byte) []byte { copy(b[footerAt:], "DFSCHUNX"); return b }, "bad magic or version"},
		{"wrong version", func(b []byte) []byte { binary.BigEndian.PutUint32(b[footerAt+8:], 2); return b }, "bad magic or version"},
		{"frame count", func(b []byte) []byte { binary.BigEndian.PutUint32(b[footerAt+12:], 4); return b }, "4 frame digests for 3"},
		{"zero size", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+16:], 0); return b }, "size 0"},
		{"negative size", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+16:], 1<<63); return b }, "size -"},
		{"size too big", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+16:], rpc.MaxChunkSize+1); return b }, "size"},
		{"size off by one", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+16:], uint64(size-1)); return b }, "file of"},
		{"frame size too small", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+24:], 1); return b }, "frame size 1"},
		{"frame size zero", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+24:], 0); return b }, "frame size 0"},
		{"frame size changed", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+24:], 2*FrameSize); return b }, "3 frame digests for 2"},
		{"all zeros", func(b []byte) []byte { return make([]byte, len(b)) }, "bad magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			d := newDisk(t)
			s := open(t, d.FS, d.Dir, testCap)
			id := ChunkID(t, 4)
			Put(t, s, id, ChunkData(size, 4))
			corrupt(t, d.FS, s, id, tt.fn)
			c, err := s.Open(id)
			if err == nil {
				c.Close()
			}
			is.True(err != nil)                                // damaged metadata is refused
			is.True(chunkstore.IsCorrupt(err))                 // as corrupt
			is.True(errors.Is(err, rpc.Internal))              // as Internal
			is.True(strings.Contains(err.Error(), tt.msg))     // saying what is wrong
			is.True(strings.Contains(err.Error(), string(id))) // naming the chunk
			is.Equal(s.Corrupt(), []rpc.ChunkID{id})           // it is quarantined
			reopened := open(t, d.FS, d.Dir, testCap)
			is.True(!reopened.Has(id))                      // a restarted node does not index it
			is.Equal(reopened.Corrupt(), []rpc.ChunkID{id}) // but lists it as corrupt
		})
	}
}

// testCorruptDataIsCaughtOnRead: the footer does not cover the data, so a
// flipped data byte opens fine, but the stored frame digest no longer
// matches and a verified read refuses it.
func testCorruptDataIsCaughtOnRead(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	id := ChunkID(t, 5)
	data := ChunkData(2*FrameSize, 5)
	digest, _ := Put(t, s, id, data)
	corrupt(t, d.FS, s, id, func(b []byte) []byte { b[FrameSize+7] ^= 0x04; return b })

	c, err := s.Open(id)
	is.NoErr(err) // metadata is intact
	defer c.Close()
	var buf frameBuf
	is.NoErr(chunkstream.SendStored(context.Background(), &buf, id, c.File, c.Size, c.FrameSize, c.Frames, c.Digest))
	err = chunkstream.ReceiveInto(&buf, chunkstream.Expect{ChunkID: id, Size: c.Size, FrameSize: c.FrameSize, Digest: digest}, make([]byte, len(data)))
	is.True(errors.Is(err, rpc.Invalid))                              // the reader refuses the damaged frame
	is.True(strings.Contains(err.Error(), "mismatch at offset 4096")) // and says which
}

func testDelete(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	a, b := ChunkID(t, 1), ChunkID(t, 2)
	Put(t, s, a, ChunkData(100, 1))
	Put(t, s, b, ChunkData(200, 2))
	is.Equal(s.Usage().Chunks, int64(2))

	freed, err := s.Delete(a)
	is.NoErr(err)                                        // delete works
	is.Equal(freed, chunkstore.FileSize(100, FrameSize)) // and reports the bytes freed
	is.True(!s.Has(a))                                   // gone
	_, err = s.Open(a)
	is.True(errors.Is(err, rpc.NotFound)) // not openable
	is.True(!exists(d.FS, s.ChunkPath(a)))
	u := s.Usage()
	is.Equal(u.Chunks, int64(1))                          // count drops
	is.Equal(u.Used, chunkstore.FileSize(200, FrameSize)) // bytes drop

	freed, err = s.Delete(a)
	is.NoErr(err)                                               // deleting a missing chunk is not an error
	is.Equal(freed, int64(0))                                   // but frees nothing
	is.True(s.Has(b))                                           // other chunks untouched
	is.NoErr(s.SyncDeletes([]rpc.ChunkID{a, a, ChunkID(t, 9)})) // missing directories are fine

	Put(t, s, a, ChunkData(100, 3))
	is.True(s.Has(a)) // a deleted ID can be stored again
}

// testIndexRebuiltAtOpen: a store opened on a data dir indexes what is on
// disk: the chunks with their metadata and space, the corrupt ones apart.
func testIndexRebuiltAtOpen(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	data := map[rpc.ChunkID][]byte{}
	for i := range 5 {
		id := ChunkID(t, i)
		data[id] = ChunkData(i*FrameSize+10, byte(i))
		Put(t, s, id, data[id])
	}
	bad := ChunkID(t, 3)
	corrupt(t, d.FS, s, bad, func(b []byte) []byte { return b[:len(b)-1] })
	before := s.Usage()

	s2 := open(t, d.FS, d.Dir, testCap)
	inv := s2.Inventory()
	is.Equal(len(inv), 4) // every intact chunk is indexed
	for id, m := range inv {
		want, err := s.Stat(id)
		is.NoErr(err)
		is.Equal(m.Size, want.Size)           // with its size
		is.Equal(m.FrameSize, want.FrameSize) // frame size
		is.Equal(m.Digest, want.Digest)       // and digest
		is.Equal(m.Frames, [][]byte(nil))     // without its frame digests
		holds(t, s2, id, data[id])
	}
	is.Equal(s2.Corrupt(), []rpc.ChunkID{bad})                                                    // the damaged one is listed apart
	is.Equal(s2.Usage().Chunks, before.Chunks-1)                                                  // and not counted as stored
	is.Equal(s2.Usage().Used, before.Used-1)                                                      // its space still used (one byte shorter)
	is.Equal(s2.IDs(), []rpc.ChunkID{ChunkID(t, 0), ChunkID(t, 1), ChunkID(t, 2), ChunkID(t, 4)}) // sorted
}

func testOpenRecovers(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	a, b := ChunkID(t, 1), ChunkID(t, 2)
	Put(t, s, a, ChunkData(100, 1))
	Put(t, s, b, ChunkData(FrameSize+1, 2))
	// A crash mid-write leaves a temp file; stray files may sit beside chunks.
	w, err := s.Create(ChunkID(t, 3), 10, FrameSize)
	is.NoErr(err)
	_, err = w.Write([]byte("partial"))
	is.NoErr(err)
	h := a.Hash()
	writeFile(t, d.FS, filepath.Join(d.Dir, "chunks", h[0:2], h[2:3], "notes.txt"), []byte("hello"))
	writeFile(t, d.FS, filepath.Join(d.Dir, "README"), []byte("hello"))

	s2 := open(t, d.FS, d.Dir, testCap)
	is.Equal(len(tempFiles(t, d.FS, d.Dir)), 0) // leftovers from before the crash are removed
	u := s2.Usage()
	is.Equal(u.Chunks, int64(2))                                                                      // existing chunks count again
	is.Equal(u.Used, chunkstore.FileSize(100, FrameSize)+chunkstore.FileSize(FrameSize+1, FrameSize)) // with their bytes
	is.True(!s2.Has(ChunkID(t, 3)))                                                                   // the partial chunk never appears

	var walked []rpc.ChunkID
	is.NoErr(s2.Walk(func(id rpc.ChunkID, size int64) error {
		walked = append(walked, id)
		return nil
	}))
	is.Equal(len(walked), 2) // Walk sees only valid chunk IDs
	stop := errors.New("stop")
	is.Equal(s2.Walk(func(rpc.ChunkID, int64) error { return stop }), stop) // Walk returns fn's error

	m, err := s2.Stat(b)
	is.NoErr(err)                        // chunks survive a reopen
	is.Equal(m.Size, int64(FrameSize+1)) // intact
	is.True(exists(d.FS, filepath.Join(d.Dir, "README")))
}

func testOpenErrors(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	file := filepath.Join(d.Dir, "file")
	writeFile(t, d.FS, file, nil)
	_, err := chunkstore.Open(d.FS, filepath.Join(file, "data"), 0)
	is.True(err != nil) // a data dir that cannot be created is an error
	_, err = chunkstore.Open(d.FS, file, 0)
	is.True(err != nil) // so is a data dir that is a file
}

// testVerifyQuarantines: Verify passes an intact chunk and quarantines a
// damaged one: out of the index, marked on disk (so a restart does not
// serve it again), still counted as used, refused to Open and Create,
// until Delete frees it.
func testVerifyQuarantines(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	good, bad := ChunkID(t, 1), ChunkID(t, 2)
	size := 3*FrameSize + 1
	Put(t, s, good, ChunkData(size, 1))
	Put(t, s, bad, ChunkData(size, 2))
	corrupt(t, d.FS, s, bad, func(b []byte) []byte { b[2*FrameSize] ^= 0x10; return b })
	used := s.Usage().Used

	is.NoErr(s.Verify(context.Background(), good, nil)) // an intact chunk passes
	err := s.Verify(context.Background(), bad, nil)
	is.True(chunkstore.IsCorrupt(err))                                // a damaged one fails
	is.True(errors.Is(err, rpc.Internal))                             // as Internal
	is.True(strings.Contains(err.Error(), "mismatch at offset 8192")) // saying where
	is.True(!s.Has(bad))                                              // it leaves the index
	is.Equal(s.Corrupt(), []rpc.ChunkID{bad})                         // for the corrupt list
	is.True(s.IsCorrupt(bad))
	is.Equal(s.Usage().Chunks, int64(1)) // it no longer counts as stored
	is.Equal(s.Usage().Used, used)       // but its space is still used
	_, err = s.Stat(bad)
	is.True(errors.Is(err, rpc.NotFound)) // nor is it stat'ed
	_, err = s.Open(bad)
	is.True(errors.Is(err, rpc.NotFound)) // nor served
	err = s.Verify(context.Background(), bad, nil)
	is.True(errors.Is(err, rpc.NotFound)) // nor verified again
	_, err = s.Create(bad, int64(size), FrameSize)
	is.True(errors.Is(err, rpc.FailedPrecondition))    // no new copy beside the bad one
	is.True(exists(d.FS, s.ChunkPath(bad)+".corrupt")) // its file is marked
	is.True(!exists(d.FS, s.ChunkPath(bad)))           // under another name

	reopened := open(t, d.FS, d.Dir, testCap)
	is.True(!reopened.Has(bad))                      // a restarted node does not serve it
	is.Equal(reopened.Corrupt(), []rpc.ChunkID{bad}) // but still lists it
	is.Equal(reopened.Usage().Used, used)            // and counts its space
	var walked []rpc.ChunkID
	is.NoErr(reopened.Walk(func(id rpc.ChunkID, _ int64) error { walked = append(walked, id); return nil }))
	is.Equal(len(walked), 2) // Walk sees both files

	freed, err := reopened.Delete(bad)
	is.NoErr(err)
	is.Equal(freed, chunkstore.FileSize(int64(size), FrameSize))                 // Delete removes the marked file
	is.Equal(len(reopened.Corrupt()), 0)                                         // the list forgets it
	is.Equal(reopened.Usage().Used, chunkstore.FileSize(int64(size), FrameSize)) // its space is free
	is.True(reopened.Has(good))                                                  // the intact chunk stays
	Put(t, reopened, bad, ChunkData(size, 2))                                    // and the id can be stored again
}

// testLostChunk: a chunk whose file is removed behind the store's back is
// found lost by Open, Check and FindLost, once; one the store deleted is
// not.
func testLostChunk(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, testCap)
	a, b, c := ChunkID(t, 1), ChunkID(t, 2), ChunkID(t, 3)
	for i, id := range []rpc.ChunkID{a, b, c} {
		Put(t, s, id, ChunkData(100, byte(i)))
	}
	is.NoErr(d.FS.Remove(s.ChunkPath(a)))
	_, err := s.Open(a)
	is.True(chunkstore.IsLost(err))       // Open finds the file gone
	is.True(errors.Is(err, rpc.NotFound)) // a NotFound
	_, err = s.Open(a)
	is.True(!chunkstore.IsLost(err) && errors.Is(err, rpc.NotFound)) // lost once, then simply absent
	is.NoErr(d.FS.Remove(s.ChunkPath(b)))
	_, err = s.Check(b)
	is.True(chunkstore.IsLost(err)) // Check stats the file
	_, err = s.Delete(c)
	is.NoErr(err)
	var lost []rpc.ChunkID
	is.NoErr(s.FindLost(context.Background(), nil, func(id rpc.ChunkID, err error) { lost = append(lost, id) }))
	is.Equal(len(lost), 0)               // a deleted chunk is not lost
	is.Equal(s.Usage().Chunks, int64(0)) // and nothing is left
	is.Equal(s.Usage().Used, int64(0))
}

// testCrashKeepsAcknowledged is the store's promise: a chunk whose Commit
// returned nil survives a crash, whole; one still being written never
// appears, half-written or at all.
func testCrashKeepsAcknowledged(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, 0)
	acked, unacked := ChunkID(t, 1), ChunkID(t, 2)
	data := ChunkData(3*FrameSize+17, 1)
	Put(t, s, acked, data)
	w := write(t, s, unacked, ChunkData(5*FrameSize, 2)[:4*FrameSize+1])
	_ = w // never committed: the crash comes first

	crashed := d.Crash()
	s2 := open(t, crashed, d.Dir, 0)
	holds(t, s2, acked, data)                      // the acknowledged chunk is whole
	is.True(!s2.Has(unacked))                      // the unacknowledged one is not there
	is.Equal(s2.Corrupt(), []rpc.ChunkID(nil))     // not even as a damaged file
	is.Equal(len(tempFiles(t, crashed, d.Dir)), 0) // and its partial file is gone
	is.Equal(s2.Usage().Chunks, int64(1))
}

// testCrashBetweenWriteAndRename: a chunk written and fsynced but not yet
// renamed into place is not stored after a crash.
func testCrashBetweenWriteAndRename(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	h, s := hooked(t, d)
	id := ChunkID(t, 1)
	data := ChunkData(2*FrameSize+3, 1)
	var crashed vfs.FS
	h.set(func(op, name string) error {
		if op == "rename" && name == s.ChunkPath(id) && crashed == nil {
			crashed = d.Crash()
		}
		return nil
	})
	Put(t, s, id, data)
	is.True(crashed != nil) // the crash came before the rename

	s2 := open(t, crashed, d.Dir, 0)
	is.Equal(len(s2.Corrupt()), 0)                 // never half there
	is.Equal(len(tempFiles(t, crashed, d.Dir)), 0) // its temporary file is removed at open
	if !d.LosesUnsynced {
		// The disk kept what the live store went on to do: the chunk
		// is stored, whole.
		holds(t, s2, id, data)
		return
	}
	is.True(!s2.Has(id))                // not stored
	is.Equal(s2.Usage().Used, int64(0)) // and counts for nothing
	Put(t, s2, id, data)                // the chunk can be stored again
	holds(t, s2, id, data)
}

// testCrashAfterRenameBeforeDirSync: a chunk renamed into place whose
// directory was not yet fsynced was never acknowledged; after a crash it
// is either whole (the rename reached the disk) or absent, never damaged,
// and on a disk that loses what was not synced, absent.
func testCrashAfterRenameBeforeDirSync(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	h, s := hooked(t, d)
	id := ChunkID(t, 1)
	data := ChunkData(2*FrameSize+3, 1)
	var crashed vfs.FS
	h.set(func(op, name string) error {
		if op == "syncdir" && name == filepath.Dir(s.ChunkPath(id)) && crashed == nil {
			is.True(!s.Has(id)) // not stored before its directory is synced
			crashed = d.Crash()
		}
		return nil
	})
	Put(t, s, id, data)
	is.True(crashed != nil) // the crash came between rename and directory fsync
	is.True(s.Has(id))      // the live store finished its commit

	s2 := open(t, crashed, d.Dir, 0)
	is.Equal(len(s2.Corrupt()), 0) // never damaged
	if d.LosesUnsynced {
		is.True(!s2.Has(id))                // the rename was lost with the crash
		is.Equal(s2.Usage().Used, int64(0)) // and nothing counts
		return
	}
	if s2.Has(id) {
		holds(t, s2, id, data) // or whole
	}
}

// testDeleteDurability: a deletion made durable by SyncDeletes survives a
// crash; one not synced may come back, whole.
func testDeleteDurability(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, 0)
	a, b := ChunkID(t, 1), ChunkID(t, 2)
	da, db := ChunkData(100, 1), ChunkData(200, 2)
	Put(t, s, a, da)
	Put(t, s, b, db)
	_, err := s.Delete(a)
	is.NoErr(err)
	is.NoErr(s.SyncDeletes([]rpc.ChunkID{a}))
	_, err = s.Delete(b) // not synced
	is.NoErr(err)

	s2 := open(t, d.Crash(), d.Dir, 0)
	is.True(!s2.Has(a)) // the synced deletion survives
	if d.LosesUnsynced {
		is.True(s2.Has(b)) // the other is undone
	}
	if s2.Has(b) {
		holds(t, s2, b, db) // and then the chunk is whole
	}
}

// testQuarantineDurability: a chunk found corrupt stays off the served
// chunks after a crash.
func testQuarantineDurability(t *testing.T, newDisk Factory) {
	is := is.New(t)
	d := newDisk(t)
	s := open(t, d.FS, d.Dir, 0)
	id := ChunkID(t, 1)
	Put(t, s, id, ChunkData(2*FrameSize, 1))
	corrupt(t, d.FS, s, id, func(b []byte) []byte { b[FrameSize] ^= 1; return b })
	is.True(chunkstore.IsCorrupt(s.Verify(context.Background(), id, nil))) // found damaged

	s2 := open(t, d.Crash(), d.Dir, 0)
	is.True(!s2.Has(id))                      // not served after the crash
	is.Equal(s2.Corrupt(), []rpc.ChunkID{id}) // still listed for deletion
}

// testCrashAtEveryStep crashes the disk before each step (a write, sync,
// rename, directory sync...) of a sequence of commits and deletes, and
// checks the store opened on what is left: every acknowledged chunk is
// there, whole, unless its deletion was acknowledged; no chunk is there
// damaged. It needs a disk that loses what was not synced.
func testCrashAtEveryStep(t *testing.T, newDisk Factory) {
	if !newDisk(t).LosesUnsynced {
		t.Skip("the disk does not lose unsynced data: there is nothing to crash")
	}
	a, b, c := ChunkID(t, 1), ChunkID(t, 2), ChunkID(t, 3)
	data := map[rpc.ChunkID][]byte{a: ChunkData(100, 1), b: ChunkData(2*FrameSize+9, 2), c: ChunkData(FrameSize, 3)}
	// scenario runs the sequence on s; acked records each outcome as it is
	// acknowledged.
	type state struct {
		stored, deleted map[rpc.ChunkID]bool
	}
	scenario := func(t *testing.T, s *chunkstore.Store, acked func(func(*state))) {
		for _, id := range []rpc.ChunkID{a, b, c} {
			Put(t, s, id, data[id])
			acked(func(st *state) { st.stored[id] = true })
		}
		for _, id := range []rpc.ChunkID{a, c} {
			if _, err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SyncDeletes([]rpc.ChunkID{a, c}); err != nil {
			t.Fatal(err)
		}
		acked(func(st *state) { st.deleted[a], st.deleted[c] = true, true })
		Put(t, s, a, data[a]) // stored again
		acked(func(st *state) { st.stored[a], st.deleted[a] = true, false })
	}

	// Count the steps once.
	d := newDisk(t)
	h, s := hooked(t, d)
	steps := 0
	h.set(func(op, name string) error { steps++; return nil })
	scenario(t, s, func(func(*state)) {})
	if steps < 20 {
		t.Fatalf("the scenario took %d steps; the hook misses some", steps)
	}

	for k := 1; k <= steps+1; k++ {
		t.Run(fmt.Sprintf("before step %d", k), func(t *testing.T) {
			is := is.New(t)
			d := newDisk(t)
			h, s := hooked(t, d)
			var crashed vfs.FS
			var mu sync.Mutex
			st := &state{stored: map[rpc.ChunkID]bool{}, deleted: map[rpc.ChunkID]bool{}}
			n := 0
			h.set(func(op, name string) error {
				mu.Lock()
				defer mu.Unlock()
				if n++; n == k {
					crashed = d.Crash()
				}
				return nil
			})
			scenario(t, s, func(fn func(*state)) {
				mu.Lock()
				defer mu.Unlock()
				if crashed == nil {
					fn(st)
				}
			})
			if crashed == nil {
				crashed = d.Crash() // after the last step
			}
			s2 := open(t, crashed, d.Dir, 0)
			is.Equal(len(s2.Corrupt()), 0)                 // no chunk is left damaged
			is.Equal(len(tempFiles(t, crashed, d.Dir)), 0) // nor half-written
			for _, id := range []rpc.ChunkID{a, b, c} {
				switch {
				case st.stored[id] && !st.deleted[id]:
					is.True(s2.Has(id)) // an acknowledged chunk survives
				case st.deleted[id]:
					is.True(!s2.Has(id)) // an acknowledged deletion too
				}
				if s2.Has(id) {
					holds(t, s2, id, data[id]) // whatever is there is whole
				}
			}
		})
	}
}
