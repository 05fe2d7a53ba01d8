package chunkstore

import (
	"container/list"
	"sync/atomic"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// maxOpenChunks bounds the chunk files a Store keeps open between reads.
// A read of a few frames otherwise pays more for opening the file and
// reading and hashing its metadata than for its frames.
const maxOpenChunks = 64

// openChunk is a chunk file kept open with its checked metadata, shared
// by the readers that Open returned it to. Its fields are guarded by the
// Store's mu.
type openChunk struct {
	id   rpc.ChunkID
	f    vfs.File
	meta Meta
	refs int           // holders: each Chunk not yet closed, and the cache while it lists it
	elem *list.Element // in Store.openLRU; nil once out of the cache
}

// sharedFile is a reader's handle on an openChunk: it reads the shared
// file, and its Close lets go of it (closing the file when the cache and
// every other reader have let go too).
type sharedFile struct {
	vfs.File
	s      *Store
	oc     *openChunk
	closed atomic.Bool
}

// Close lets go of the shared file; it is idempotent.
func (f *sharedFile) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.s.releaseLocked(f.oc)
}

// releaseLocked drops one hold on oc, and closes its file after the last.
func (s *Store) releaseLocked(oc *openChunk) error {
	oc.refs--
	if oc.refs > 0 {
		return nil
	}
	return oc.f.Close()
}

// cachedLocked returns a reader's handle on the open file of chunk id, if
// the store keeps one.
func (s *Store) cachedLocked(id rpc.ChunkID) (*Chunk, bool) {
	oc := s.open[id]
	if oc == nil {
		return nil, false
	}
	oc.refs++
	s.openLRU.MoveToFront(oc.elem)
	return &Chunk{File: &sharedFile{File: oc.f, s: s, oc: oc}, Meta: oc.meta, ID: id}, true
}

// keep adds chunk id's file f, just opened and its metadata m checked, to
// the files kept open, unless the chunk was deleted, quarantined or found
// gone since gen (Store.openGen) was read, or another reader added it
// first; it returns the reader's handle, on the kept file or on f alone.
func (s *Store) keep(id rpc.ChunkID, f vfs.File, m Meta, gen uint64) *Chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[id]; !ok || s.openGen != gen || s.open[id] != nil || s.deleting[id] > 0 {
		return &Chunk{File: f, Meta: m, ID: id}
	}
	oc := &openChunk{id: id, f: f, meta: m, refs: 2}
	oc.elem = s.openLRU.PushFront(oc)
	s.open[id] = oc
	for s.openLRU.Len() > maxOpenChunks {
		s.forgetLocked(s.openLRU.Back().Value.(*openChunk))
	}
	return &Chunk{File: &sharedFile{File: f, s: s, oc: oc}, Meta: m, ID: id}
}

// forgetLocked takes oc out of the files kept open; its file closes when
// its last reader lets go.
func (s *Store) forgetLocked(oc *openChunk) {
	if oc.elem == nil {
		return
	}
	s.openLRU.Remove(oc.elem)
	oc.elem = nil
	delete(s.open, oc.id)
	s.releaseLocked(oc)
}

// invalidateLocked closes the kept file of chunk id, if any (after its
// readers let go), and makes Open calls under way not keep theirs: the
// chunk is being deleted, was quarantined or found gone.
func (s *Store) invalidateLocked(id rpc.ChunkID) {
	s.openGen++
	if oc := s.open[id]; oc != nil {
		s.forgetLocked(oc)
	}
}

// CloseFiles closes the chunk files the store keeps open between reads
// (after the readers that hold them let go); later reads open them again.
// A node calls it as it stops.
func (s *Store) CloseFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.openLRU.Len() > 0 {
		s.forgetLocked(s.openLRU.Back().Value.(*openChunk))
	}
}
