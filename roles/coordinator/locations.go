package coordinator

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// replicaMeta is what a datanode reported about its copy of a chunk.
type replicaMeta struct {
	size      int64
	frameSize int64
	digest    []byte
	corrupt   bool // failed verification on the node; not served
}

// reportedCopy is one chunk copy a datanode reports storing.
type reportedCopy struct {
	id              rpc.ChunkID
	size, frameSize int64
	digest          []byte
}

// matches reports whether the copy is a good copy of ch.
func (m replicaMeta) matches(ch meta.Chunk) bool {
	return !m.corrupt && m.size == ch.Size && m.frameSize == ch.FrameSize && bytes.Equal(m.digest, ch.Digest)
}

// locations records, from the datanodes' own reports, which nodes hold
// each chunk and what they hold. Waiters are woken on every change.
//
// Copies whose deletion is queued are held apart: they are still on their
// nodes' disks (for --gc-delay, or until their node is back), but they are
// not counted, listed or served. The health scan takes one back (restore)
// when its chunk needs it after all.
type locations struct {
	mu      sync.Mutex
	m       map[rpc.ChunkID]map[rpc.NodeID]replicaMeta
	held    map[rpc.ChunkID]map[rpc.NodeID]replicaMeta
	changed chan struct{} // closed and replaced on every change
}

func newLocations() *locations {
	return &locations{
		m:       make(map[rpc.ChunkID]map[rpc.NodeID]replicaMeta),
		held:    make(map[rpc.ChunkID]map[rpc.NodeID]replicaMeta),
		changed: make(chan struct{}),
	}
}

// set records what node holds of id in one of the maps.
func set(in map[rpc.ChunkID]map[rpc.NodeID]replicaMeta, id rpc.ChunkID, node rpc.NodeID, m replicaMeta) {
	reps := in[id]
	if reps == nil {
		reps = make(map[rpc.NodeID]replicaMeta, 3)
		in[id] = reps
	}
	reps[node] = m
}

// drop removes node's copy of id from one of the maps and returns it.
func drop(in map[rpc.ChunkID]map[rpc.NodeID]replicaMeta, id rpc.ChunkID, node rpc.NodeID) (replicaMeta, bool) {
	reps := in[id]
	m, ok := reps[node]
	if ok {
		delete(reps, node)
		if len(reps) == 0 {
			delete(in, id)
		}
	}
	return m, ok
}

// copies returns every reported copy of id.
func (l *locations) copies(id rpc.ChunkID) map[rpc.NodeID]replicaMeta {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m[id])
}

// each calls fn for every chunk with reported copies, under the lock: fn
// must be quick and must not call l.
func (l *locations) each(fn func(id rpc.ChunkID, copies map[rpc.NodeID]replicaMeta)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, reps := range l.m {
		fn(id, reps)
	}
}

// reported returns every chunk with reported copies and the nodes
// holding them.
func (l *locations) reported() map[rpc.ChunkID][]rpc.NodeID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[rpc.ChunkID][]rpc.NodeID, len(l.m))
	for id, reps := range l.m {
		out[id] = slices.Collect(maps.Keys(reps))
	}
	return out
}

// forget holds apart copies the coordinator has decided to delete, so
// that the decision is not taken twice.
func (l *locations) forget(dels []meta.Deletion) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range dels {
		if m, ok := drop(l.m, d.Chunk, d.Node); ok {
			set(l.held, d.Chunk, d.Node, m)
		}
	}
	l.notifyLocked()
}

// perNode returns how many copies, counted or held apart, each node is
// known to hold.
func (l *locations) perNode() map[rpc.NodeID]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[rpc.NodeID]int64{}
	for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{l.m, l.held} {
		for _, reps := range in {
			for n := range reps {
				out[n]++
			}
		}
	}
	return out
}

// heldCopies returns the copies of id held apart, awaiting deletion.
func (l *locations) heldCopies(id rpc.ChunkID) map[rpc.NodeID]replicaMeta {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.held[id])
}

// restore counts a held copy again (its deletion was called off).
func (l *locations) restore(node rpc.NodeID, id rpc.ChunkID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m, ok := drop(l.held, id, node); ok {
		set(l.m, id, node, m)
		l.notifyLocked()
	}
}

func (l *locations) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// report applies one datanode report. A full report first forgets every
// chunk the node was thought to hold. A copy for which queued is true (its
// deletion is queued) is held apart: it stays on the node's disk until GC
// gets to it, so reports still list it, and counted again it would be
// trimmed a second time. Corrupt chunks keep their copy on record, marked,
// until the coordinator has it deleted.
func (l *locations) report(node rpc.NodeID, full bool, added []reportedCopy, removed, corrupt []rpc.ChunkID, queued func(rpc.ChunkID) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if full {
		for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{l.m, l.held} {
			for id, reps := range in {
				delete(reps, node)
				if len(reps) == 0 {
					delete(in, id)
				}
			}
		}
	}
	for _, a := range added {
		id := a.id
		m := replicaMeta{size: a.size, frameSize: a.frameSize, digest: bytes.Clone(a.digest)}
		if queued(id) {
			drop(l.m, id, node)
			set(l.held, id, node, m)
		} else {
			drop(l.held, id, node)
			set(l.m, id, node, m)
		}
	}
	for _, id := range removed {
		drop(l.m, id, node)
		drop(l.held, id, node)
	}
	for _, id := range corrupt {
		if _, ok := l.held[id][node]; ok {
			continue // on its way out already
		}
		m := l.m[id][node]
		m.corrupt = true
		set(l.m, id, node, m)
	}
	l.notifyLocked()
}

// lost stops counting node's copy of id, which the node says it does not
// hold; it reports whether the copy was counted. A copy held apart is
// left alone: its deletion is queued and will find it gone.
func (l *locations) lost(node rpc.NodeID, id rpc.ChunkID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := drop(l.m, id, node); !ok {
		return false
	}
	l.notifyLocked()
	return true
}

// dropNodes forgets every copy, counted or held apart, on the given nodes,
// in one pass over the chunks.
func (l *locations) dropNodes(nodes map[rpc.NodeID]bool) {
	if len(nodes) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{l.m, l.held} {
		for id, reps := range in {
			for n := range reps {
				if nodes[n] {
					delete(reps, n)
				}
			}
			if len(reps) == 0 {
				delete(in, id)
			}
		}
	}
	l.notifyLocked()
}

// count returns how many nodes reported a copy of id.
func (l *locations) count(id rpc.ChunkID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m[id])
}

// nodes returns the nodes holding a copy of id, sorted.
func (l *locations) nodes(id rpc.ChunkID) []rpc.NodeID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]rpc.NodeID, 0, len(l.m[id]))
	for n := range l.m[id] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// check returns the nodes whose copy of ch has its size, frame size and
// digest, and the nodes whose copy differs.
func (l *locations) check(ch meta.Chunk) (good, bad []rpc.NodeID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, m := range l.m[ch.ID] {
		if m.matches(ch) {
			good = append(good, n)
		} else {
			bad = append(bad, n)
		}
	}
	slices.Sort(good)
	slices.Sort(bad)
	return good, bad
}

// wait blocks until ready returns true (checked after every change) or ctx
// ends.
func (l *locations) wait(ctx context.Context, ready func() bool) error {
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// deletionsFor lists, for every allocation not kept, a deletion on each
// node it was placed on or reported by.
func (l *locations) deletionsFor(allocs []meta.Allocation, kept map[rpc.ChunkID]bool) []meta.Deletion {
	var out []meta.Deletion
	for _, a := range allocs {
		if kept[a.ID] {
			continue
		}
		seen := map[rpc.NodeID]bool{}
		for _, n := range append(slices.Clone(a.Nodes), l.nodes(a.ID)...) {
			if !seen[n] {
				seen[n] = true
				out = append(out, meta.Deletion{Node: n, Chunk: a.ID})
			}
		}
	}
	return out
}

// deletionsOf lists a deletion for every reported copy of f's chunks.
func (l *locations) deletionsOf(f *meta.File) []meta.Deletion {
	var out []meta.Deletion
	for _, ch := range f.Chunks {
		for _, n := range l.nodes(ch.ID) {
			out = append(out, meta.Deletion{Node: n, Chunk: ch.ID})
		}
	}
	return out
}
