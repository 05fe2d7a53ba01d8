package datanode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	testFrame = rpc.MinFrameSize // 4 KiB
	testCap   = 1 << 20          // 1 MiB store
)

func chunkID(t *testing.T, n int) rpc.ChunkID {
	t.Helper()
	id, err := rpc.ParseChunkID(strings.Repeat("ab", 15) + string(rune('0'+n%10)) + "f_" + string(rune('0'+n%10)))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func chunkData(size int, seed byte) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = seed + byte(i*31+i/97)
	}
	return b
}

// put stores data as chunk id the way the upload path does: frame by
// frame, then Commit with the frame digests and chunk digest.
func put(t *testing.T, s *Store, id rpc.ChunkID, data []byte) (digest []byte, frames [][]byte) {
	t.Helper()
	w, err := s.Create(id, int64(len(data)), testFrame)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for off := 0; off < len(data); off += testFrame {
		if _, err := w.Write(data[off:min(off+testFrame, len(data))]); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	digest, frames = chunkstream.DigestOf(data, testFrame)
	if err := w.Commit(frames, digest); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return digest, frames
}

func openStore(t *testing.T, dir string, capacity int64) *Store {
	t.Helper()
	s, err := OpenStore(dir, capacity)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

// tempFiles returns the temporary files (chunks being written) in a store.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tmp") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestStoreCommitOpen(t *testing.T) {
	for _, size := range []int{1, testFrame - 1, testFrame, testFrame + 1, 3*testFrame + 17} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			s := openStore(t, dir, testCap)
			id := chunkID(t, 1)
			data := chunkData(size, 1)
			is.True(!s.Has(id)) // not there before
			digest, frames := put(t, s, id, data)

			is.True(s.Has(id)) // visible after Commit
			h := id.Hash()
			p := filepath.Join(dir, "chunks", h[0:2], h[2:3], string(id))
			info, err := os.Stat(p)
			is.NoErr(err)                                           // stored in the nested layout
			is.Equal(info.Size(), FileSize(int64(size), testFrame)) // file holds data, digests and footer
			is.Equal(len(tempFiles(t, dir)), 0)                     // no temporary file left

			c, err := s.Open(id)
			is.NoErr(err) // stored chunk opens
			defer c.Close()
			is.Equal(c.ID, id)                      // Chunk names its ID
			is.Equal(c.Size, int64(size))           // size
			is.Equal(c.FrameSize, int64(testFrame)) // frame size
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

			u := s.Usage()
			is.Equal(u.Chunks, int64(1))                       // one chunk
			is.Equal(u.Used, FileSize(int64(size), testFrame)) // used counts the whole file
			is.Equal(u.Capacity, int64(testCap))               // capacity as configured
			is.Equal(u.Free, testCap-u.Used)                   // free is what is left
		})
	}
}

// TestStoredChunkStreamsVerified ties the store to the download path: the
// digests a store keeps let a reader verify the bytes it serves.
func TestStoredChunkStreamsVerified(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := chunkID(t, 2)
	data := chunkData(2*testFrame+5, 2)
	digest, _ := put(t, s, id, data)
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

func TestStoreWriterErrors(t *testing.T) {
	t.Run("exists", func(t *testing.T) {
		is := is.New(t)
		s := openStore(t, t.TempDir(), testCap)
		id := chunkID(t, 1)
		put(t, s, id, chunkData(10, 0))
		_, err := s.Create(id, 10, testFrame)
		is.True(errors.Is(err, rpc.Exists)) // chunks are immutable: no second Create
	})
	t.Run("write beyond size", func(t *testing.T) {
		is := is.New(t)
		s := openStore(t, t.TempDir(), testCap)
		w, err := s.Create(chunkID(t, 1), 10, testFrame)
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
		dir := t.TempDir()
		s := openStore(t, dir, testCap)
		id := chunkID(t, 1)
		w, err := s.Create(id, 10, testFrame)
		is.NoErr(err)
		_, err = w.Write(make([]byte, 9))
		is.NoErr(err)
		err = w.Commit(nil, make([]byte, 32))
		is.True(errors.Is(err, rpc.Invalid)) // a chunk short of its size is not committed
		is.True(!s.Has(id))                  // nor visible
		is.Equal(len(tempFiles(t, dir)), 0)  // and its temp file is gone
		is.Equal(s.Usage().Chunks, int64(0)) // nor counted
	})
	t.Run("abort", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		s := openStore(t, dir, testCap)
		id := chunkID(t, 1)
		w, err := s.Create(id, 10, testFrame)
		is.NoErr(err)
		_, err = w.Write(make([]byte, 5))
		is.NoErr(err)
		is.Equal(len(tempFiles(t, dir)), 1) // partial data lives in a temporary file
		w.Abort()
		is.Equal(len(tempFiles(t, dir)), 0) // Abort removes it
		is.True(!s.Has(id))                 // never visible
		_, err = s.Create(id, 10, testFrame)
		is.NoErr(err) // the ID can be written again
	})
	t.Run("missing", func(t *testing.T) {
		is := is.New(t)
		s := openStore(t, t.TempDir(), testCap)
		_, err := s.Open(chunkID(t, 3))
		is.True(errors.Is(err, rpc.NotFound)) // Open of a missing chunk
		_, err = s.Stat(chunkID(t, 3))
		is.True(errors.Is(err, rpc.NotFound)) // Stat of a missing chunk
	})
}

// TestStoreSameIDTwice: two writers racing on one chunk ID (both created
// before either committed) must not leave the accounting counting one file
// twice.
func TestStoreSameIDTwice(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := chunkID(t, 1)
	data := chunkData(10, 0)
	digest, frames := chunkstream.DigestOf(data, testFrame)
	w1, err := s.Create(id, 10, testFrame)
	is.NoErr(err)
	w2, err := s.Create(id, 10, testFrame)
	is.NoErr(err)
	for _, w := range []*Writer{w1, w2} {
		_, err := w.Write(data)
		is.NoErr(err)
	}
	is.NoErr(w1.Commit(frames, digest))
	err = w2.Commit(frames, digest)
	is.True(err == nil || errors.Is(err, rpc.Exists)) // the second commit is harmless or refused
	is.Equal(s.Usage().Chunks, int64(1))              // one file, one chunk
	is.Equal(s.Usage().Used, FileSize(10, testFrame)) // counted once
}

// TestStoredOnlyWhenDurable: a chunk renamed into place is not stored,
// for readers, inventories or a second writer of the same chunk, until
// its directory entry is fsynced; when that fsync fails the chunk is not
// stored at all and its space is free again.
func TestStoredOnlyWhenDurable(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := chunkID(t, 1)
	data := chunkData(10, 0)
	digest, frames := chunkstream.DigestOf(data, testFrame)
	write := func(id rpc.ChunkID) *Writer {
		w, err := s.Create(id, 10, testFrame)
		is.NoErr(err) // create
		_, err = w.Write(data)
		is.NoErr(err) // write
		return w
	}

	// block holds the next directory fsync until it is released with its
	// result; later ones pass.
	block := func() (entered chan struct{}, release chan error) {
		entered, release = make(chan struct{}), make(chan error)
		var once sync.Once
		s.fsyncDir = func(string) error {
			err := error(nil)
			once.Do(func() { close(entered); err = <-release })
			return err
		}
		return entered, release
	}
	// waiting reports once a second writer of id waits for the commit in
	// progress.
	waiting := func() bool {
		for range 1000 {
			s.mu.Lock()
			c := s.committing[id]
			n := c != nil && c.waiters > 0
			s.mu.Unlock()
			if n {
				return true
			}
			time.Sleep(time.Millisecond)
		}
		return false
	}

	entered, release := block()
	w1, w2 := write(id), write(id)
	done1, done2 := make(chan error), make(chan error)
	go func() { done1 <- w1.Commit(frames, digest) }()
	<-entered
	is.True(!s.Has(id))                   // not stored while its directory entry is not durable
	_, err := s.Stat(id)                  //
	is.True(errors.Is(err, rpc.NotFound)) // nor served
	_, listed := s.Inventory()[id]        //
	is.True(!listed)                      // nor reported
	go func() { done2 <- w2.Commit(frames, digest) }()
	is.True(waiting()) // a second copy of the same chunk meanwhile waits
	release <- nil
	is.NoErr(<-done1)                       // the first commit finishes
	is.True(errors.Is(<-done2, rpc.Exists)) // the second finds the chunk stored
	is.True(s.Has(id))                      // which it is
	is.Equal(s.Usage().Chunks, int64(1))    // once
	is.Equal(s.Usage().Used, FileSize(10, testFrame))

	_, err = s.Delete(id)
	is.NoErr(err)
	entered, release = block()
	w1, w2 = write(id), write(id)
	go func() { done1 <- w1.Commit(frames, digest) }()
	<-entered
	go func() { done2 <- w2.Commit(frames, digest) }()
	is.True(waiting())
	release <- errors.New("injected EIO")
	is.True(<-done1 != nil) // when the first commit fails
	is.NoErr(<-done2)       // the waiting copy is stored instead
	is.True(s.Has(id))
	is.Equal(s.Usage().Chunks, int64(1))
	is.Equal(s.Usage().Used, FileSize(10, testFrame))

	id2 := chunkID(t, 2)
	s.fsyncDir = func(string) error { return errors.New("injected EIO") }
	err = write(id2).Commit(frames, digest)
	is.True(err != nil && strings.Contains(err.Error(), "fsync dir")) // the failed fsync fails the commit
	is.True(!s.Has(id2))                                              // the chunk is not stored
	_, serr := os.Stat(s.ChunkPath(id2))
	is.True(errors.Is(serr, fs.ErrNotExist))          // nor left under its name
	is.Equal(s.Usage().Used, FileSize(10, testFrame)) // its bytes are not counted
	is.Equal(s.Usage().Chunks, int64(1))
}

// TestReserveConcurrent: uploads racing for the last free bytes never
// reserve more than there is.
func TestReserveConcurrent(t *testing.T) {
	const capacity, need, racers = 64 << 10, 4 << 10, 64
	s := openStore(t, t.TempDir(), capacity)
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

// corrupt rewrites a stored chunk file.
func corrupt(t *testing.T, s *Store, id rpc.ChunkID, fn func(b []byte) []byte) {
	t.Helper()
	p := s.path(id)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesCorruptMetadata(t *testing.T) {
	size := 2*testFrame + 100 // three frames
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
		{"frame size changed", func(b []byte) []byte { binary.BigEndian.PutUint64(b[footerAt+24:], 2*testFrame); return b }, "3 frame digests for 2"},
		{"all zeros", func(b []byte) []byte { return make([]byte, len(b)) }, "bad magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			s := openStore(t, t.TempDir(), testCap)
			id := chunkID(t, 4)
			put(t, s, id, chunkData(size, 4))
			corrupt(t, s, id, tt.fn)
			c, err := s.Open(id)
			if err == nil {
				c.Close()
			}
			is.True(err != nil)                                // damaged metadata is refused
			is.True(errors.Is(err, rpc.Internal))              // as Internal
			is.True(strings.Contains(err.Error(), tt.msg))     // saying what is wrong
			is.True(strings.Contains(err.Error(), string(id))) // naming the chunk
			reopened := openStore(t, s.dir, testCap)
			is.True(!reopened.Has(id))                      // a restarted node does not index it
			is.Equal(reopened.Corrupt(), []rpc.ChunkID{id}) // but lists it as corrupt
		})
	}
}

// TestCorruptDataIsCaughtOnRead: the footer does not cover the data, so a
// flipped data byte opens fine, but the stored frame digest no longer
// matches and a verified read refuses it.
func TestCorruptDataIsCaughtOnRead(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := chunkID(t, 5)
	data := chunkData(2*testFrame, 5)
	digest, _ := put(t, s, id, data)
	corrupt(t, s, id, func(b []byte) []byte { b[testFrame+7] ^= 0x04; return b })

	c, err := s.Open(id)
	is.NoErr(err) // metadata is intact
	defer c.Close()
	var buf frameBuf
	is.NoErr(chunkstream.SendStored(context.Background(), &buf, id, c.File, c.Size, c.FrameSize, c.Frames, c.Digest))
	err = chunkstream.ReceiveInto(&buf, chunkstream.Expect{ChunkID: id, Size: c.Size, FrameSize: c.FrameSize, Digest: digest}, make([]byte, len(data)))
	is.True(errors.Is(err, rpc.Invalid))                              // the reader refuses the damaged frame
	is.True(strings.Contains(err.Error(), "mismatch at offset 4096")) // and says which
}

func TestDelete(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	a, b := chunkID(t, 1), chunkID(t, 2)
	put(t, s, a, chunkData(100, 1))
	put(t, s, b, chunkData(200, 2))
	is.Equal(s.Usage().Chunks, int64(2))

	freed, err := s.Delete(a)
	is.NoErr(err)                             // delete works
	is.Equal(freed, FileSize(100, testFrame)) // and reports the bytes freed
	is.True(!s.Has(a))                        // gone
	_, err = s.Open(a)
	is.True(errors.Is(err, rpc.NotFound)) // not openable
	u := s.Usage()
	is.Equal(u.Chunks, int64(1))               // count drops
	is.Equal(u.Used, FileSize(200, testFrame)) // bytes drop

	freed, err = s.Delete(a)
	is.NoErr(err)                                               // deleting a missing chunk is not an error
	is.Equal(freed, int64(0))                                   // but frees nothing
	is.True(s.Has(b))                                           // other chunks untouched
	is.NoErr(s.SyncDeletes([]rpc.ChunkID{a, a, chunkID(t, 9)})) // missing directories are fine

	put(t, s, a, chunkData(100, 3))
	is.True(s.Has(a)) // a deleted ID can be stored again
}

func TestReserveRelease(t *testing.T) {
	is := is.New(t)
	const capacity = 100 << 10
	s := openStore(t, t.TempDir(), capacity)
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

	put(t, s, chunkID(t, 1), chunkData(testFrame, 1))
	used := FileSize(testFrame, testFrame)
	is.Equal(s.Usage().Free, capacity-used)    // stored chunks use space
	is.True(s.Reserve(capacity-used+1) != nil) // and limit reservations
	is.NoErr(s.Reserve(capacity - used))       // up to what is left
	s.Release(capacity - used)
	is.Equal(s.Usage().Used, used) // Used is stored bytes only
}

func TestUsageWithoutCapacity(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), 0)
	u := s.Usage()
	is.True(u.Capacity > 0)       // 0 means the filesystem's size
	is.True(u.Free <= u.Capacity) // free never exceeds capacity
	is.True(u.Free >= 0)          // nor goes negative
}

func TestFileSize(t *testing.T) {
	is := is.New(t)
	is.Equal(FileSize(1, 4096), int64(1+32+64))            // one frame
	is.Equal(FileSize(4096, 4096), int64(4096+32+64))      // exactly one frame
	is.Equal(FileSize(4097, 4096), int64(4097+2*32+64))    // a second, partial frame
	is.Equal(FileSize(8<<20, 1<<20), int64(8<<20+8*32+64)) // default sizes
}

func TestOpenStoreRecovers(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	s := openStore(t, dir, testCap)
	a, b := chunkID(t, 1), chunkID(t, 2)
	put(t, s, a, chunkData(100, 1))
	put(t, s, b, chunkData(testFrame+1, 2))
	// A crash mid-write leaves a temp file; stray files may sit beside chunks.
	w, err := s.Create(chunkID(t, 3), 10, testFrame)
	is.NoErr(err)
	_, err = w.Write([]byte("partial"))
	is.NoErr(err)
	h := a.Hash()
	is.NoErr(os.WriteFile(filepath.Join(dir, "chunks", h[0:2], h[2:3], "notes.txt"), []byte("hello"), 0o640))
	is.NoErr(os.WriteFile(filepath.Join(dir, "chunks", h[0:2], "../../", "README"), []byte("hello"), 0o640))

	s2 := openStore(t, dir, testCap)
	is.Equal(len(tempFiles(t, dir)), 0) // leftovers from before the crash are removed
	u := s2.Usage()
	is.Equal(u.Chunks, int64(2))                                                // existing chunks count again
	is.Equal(u.Used, FileSize(100, testFrame)+FileSize(testFrame+1, testFrame)) // with their bytes
	is.True(!s2.Has(chunkID(t, 3)))                                             // the partial chunk never appears

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
	is.Equal(m.Size, int64(testFrame+1)) // intact
}

func TestOpenStoreErrors(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	is.NoErr(os.WriteFile(file, nil, 0o640))
	_, err := OpenStore(filepath.Join(file, "data"), 0)
	is.True(err != nil) // a data dir that cannot be created is an error
	_, err = OpenStore(file, 0)
	is.True(err != nil) // so is a data dir that is a file
}

func TestLoadOrCreateNodeID(t *testing.T) {
	t.Run("created once, then persistent", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		id, err := LoadOrCreateNodeID(dir)
		is.NoErr(err) // created on first start
		_, err = rpc.ParseNodeID(string(id))
		is.NoErr(err) // a canonical UUID
		b, err := os.ReadFile(filepath.Join(dir, "node-id"))
		is.NoErr(err)                        // persisted
		is.Equal(string(b), string(id)+"\n") // as one line
		again, err := LoadOrCreateNodeID(dir)
		is.NoErr(err)                                     // loaded on restart
		is.Equal(again, id)                               // the same node
		is.Equal(dirEntries(t, dir), []string{"node-id"}) // no temp file left behind

		other, err := LoadOrCreateNodeID(t.TempDir())
		is.NoErr(err)
		is.True(other != id) // another data dir is another node
	})
	t.Run("hand-edited whitespace", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		const want = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
		is.NoErr(os.WriteFile(filepath.Join(dir, "node-id"), []byte("  "+want+"\r\n\n"), 0o640))
		id, err := LoadOrCreateNodeID(dir)
		is.NoErr(err)              // surrounding whitespace is tolerated
		is.Equal(string(id), want) // and trimmed
	})
	for name, content := range map[string]string{
		"garbage":    "hello world\n",
		"empty":      "",
		"upper case": "1B4E28BA-2FA1-11D2-883F-0016D3CCA427\n",
		"two ids":    "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n1b4e28ba-2fa1-11d2-883f-0016d3cca428\n",
		"binary":     "\x00\xff\x01",
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			p := filepath.Join(dir, "node-id")
			is.NoErr(os.WriteFile(p, []byte(content), 0o640))
			_, err := LoadOrCreateNodeID(dir)
			is.True(err != nil)                                     // a damaged identity is refused, not replaced
			is.True(strings.Contains(err.Error(), "not a node id")) // saying why
			b, _ := os.ReadFile(p)
			is.Equal(string(b), content) // and left alone for the operator
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		is.NoErr(os.Mkdir(filepath.Join(dir, "node-id"), 0o750))
		_, err := LoadOrCreateNodeID(dir)
		is.True(err != nil) // a node-id that cannot be read is an error
	})
}

// chunkFile returns the bytes of a valid stored chunk file.
func chunkFile(data []byte, frameSize int) []byte {
	digest, frames := chunkstream.DigestOf(data, frameSize)
	out := bytes.Clone(data)
	for _, fd := range frames {
		out = append(out, fd...)
	}
	return append(out, encodeFooter(len(frames), int64(len(data)), int64(frameSize), digest)...)
}

// FuzzReadMeta feeds arbitrary chunk-file bytes to readMeta: it must never
// panic, must refuse with Internal, and must never accept metadata that is
// not self-consistent. The committed corpus lives in
// testdata/fuzz/FuzzReadMeta.
func FuzzReadMeta(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte(footerMagic))
	f.Add(chunkFile([]byte("a"), testFrame))
	f.Add(chunkFile(bytes.Repeat([]byte("b"), 100), testFrame))
	f.Add(chunkFile(bytes.Repeat([]byte("c"), testFrame), testFrame))
	f.Add(chunkFile(bytes.Repeat([]byte("d"), testFrame+1), testFrame))
	valid := chunkFile([]byte("xyz"), testFrame)
	bad := bytes.Clone(valid)
	bad[5] ^= 1 // a digest byte
	f.Add(bad)
	f.Add(valid[:len(valid)-1])
	f.Add(append(bytes.Clone(valid), 0))

	id := rpc.ChunkID("0123456789abcdef0123456789abcdef_0")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := readMeta(id, bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, rpc.Internal) || !strings.Contains(err.Error(), "corrupt metadata") {
				t.Fatalf("readMeta refused with %v, want an Internal corrupt-metadata error", err)
			}
			if m.Size != 0 || m.Frames != nil || m.Digest != nil {
				t.Fatalf("readMeta returned metadata %+v with an error", m)
			}
			return
		}
		switch {
		case m.Size <= 0 || m.Size > rpc.MaxChunkSize:
			t.Fatalf("accepted size %d", m.Size)
		case rpc.CheckFrameSize(m.FrameSize) != nil:
			t.Fatalf("accepted frame size %d", m.FrameSize)
		case int64(len(m.Frames)) != (m.Size+m.FrameSize-1)/m.FrameSize:
			t.Fatalf("accepted %d frame digests for size %d, frame size %d", len(m.Frames), m.Size, m.FrameSize)
		case int64(len(b)) != m.Size+int64(len(m.Frames))*sha256.Size+footerSize:
			t.Fatalf("accepted a file of %d bytes for size %d with %d frames", len(b), m.Size, len(m.Frames))
		case len(m.Digest) != sha256.Size:
			t.Fatalf("accepted a digest of %d bytes", len(m.Digest))
		}
		cd := chunkstream.NewChunkDigest()
		for i, fd := range m.Frames {
			at := m.Size + int64(i)*sha256.Size
			if len(fd) != sha256.Size || !bytes.Equal(fd, b[at:at+sha256.Size]) {
				t.Fatalf("frame digest %d is not the one stored at %d", i, at)
			}
			cd.Add(fd)
		}
		if !bytes.Equal(cd.Sum(), m.Digest) {
			t.Fatal("accepted frame digests that do not hash to the chunk digest")
		}
		if foot := encodeFooter(len(m.Frames), m.Size, m.FrameSize, m.Digest); !bytes.Equal(foot, b[len(b)-footerSize:]) {
			t.Fatal("accepted a footer that does not re-encode to itself")
		}
		// What readMeta returns must not alias the bytes it read.
		orig := b[m.Size]
		m.Frames[0][0] ^= 0xff
		if b[m.Size] != orig {
			t.Fatal("frame digests alias the input")
		}
	})
}

// TestStoreVerify: Verify passes an intact chunk and quarantines a damaged
// one: out of the index, marked on disk (so a restart does not serve it
// again), still counted as used, refused to Open and Create, until Delete
// frees it.
func TestStoreVerify(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	s := openStore(t, dir, testCap)
	good, bad := chunkID(t, 1), chunkID(t, 2)
	size := 3*testFrame + 1
	put(t, s, good, chunkData(size, 1))
	put(t, s, bad, chunkData(size, 2))
	corrupt(t, s, bad, func(b []byte) []byte { b[2*testFrame] ^= 0x10; return b })
	used := s.Usage().Used

	is.NoErr(s.Verify(context.Background(), good, nil)) // an intact chunk passes
	err := s.Verify(context.Background(), bad, nil)
	is.True(IsCorrupt(err))                                           // a damaged one fails
	is.True(errors.Is(err, rpc.Internal))                             // as Internal
	is.True(strings.Contains(err.Error(), "mismatch at offset 8192")) // saying where
	is.True(!s.Has(bad))                                              // it leaves the index
	is.Equal(s.Corrupt(), []rpc.ChunkID{bad})                         // for the corrupt list
	is.Equal(s.Usage().Chunks, int64(1))                              // it no longer counts as stored
	is.Equal(s.Usage().Used, used)                                    // but its space is still used
	_, err = s.Stat(bad)
	is.True(errors.Is(err, rpc.NotFound)) // nor is it stat'ed
	_, err = s.Open(bad)
	is.True(errors.Is(err, rpc.NotFound)) // nor served
	err = s.Verify(context.Background(), bad, nil)
	is.True(errors.Is(err, rpc.NotFound)) // nor verified again
	_, err = s.Create(bad, int64(size), testFrame)
	is.True(errors.Is(err, rpc.FailedPrecondition)) // no new copy beside the bad one

	reopened := openStore(t, dir, testCap)
	is.True(!reopened.Has(bad))                      // a restarted node does not serve it
	is.Equal(reopened.Corrupt(), []rpc.ChunkID{bad}) // but still lists it
	is.Equal(reopened.Usage().Used, used)            // and counts its space
	var walked []rpc.ChunkID
	is.NoErr(reopened.Walk(func(id rpc.ChunkID, _ int64) error { walked = append(walked, id); return nil }))
	is.Equal(len(walked), 2) // Walk sees both files

	freed, err := reopened.Delete(bad)
	is.NoErr(err)
	is.Equal(freed, FileSize(int64(size), testFrame))                 // Delete removes the marked file
	is.Equal(len(reopened.Corrupt()), 0)                              // the list forgets it
	is.Equal(reopened.Usage().Used, FileSize(int64(size), testFrame)) // its space is free
	is.True(reopened.Has(good))                                       // the intact chunk stays
	put(t, reopened, bad, chunkData(size, 2))                         // and the id can be stored again
}

// TestQuarantineReplaced: a check that finds damage in a file that was
// deleted and stored anew meanwhile changes nothing.
func TestQuarantineReplaced(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := chunkID(t, 1)
	put(t, s, id, chunkData(100, 1))
	c, err := s.Open(id)
	is.NoErr(err)
	defer c.Close()
	_, err = s.Delete(id)
	is.NoErr(err)
	put(t, s, id, chunkData(100, 1))
	err = s.failed(c, rpc.Errorf(rpc.Internal, "damaged"))
	is.True(errors.Is(err, rpc.NotFound)) // the old file's damage is moot
	is.True(s.Has(id))                    // the new copy stays in service
	is.Equal(len(s.Corrupt()), 0)         // and is not listed corrupt
}
