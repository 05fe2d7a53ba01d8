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
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/google/uuid"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// A stored chunk is one file: the chunk's bytes from offset 0, then the
// frame digests, then a fixed footer. One file means one rename makes data
// and metadata visible together.
//
//	footer: magic[8] version u32 nframes u32 size u64 frameSize u64 digest[32]
const (
	footerSize   = 64
	footerMagic  = "DFSCHUNK"
	chunkVersion = 1
	// diskReserve is kept free on the filesystem for the node's own needs.
	diskReserve = 64 << 20
)

// Meta describes a stored chunk.
type Meta struct {
	Size      int64
	FrameSize int64
	Digest    []byte
	Frames    [][]byte
}

// Usage is a node's disk accounting.
type Usage struct {
	Capacity int64
	Used     int64
	Free     int64
	Chunks   int64
}

// Store keeps chunks under dir in the nested layout
// dir/chunks/<hash[0:2]>/<hash[2]>/<chunk id> (4096 directories). A chunk is
// written to a temporary name beside its final one and renamed into place
// after fsync.
type Store struct {
	dir      string
	capacity int64 // 0: the filesystem's size

	mu       sync.Mutex
	used     int64
	chunks   int64
	reserved int64
	index    map[rpc.ChunkID]Meta // stored chunks, without frame digests
	// committing chunks are renamed into place, their directory not yet
	// fsynced: not stored until it is, so no one is told they are.
	committing map[rpc.ChunkID]*commit
	fsyncDir   func(dir string) error // syncDir; tests slow it down or fail it
	dirs       sync.Map               // chunk directories known to exist
	// corrupt chunks failed verification (at start-up, or later by Verify
	// or Open): they are not indexed, but their files stay, and count as
	// used, until Delete removes them.
	corrupt []rpc.ChunkID
	// deleting counts the Delete calls under way per chunk: a chunk whose
	// file is gone while one runs is being deleted, not lost.
	deleting map[rpc.ChunkID]int
}

// OpenStore opens or creates a chunk store in dir, removes temporary files
// left by a crash and counts the stored chunks. capacity caps the bytes the
// node stores (0: the filesystem's size).
func OpenStore(dir string, capacity int64) (*Store, error) {
	s := &Store{dir: dir, capacity: capacity, index: map[rpc.ChunkID]Meta{}, committing: map[rpc.ChunkID]*commit{},
		deleting: map[rpc.ChunkID]int{}, fsyncDir: syncDir}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("datanode: create %s: %w", dir, err)
	}
	// A full disk still opens: the node serves what it holds, and its
	// writability probe keeps it out of placement until space is freed.
	if err := checkWritable(dir); err != nil && !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return nil, fmt.Errorf("datanode: %w", err)
	}
	if err := s.createLayout(); err != nil {
		return nil, err
	}
	// Partial writes from before a crash are never visible; drop them.
	err := s.removeTemps()
	if err != nil {
		return nil, err
	}
	// Index every chunk's metadata: reports, stats and existence checks
	// then need no disk access. A chunk whose metadata is damaged is not
	// indexed (nor served); its space still counts as used.
	err = s.walk(func(id rpc.ChunkID, size int64, quarantined bool) error {
		s.used += size
		if quarantined {
			s.corrupt = append(s.corrupt, id)
			return nil
		}
		m, err := s.readIndexEntry(id)
		if err != nil {
			s.corrupt = append(s.corrupt, id)
			return nil
		}
		s.index[id] = m
		s.chunks++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) readIndexEntry(id rpc.ChunkID) (Meta, error) {
	f, err := os.Open(s.path(id))
	if err != nil {
		return Meta{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Meta{}, err
	}
	m, err := readMeta(id, f, info.Size())
	m.Frames = nil
	return m, err
}

// Corrupt returns the chunks that failed verification and are not served:
// those whose metadata was unreadable at start-up and those Verify or Open
// found damaged since. A chunk leaves the list when Delete removes it.
func (s *Store) Corrupt() []rpc.ChunkID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.corrupt)
}

// IsCorrupt reports whether chunk id is on the Corrupt list.
func (s *Store) IsCorrupt(id rpc.ChunkID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.corrupt, id)
}

// CorruptError says a stored chunk failed verification: its bytes or its
// metadata do not match its digests. Err is an Internal *rpc.Error saying
// what is wrong.
type CorruptError struct {
	ID  rpc.ChunkID
	Err error
}

func (e *CorruptError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error, so rpc.KindOf sees Internal.
func (e *CorruptError) Unwrap() error { return e.Err }

// IsCorrupt reports whether err says a stored chunk failed verification.
func IsCorrupt(err error) bool {
	var c *CorruptError
	return errors.As(err, &c)
}

// quarantine takes chunk id, whose file (as seen, its stat) was found
// damaged or unreadable, out of service: out of the index (so it is no
// longer served, stat'ed, counted or reported as stored) and onto the
// corrupt list, its file renamed with corruptSuffix (so a restarted node
// does not serve it again) and left for Delete. It reports whether the
// chunk is now on the corrupt list; false means the chunk was deleted or
// replaced since it was seen, and then nothing is changed.
func (s *Store) quarantine(id rpc.ChunkID, seen os.FileInfo) bool {
	p := s.path(id)
	s.mu.Lock()
	if slices.Contains(s.corrupt, id) {
		s.mu.Unlock()
		return true // found by another check meanwhile
	}
	if _, ok := s.index[id]; !ok {
		s.mu.Unlock()
		return false
	}
	if cur, err := os.Stat(p); err != nil || !os.SameFile(seen, cur) {
		s.mu.Unlock()
		return false
	}
	delete(s.index, id)
	s.chunks--
	s.corrupt = append(s.corrupt, id)
	// If the rename fails the chunk is still out of service until the
	// node restarts, when its metadata or the scrubber catches it again.
	renamed := os.Rename(p, p+corruptSuffix) == nil
	s.mu.Unlock()
	if renamed {
		syncDir(filepath.Dir(p))
	}
	return true
}

// failed quarantines the open chunk c and returns the CorruptError for
// cause; when c was deleted or replaced meanwhile it returns NotFound.
func (s *Store) failed(c *Chunk, cause error) error {
	seen, err := c.File.Stat()
	if err != nil || !s.quarantine(c.ID, seen) {
		return rpc.Errorf(rpc.NotFound, "chunk %s was removed while it was read", c.ID)
	}
	return &CorruptError{ID: c.ID, Err: cause}
}

// LostError says a chunk the store had indexed is no longer on disk: its
// file was removed behind the node's back (by hand, a faulty disk or
// filesystem repair), not by Delete. The store has dropped it from the
// index. Err is a NotFound *rpc.Error, so callers that only ask for the
// kind see an absent chunk.
type LostError struct {
	ID  rpc.ChunkID
	Err error
}

func (e *LostError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error, so rpc.KindOf sees NotFound.
func (e *LostError) Unwrap() error { return e.Err }

// IsLost reports whether err says an indexed chunk's file was found gone.
func IsLost(err error) bool {
	var l *LostError
	return errors.As(err, &l)
}

// lost checks whether indexed chunk id is lost: still indexed, not being
// committed or deleted, and its file absent now. Then it drops the chunk
// from the index, and its file's bytes from the space used, and returns
// a *LostError; otherwise it returns a plain NotFound error (the chunk
// was deleted meanwhile, or its name is taken by a new copy, which its
// next reader finds).
func (s *Store) lost(id rpc.ChunkID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deleting[id] > 0 || !s.dropGoneLocked(id) {
		return rpc.Errorf(rpc.NotFound, "chunk %s not found", id)
	}
	return &LostError{ID: id, Err: rpc.Errorf(rpc.NotFound, "chunk %s: its file is missing from disk", id)}
}

// dropGoneLocked drops indexed chunk id, unless it is being committed,
// if its file is absent; it reports whether it did. The lock is held, so
// no commit or quarantine can rename the file meanwhile.
func (s *Store) dropGoneLocked(id rpc.ChunkID) bool {
	m, ok := s.index[id]
	if !ok || s.committing[id] != nil {
		return false
	}
	if _, err := os.Lstat(s.path(id)); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	delete(s.index, id)
	s.chunks--
	s.used -= FileSize(m.Size, m.FrameSize)
	return true
}

// unreadable reports whether err, from opening a chunk's file, says the
// file exists but cannot be read: permission, or an I/O error. Transient
// failures (too many open files, say) are not.
func unreadable(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EIO)
}

// Inventory returns every stored chunk with its size, frame size and
// digest (no frame digests).
func (s *Store) Inventory() map[rpc.ChunkID]Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.index)
}

// IDs returns the IDs of every stored chunk, sorted.
func (s *Store) IDs() []rpc.ChunkID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.index))
}

// ProbeFile is the file the writability probe writes, fsyncs and removes
// in the data dir.
const ProbeFile = ".write-probe"

// ProbeWrite checks that the store's disk takes writes as a chunk needs
// them: it creates a small file in the data dir, writes it, fsyncs it and
// removes it. An error (a read-only or failing filesystem) says why no new
// chunk can be stored; reads may still work.
func (s *Store) ProbeWrite() error { return checkWritable(s.dir) }

func checkWritable(dir string) error {
	name := filepath.Join(dir, ProbeFile)
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	_, werr := f.Write(make([]byte, 512))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(name)
	for _, err := range []error{werr, cerr, rerr} {
		if err != nil {
			return fmt.Errorf("data dir %s is not writable: %w", dir, err)
		}
	}
	return nil
}

func (s *Store) chunkRoot() string { return filepath.Join(s.dir, "chunks") }

// The 256 first-level chunk directories are created with the store; the
// 16 below each are created on first use (and remembered), so writing a
// chunk rarely creates a directory.
const (
	layoutMarker = ".layout-v1"
	fanout1      = 256
)

func (s *Store) createLayout() error {
	marker := filepath.Join(s.chunkRoot(), layoutMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.chunkRoot(), 0o750); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	for i := range fanout1 {
		if err := os.Mkdir(filepath.Join(s.chunkRoot(), fmt.Sprintf("%02x", i)), 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("datanode: create chunk directories: %w", err)
		}
	}
	if err := writeFileSync(marker, []byte("chunks/<hash[0:2]>/<hash[2]>/<chunk id>\n")); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	if err := syncDir(s.chunkRoot()); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	return syncDir(s.dir)
}

// chunkDir returns the directory of chunk id, creating it (durably) on
// first use.
func (s *Store) chunkDir(id rpc.ChunkID) (string, error) {
	dir := filepath.Dir(s.path(id))
	if _, ok := s.dirs.Load(dir); ok {
		return dir, nil
	}
	switch err := os.Mkdir(dir, 0o750); {
	case err == nil:
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return "", err
		}
	case !errors.Is(err, fs.ErrExist):
		return "", err
	}
	s.dirs.Store(dir, true)
	return dir, nil
}

// removeTemps deletes the temporary files of writes a crash interrupted.
func (s *Store) removeTemps() error {
	return filepath.WalkDir(s.chunkRoot(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), tempSuffix) {
			os.Remove(p)
		}
		return nil
	})
}

// tempSuffix ends the name of a chunk being written, beside its final name.
const tempSuffix = ".tmp"

// corruptSuffix ends the name of a chunk file found corrupt, beside its
// final name: the mark survives a restart, and the file stays (counted as
// used) until Delete removes it.
const corruptSuffix = ".corrupt"

// ChunkPath returns the file that holds chunk id (whether or not it is
// stored): for operators inspecting a node, and for tests that damage it.
// A chunk found corrupt is moved to ChunkPath(id) + ".corrupt".
func (s *Store) ChunkPath(id rpc.ChunkID) string { return s.path(id) }

// path returns where a validated chunk ID lives.
func (s *Store) path(id rpc.ChunkID) string {
	h := id.Hash()
	return filepath.Join(s.chunkRoot(), h[0:2], h[2:3], string(id))
}

// Walk calls fn for every chunk file on disk with its size: stored chunks,
// and chunks quarantined as corrupt that await deletion. Files whose name
// is not a valid chunk ID are ignored.
func (s *Store) Walk(fn func(id rpc.ChunkID, fileSize int64) error) error {
	return s.walk(func(id rpc.ChunkID, size int64, _ bool) error { return fn(id, size) })
}

// walk is Walk, telling quarantined chunks apart.
func (s *Store) walk(fn func(id rpc.ChunkID, fileSize int64, quarantined bool) error) error {
	return filepath.WalkDir(s.chunkRoot(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		name, quarantined := strings.CutSuffix(d.Name(), corruptSuffix)
		id, perr := rpc.ParseChunkID(name)
		if perr != nil {
			return nil
		}
		info, ierr := d.Info()
		if ierr != nil {
			return nil
		}
		return fn(id, info.Size(), quarantined)
	})
}

// Usage returns the node's capacity, use and free space. Free is what the
// node can still accept: the capacity left after stored and reserved bytes,
// bounded by the filesystem's free space less a reserve.
func (s *Store) Usage() Usage {
	fsFree, fsSize := s.statfs()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usageLocked(fsFree, fsSize)
}

// statfs returns the filesystem's free bytes (for unprivileged users) and
// size; 0 and 0 when it cannot be asked.
func (s *Store) statfs() (free, size int64) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, 0
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize)
}

func (s *Store) usageLocked(fsFree, fsSize int64) Usage {
	capacity := s.capacity
	if capacity <= 0 {
		capacity = fsSize
	}
	free := min(capacity-s.used-s.reserved, fsFree-diskReserve-s.reserved)
	return Usage{Capacity: capacity, Used: s.used, Free: max(free, 0), Chunks: s.chunks}
}

// FileSize returns the bytes a chunk of size bytes in frames of frameSize
// takes on disk.
func FileSize(size, frameSize int64) int64 {
	return size + (size+frameSize-1)/frameSize*sha256.Size + footerSize
}

// Reserve sets aside room for an incoming chunk of need bytes on disk (see
// FileSize), or fails with ResourceExhausted when the node is full.
func (s *Store) Reserve(need int64) error {
	fsFree, fsSize := s.statfs()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Checked and reserved under one lock: concurrent uploads cannot both
	// take the last free bytes.
	if u := s.usageLocked(fsFree, fsSize); u.Free < need {
		return rpc.Errorf(rpc.ResourceExhausted, "datanode is full: %s free, chunk needs %s", rpc.FormatBytes(u.Free), rpc.FormatBytes(need))
	}
	s.reserved += need
	return nil
}

// Release returns a reservation made by Reserve(need).
func (s *Store) Release(need int64) {
	s.mu.Lock()
	s.reserved -= need
	s.mu.Unlock()
}

// Has reports whether the chunk is stored.
func (s *Store) Has(id rpc.ChunkID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[id]
	return ok
}

// Writer writes one chunk to a temporary file; Commit makes it durable and
// visible, Abort removes it.
type Writer struct {
	s         *Store
	id        rpc.ChunkID
	f         *os.File
	size      int64
	frameSize int64
	written   int64

	// With direct I/O, data is gathered in block and written to direct
	// (an O_DIRECT descriptor of the same file) a block at a time.
	direct  *os.File
	block   *[]byte
	pending int   // bytes gathered in block
	flushed int64 // bytes in the file (written through direct or f)
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
	// The temporary file lives beside the chunk's final name: the rename
	// stays in one directory, and writes spread over all directories.
	dir, err := s.chunkDir(id)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: create directory: %v", id, err)
	}
	f, err := os.CreateTemp(dir, string(id)+".*"+tempSuffix)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: create temp file: %v", id, err)
	}
	w := &Writer{s: s, id: id, f: f, size: size, frameSize: frameSize}
	if size >= directBlock {
		d, ok, err := openDirect(f.Name())
		if err != nil {
			w.Abort()
			return nil, rpc.Errorf(rpc.Internal, "chunk %s: open for direct I/O: %v", id, err)
		}
		if ok {
			w.direct, w.block = d, directBufs.Get().(*[]byte)
		}
	}
	return w, nil
}

// Write appends data to the chunk.
func (w *Writer) Write(data []byte) (int, error) {
	if w.written+int64(len(data)) > w.size {
		return 0, rpc.Errorf(rpc.Invalid, "chunk %s: write beyond size %d", w.id, w.size)
	}
	if w.direct == nil {
		n, err := w.f.Write(data)
		w.written += int64(n)
		w.flushed += int64(n)
		if err != nil {
			return n, rpc.Errorf(rpc.Internal, "chunk %s: write: %v", w.id, err)
		}
		return n, nil
	}
	total := len(data)
	for len(data) > 0 {
		n := copy((*w.block)[w.pending:], data)
		w.pending += n
		data = data[n:]
		if w.pending == directBlock {
			if _, err := w.direct.WriteAt(*w.block, w.flushed); err != nil {
				return 0, rpc.Errorf(rpc.Internal, "chunk %s: write: %v", w.id, err)
			}
			w.flushed += directBlock
			w.pending = 0
		}
	}
	w.written += int64(total)
	return total, nil
}

// releaseDirect closes the direct descriptor and returns the block.
func (w *Writer) releaseDirect() {
	if w.direct != nil {
		w.direct.Close()
		w.direct = nil
		directBufs.Put(w.block)
		w.block = nil
	}
}

// Commit appends the frame digests and footer, fsyncs the file, renames it
// into place and fsyncs the directory: when it returns nil the chunk
// survives a crash.
func (w *Writer) Commit(frames [][]byte, digest []byte) error {
	if w.written != w.size {
		w.Abort()
		return rpc.Errorf(rpc.Invalid, "chunk %s: %d of %d bytes written", w.id, w.written, w.size)
	}
	var buf bytes.Buffer
	if w.direct != nil {
		// The unaligned tail goes through the ordinary descriptor.
		buf.Write((*w.block)[:w.pending])
		w.releaseDirect()
	}
	for _, fd := range frames {
		buf.Write(fd)
	}
	buf.Write(encodeFooter(len(frames), w.size, w.frameSize, digest))
	if _, err := w.f.WriteAt(buf.Bytes(), w.flushed); err != nil {
		w.Abort()
		return rpc.Errorf(rpc.Internal, "chunk %s: write digests: %v", w.id, err)
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return rpc.Errorf(rpc.Internal, "chunk %s: fsync: %v", w.id, err)
	}
	tmp := w.f.Name()
	if err := w.f.Close(); err != nil {
		os.Remove(tmp)
		return rpc.Errorf(rpc.Internal, "chunk %s: close: %v", w.id, err)
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
	if _, err := os.Stat(dst); err == nil {
		w.s.mu.Unlock()
		os.Remove(tmp)
		return rpc.Errorf(rpc.Exists, "chunk %s already stored", w.id)
	}
	if slices.Contains(w.s.corrupt, w.id) {
		w.s.mu.Unlock()
		os.Remove(tmp)
		return errCorruptCopy(w.id)
	}
	if err := os.Rename(tmp, dst); err != nil {
		w.s.mu.Unlock()
		os.Remove(tmp)
		return rpc.Errorf(rpc.Internal, "chunk %s: rename: %v", w.id, err)
	}
	fileSize := w.flushed + int64(buf.Len())
	w.s.used += fileSize
	c := &commit{done: make(chan struct{})}
	w.s.committing[w.id] = c
	w.s.mu.Unlock()

	// The chunk is stored once its directory entry is durable: until then
	// it is not in the index, so neither a reader nor a concurrent copy of
	// the same chunk takes it for stored.
	serr := w.s.fsyncDir(filepath.Dir(dst))
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
		os.Remove(dst)
		w.s.used -= fileSize
		return rpc.Errorf(rpc.Internal, "chunk %s: fsync dir: %v", w.id, serr)
	}
	w.s.chunks++
	w.s.index[w.id] = Meta{Size: w.size, FrameSize: w.frameSize, Digest: bytes.Clone(digest)}
	return nil
}

// commit is a chunk renamed into place whose directory fsync is in
// progress; done closes when the commit has succeeded or failed.
type commit struct {
	done    chan struct{}
	waiters int // writers of the same chunk waiting for the outcome
}

// Abort discards the partial chunk.
func (w *Writer) Abort() {
	w.releaseDirect()
	name := w.f.Name()
	w.f.Close()
	os.Remove(name)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func encodeFooter(nframes int, size, frameSize int64, digest []byte) []byte {
	b := make([]byte, footerSize)
	copy(b, footerMagic)
	binary.BigEndian.PutUint32(b[8:], chunkVersion)
	binary.BigEndian.PutUint32(b[12:], uint32(nframes))
	binary.BigEndian.PutUint64(b[16:], uint64(size))
	binary.BigEndian.PutUint64(b[24:], uint64(frameSize))
	copy(b[32:], digest)
	return b
}

// readMeta reads and checks the digests and footer of an open chunk file.
// The frame digests must hash to the recorded chunk digest, so damaged
// metadata is caught as surely as damaged data.
func readMeta(id rpc.ChunkID, f io.ReaderAt, fileSize int64) (Meta, error) {
	bad := func(why string, args ...any) (Meta, error) {
		return Meta{}, rpc.Errorf(rpc.Internal, "chunk %s: corrupt metadata: %s", id, fmt.Sprintf(why, args...))
	}
	if fileSize < footerSize {
		return bad("file of %d bytes", fileSize)
	}
	foot := make([]byte, footerSize)
	if _, err := f.ReadAt(foot, fileSize-footerSize); err != nil {
		return bad("read footer: %v", err)
	}
	if string(foot[:8]) != footerMagic || binary.BigEndian.Uint32(foot[8:]) != chunkVersion {
		return bad("bad magic or version")
	}
	n := int64(binary.BigEndian.Uint32(foot[12:]))
	m := Meta{
		Size:      int64(binary.BigEndian.Uint64(foot[16:])),
		FrameSize: int64(binary.BigEndian.Uint64(foot[24:])),
		Digest:    bytes.Clone(foot[32:64]),
	}
	if m.Size <= 0 || m.Size > rpc.MaxChunkSize || rpc.CheckFrameSize(m.FrameSize) != nil {
		return bad("size %d, frame size %d", m.Size, m.FrameSize)
	}
	if want := (m.Size + m.FrameSize - 1) / m.FrameSize; n != want {
		return bad("%d frame digests for %d", n, want)
	}
	if fileSize != m.Size+n*sha256.Size+footerSize {
		return bad("file of %d bytes for a chunk of %d", fileSize, m.Size)
	}
	digests := make([]byte, n*sha256.Size)
	if _, err := f.ReadAt(digests, m.Size); err != nil {
		return bad("read digests: %v", err)
	}
	if sum := sha256.Sum256(digests); !bytes.Equal(sum[:], m.Digest) {
		return bad("frame digests do not match the chunk digest")
	}
	for i := int64(0); i < n; i++ {
		m.Frames = append(m.Frames, digests[i*sha256.Size:(i+1)*sha256.Size])
	}
	return m, nil
}

// Chunk is an open stored chunk. The caller must Close it.
type Chunk struct {
	*os.File
	Meta
	ID rpc.ChunkID
}

// Open opens a stored chunk and reads its metadata; the caller must Close
// it. A chunk that is not stored, or was found corrupt, is NotFound. A
// chunk whose metadata fails its checks, or whose file cannot be read
// (permission, EIO), is quarantined like a chunk that fails Verify, and a
// *CorruptError returned. A chunk whose file is gone although it is
// indexed (and not being deleted) is dropped from the index and a
// *LostError (NotFound) returned.
func (s *Store) Open(id rpc.ChunkID) (*Chunk, error) {
	s.mu.Lock()
	_, ok := s.index[id]
	bad := !ok && slices.Contains(s.corrupt, id)
	s.mu.Unlock()
	if bad {
		return nil, rpc.Errorf(rpc.NotFound, "chunk %s failed verification and is not served", id)
	}
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "chunk %s not found", id)
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, s.lost(id)
	}
	if err != nil && unreadable(err) {
		// There, but not readable: as good as corrupt.
		seen, serr := os.Stat(s.path(id))
		if errors.Is(serr, fs.ErrNotExist) {
			return nil, s.lost(id)
		}
		if serr == nil && s.quarantine(id, seen) {
			return nil, &CorruptError{ID: id, Err: rpc.Errorf(rpc.Internal, "chunk %s: open: %v", id, err)}
		}
	}
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: open: %v", id, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: stat: %v", id, err)
	}
	m, err := readMeta(id, f, info.Size())
	if err != nil {
		defer f.Close()
		return nil, s.failed(&Chunk{File: f, ID: id}, err)
	}
	return &Chunk{File: f, Meta: m, ID: id}, nil
}

// Verify re-reads stored chunk id and checks it in one pass, the way a
// reader would: every frame against its stored digest, the frame digests
// against the chunk digest, and the size, frame size and chunk digest
// against those recorded when the chunk was committed (the index). pace,
// when not nil, is called after each read with the bytes read; it may
// sleep to cap the read rate, and an error from it ends the check and is
// returned, leaving the chunk as it was. ctx ends the check the same way
// (Canceled).
//
// Verify returns nil for an intact chunk, and NotFound for a chunk not
// stored or already found corrupt. A chunk that fails is quarantined and a
// *CorruptError returned: it leaves the index, so it is no longer served,
// stat'ed, counted or reported as stored, and Corrupt lists it until Delete
// removes its file. A read error (EIO) or a file shorter than its footer
// claims counts as corruption; any other error (say, a file that cannot be
// opened now) leaves the chunk as it is.
func (s *Store) Verify(ctx context.Context, id rpc.ChunkID, pace func(n int64) error) error {
	want, err := s.Stat(id)
	if err != nil {
		return err
	}
	c, err := s.Open(id)
	if err != nil {
		return err
	}
	defer c.Close()
	if c.Size != want.Size || c.FrameSize != want.FrameSize || !bytes.Equal(c.Digest, want.Digest) {
		return s.failed(c, rpc.Errorf(rpc.Internal, "chunk %s: corrupt metadata: size %d, frame size %d, digest %.6x on disk; %d, %d, %.6x committed",
			id, c.Size, c.FrameSize, c.Digest, want.Size, want.FrameSize, want.Digest))
	}
	if pace != nil {
		if err := pace(FileSize(c.Size, c.FrameSize) - c.Size); err != nil { // Open read the digests and footer
			return err
		}
	}
	v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: id, Size: want.Size, FrameSize: want.FrameSize, Digest: want.Digest})
	buf := make([]byte, min(c.FrameSize, c.Size))
	for i, off := 0, int64(0); off < c.Size; i, off = i+1, off+c.FrameSize {
		if ctx.Err() != nil {
			return rpc.Errorf(rpc.Canceled, "chunk %s: verification canceled", id)
		}
		n := min(c.FrameSize, c.Size-off)
		if _, err := c.ReadAt(buf[:n], off); err != nil {
			if errors.Is(err, syscall.EIO) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return s.failed(c, rpc.Errorf(rpc.Internal, "chunk %s: read at %d: %v", id, off, err))
			}
			return rpc.Errorf(rpc.Internal, "chunk %s: read at %d: %v", id, off, err)
		}
		if pace != nil {
			if err := pace(n); err != nil {
				return err
			}
		}
		f := &dfspb.ChunkDataStream{Data: buf[:n], Offset: off, PartialChecksum: c.Frames[i], IsFinal: off+n == c.Size}
		if f.IsFinal {
			f.ChunkChecksum = c.Digest
		}
		if err := v.Check(f); err != nil {
			return s.failed(c, rpc.Errorf(rpc.Internal, "%v", err))
		}
	}
	return nil
}

// Stat returns a stored chunk's size, frame size and digest (not its
// frame digests) from the index.
func (s *Store) Stat(id rpc.ChunkID) (Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.index[id]
	if !ok {
		return Meta{}, rpc.Errorf(rpc.NotFound, "chunk %s not found", id)
	}
	return m, nil
}

// Delete removes a chunk, stored or on the corrupt list. It returns the
// bytes freed on disk: 0 when the chunk was not there, which is not an
// error. On an error, freed still counts what was removed. An indexed
// chunk whose file was already gone leaves the index too.
func (s *Store) Delete(id rpc.ChunkID) (freed int64, err error) {
	s.mu.Lock()
	s.deleting[id]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.deleting[id]--; s.deleting[id] == 0 {
			delete(s.deleting, id)
		}
		s.mu.Unlock()
	}()
	// The stored name first: a chunk quarantined meanwhile moves to the
	// corrupt name, and is found there.
	for _, p := range []string{s.path(id), s.path(id) + corruptSuffix} {
		info, serr := os.Stat(p)
		if errors.Is(serr, fs.ErrNotExist) {
			continue
		}
		if serr != nil {
			err = rpc.Errorf(rpc.Internal, "chunk %s: stat: %v", id, serr)
			break
		}
		if rerr := os.Remove(p); rerr != nil {
			if errors.Is(rerr, fs.ErrNotExist) {
				continue
			}
			err = rpc.Errorf(rpc.Internal, "chunk %s: remove: %v", id, rerr)
			break
		}
		freed += info.Size()
	}
	if freed == 0 {
		if err == nil {
			s.mu.Lock()
			s.dropGoneLocked(id)
			s.mu.Unlock()
		}
		return 0, err
	}
	s.mu.Lock()
	s.used -= freed
	if _, ok := s.index[id]; ok {
		delete(s.index, id)
		s.chunks--
	}
	delete(s.committing, id)
	s.corrupt = slices.DeleteFunc(s.corrupt, func(c rpc.ChunkID) bool { return c == id })
	s.mu.Unlock()
	return freed, err
}

// Check returns a stored chunk's size, frame size and digest, like Stat,
// after making sure its file is still on disk (one stat): a chunk whose
// file is gone is dropped from the index and a *LostError returned.
func (s *Store) Check(id rpc.ChunkID) (Meta, error) {
	m, err := s.Stat(id)
	if err != nil {
		return Meta{}, err
	}
	if _, err := os.Lstat(s.path(id)); errors.Is(err, fs.ErrNotExist) {
		if err := s.lost(id); IsLost(err) {
			return Meta{}, err
		}
		return s.Stat(id) // deleted, or stored again, meanwhile
	}
	return m, nil
}

// FindLost compares the index with the chunk directories on disk and
// calls found with the *LostError of every indexed chunk whose file is
// gone (dropping it from the index, as Open does). It reads directory
// entries only, no chunk file, one directory at a time, and only the
// directories that hold indexed chunks; pace, when not nil, is called
// after each directory with the entries read, and may sleep to bound the
// rate, and an error from it (or the end of ctx) stops the walk and is
// returned. A chunk stored or deleted during the walk is never taken for
// lost: a candidate is confirmed under the store's lock.
func (s *Store) FindLost(ctx context.Context, pace func(entries int) error, found func(id rpc.ChunkID, err error)) error {
	ids := s.IDs() // sorted, so the chunks of a directory come together
	for i := 0; i < len(ids); {
		if ctx.Err() != nil {
			return rpc.Errorf(rpc.Canceled, "disk check canceled")
		}
		dir := filepath.Dir(s.path(ids[i]))
		j := i + 1
		for j < len(ids) && filepath.Dir(s.path(ids[j])) == dir {
			j++
		}
		names, err := readNames(dir)
		if err != nil {
			return rpc.Errorf(rpc.Internal, "disk check: read %s: %v", dir, err)
		}
		for _, id := range ids[i:j] {
			if _, ok := names[string(id)]; ok {
				continue
			}
			if err := s.lost(id); IsLost(err) {
				found(id, err)
			}
		}
		if pace != nil {
			if err := pace(len(names) + 1); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// readNames returns the names in dir; none when dir does not exist.
func readNames(dir string) (map[string]struct{}, error) {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	list, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	names := make(map[string]struct{}, len(list))
	for _, n := range list {
		names[n] = struct{}{}
	}
	return names, nil
}

// SyncDeletes fsyncs the directories of deleted chunks so the deletions
// survive a crash; it returns the first failure. A directory that does
// not exist holds nothing to make durable.
func (s *Store) SyncDeletes(ids []rpc.ChunkID) error {
	seen := map[string]bool{}
	var first error
	for _, id := range ids {
		d := filepath.Dir(s.path(id))
		if !seen[d] {
			seen[d] = true
			if err := s.fsyncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
				first = rpc.Errorf(rpc.Internal, "fsync %s after deleting: %v", d, err)
			}
		}
	}
	return first
}

// LoadOrCreateNodeID returns the node ID persisted in dir, creating and
// durably writing a new one on first start.
func LoadOrCreateNodeID(dir string) (rpc.NodeID, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		id, perr := rpc.ParseNodeID(string(bytes.TrimSpace(b)))
		if perr != nil {
			return "", fmt.Errorf("datanode: %s holds %q, not a node id", p, bytes.TrimSpace(b))
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("datanode: read node id: %w", err)
	}
	id := rpc.NodeID(uuid.NewString())
	tmp := p + ".tmp"
	if err := writeFileSync(tmp, []byte(string(id)+"\n")); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	return id, nil
}

func writeFileSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadClusterID returns the cluster ID persisted in dir, or "" before the
// node first joined a cluster.
func loadClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster-id"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("datanode: read cluster id: %w", err)
	}
	id := string(bytes.TrimSpace(b))
	if _, err := uuid.Parse(id); err != nil {
		return "", fmt.Errorf("datanode: %s holds %q, not a cluster id", filepath.Join(dir, "cluster-id"), id)
	}
	return id, nil
}

// saveClusterID durably records the cluster the node joined. A failure
// to write it is an error of this node's disk, of type *localError.
func saveClusterID(dir, id string) error {
	if _, err := uuid.Parse(id); err != nil {
		// Saved, it would keep the node from starting again.
		return fmt.Errorf("datanode: the coordinator sent %q, not a cluster id", id)
	}
	p := filepath.Join(dir, "cluster-id")
	err := writeFileSync(p+".tmp", []byte(id+"\n"))
	if err == nil {
		err = os.Rename(p+".tmp", p)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(p + ".tmp")
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said below
		}
		return &localError{fmt.Errorf("datanode: record the cluster joined: writing %s: %w", p, err)}
	}
	return nil
}

// localError is a failure of the node itself (its disk), not of the
// coordinator it talks to.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }
