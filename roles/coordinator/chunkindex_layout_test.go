package coordinator

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// TestChunkIndexEntrySize pins the entry's size, which is most of what the
// index costs per chunk (docs/architecture.md, "The chunk index").
func TestChunkIndexEntrySize(t *testing.T) {
	is := is.New(t)
	is.Equal(unsafe.Sizeof(entry{}), uintptr(52)) // bytes per entry
	is.True(maxRepl >= rpc.MaxReplication)        // the flags byte holds any replication
}

// TestChunkIndexDigestPrefix: the index keeps a committed digest's first
// rpc.DigestPrefixSize bytes, so a copy whose digest differs in them is
// bad, and one whose digest differs only after them cannot be told apart
// from a good one (SHA-256 truncated to 128 bits: no accident makes such a
// copy, and reads and repair copies verify the bytes themselves).
func TestChunkIndexDigestPrefix(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	ch := indexChunk(3)
	ch.Digest = make([]byte, rpc.DigestSize)
	for i := range ch.Digest {
		ch.Digest[i] = byte(i + 1)
	}
	withDigest := func(change int) []byte {
		d := bytes.Clone(ch.Digest)
		d[change] ^= 0xff
		return d
	}
	copyOf := func(digest []byte) reportedCopy {
		return reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: digest}
	}
	late, early := withDigest(rpc.DigestPrefixSize), withDigest(rpc.DigestPrefixSize-1)
	a, b, c := testNodeID(1), testNodeID(2), testNodeID(3)

	// Before the commit, a copy's report is kept whole and compared whole
	// with the upload's receipt.
	ix.report(a, inventoryPage{}, []reportedCopy{copyOf(late)}, nil, nil, none)
	good, bad := ix.check(ch)
	is.Equal(good, []rpc.NodeID(nil)) // a copy differing after the prefix is bad against the whole receipt
	is.Equal(bad, []rpc.NodeID{a})

	ix.refs().add(&meta.File{Replication: 3, Chunks: []meta.Chunk{ch}})
	ix.report(b, inventoryPage{}, []reportedCopy{copyOf(early)}, nil, nil, none)
	ix.report(c, inventoryPage{}, []reportedCopy{copyOf(ch.Digest)}, nil, nil, none)
	good, bad = ix.check(ch)
	is.Equal(good, []rpc.NodeID{a, c}) // once committed, a difference after the prefix is not seen
	is.Equal(bad, []rpc.NodeID{b})     // a difference in the prefix marks the copy bad
	copies := ix.copies(ch.ID)
	is.True(copies[a].matches(ch))  // as the health scan and fsck see it
	is.True(!copies[b].matches(ch)) // bad
	is.True(copies[c].matches(ch))
	missing, under, total := ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{0, 1, 1}) // two good copies of three

	other := ch
	other.Digest = early
	good, bad = ix.check(other)
	is.Equal(good, []rpc.NodeID(nil)) // a committed record with another prefix matches no copy
	is.Equal(len(bad), 3)

	r, ok := ix.refs().get(ch.ID)
	is.True(ok)
	is.Equal(r.chunk.Digest, ch.Digest[:rpc.DigestPrefixSize]) // repairs name the chunk by the prefix
	is.True(copies[c].matches(r.chunk))                        // which the good copies match
	is.True(!copies[b].matches(r.chunk))                       // and the bad one does not
}

// TestChunkIndexFrameCodes: frame sizes are kept as one-byte codes; past
// the codes there are, a chunk's frame size is kept beside it, and
// forgotten with it.
func TestChunkIndexFrameCodes(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	const n = 300 // more frame sizes than codes
	var files []*meta.File
	for i := range n {
		ch := indexChunk(i)
		ch.FrameSize = rpc.MinFrameSize + int64(i)
		f := &meta.File{Replication: 1, Chunks: []meta.Chunk{ch}}
		files = append(files, f)
		ix.refs().add(f)
		ix.report(testNodeID(1), inventoryPage{}, []reportedCopy{{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}}, nil, nil, none)
	}
	is.Equal(len(ix.frames.sizes), oddFrame) // every code taken
	is.Equal(len(ix.frames.odd), n-(oddFrame-1))
	for _, f := range files {
		ch := f.Chunks[0]
		good, _ := ix.check(ch)
		is.Equal(good, []rpc.NodeID{testNodeID(1)}) // each chunk's frame size is its own
		r, _ := ix.refs().get(ch.ID)
		is.Equal(r.chunk.FrameSize, ch.FrameSize)
		wrong := ch
		wrong.FrameSize++
		good, _ = ix.check(wrong)
		is.Equal(len(good), 0) // and another frame size does not match
	}
	for _, f := range files {
		ix.refs().remove(f)
	}
	ix.report(testNodeID(1), inventoryPage{first: true, last: true}, nil, nil, nil, none)
	is.Equal(len(ix.frames.odd), 0) // freed slots keep nothing beside
	is.Equal(ix.slotsInUse(), 0)
}

// TestSlotList: a packed list names every slot added, and packing keeps
// each slot once, in order, only those kept, in about a byte per slot when
// the slots are close together.
func TestSlotList(t *testing.T) {
	is := is.New(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var l slotList
	var scratch []byte
	want := map[int32]bool{}
	for i := range 20_000 {
		s := rng.Int32N(30_000)
		l.add(s)
		want[s] = true
		if i%3000 == 0 {
			scratch = l.pack(nil, scratch)
		}
	}
	got := map[int32]bool{}
	l.each(func(s int32) { got[s] = true })
	is.Equal(got, want) // every slot added, before packing
	scratch = l.pack(nil, scratch)
	is.Equal(l.n, len(want))       // packed once each
	is.Equal(len(l.tail), 0)       // the tail is in
	is.True(len(l.packed) < l.n*2) // at most two bytes a slot (mostly one)
	is.Equal(l.slots(), slices.Sorted(maps.Keys(want)))

	even := func(s int32) bool { return s%2 == 0 }
	l.add(2) // a repeat
	l.add(1)
	l.pack(even, scratch)
	var evens []int32
	for s := range want {
		if even(s) {
			evens = append(evens, s)
		}
	}
	evens = append(evens, 2)
	slices.Sort(evens)
	is.Equal(l.slots(), slices.Compact(evens)) // only the slots kept, once each

	l.pack(func(int32) bool { return false }, nil)
	is.Equal(l.len(), 0) // nothing kept
	is.Equal(l.packed, []byte(nil))
}

// TestChunkIndexNodeLists: a node's list stays exact through adds past
// the packing threshold, removals and copies added again, and costs about
// a byte per copy.
func TestChunkIndexNodeLists(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	const n = 5000
	rc := func(i int) reportedCopy {
		ch := indexChunk(i)
		return reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
	}
	a, b := testNodeID(1), testNodeID(2)
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(n) {
		ix.report(a, inventoryPage{}, []reportedCopy{rc(i)}, nil, nil, none)
		ix.report(b, inventoryPage{}, []reportedCopy{rc(i)}, nil, nil, none) // interleaved slots
	}
	is.Equal(ix.perNode()[a], int64(n)) // every copy counted once
	var removed []rpc.ChunkID
	for i := 0; i < n; i += 3 {
		removed = append(removed, testChunkID(i))
	}
	ix.report(a, inventoryPage{}, nil, removed, nil, none)
	for i := 0; i < n; i += 9 {
		ix.report(a, inventoryPage{}, []reportedCopy{rc(i)}, nil, nil, none) // some back again
	}
	want := map[rpc.ChunkID]bool{}
	for i := range n {
		if i%3 != 0 || i%9 == 0 {
			want[testChunkID(i)] = true
		}
	}
	is.Equal(ix.perNode()[a], int64(len(want))) // counted exactly
	got := ix.chunksOn(a)
	is.Equal(len(got), len(want)) // listed once each
	for _, id := range got {
		is.True(want[id]) // and only those held
	}
	na := ix.node(a, false)
	is.True(len(ix.holders[na].slots.packed) <= 2*len(want)) // a byte or two per copy
	ix.report(a, inventoryPage{first: true, last: true}, nil, nil, nil, none)
	is.Equal(len(ix.chunksOn(a)), 0)    // a full inventory forgets them all
	is.Equal(ix.perNode()[b], int64(n)) // and only a's
}
