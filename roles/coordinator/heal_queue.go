package coordinator

import (
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// healQueue is the set of chunks whose health may have changed since the
// health scan last assessed them: the term's parts mark a chunk when its
// copies change (reported added, removed, corrupt or lost; counted after
// a repair), when a commit adds or drops its file, and mark every chunk
// a node held when its copies are forgotten. A mark is made after the
// change it announces, never before: the tick that takes it must see the
// change. The scan assesses
// every marked chunk at its next tick. Node states (dead, back, draining)
// the scan notices itself, by comparing the registry between ticks.
//
// Until the scan's first pass starts (the term begins in safe mode, and
// that pass looks at every chunk anyway) marks are not kept, so reports
// of a whole cluster's copies build no set. A nil queue marks nothing.
type healQueue struct {
	locs *locations

	mu    sync.Mutex
	live  bool // the first pass has started
	dirty map[rpc.ChunkID]struct{}
}

func newHealQueue(locs *locations) *healQueue {
	return &healQueue{locs: locs, dirty: map[rpc.ChunkID]struct{}{}}
}

// chunks marks chunks for the next tick.
func (q *healQueue) chunks(ids ...rpc.ChunkID) {
	if q == nil || len(ids) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.live {
		return
	}
	for _, id := range ids {
		q.dirty[id] = struct{}{}
	}
}

// file marks every chunk of f (committed, replaced or removed).
func (q *healQueue) file(f *meta.File) {
	if q == nil || f == nil {
		return
	}
	ids := make([]rpc.ChunkID, len(f.Chunks))
	for i, c := range f.Chunks {
		ids[i] = c.ID
	}
	q.chunks(ids...)
}

// report returns what marks the chunks of a datanode's report: to call
// once the report is applied (a tick between the mark and the change
// would see the copies as they were, and clear the mark). The copies a
// full inventory's last page forgets are marked by the caller
// (chunkIndex.sweepInventory returns them).
func (q *healQueue) report(r chunkReport) (mark func()) {
	if q == nil {
		return func() {}
	}
	var ids []rpc.ChunkID
	for _, a := range r.added {
		ids = append(ids, a.id)
	}
	ids = append(ids, r.removed...)
	ids = append(ids, r.corrupt...)
	return func() { q.chunks(ids...) }
}

// on returns every chunk on the given nodes, to mark once their copies
// are dropped.
func (q *healQueue) on(nodes map[rpc.NodeID]bool) []rpc.ChunkID {
	if len(nodes) == 0 || !q.started() {
		return nil
	}
	return q.locs.chunksOnAny(nodes)
}

// nodes marks every chunk on the given nodes, whose state changed.
func (q *healQueue) nodes(nodes map[rpc.NodeID]bool) { q.chunks(q.on(nodes)...) }

func (q *healQueue) started() bool {
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live
}

// start starts keeping marks.
func (q *healQueue) start() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.live = true
}

// take returns the marked chunks and clears the marks.
func (q *healQueue) take() map[rpc.ChunkID]struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.dirty
	q.dirty = map[rpc.ChunkID]struct{}{}
	return out
}

// len returns how many chunks are marked.
func (q *healQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.dirty)
}
