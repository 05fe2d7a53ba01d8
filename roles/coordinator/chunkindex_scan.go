package coordinator

import (
	"github.com/dfs-project/dfs/rpc"
)

// What the health scan needs of the chunk index beyond the locations'
// and references' vocabulary: the chunks on given nodes, references by
// ID, and cursors that walk the index a slice at a time without cloning
// it (see heal.go).

// chunksOnAny returns every chunk with a copy, counted or held apart, on
// one of nodes, in O(those nodes' copies).
func (ix *chunkIndex) chunksOnAny(nodes map[rpc.NodeID]bool) []rpc.ChunkID {
	if len(nodes) == 1 {
		for n := range nodes {
			return ix.chunksOn(n)
		}
	}
	seen := map[rpc.ChunkID]bool{}
	var out []rpc.ChunkID
	for n := range nodes {
		for _, id := range ix.chunksOn(n) {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// slotsInUse returns how many chunks the index holds, referenced or
// reported: the length of a pass over reported chunks.
func (ix *chunkIndex) slotsInUse() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return int(ix.used) - len(ix.free)
}

// get returns the referenced chunk id.
func (r *refIndex) get(id rpc.ChunkID) (ref, bool) {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.lookup(id)
	if s < 0 || ix.at(s).refs == 0 {
		return ref{}, false
	}
	return ix.refOf(s, make([]byte, rpc.DigestPrefixSize)), true
}

// refCursor walks the referenced chunks a slice at a time, in slot order.
type refCursor struct {
	ix  *chunkIndex
	pos int32
}

func newRefCursor(r *refIndex) *refCursor { return &refCursor{ix: r.ix()} }

// step calls fn, outside the index's lock, for up to limit referenced
// chunks after the last step's; it reports whether the walk reached the
// end (the next step starts over).
func (c *refCursor) step(limit int, fn func(ref)) (wrapped bool) {
	c.pos = c.ix.scanFrom(c.pos, limit, nil, func(r ref, _ bool) { fn(r) })
	return c.pos == 0
}

// stepWhole is step, fn also told whether the chunk was whole when the
// slice was read (see wholeSlot; counts as there): the paced pass reads
// the chunks and checks them under one lock, without looking each up again.
func (c *refCursor) stepWhole(limit int, counts func(rpc.NodeID) bool, fn func(r ref, whole bool)) (wrapped bool) {
	c.pos = c.ix.scanFrom(c.pos, limit, counts, fn)
	return c.pos == 0
}

func (c *refCursor) close() { c.pos = 0 }

// reportedCursor walks the chunks with a counted copy a slice at a time.
type reportedCursor struct {
	ix  *chunkIndex
	pos int32
}

func newReportedCursor(l *locations) *reportedCursor { return &reportedCursor{ix: l} }

// step calls fn, outside the index's lock, for up to limit chunks with a
// counted copy after the last step's; it reports whether the walk
// reached the end.
func (c *reportedCursor) step(limit int, fn func(rpc.ChunkID)) (wrapped bool) {
	_, wrapped = c.walk(limit, false, fn)
	return wrapped
}

// stepUnreferenced is step, fn called only for the chunks no committed
// file referenced when the slice was read (orphan candidates), which are
// told apart under the same lock; it returns how many chunks it looked
// at.
func (c *reportedCursor) stepUnreferenced(limit int, fn func(rpc.ChunkID)) (visited int, wrapped bool) {
	return c.walk(limit, true, fn)
}

func (c *reportedCursor) walk(limit int, unreferenced bool, fn func(rpc.ChunkID)) (visited int, wrapped bool) {
	var ids []rpc.ChunkID
	c.ix.mu.Lock()
	s := max(c.pos, 0)
	for ; s < c.ix.used && visited < limit; s++ {
		if c.ix.counted(s) > 0 {
			visited++
			if !unreferenced || c.ix.at(s).refs == 0 {
				ids = append(ids, c.ix.idOf(s))
			}
		}
	}
	if s >= c.ix.used {
		s = 0
	}
	c.ix.mu.Unlock()
	c.pos = s
	for _, id := range ids {
		fn(id)
	}
	return visited, s == 0
}

func (c *reportedCursor) close() { c.pos = 0 }

// wholeSlot reports whether slot s's committed chunk has exactly repl
// copies counted, every one of them good and counting (counts tells
// whether a good copy on a node counts: the node live and not draining).
// For such a chunk repair.Assess finds nothing to do and nothing to
// count, so the paced pass checks a healthy chunk without the cost of a
// full assessment. The lock is held.
func (ix *chunkIndex) wholeSlot(s int32, repl uint32, counts func(rpc.NodeID) bool) bool {
	if ix.at(s).flags&entryCommitted == 0 {
		return false
	}
	n, good := 0, true
	ix.eachCopy(s, func(c copyRef) {
		if c&copyHeld != 0 {
			return // not counted
		}
		n++
		if c&(copyCorrupt|copyBad|copyPending) != 0 || !counts(ix.holders[c.node()].id) {
			good = false
		}
	})
	return good && n == int(repl)
}
