// Package chunkstore keeps a datanode's chunks on disk through a small
// file-system seam (package vfs): a large chunk is one file, written to a
// temporary name, fsynced and renamed into place; a small one is a record
// appended to a pack file, many made durable by one fdatasync (group
// commit). Chunks are indexed in memory, read and verified, quarantined
// when found damaged, and deleted.
package chunkstore

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// diskReserve is kept free on the filesystem for the node's own needs.
const diskReserve = 64 << 20

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
// after fsync. Its methods are safe for concurrent use.
type Store struct {
	fs       vfs.FS
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
	dirs       sync.Map // chunk directories known to exist, their entries fsynced by this process
	// corrupt chunks failed verification (at start-up, or later by Verify
	// or Open): they are not indexed, but their files stay, and count as
	// used, until Delete removes them.
	corrupt []rpc.ChunkID
	// deleting counts the Delete calls under way per chunk: a chunk whose
	// file is gone while one runs is being deleted, not lost.
	deleting map[rpc.ChunkID]int
	// open holds chunk files kept open between reads, at most
	// maxOpenChunks, the most recently used first in openLRU (see
	// openfiles.go); openGen counts the chunks taken out of it.
	open    map[rpc.ChunkID]*openChunk
	openLRU *list.List
	openGen uint64

	// Pack files (pack.go): chunks of at most packThreshold bytes are
	// records in them. packed locates each packed chunk, stored or
	// corrupt; queue holds the records waiting for the committer (running
	// while committer is set); packErr, once a pack write or sync failed,
	// stops every later pack write until a restart; compactErr, once a
	// compacted pack could not be removed, stops compaction until then.
	packThreshold int64
	packSize      int64
	log           zerolog.Logger
	packs         map[uint64]*pack
	active        *pack
	nextSeq       uint64
	packed        map[rpc.ChunkID]packLoc
	queue         []*packOp
	committer     bool
	packErr       error
	compactErr    error
	compactMu     sync.Mutex // held by the compaction under way
}

// Options configure a Store.
type Options struct {
	// Capacity caps the bytes the node stores (0: the filesystem's size).
	Capacity int64
	// PackThreshold is the largest chunk stored as a record in a pack
	// file rather than as a file of its own; 0 stores every chunk as a
	// file.
	PackThreshold int64
	// PackSize seals the active pack file once it holds this many bytes
	// (0: 256 MiB).
	PackSize int64
	// Log receives the store's warnings (a truncated pack tail, a
	// compaction); the zero value logs nothing.
	Log zerolog.Logger
}

// Open opens or creates a chunk store in dir on fsys (vfs.Default: the
// operating system's), removes temporary files left by a crash and indexes
// the stored chunks. capacity caps the bytes the node stores (0: the
// filesystem's size). The caller makes sure no other Store uses dir.
func Open(fsys vfs.FS, dir string, capacity int64) (*Store, error) {
	return OpenWith(fsys, dir, Options{Capacity: capacity})
}

// OpenWith is Open with options: it also replays the pack files into the
// index (see openPacks).
func OpenWith(fsys vfs.FS, dir string, opts Options) (*Store, error) {
	if opts.PackSize <= 0 {
		opts.PackSize = defaultPackSize
	}
	s := &Store{fs: fsys, dir: dir, capacity: opts.Capacity, index: map[rpc.ChunkID]Meta{}, committing: map[rpc.ChunkID]*commit{},
		deleting: map[rpc.ChunkID]int{}, open: map[rpc.ChunkID]*openChunk{}, openLRU: list.New(),
		packThreshold: opts.PackThreshold, packSize: opts.PackSize, log: opts.Log,
		packs: map[uint64]*pack{}, packed: map[rpc.ChunkID]packLoc{}}
	if err := fsys.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("datanode: create %s: %w", dir, err)
	}
	// A full disk still opens: the node serves what it holds, and its
	// writability probe keeps it out of placement until space is freed.
	if err := checkWritable(fsys, dir); err != nil && !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
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
	if err := s.openPacks(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pack files (after the readers that hold them let go)
// and the chunk files kept open; the store takes no more writes of
// packed chunks. A node calls it as it stops.
func (s *Store) Close() {
	s.CloseFiles()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.packErr == nil {
		s.packErr = errors.New("store closed")
	}
	for seq, p := range s.packs {
		delete(s.packs, seq)
		s.releasePackLocked(p)
	}
	s.active = nil
}

func (s *Store) readIndexEntry(id rpc.ChunkID) (Meta, error) {
	f, err := s.fs.OpenFile(s.path(id), os.O_RDONLY, 0)
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
func (s *Store) quarantine(id rpc.ChunkID, seen fs.FileInfo) bool {
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
	if cur, err := s.fs.Stat(p); err != nil || !vfs.SameFile(seen, cur) {
		s.mu.Unlock()
		return false
	}
	delete(s.index, id)
	s.chunks--
	s.invalidateLocked(id)
	s.corrupt = append(s.corrupt, id)
	// If the rename fails the chunk is still out of service until the
	// node restarts, when its metadata or the scrubber catches it again.
	renamed := s.fs.Rename(p, p+corruptSuffix) == nil
	s.mu.Unlock()
	if renamed {
		s.fs.SyncDir(filepath.Dir(p))
	}
	return true
}

// failed quarantines the open chunk c and returns the CorruptError for
// cause; when c was deleted or replaced meanwhile it returns NotFound.
func (s *Store) failed(c *Chunk, cause error) error {
	if r, ok := c.File.(*packReader); ok {
		if !s.quarantinePacked(c.ID, r.loc) {
			return rpc.Errorf(rpc.NotFound, "chunk %s was removed while it was read", c.ID)
		}
		return &CorruptError{ID: c.ID, Err: cause}
	}
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
	if _, packed := s.packed[id]; !ok || packed || s.committing[id] != nil {
		return false
	}
	if _, err := s.fs.Lstat(s.path(id)); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	delete(s.index, id)
	s.chunks--
	s.invalidateLocked(id)
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
	free, size, err := s.fs.DiskUsage(s.dir)
	if err != nil {
		return 0, 0
	}
	return free, size
}

func (s *Store) usageLocked(fsFree, fsSize int64) Usage {
	capacity := s.capacity
	if capacity <= 0 {
		capacity = fsSize
	}
	free := min(capacity-s.used-s.reserved, fsFree-diskReserve-s.reserved)
	return Usage{Capacity: capacity, Used: s.used, Free: max(free, 0), Chunks: s.chunks}
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

// Chunk is an open stored chunk. The caller must Close it.
type Chunk struct {
	vfs.File
	Meta
	ID rpc.ChunkID
}

// Open opens a stored chunk and reads its metadata; the caller must Close
// it. The store keeps the files of the chunks read lately open, with their
// metadata checked (at most maxOpenChunks), and shares them between
// readers: the Chunk's File and Meta are then read-only. A chunk that is
// not stored, or was found corrupt, is NotFound. A chunk whose metadata
// fails its checks, or whose file cannot be read (permission, EIO), is
// quarantined like a chunk that fails Verify, and a *CorruptError
// returned. A chunk whose file is gone although it is indexed (and not
// being deleted) is dropped from the index and a *LostError (NotFound)
// returned.
func (s *Store) Open(id rpc.ChunkID) (*Chunk, error) {
	s.mu.Lock()
	if c, ok := s.cachedLocked(id); ok {
		s.mu.Unlock()
		return c, nil
	}
	gen := s.openGen
	_, packed := s.packed[id]
	s.mu.Unlock()
	if packed {
		return s.openFile(id) // a read on the pack's shared descriptor
	}
	c, err := s.openFile(id)
	if err != nil {
		return nil, err
	}
	return s.keep(id, c.File, c.Meta, gen), nil
}

// openFile opens a stored chunk's file and reads its metadata, as Open
// does, without the files kept open.
func (s *Store) openFile(id rpc.ChunkID) (*Chunk, error) {
	s.mu.Lock()
	want, ok := s.index[id]
	bad := !ok && slices.Contains(s.corrupt, id)
	loc, packed := s.packed[id]
	if ok && packed {
		loc.p.refs++ // let go by openPacked's Chunk
	}
	s.mu.Unlock()
	if bad {
		return nil, rpc.Errorf(rpc.NotFound, "chunk %s failed verification and is not served", id)
	}
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "chunk %s not found", id)
	}
	if packed {
		return s.openPacked(id, loc, want)
	}
	f, err := s.fs.OpenFile(s.path(id), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, s.lost(id)
	}
	if err != nil && unreadable(err) {
		// There, but not readable: as good as corrupt.
		seen, serr := s.fs.Stat(s.path(id))
		if errors.Is(serr, fs.ErrNotExist) {
			return nil, s.lost(id)
		}
		if serr == nil && s.quarantine(id, seen) {
			return nil, &CorruptError{ID: id, Err: rpc.Errorf(rpc.Internal, "chunk %s: open: %w", id, err)}
		}
	}
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: open: %w", id, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: stat: %w", id, err)
	}
	m, err := readMeta(id, f, info.Size())
	if err != nil {
		defer f.Close()
		return nil, s.failed(&Chunk{File: f, ID: id}, err)
	}
	return &Chunk{File: newDirectReader(s.fs, s.path(id), f), Meta: m, ID: id}, nil
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
	// A file and metadata read now, not those kept open for readers.
	c, err := s.openFile(id)
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
				return s.failed(c, rpc.Errorf(rpc.Internal, "chunk %s: read at %d: %w", id, off, err))
			}
			return rpc.Errorf(rpc.Internal, "chunk %s: read at %d: %w", id, off, err)
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
			return s.failed(c, rpc.Errorf(rpc.Internal, "%w", err))
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
	s.invalidateLocked(id)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.deleting[id]--; s.deleting[id] == 0 {
			delete(s.deleting, id)
		}
		s.mu.Unlock()
	}()
	s.mu.Lock()
	_, packed := s.packed[id]
	s.mu.Unlock()
	if packed {
		return s.deletePacked(id)
	}
	// The stored name first: a chunk quarantined meanwhile moves to the
	// corrupt name, and is found there.
	for _, p := range []string{s.path(id), s.path(id) + corruptSuffix} {
		info, serr := s.fs.Stat(p)
		if errors.Is(serr, fs.ErrNotExist) {
			continue
		}
		if serr != nil {
			err = rpc.Errorf(rpc.Internal, "chunk %s: stat: %w", id, serr)
			break
		}
		if rerr := s.fs.Remove(p); rerr != nil {
			if errors.Is(rerr, fs.ErrNotExist) {
				continue
			}
			err = rpc.Errorf(rpc.Internal, "chunk %s: remove: %w", id, rerr)
			break
		}
		freed += info.Size()
	}
	if freed == 0 {
		if err == nil {
			s.mu.Lock()
			s.dropGoneLocked(id)
			if _, packed := s.packed[id]; !packed {
				// A packed corrupt chunk whose pack compaction removed.
				s.corrupt = slices.DeleteFunc(s.corrupt, func(c rpc.ChunkID) bool { return c == id })
			}
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
	s.mu.Lock()
	_, packed := s.packed[id]
	s.mu.Unlock()
	if packed {
		if err := s.packLost(id); err != nil {
			return Meta{}, err
		}
		return s.Stat(id)
	}
	if _, err := s.fs.Lstat(s.path(id)); errors.Is(err, fs.ErrNotExist) {
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
	s.findLostPacks(found)
	s.mu.Lock()
	ids := slices.Sorted(maps.Keys(s.index)) // sorted, so the chunks of a directory come together
	ids = slices.DeleteFunc(ids, func(id rpc.ChunkID) bool { _, packed := s.packed[id]; return packed })
	s.mu.Unlock()
	for i := 0; i < len(ids); {
		if ctx.Err() != nil {
			return rpc.Errorf(rpc.Canceled, "disk check canceled")
		}
		dir := filepath.Dir(s.path(ids[i]))
		j := i + 1
		for j < len(ids) && filepath.Dir(s.path(ids[j])) == dir {
			j++
		}
		names, err := readNames(s.fs, dir)
		if err != nil {
			return rpc.Errorf(rpc.Internal, "disk check: read %s: %w", dir, err)
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
			if err := s.fs.SyncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
				first = rpc.Errorf(rpc.Internal, "fsync %s after deleting: %w", d, err)
			}
		}
	}
	return first
}
