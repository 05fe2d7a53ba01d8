package gc

import (
	"cmp"
	"iter"
	"slices"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// Orphan is a copy of a chunk that nothing needs: the deletion of Chunk on
// Node.
type Orphan struct {
	Node  rpc.NodeID
	Chunk rpc.ChunkID
}

// Inventory is what Orphans looks at: the chunks the datanodes hold, what
// still needs them, and since when the ones nothing needs have been seen.
type Inventory struct {
	// Reported yields every chunk the datanodes report holding, each
	// once, with the nodes holding it; copies whose deletion is already
	// queued are left out (they are being collected).
	Reported iter.Seq2[rpc.ChunkID, []rpc.NodeID]
	// Referenced reports whether a committed file references a chunk.
	// Nil: none does.
	Referenced func(rpc.ChunkID) bool
	// Placed reports whether an open upload placed a chunk. Nil: none did.
	Placed func(rpc.ChunkID) bool
	// Claimed reports whether an open upload recognizes a chunk as its own
	// by its ID alone: a session loaded from the store after a restart or
	// a takeover knows only its header, not what it placed before. It is
	// asked only about the chunks past their grace. Nil: none does.
	Claimed func(rpc.ChunkID) bool
	// FirstSeen is when each reported chunk that nothing needed was first
	// seen, as the previous call returned it; nil at first. Orphans does
	// not modify it.
	FirstSeen map[rpc.ChunkID]time.Time
	// Grace is how long a chunk nothing needs is kept after it was first
	// seen: an upload may place it between two looks.
	Grace time.Duration
	// Now is the time of this look.
	Now time.Time
}

// Orphans returns the copies of the reported chunks that no committed file
// references and no open upload placed or claims, first seen Grace or more
// before Now, sorted by chunk then node; and when each reported chunk that
// nothing needs was first seen, to pass in next time. A chunk not seen
// before is first seen Now, so it is never an orphan at its first look,
// even with no grace; a chunk needed again, or no longer reported, is
// forgotten, and starts over if it comes back.
func Orphans(in Inventory) (orphans []Orphan, firstSeen map[rpc.ChunkID]time.Time) {
	has := func(f func(rpc.ChunkID) bool, id rpc.ChunkID) bool { return f != nil && f(id) }
	firstSeen = map[rpc.ChunkID]time.Time{}
	for id, nodes := range in.Reported {
		if has(in.Referenced, id) || has(in.Placed, id) {
			continue
		}
		first, ok := in.FirstSeen[id]
		if !ok {
			first = in.Now
		}
		firstSeen[id] = first
		if !ok || in.Now.Sub(first) < in.Grace || has(in.Claimed, id) {
			continue
		}
		for _, n := range nodes {
			orphans = append(orphans, Orphan{Node: n, Chunk: id})
		}
	}
	slices.SortFunc(orphans, func(a, b Orphan) int {
		return cmp.Or(cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Node, b.Node))
	})
	return orphans, firstSeen
}
