package coordinator

import (
	"iter"
	"maps"

	"github.com/dfs-project/dfs/rpc"
)

// This file gives today's locations and refIndex what the health queue
// needs from them: the chunks on given nodes, and cursors that walk the
// indexes a slice at a time without cloning them. The compact index
// (issue 12) provides the same with chunksOn and scanFrom; this file goes
// when it lands.

// chunksOn returns every chunk with a copy, counted or held apart, on one
// of the given nodes. It walks every chunk (the compact index keeps
// per-node lists instead).
func (l *locations) chunksOn(nodes map[rpc.NodeID]bool) []rpc.ChunkID {
	if len(nodes) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rpc.ChunkID
	for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{l.m, l.held} {
		for id, reps := range in {
			for n := range reps {
				if nodes[n] {
					out = append(out, id)
					break
				}
			}
		}
	}
	return out
}

// reportedCount returns how many chunks have a counted copy.
func (l *locations) reportedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// get returns the referenced chunk id.
func (r *refIndex) get(id rpc.ChunkID) (ref, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	x, ok := r.refs[id]
	return x, ok
}

// mapCursor walks a map guarded by a mutex a slice at a time: the walk is
// one range over the map, paused between slices (iter.Pull) and resumed
// only under the mutex, so every entry present for the whole walk is
// visited exactly once, entries removed before they are reached are not,
// and entries added meanwhile may or may not be (the Go spec's guarantees
// for a map modified during a range). Nothing is copied.
//
// A cursor is used by one goroutine at a time; stop releases it.
type mapCursor[K comparable, V any] struct {
	m    map[K]V
	next func() (K, V, bool)
	stop func()
}

// step visits up to max entries, calling fn for each; the caller holds
// the map's mutex, and fn must not call back into its owner. It returns
// true when the walk reached the end of the map (the next step starts a
// new walk).
func (c *mapCursor[K, V]) step(max int, fn func(K, V)) (wrapped bool) {
	if c.next == nil {
		c.next, c.stop = iter.Pull2(maps.All(c.m))
	}
	for range max {
		k, v, ok := c.next()
		if !ok {
			c.close()
			return true
		}
		fn(k, v)
	}
	return false
}

// close ends the walk under way, if any.
func (c *mapCursor[K, V]) close() {
	if c.stop != nil {
		c.stop()
	}
	c.next, c.stop = nil, nil
}

// refCursor walks the referenced chunks a slice at a time.
type refCursor struct {
	r *refIndex
	c mapCursor[rpc.ChunkID, ref]
}

func newRefCursor(r *refIndex) *refCursor {
	return &refCursor{r: r, c: mapCursor[rpc.ChunkID, ref]{m: r.refs}}
}

// step calls fn, under the index's lock, for up to max referenced chunks
// after the last step's; it reports whether the walk wrapped around.
func (c *refCursor) step(max int, fn func(ref)) bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return c.c.step(max, func(_ rpc.ChunkID, x ref) { fn(x) })
}

func (c *refCursor) close() {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.c.close()
}

// reportedCursor walks the chunks with a counted copy a slice at a time.
type reportedCursor struct {
	l *locations
	c mapCursor[rpc.ChunkID, map[rpc.NodeID]replicaMeta]
}

func newReportedCursor(l *locations) *reportedCursor {
	return &reportedCursor{l: l, c: mapCursor[rpc.ChunkID, map[rpc.NodeID]replicaMeta]{m: l.m}}
}

// step calls fn, under the locations' lock, for up to max chunks with a
// counted copy after the last step's; it reports whether the walk wrapped
// around.
func (c *reportedCursor) step(max int, fn func(rpc.ChunkID)) bool {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.c.step(max, func(id rpc.ChunkID, _ map[rpc.NodeID]replicaMeta) { fn(id) })
}

func (c *reportedCursor) close() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.c.close()
}

// unreferenced returns the chunks of ids no committed file references.
func (r *refIndex) unreferenced(ids []rpc.ChunkID) []rpc.ChunkID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []rpc.ChunkID
	for _, id := range ids {
		if _, ok := r.refs[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// whole clears ok[i] unless xs[i]'s chunk has exactly the copies it
// wants, every one of them good and counting (counts tells whether a good
// copy on a node counts: the node live and not draining); an ok[i]
// already false is left alone. For such a chunk repair.Assess finds
// nothing to do and nothing to count: no copy short or surplus, none bad
// or corrupt. It copies nothing, so the paced pass checks a healthy chunk
// without the cost of a full assessment.
func (l *locations) whole(xs []ref, ok []bool, counts func(rpc.NodeID) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range xs {
		if ok[i] {
			ok[i] = l.wholeLocked(x, counts)
		}
	}
}

func (l *locations) wholeLocked(x ref, counts func(rpc.NodeID) bool) bool {
	reps := l.m[x.chunk.ID]
	if len(reps) != int(x.repl) {
		return false
	}
	for n, m := range reps {
		if !m.matches(x.chunk) || !counts(n) {
			return false
		}
	}
	return true
}
