package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// Small chunks (at most Options.PackThreshold bytes) are not files: each
// is a record appended to the active pack file, packs/<seq>.pack (see
// packformat.go). One committer per store writes every record queued
// meanwhile in one write and makes them durable with one fdatasync (group
// commit); a record is indexed, and its writer told, only after that.
// Deleting a packed chunk appends a delete record the same way. A sealed
// pack (no longer appended to) whose dead bytes reach half its size is
// compacted: its live records are copied, through the committer, into the
// active pack, and then it is removed.
const (
	// DefaultPackThreshold is the largest chunk a datanode packs by
	// default.
	DefaultPackThreshold = 256 << 10
	// defaultPackSize seals the active pack once it holds this many bytes.
	defaultPackSize = 256 << 20
	// maxBatch bounds the bytes of records written in one batch.
	maxBatch   = 8 << 20
	packSuffix = ".pack"
)

// pack is one pack file. Its fields are guarded by the Store's mu, but
// f's offsets beyond size are written by the committer alone.
type pack struct {
	seq  uint64
	name string
	f    vfs.File
	size int64 // bytes of records (the file's size)
	dead int64 // bytes of records no longer needed
	// refs counts the store's hold (until the pack is removed) and one
	// per open reader; the file closes after the last.
	refs  int
	tombs []tomb // the delete records in this pack
	// unread says that start-up could not read all of the pack (a
	// header failed): it is neither appended to nor compacted.
	unread bool
}

// tomb is a delete record: of chunk id's put at off in pack seq.
type tomb struct {
	id  rpc.ChunkID
	seq uint64
	off int64
}

// packLoc is where a packed chunk's put record is: pack, offset, length.
type packLoc struct {
	p   *pack
	off int64
	n   int64
}

// dataOff returns where the chunk's bytes start in the pack.
func (l packLoc) dataOff(id rpc.ChunkID) int64 { return l.off + recHeaderSize + int64(len(id)) }

// op kinds beside recPut and recDelete: a compaction's copy of a live
// put, and its copy of a delete record still needed.
const (
	opMove = 3
	opTomb = 4
)

// packOp is one record waiting for the committer.
type packOp struct {
	kind   byte
	id     rpc.ChunkID
	rec    []byte
	meta   Meta    // put
	target packLoc // delete, move: where the chunk is expected to be
	tomb   tomb    // delete, tomb: what the record cancels
	loc    packLoc // where the record was written
	freed  int64   // delete: the bytes of the put it cancelled
	err    error
	done   chan struct{}
}

// errStale says a delete or move found its chunk elsewhere than expected
// (moved, deleted or lost meanwhile); the caller looks again.
var errStale = errors.New("chunk moved")

func (s *Store) packDir() string { return filepath.Join(s.dir, "packs") }

func packName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%010d%s", seq, packSuffix))
}

// packable returns whether chunks of size bytes are packed now.
func (s *Store) packable(size int64) bool {
	if s.packThreshold <= 0 || size > s.packThreshold {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packErr == nil
}

// enqueue hands op to the committer (starting one if none runs) and waits
// for it to be written and synced, or failed.
func (s *Store) enqueue(op *packOp) error {
	op.done = make(chan struct{})
	s.mu.Lock()
	if err := s.packErr; err != nil {
		s.mu.Unlock()
		return rpc.Errorf(rpc.Internal, "chunk %s: pack files refuse writes until restart: %w", op.id, err)
	}
	s.queue = append(s.queue, op)
	if !s.committer {
		s.committer = true
		go s.commitLoop()
	}
	s.mu.Unlock()
	<-op.done
	return op.err
}

// commitLoop writes batches of queued records until the queue is empty.
func (s *Store) commitLoop() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 || s.packErr != nil {
			for _, op := range s.queue {
				op.err = rpc.Errorf(rpc.Internal, "chunk %s: pack files refuse writes until restart: %w", op.id, s.packErr)
				close(op.done)
			}
			s.queue = nil
			s.committer = false
			s.mu.Unlock()
			return
		}
		var batch []*packOp
		var bytes int
		for len(s.queue) > 0 && (len(batch) == 0 || bytes+len(s.queue[0].rec) <= maxBatch) {
			bytes += len(s.queue[0].rec)
			batch = append(batch, s.queue[0])
			s.queue[0] = nil
			s.queue = s.queue[1:]
		}
		batch = s.admitLocked(batch)
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		err := s.writeBatch(batch)
		s.mu.Lock()
		if err != nil {
			s.packErr = err
			s.mu.Unlock()
			for _, op := range batch {
				op.err = rpc.Errorf(rpc.Internal, "chunk %s: %w", op.id, err)
				close(op.done)
			}
			continue
		}
		for _, op := range batch {
			s.publishLocked(op)
		}
		s.mu.Unlock()
		for _, op := range batch {
			close(op.done)
		}
		s.compactSoon()
	}
}

// admitLocked returns the ops of batch still to be written, and finishes
// the others: a put of a chunk stored (Exists) or corrupt here, a delete
// or move of a chunk no longer where it was (errStale), or of one that an
// earlier record of the batch deletes or moves. A put of a chunk that an
// earlier record of the batch writes goes back to the queue's front, for
// the next batch: it is Exists only once that record is durable (if the
// batch fails, the packs refuse every write until a restart, this put
// too).
func (s *Store) admitLocked(batch []*packOp) []*packOp {
	out := batch[:0]
	var later []*packOp
	touched := map[rpc.ChunkID]bool{}
	for _, op := range batch {
		switch op.kind {
		case recPut:
			_, stored := s.index[op.id]
			_, packed := s.packed[op.id]
			switch {
			case touched[op.id]:
				later = append(later, op)
				continue
			case slices.Contains(s.corrupt, op.id):
				op.err = errCorruptCopy(op.id)
			case stored || packed || s.committing[op.id] != nil:
				op.err = rpc.Errorf(rpc.Exists, "chunk %s already stored", op.id)
			}
		case recDelete, opMove:
			if s.packed[op.id] != op.target || touched[op.id] {
				op.err = errStale
			}
		}
		if op.err != nil {
			close(op.done)
			continue
		}
		touched[op.id] = true
		out = append(out, op)
	}
	if len(later) > 0 {
		s.queue = append(later, s.queue...)
	}
	return out
}

// writeBatch appends the records of batch to the active pack (a new one
// when there is none or it is full) in one write and makes them durable
// with one fdatasync; it sets each op's loc. Only the committer calls it.
func (s *Store) writeBatch(batch []*packOp) error {
	s.mu.Lock()
	p := s.active // nil after Close, or once its file was found gone
	s.mu.Unlock()
	if p == nil || p.size >= s.packSize {
		var err error
		if p, err = s.newPack(); err != nil {
			return err
		}
	}
	var n int
	for _, op := range batch {
		n += len(op.rec)
	}
	buf := make([]byte, 0, n)
	for _, op := range batch {
		op.loc = packLoc{p: p, off: p.size + int64(len(buf)), n: int64(len(op.rec))}
		buf = append(buf, op.rec...)
	}
	if _, err := p.f.WriteAt(buf, p.size); err != nil {
		return fmt.Errorf("append to %s: %w", p.name, err)
	}
	if err := datasync(p.f); err != nil {
		// The pack may now hold a torn tail that later records would
		// follow: nothing more is appended until a restart truncates it.
		return fmt.Errorf("fdatasync %s: %w", p.name, err)
	}
	return nil
}

// newPack creates the next pack, durably (file and directory synced), and
// makes it the active one; the pack it replaces is sealed.
func (s *Store) newPack() (*pack, error) {
	s.mu.Lock()
	seq := s.nextSeq
	s.nextSeq++
	s.mu.Unlock()
	name := packName(s.packDir(), seq)
	f, err := s.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("create pack: fsync %s: %w", name, err)
	}
	if err := s.fs.SyncDir(s.packDir()); err != nil {
		f.Close()
		return nil, fmt.Errorf("create pack: fsync %s: %w", s.packDir(), err)
	}
	p := &pack{seq: seq, name: name, f: f, refs: 1}
	s.mu.Lock()
	s.packs[seq] = p
	s.active = p
	s.mu.Unlock()
	return p, nil
}

// publishLocked makes a written op visible in the index.
func (s *Store) publishLocked(op *packOp) {
	p := op.loc.p
	p.size = max(p.size, op.loc.off+op.loc.n)
	s.used += op.loc.n
	switch op.kind {
	case recPut:
		s.index[op.id] = op.meta
		s.packed[op.id] = op.loc
		s.chunks++
	case recDelete:
		p.dead += op.loc.n
		p.tombs = append(p.tombs, op.tomb)
		if s.packed[op.id] == op.target {
			s.dropPackedLocked(op.id)
			op.freed = op.target.n
		}
	case opTomb:
		p.dead += op.loc.n
		p.tombs = append(p.tombs, op.tomb)
	case opMove:
		if s.packed[op.id] != op.target {
			p.dead += op.loc.n // deleted or lost meanwhile
			break
		}
		op.target.p.dead += op.target.n
		s.packed[op.id] = op.loc
		s.invalidateLocked(op.id)
	}
}

// dropPackedLocked takes packed chunk id out of the store (index or
// corrupt list); its record's bytes become dead.
func (s *Store) dropPackedLocked(id rpc.ChunkID) {
	loc := s.packed[id]
	delete(s.packed, id)
	loc.p.dead += loc.n
	if _, ok := s.index[id]; ok {
		delete(s.index, id)
		s.chunks--
	}
	s.corrupt = slices.DeleteFunc(s.corrupt, func(c rpc.ChunkID) bool { return c == id })
	s.invalidateLocked(id)
}

// commitPacked stores a written chunk as a put record.
func (w *Writer) commitPacked(frames [][]byte, digest []byte) error {
	op := &packOp{kind: recPut, id: w.id, rec: encodePut(w.id, w.frameSize, w.buf, frames, digest),
		meta: Meta{Size: w.size, FrameSize: w.frameSize, Digest: bytes.Clone(digest)}}
	w.buf = nil
	return w.s.enqueue(op)
}

// deletePacked appends a delete record for packed chunk id and returns
// the bytes of its put record; 0 when it is no longer packed here.
func (s *Store) deletePacked(id rpc.ChunkID) (int64, error) {
	for range 16 { // each retry follows a compaction's move
		s.mu.Lock()
		loc, ok := s.packed[id]
		s.mu.Unlock()
		if !ok {
			return 0, nil
		}
		t := tomb{id: id, seq: loc.p.seq, off: loc.off}
		op := &packOp{kind: recDelete, id: id, rec: encodeDelete(id, t.seq, t.off), target: loc, tomb: t}
		err := s.enqueue(op)
		if errors.Is(err, errStale) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return op.freed, nil
	}
	return 0, rpc.Errorf(rpc.Unavailable, "chunk %s: moved too often while being deleted; try again", id)
}

// packReader reads a packed chunk's bytes from its pack's shared
// descriptor; Close lets go of the pack.
type packReader struct {
	s    *Store
	id   rpc.ChunkID
	loc  packLoc
	base int64 // the chunk's first byte in the pack
	size int64
	// data holds the chunk's bytes when openPacked read the whole record
	// at once (a record of at most wholeRecord bytes); reads are then
	// served from it, with no system call.
	data   []byte
	closed atomic.Bool
}

var _ vfs.File = (*packReader)(nil)

func (r *packReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: r.loc.p.name, Err: syscall.EINVAL}
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(b)), r.size-off)
	if r.data != nil {
		n := copy(b, r.data[off:off+want])
		if n < len(b) {
			return n, io.EOF
		}
		return n, nil
	}
	n, err := r.loc.p.f.ReadAt(b[:want], r.base+off)
	if err == nil && int(want) < len(b) {
		err = io.EOF
	}
	if errors.Is(err, io.EOF) && int64(n) < want {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *packReader) Write([]byte) (int, error) { return 0, r.readOnly("write") }
func (r *packReader) WriteAt([]byte, int64) (int, error) {
	return 0, r.readOnly("write")
}
func (r *packReader) Truncate(int64) error       { return r.readOnly("truncate") }
func (r *packReader) Sync() error                { return nil }
func (r *packReader) Stat() (fs.FileInfo, error) { return r.loc.p.f.Stat() }
func (r *packReader) Name() string               { return r.loc.p.name }

func (r *packReader) readOnly(op string) error {
	return &fs.PathError{Op: op, Path: r.loc.p.name, Err: syscall.EBADF}
}

// Close lets go of the pack; it is idempotent.
func (r *packReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.releasePackLocked(r.loc.p)
}

func (s *Store) releasePackLocked(p *pack) error {
	p.refs--
	if p.refs > 0 {
		return nil
	}
	return p.f.Close()
}

// openPacked opens packed chunk id at loc: its header is read and checked
// against the index, and its frame digests against the chunk digest, as
// a chunk file's metadata is. The caller took a reference on loc.p in the
// same locked section that read loc from packed (so compaction cannot
// close the pack in between); the returned Chunk's Close, or openPacked
// on failure, lets go of it.
func (s *Store) openPacked(id rpc.ChunkID, loc packLoc, want Meta) (*Chunk, error) {
	r := &packReader{s: s, id: id, loc: loc, base: loc.dataOff(id), size: want.Size}
	c := &Chunk{File: r, ID: id}
	m, data, err := readPackedMeta(id, loc)
	r.data = data
	if err != nil {
		defer r.Close()
		return nil, s.failed(c, err)
	}
	if m.Size != want.Size {
		defer r.Close()
		return nil, s.failed(c, rpc.Errorf(rpc.Internal, "chunk %s: corrupt metadata: size %d in its pack, %d indexed", id, m.Size, want.Size))
	}
	c.Meta = m
	return c, nil
}

// wholeRecord is the largest put record openPacked reads with one system
// call, its chunk's bytes kept for the reads that follow: a small get
// then costs one pread, where reading the header, the digests and the
// bytes apart cost three (~10 us each here, 7% of a datanode's CPU per
// 4 KiB get). Larger records (a pack threshold above the default) are
// read in parts.
const wholeRecord = 1 << 20

// readPackedMeta reads and checks the header and frame digests of the put
// record at loc. A record of at most wholeRecord bytes is read at once, and
// its chunk's bytes are returned too (nil otherwise).
func readPackedMeta(id rpc.ChunkID, loc packLoc) (Meta, []byte, error) {
	bad := func(why string, args ...any) (Meta, []byte, error) {
		return Meta{}, nil, rpc.Errorf(rpc.Internal, "chunk %s: corrupt metadata in %s at %d: %s", id, loc.p.name, loc.off, fmt.Sprintf(why, args...))
	}
	head := int64(recHeaderSize + len(id))
	var hb, rec []byte
	if loc.n >= head && loc.n <= wholeRecord {
		rec = make([]byte, loc.n)
		if _, err := loc.p.f.ReadAt(rec, loc.off); err != nil {
			return bad("read record: %v", err)
		}
		hb = rec[:head]
	} else {
		hb = make([]byte, head)
		if _, err := loc.p.f.ReadAt(hb, loc.off); err != nil {
			return bad("read header: %v", err)
		}
	}
	h, err := decodeHeader(hb[:recHeaderSize], hb[recHeaderSize:])
	if err != nil {
		return bad("%v", err)
	}
	if h.kind != recPut || h.id != id || h.recLen != loc.n {
		return bad("record of %s, not this chunk's", h.id)
	}
	var data, digests []byte
	if rec != nil {
		data = rec[head : head+h.size]
		digests = rec[head+h.size : head+h.size+h.nframes*sha256.Size]
	} else {
		digests = make([]byte, h.nframes*sha256.Size)
		if _, err := loc.p.f.ReadAt(digests, loc.dataOff(id)+h.size); err != nil {
			return bad("read digests: %v", err)
		}
	}
	if sum := sha256.Sum256(digests); !bytes.Equal(sum[:], h.digest) {
		return bad("frame digests do not match the chunk digest")
	}
	m := Meta{Size: h.size, FrameSize: h.frameSize, Digest: bytes.Clone(h.digest)}
	for i := range h.nframes {
		m.Frames = append(m.Frames, digests[i*sha256.Size:(i+1)*sha256.Size])
	}
	return m, data, nil
}

// quarantinePacked takes packed chunk id, found damaged at loc, out of
// service: out of the index and onto the corrupt list, in memory only
// (its record's CRC catches it again at the next start). Delete drops it
// with a delete record. It reports whether the chunk is now corrupt.
func (s *Store) quarantinePacked(id rpc.ChunkID, loc packLoc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.corrupt, id) {
		return true
	}
	if _, ok := s.index[id]; !ok || s.packed[id] != loc {
		return false
	}
	delete(s.index, id)
	s.chunks--
	s.invalidateLocked(id)
	s.corrupt = append(s.corrupt, id)
	return true
}

// packGone checks whether pack p's file is gone from disk (removed behind
// the node's back); then every chunk in it is lost: dropped from the
// store and returned.
func (s *Store) packGone(p *pack) []rpc.ChunkID {
	if _, err := s.fs.Lstat(p.name); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.packs[p.seq] != p {
		return nil // removed by compaction
	}
	var lost []rpc.ChunkID
	for id, loc := range s.packed {
		if loc.p != p {
			continue
		}
		if _, ok := s.index[id]; ok {
			lost = append(lost, id)
		}
		s.dropPackedLocked(id)
	}
	delete(s.packs, p.seq)
	if s.active == p {
		s.active = nil
	}
	s.used -= p.size
	s.releasePackLocked(p)
	slices.Sort(lost)
	return lost
}

// packLost reports whether packed chunk id's pack is gone; then it drops
// the chunk and returns its *LostError.
func (s *Store) packLost(id rpc.ChunkID) error {
	s.mu.Lock()
	loc, ok := s.packed[id]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if _, err := s.fs.Lstat(loc.p.name); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, stored := s.index[id]; !stored || s.packed[id] != loc || s.packs[loc.p.seq] != loc.p {
		return nil // deleted, moved or quarantined meanwhile
	}
	// The pack's other chunks are left to FindLost, which reports them.
	s.dropPackedLocked(id)
	return &LostError{ID: id, Err: rpc.Errorf(rpc.NotFound, "chunk %s: its pack file %s is missing from disk", id, loc.p.name)}
}

// findLostPacks calls found for every chunk of a pack gone from disk.
func (s *Store) findLostPacks(found func(id rpc.ChunkID, err error)) {
	s.mu.Lock()
	ps := make([]*pack, 0, len(s.packs))
	for _, p := range s.packs {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		for _, id := range s.packGone(p) {
			found(id, &LostError{ID: id, Err: rpc.Errorf(rpc.NotFound, "chunk %s: its pack file %s is missing from disk", id, p.name)})
		}
	}
}

// datasync makes f's data (and its size) durable: fdatasync where f is an
// operating-system file, Sync otherwise.
func datasync(f vfs.File) error {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return f.Sync()
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return f.Sync()
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// parsePackName returns the sequence number of a pack file's name.
func parsePackName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, packSuffix)
	if !ok || base == "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(base, 10, 64)
	return seq, err == nil
}

// isFileLocked reports whether chunk id is stored as a file.
func (s *Store) isFileLocked(id rpc.ChunkID) bool {
	_, stored := s.index[id]
	_, packed := s.packed[id]
	return stored && !packed
}

// Location returns the file that holds chunk id's bytes and the offset of
// its first byte there: its own file (ChunkPath, offset 0), or, for a
// packed chunk, stored or corrupt, its pack file. For operators
// inspecting a node, and for tests that damage a chunk.
func (s *Store) Location(id rpc.ChunkID) (name string, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if loc, ok := s.packed[id]; ok {
		return loc.p.name, loc.dataOff(id)
	}
	return s.path(id), 0
}
