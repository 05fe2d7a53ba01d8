package coordinator

import (
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// TestHealCursors: the paced pass's cursors walk the index a slice at a
// time while chunks come and go: every chunk present for the whole walk is
// visited exactly once, a chunk removed before it was reached is not, and
// the end is reported once; then a new walk starts.
func TestHealCursors(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	notQueued := func(rpc.ChunkID) bool { return false }
	file := func(from, to int) *meta.File {
		f := &meta.File{Replication: 1}
		for i := from; i < to; i++ {
			f.Chunks = append(f.Chunks, indexChunk(i))
		}
		return f
	}
	report := func(from, to int) {
		var added []reportedCopy
		for i := from; i < to; i++ {
			c := indexChunk(i)
			added = append(added, reportedCopy{id: c.ID, size: c.Size, frameSize: c.FrameSize, digest: c.Digest})
		}
		ix.report(testNodeID(1), inventoryPage{}, added, nil, nil, notQueued)
	}
	keep, drop := file(0, 300), file(300, 600)
	ix.refs().add(keep)
	ix.refs().add(drop)
	report(0, 600)

	refs, reported := newRefCursor(ix.refs()), newReportedCursor(ix)
	for name, step := range map[string]func(int, func(rpc.ChunkID)) bool{
		"refs":     func(n int, fn func(rpc.ChunkID)) bool { return refs.step(n, func(r ref) { fn(r.chunk.ID) }) },
		"reported": reported.step,
	} {
		seen := map[rpc.ChunkID]int{}
		removed := map[rpc.ChunkID]bool{}
		wraps, steps, late := 0, 0, 0
		for wraps == 0 && steps < 1000 {
			if step(7, func(id rpc.ChunkID) {
				seen[id]++
				if removed[id] {
					late++
				}
			}) {
				wraps++
			}
			steps++
			// Between steps: the last chunk of drop goes, its copy too.
			if n := len(drop.Chunks); n > 0 {
				gone := drop.Chunks[n-1]
				drop.Chunks = drop.Chunks[:n-1]
				ix.refs().remove(&meta.File{Replication: 1, Chunks: []meta.Chunk{gone}})
				ix.report(testNodeID(1), inventoryPage{}, nil, []rpc.ChunkID{gone.ID}, nil, notQueued)
				removed[gone.ID] = true
			}
		}
		is.Equal(wraps, 1) // the walk ended
		for _, c := range keep.Chunks {
			is.Equal(seen[c.ID], 1) // every lasting chunk once
		}
		for _, n := range seen {
			is.Equal(n, 1) // nothing twice
		}
		is.Equal(late, 0) // nothing removed before it was reached
		t.Logf("%s: %d steps, %d visited", name, steps, len(seen))
		// The pass walked every lasting chunk; drop's are re-added for the next cursor.
		drop = file(300, 600)
		ix.refs().add(drop)
		report(300, 600)
	}
}

// TestHealCursorChecks: the paced pass's cursors check what they read
// under the index's lock: stepWhole tells a chunk with exactly its copies,
// all counting, from one short or with a copy on a node that does not
// count; stepUnreferenced hands over only the chunks no file references,
// counting every chunk it looked at.
func TestHealCursorChecks(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	notQueued := func(rpc.ChunkID) bool { return false }
	f := &meta.File{Replication: 2}
	for i := range 10 {
		f.Chunks = append(f.Chunks, indexChunk(i))
	}
	ix.refs().add(f)
	copies := func(from, to int) []reportedCopy {
		var out []reportedCopy
		for i := from; i < to; i++ {
			if i == 3 || i == 5 {
				continue
			}
			c := indexChunk(i)
			out = append(out, reportedCopy{id: c.ID, size: c.Size, frameSize: c.FrameSize, digest: c.Digest})
		}
		return out
	}
	one := func(i int) []reportedCopy {
		c := indexChunk(i)
		return []reportedCopy{{id: c.ID, size: c.Size, frameSize: c.FrameSize, digest: c.Digest}}
	}
	ix.report(testNodeID(1), inventoryPage{}, append(copies(0, 10), one(3)[0], one(5)[0]), nil, nil, notQueued)
	ix.report(testNodeID(2), inventoryPage{}, copies(0, 10), nil, nil, notQueued)    // chunk 3: one copy of 2
	ix.report(testNodeID(3), inventoryPage{}, one(5), nil, nil, notQueued)           // chunk 5: its second copy on a node that does not count
	ix.report(testNodeID(1), inventoryPage{}, copies(100, 105), nil, nil, notQueued) // orphans

	counts := func(n rpc.NodeID) bool { return n != testNodeID(3) }
	got := map[rpc.ChunkID]bool{}
	cur := newRefCursor(ix.refs())
	for steps := 0; ; steps++ {
		is.True(steps < 10) // bounded
		if cur.stepWhole(4, counts, func(r ref, whole bool) { got[r.chunk.ID] = whole }) {
			break
		}
	}
	is.Equal(len(got), 10) // every referenced chunk
	for i := range 10 {
		is.Equal(got[indexChunk(i).ID], i != 3 && i != 5) // whole unless short or on a node that does not count
	}

	orphans := map[rpc.ChunkID]bool{}
	rep, visited := newReportedCursor(ix), 0
	for steps := 0; ; steps++ {
		is.True(steps < 10) // bounded
		n, wrapped := rep.stepUnreferenced(4, func(id rpc.ChunkID) { orphans[id] = true })
		is.True(n <= 4) // at most limit looked at
		visited += n
		if wrapped {
			break
		}
	}
	is.Equal(visited, 15) // 10 referenced and 5 unreferenced chunks with a counted copy
	is.Equal(len(orphans), 5)
	for i := 100; i < 105; i++ {
		is.True(orphans[indexChunk(i).ID]) // only what no file references
	}
}
