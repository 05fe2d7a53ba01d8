package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// Writer writes one chunk to a temporary file, or, for a chunk packed (at
// most Options.PackThreshold bytes), to memory; Commit makes it durable
// and visible, Abort removes it. A Writer is used by one goroutine.
type Writer struct {
	s         *Store
	id        rpc.ChunkID
	f         vfs.File
	size      int64
	frameSize int64
	written   int64

	// A packed chunk's bytes are gathered in buf (nil f), and appended to
	// a pack file at Commit.
	packed bool
	buf    []byte

	// A chunk of a block or more is gathered in block and written a block
	// at a time: to direct (an O_DIRECT descriptor of the same file) where
	// the file system has it, else to f. The data comes in pieces as small
	// as gRPC's 16 KiB reads, each of which would otherwise be a write.
	direct  vfs.File
	block   *[]byte
	pending int   // bytes gathered in block
	flushed int64 // bytes in the file (written through direct or f)
}

// commit is a chunk renamed into place whose directory fsync is in
// progress; done closes when the commit has succeeded or failed.
type commit struct {
	done    chan struct{}
	waiters int // writers of the same chunk waiting for the outcome
}

// errCorruptCopy refuses a new copy of a chunk whose corrupt copy awaits
// deletion: a chunk ID is stored, corrupt or absent, never two at once, so
// that deleting the bad copy cannot take a good one with it.
func errCorruptCopy(id rpc.ChunkID) error {
	return rpc.Errorf(rpc.FailedPrecondition, "chunk %s: a corrupt copy awaits deletion here", id)
}

// Create starts writing chunk id of size bytes in frames of frameSize. A
// chunk already stored is Exists; one found corrupt and not yet deleted is
// FailedPrecondition.
func (s *Store) Create(id rpc.ChunkID, size, frameSize int64) (*Writer, error) {
	if s.Has(id) {
		return nil, rpc.Errorf(rpc.Exists, "chunk %s already stored", id)
	}
	if s.IsCorrupt(id) {
		return nil, errCorruptCopy(id)
	}
	if s.packable(size) {
		return &Writer{s: s, id: id, size: size, frameSize: frameSize, packed: true, buf: make([]byte, 0, size)}, nil
	}
	// The temporary file lives beside the chunk's final name: the rename
	// stays in one directory, and writes spread over all directories.
	dir, err := s.chunkDir(id)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: create directory: %w", id, err)
	}
	f, err := s.createTemp(dir, id)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: create temp file: %w", id, err)
	}
	w := &Writer{s: s, id: id, f: f, size: size, frameSize: frameSize}
	if size >= directBlock {
		d, ok, err := openDirect(s.fs, f.Name())
		if err != nil {
			w.Abort()
			return nil, rpc.Errorf(rpc.Internal, "chunk %s: open for direct I/O: %w", id, err)
		}
		if ok {
			w.direct = d
		}
		w.block = directBufs.Get().(*[]byte)
	}
	return w, nil
}

// createTemp creates a new temporary file for chunk id in dir, named
// <id>.<random>.tmp as os.CreateTemp would.
func (s *Store) createTemp(dir string, id rpc.ChunkID) (vfs.File, error) {
	for range 10000 {
		name := filepath.Join(dir, fmt.Sprintf("%s.%d%s", id, rand.Uint32(), tempSuffix))
		f, err := s.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, string(id)+".*"+tempSuffix), Err: fs.ErrExist}
}

// Write appends data to the chunk.
func (w *Writer) Write(data []byte) (int, error) {
	if w.written+int64(len(data)) > w.size {
		return 0, rpc.Errorf(rpc.Invalid, "chunk %s: write beyond size %d", w.id, w.size)
	}
	if w.packed {
		w.buf = append(w.buf, data...)
		w.written += int64(len(data))
		return len(data), nil
	}
	if w.block == nil {
		n, err := w.f.Write(data)
		w.written += int64(n)
		w.flushed += int64(n)
		if err != nil {
			return n, rpc.Errorf(rpc.Internal, "chunk %s: write: %w", w.id, err)
		}
		return n, nil
	}
	total := len(data)
	for len(data) > 0 {
		n := copy((*w.block)[w.pending:], data)
		w.pending += n
		data = data[n:]
		if w.pending == directBlock {
			out := w.f
			if w.direct != nil {
				out = w.direct
			}
			if _, err := out.WriteAt(*w.block, w.flushed); err != nil {
				return 0, rpc.Errorf(rpc.Internal, "chunk %s: write: %w", w.id, err)
			}
			w.flushed += directBlock
			w.pending = 0
		}
	}
	w.written += int64(total)
	return total, nil
}

// releaseBlock closes the direct descriptor, if any, and returns the block.
func (w *Writer) releaseBlock() {
	if w.direct != nil {
		w.direct.Close()
		w.direct = nil
	}
	if w.block != nil {
		directBufs.Put(w.block)
		w.block = nil
	}
}

// Commit appends the frame digests and footer, fsyncs the file, renames it
// into place and fsyncs the directory: when it returns nil the chunk
// survives a crash. On an error the chunk is not stored, and its
// temporary file is gone.
func (w *Writer) Commit(frames [][]byte, digest []byte) error {
	if w.written != w.size {
		w.Abort()
		return rpc.Errorf(rpc.Invalid, "chunk %s: %d of %d bytes written", w.id, w.written, w.size)
	}
	if w.packed {
		return w.commitPacked(frames, digest)
	}
	var buf bytes.Buffer
	if w.block != nil {
		// The tail, unaligned, goes through the ordinary descriptor.
		buf.Write((*w.block)[:w.pending])
		w.releaseBlock()
	}
	for _, fd := range frames {
		buf.Write(fd)
	}
	buf.Write(encodeFooter(len(frames), w.size, w.frameSize, digest))
	if _, err := w.f.WriteAt(buf.Bytes(), w.flushed); err != nil {
		w.Abort()
		return rpc.Errorf(rpc.Internal, "chunk %s: write digests: %w", w.id, err)
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return rpc.Errorf(rpc.Internal, "chunk %s: fsync: %w", w.id, err)
	}
	fsys, tmp := w.s.fs, w.f.Name()
	if err := w.f.Close(); err != nil {
		fsys.Remove(tmp)
		return rpc.Errorf(rpc.Internal, "chunk %s: close: %w", w.id, err)
	}
	dst := w.s.path(w.id)
	// Check and rename under the lock: a chunk is stored (and counted)
	// once, even if two writers raced for one ID. A writer that finds
	// another's commit in progress waits for its outcome: the chunk is
	// then stored, or its name free again.
	w.s.mu.Lock()
	for c := w.s.committing[w.id]; c != nil; c = w.s.committing[w.id] {
		c.waiters++
		w.s.mu.Unlock()
		<-c.done
		w.s.mu.Lock()
	}
	if _, err := fsys.Stat(dst); err == nil {
		w.s.mu.Unlock()
		fsys.Remove(tmp)
		return rpc.Errorf(rpc.Exists, "chunk %s already stored", w.id)
	}
	if slices.Contains(w.s.corrupt, w.id) {
		w.s.mu.Unlock()
		fsys.Remove(tmp)
		return errCorruptCopy(w.id)
	}
	if err := fsys.Rename(tmp, dst); err != nil {
		w.s.mu.Unlock()
		fsys.Remove(tmp)
		return rpc.Errorf(rpc.Internal, "chunk %s: rename: %w", w.id, err)
	}
	fileSize := w.flushed + int64(buf.Len())
	w.s.used += fileSize
	c := &commit{done: make(chan struct{})}
	w.s.committing[w.id] = c
	w.s.mu.Unlock()

	// The chunk is stored once its directory entry is durable: until then
	// it is not in the index, so neither a reader nor a concurrent copy of
	// the same chunk takes it for stored.
	serr := fsys.SyncDir(filepath.Dir(dst))
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	defer close(c.done)
	if w.s.committing[w.id] != c {
		// Deleted meanwhile (Delete took it off the list and its bytes).
		return rpc.Errorf(rpc.NotFound, "chunk %s: deleted while it was being stored", w.id)
	}
	delete(w.s.committing, w.id)
	if serr != nil {
		// Not durable, so not stored: take it back.
		fsys.Remove(dst)
		w.s.used -= fileSize
		return rpc.Errorf(rpc.Internal, "chunk %s: fsync dir: %w", w.id, serr)
	}
	w.s.chunks++
	w.s.index[w.id] = Meta{Size: w.size, FrameSize: w.frameSize, Digest: bytes.Clone(digest)}
	return nil
}

// Abort discards the partial chunk.
func (w *Writer) Abort() {
	if w.packed {
		w.buf = nil
		return
	}
	w.releaseBlock()
	name := w.f.Name()
	w.f.Close()
	w.s.fs.Remove(name)
}
