package chunkstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// The store's contract is checked by the conformance suite
// (chunkstoretest, run in suite_test.go); these tests look inside.

const (
	testFrame = rpc.MinFrameSize // 4 KiB
	testCap   = 1 << 20          // 1 MiB store
)

// forDisks runs fn on a data dir of the operating system's file system,
// then on one of a crashable in-memory file system.
func forDisks(t *testing.T, fn func(t *testing.T, fsys vfs.FS, dir string)) {
	t.Run("os", func(t *testing.T) { fn(t, vfs.Default, t.TempDir()) })
	t.Run("mem", func(t *testing.T) {
		m := vfs.NewCrashableMem()
		if err := m.MkdirAll("/data", 0o750); err != nil {
			t.Fatal(err)
		}
		fn(t, m, "/data")
	})
}

func openStore(t *testing.T, fsys vfs.FS, dir string) *Store {
	t.Helper()
	s, err := Open(fsys, dir, testCap)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

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

func put(t *testing.T, s *Store, id rpc.ChunkID, data []byte) {
	t.Helper()
	w, err := s.Create(id, int64(len(data)), testFrame)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	digest, frames := chunkstream.DigestOf(data, testFrame)
	if err := w.Commit(frames, digest); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// syncDirFS is a file system whose directory fsyncs a test can hold up
// or fail.
type syncDirFS struct {
	vfs.FS
	mu      sync.Mutex
	syncDir func(name string) error // nil: pass
}

func (d *syncDirFS) set(fn func(name string) error) {
	d.mu.Lock()
	d.syncDir = fn
	d.mu.Unlock()
}

func (d *syncDirFS) SyncDir(name string) error {
	d.mu.Lock()
	fn := d.syncDir
	d.mu.Unlock()
	if fn != nil {
		if err := fn(name); err != nil {
			return err
		}
	}
	return d.FS.SyncDir(name)
}

// TestStoredOnlyWhenDurable: a chunk renamed into place is not stored,
// for readers, inventories or a second writer of the same chunk, until
// its directory entry is fsynced; when that fsync fails the chunk is not
// stored at all and its space is free again.
func TestStoredOnlyWhenDurable(t *testing.T) {
	forDisks(t, testStoredOnlyWhenDurable)
}

func testStoredOnlyWhenDurable(t *testing.T, fsys vfs.FS, dir string) {
	is := is.New(t)
	disk := &syncDirFS{FS: fsys}
	s := openStore(t, disk, dir)
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

	// block holds the next fsync of the chunk's directory until it is released with its
	// result; later ones pass.
	block := func() (entered chan struct{}, release chan error) {
		entered, release = make(chan struct{}), make(chan error)
		var once sync.Once
		disk.set(func(name string) error {
			err := error(nil)
			if name == filepath.Dir(s.ChunkPath(id)) {
				once.Do(func() { close(entered); err = <-release })
			}
			return err
		})
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
	disk.set(func(name string) error {
		if name == filepath.Dir(s.ChunkPath(id2)) {
			return errors.New("injected EIO")
		}
		return nil
	})
	err = write(id2).Commit(frames, digest)
	is.True(err != nil && strings.Contains(err.Error(), "fsync dir")) // the failed fsync fails the commit
	is.True(!s.Has(id2))                                              // the chunk is not stored
	_, serr := fsys.Stat(s.ChunkPath(id2))
	is.True(errors.Is(serr, fs.ErrNotExist))          // nor left under its name
	is.Equal(s.Usage().Used, FileSize(10, testFrame)) // its bytes are not counted
	is.Equal(s.Usage().Chunks, int64(1))
}

// TestDeletionNotTakenForLost: a chunk being deleted while it is opened,
// checked or walked over is never taken for lost.
func TestDeletionNotTakenForLost(t *testing.T) {
	forDisks(t, testDeletionNotTakenForLost)
}

func testDeletionNotTakenForLost(t *testing.T, fsys vfs.FS, dir string) {
	is := is.New(t)
	s := openStore(t, fsys, dir)
	id := chunkID(t, 7)
	put(t, s, id, chunkData(100, 1))
	// Delete's file removal and index update are apart: in between the
	// file is gone and the chunk still indexed.
	s.mu.Lock()
	s.deleting[id]++
	s.mu.Unlock()
	is.NoErr(fsys.Remove(s.ChunkPath(id)))
	_, err := s.Open(id)
	is.True(!IsLost(err) && rpc.KindOf(err) == rpc.NotFound) // a deletion, not a loss
	_, err = s.Check(id)
	is.True(!IsLost(err))
	is.NoErr(s.FindLost(context.Background(), nil, func(id rpc.ChunkID, err error) { t.Errorf("%s taken for lost", id) }))
	is.True(s.Has(id)) // left for Delete to finish
	s.mu.Lock()
	s.deleting[id]--
	s.mu.Unlock()
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

// TestQuarantineReplaced: a check that finds damage in a file that was
// deleted and stored anew meanwhile changes nothing.
func TestQuarantineReplaced(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		testQuarantineReplaced(t, openStore(t, fsys, dir))
	})
}

func testQuarantineReplaced(t *testing.T, s *Store) {
	is := is.New(t)
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

// TestChunkDirectoriesSurviveACrash: a chunk file's directories are made
// when its first chunk is written, and a crash (power loss) right after
// the commit keeps the chunk. So does a directory an earlier process made
// but died before making durable: the store fsyncs its parent all the
// same before the first chunk goes in.
func TestChunkDirectoriesSurviveACrash(t *testing.T) {
	is := is.New(t)
	m := vfs.NewCrashableMem()
	is.NoErr(m.MkdirAll("/data", 0o750))
	is.NoErr(m.SyncDir("/"))
	s := openStore(t, m, "/data")
	fresh, err := rpc.ParseChunkID(strings.Repeat("ab", 16) + "_1")
	is.NoErr(err)
	made, err := rpc.ParseChunkID(strings.Repeat("cd", 16) + "_1")
	is.NoErr(err)
	is.True(filepath.Dir(s.ChunkPath(fresh)) != filepath.Dir(s.ChunkPath(made))) // two chunk directories
	// An earlier process made made's directories, without fsyncing.
	is.NoErr(m.Mkdir(filepath.Dir(filepath.Dir(s.ChunkPath(made))), 0o750))
	is.NoErr(m.Mkdir(filepath.Dir(s.ChunkPath(made)), 0o750))
	put(t, s, fresh, chunkData(10, 1))
	put(t, s, made, chunkData(10, 2))

	after := openStore(t, m.CrashClone(), "/data")
	for _, id := range []rpc.ChunkID{fresh, made} {
		c, err := after.Open(id)
		is.NoErr(err) // every committed chunk is there after the crash
		c.Close()
	}
}

// noDirectFS is a file system without O_DIRECT (like tmpfs) that counts
// the writes to its files.
type noDirectFS struct {
	vfs.FS
	writes atomic.Int64
}

func (d *noDirectFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if flag&syscall.O_DIRECT != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EINVAL}
	}
	f, err := d.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &writeCountedFile{File: f, writes: &d.writes}, nil
}

type writeCountedFile struct {
	vfs.File
	writes *atomic.Int64
}

func (f *writeCountedFile) Write(b []byte) (int, error) { f.writes.Add(1); return f.File.Write(b) }
func (f *writeCountedFile) WriteAt(b []byte, off int64) (int, error) {
	f.writes.Add(1)
	return f.File.WriteAt(b, off)
}

// TestLargeChunkWithoutDirectIO: on a file system without O_DIRECT, a
// chunk that arrives in 16 KiB pieces (as gRPC hands them over) is
// written a MiB at a time, and reads back whole.
func TestLargeChunkWithoutDirectIO(t *testing.T) {
	is := is.New(t)
	m := vfs.NewCrashableMem()
	is.NoErr(m.MkdirAll("/data", 0o750))
	disk := &noDirectFS{FS: m}
	s, err := Open(disk, "/data", 64<<20)
	is.NoErr(err)
	id := chunkID(t, 1)
	const size = 5<<20/2 + 1000 // 2.5 MiB and a tail
	data := chunkData(size, 7)
	w, err := s.Create(id, size, 1<<20)
	is.NoErr(err)
	before := disk.writes.Load()
	for p := data; len(p) > 0; {
		n := min(len(p), 16<<10)
		_, err := w.Write(p[:n])
		is.NoErr(err)
		p = p[n:]
	}
	digest, frames := chunkstream.DigestOf(data, 1<<20)
	is.NoErr(w.Commit(frames, digest))
	is.Equal(disk.writes.Load()-before, int64(3)) // two whole MiB, then the tail with the digests and footer
	c, err := s.Open(id)
	is.NoErr(err)
	defer c.Close()
	got := make([]byte, size)
	_, err = c.ReadAt(got, 0)
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // the chunk reads back whole
}

// TestDirectoriesMadeOnUse: a new store makes no chunk directories; a
// packed chunk makes none either, and a chunk file makes its own two.
func TestDirectoriesMadeOnUse(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	s, err := OpenWith(vfs.Default, dir, Options{Capacity: 64 << 20, PackThreshold: 64 << 10})
	is.NoErr(err)
	subdirs := func() []string {
		var out []string
		is.NoErr(filepath.WalkDir(filepath.Join(dir, "chunks"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != filepath.Join(dir, "chunks") {
				out = append(out, p)
			}
			return err
		}))
		return out
	}
	is.Equal(len(subdirs()), 0) // none at start
	packed, err := rpc.ParseChunkID(strings.Repeat("ab", 16) + "_1")
	is.NoErr(err)
	put(t, s, packed, chunkData(10, 1))
	is.Equal(len(subdirs()), 0) // none for a packed chunk
	file, err := rpc.ParseChunkID(strings.Repeat("cd", 16) + "_1")
	is.NoErr(err)
	put(t, s, file, chunkData(128<<10, 2))
	is.Equal(subdirs(), []string{filepath.Dir(filepath.Dir(s.ChunkPath(file))), filepath.Dir(s.ChunkPath(file))}) // the chunk file's two
}
