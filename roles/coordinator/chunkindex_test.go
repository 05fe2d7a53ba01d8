package coordinator

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// indexModel is the index's contract written plainly, in maps (as the
// coordinator kept it before the compact index): the counted copies, the
// held ones, and the references.
type indexModel struct {
	m, held map[rpc.ChunkID]map[rpc.NodeID]replicaMeta
	refs    map[rpc.ChunkID]int
	chunks  map[rpc.ChunkID]meta.Chunk
	repl    map[rpc.ChunkID]uint32
	files   int
	seen    map[rpc.NodeID]map[rpc.ChunkID]bool // while a node's inventory is under way: the copies reports listed
}

func newIndexModel() *indexModel {
	return &indexModel{
		m: map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{}, held: map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{},
		refs: map[rpc.ChunkID]int{}, chunks: map[rpc.ChunkID]meta.Chunk{}, repl: map[rpc.ChunkID]uint32{},
		seen: map[rpc.NodeID]map[rpc.ChunkID]bool{},
	}
}

func (x *indexModel) set(in map[rpc.ChunkID]map[rpc.NodeID]replicaMeta, id rpc.ChunkID, n rpc.NodeID, m replicaMeta) {
	if in[id] == nil {
		in[id] = map[rpc.NodeID]replicaMeta{}
	}
	in[id][n] = m
}

func (x *indexModel) drop(in map[rpc.ChunkID]map[rpc.NodeID]replicaMeta, id rpc.ChunkID, n rpc.NodeID) bool {
	_, ok := in[id][n]
	delete(in[id], n)
	if len(in[id]) == 0 {
		delete(in, id)
	}
	return ok
}

func (x *indexModel) see(n rpc.NodeID, id rpc.ChunkID) {
	if seen, ok := x.seen[n]; ok {
		seen[id] = true
	}
}

func (x *indexModel) report(n rpc.NodeID, p inventoryPage, added []reportedCopy, removed, corrupt []rpc.ChunkID, queued func(rpc.ChunkID) bool) (swept []rpc.ChunkID) {
	if p.first {
		x.seen[n] = map[rpc.ChunkID]bool{}
	}
	for _, a := range added {
		x.see(n, a.id)
		m := replicaMeta{size: a.size, frameSize: a.frameSize, digest: a.digest}
		if queued(a.id) {
			x.drop(x.m, a.id, n)
			x.set(x.held, a.id, n, m)
		} else {
			x.drop(x.held, a.id, n)
			x.set(x.m, a.id, n, m)
		}
	}
	for _, id := range removed {
		x.drop(x.m, id, n)
		x.drop(x.held, id, n)
	}
	for _, id := range corrupt {
		x.see(n, id)
		if _, ok := x.held[id][n]; ok {
			continue
		}
		m := x.m[id][n]
		m.corrupt = true
		x.set(x.m, id, n, m)
	}
	if seen, ok := x.seen[n]; ok && p.last {
		delete(x.seen, n)
		for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{x.m, x.held} {
			for id := range in {
				if _, ok := in[id][n]; ok && !seen[id] {
					x.drop(in, id, n)
					swept = append(swept, id)
				}
			}
		}
	}
	slices.Sort(swept)
	return swept
}

func (x *indexModel) good(id rpc.ChunkID) (good, bad []rpc.NodeID) {
	good, bad = []rpc.NodeID{}, []rpc.NodeID{}
	for n, m := range x.m[id] {
		if m.matches(x.chunks[id]) {
			good = append(good, n)
		} else {
			bad = append(bad, n)
		}
	}
	slices.Sort(good)
	slices.Sort(bad)
	return good, bad
}

func (x *indexModel) counts() (missing, under, total int) {
	for id := range x.refs {
		total++
		switch g, _ := x.good(id); {
		case len(g) == 0:
			missing++
			under++
		case len(g) < int(x.repl[id]):
			under++
		}
	}
	return missing, under, total
}

func testChunkID(i int) rpc.ChunkID { return rpc.NewChunkID("/f", "s", 1, uint32(i)) }

func testNodeID(i int) rpc.NodeID { return rpc.NodeID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)) }

func indexChunk(i int) meta.Chunk {
	d := bytes.Repeat([]byte{byte(i)}, rpc.DigestSize)
	return meta.Chunk{ID: testChunkID(i), Size: int64(1000 + i), FrameSize: 4096, Digest: d}
}

// TestChunkIndexModel applies random changes to the index and to its
// model and checks, after every one, that they agree on every chunk's
// copies, their checks, the held copies, the per-node counts, the
// counters and the references.
func TestChunkIndexModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			is := is.New(t)
			rng := rand.New(rand.NewPCG(seed, 7))
			const nChunks, nNodes = 12, 6
			ix, x := newChunkIndex(), newIndexModel()
			queued := map[rpc.ChunkID]bool{}
			isQueued := func(id rpc.ChunkID) bool { return queued[id] }
			copyOf := func(i int) reportedCopy {
				ch := indexChunk(i)
				rc := reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
				switch rng.IntN(8) {
				case 0:
					rc.size++ // a copy that does not match
				case 1:
					rc.digest = bytes.Repeat([]byte{0xee}, rpc.DigestSize)
				}
				return rc
			}
			var live []*meta.File // committed files
			for step := range 400 {
				node := testNodeID(rng.IntN(nNodes))
				what := rng.IntN(10)
				switch what {
				case 0, 1, 2, 3: // a report page
					var added []reportedCopy
					var removed, corrupt []rpc.ChunkID
					for range rng.IntN(5) {
						added = append(added, copyOf(rng.IntN(nChunks)))
					}
					for range rng.IntN(2) {
						removed = append(removed, testChunkID(rng.IntN(nChunks)))
					}
					if rng.IntN(4) == 0 {
						corrupt = append(corrupt, testChunkID(rng.IntN(nChunks)))
					}
					page := inventoryPage{first: rng.IntN(6) == 0, last: rng.IntN(5) == 0}
					clear(queued)
					if rng.IntN(3) == 0 {
						queued[testChunkID(rng.IntN(nChunks))] = true
					}
					swept := ix.report(node, page, added, removed, corrupt, isQueued)
					slices.Sort(swept)
					want := x.report(node, page, added, removed, corrupt, isQueued)
					is.Equal(fmt.Sprint(swept), fmt.Sprint(want)) // the copies a last page forgot
				case 4: // a commit
					f := &meta.File{Replication: uint32(1 + rng.IntN(3))}
					for range 1 + rng.IntN(2) {
						f.Chunks = append(f.Chunks, indexChunk(rng.IntN(nChunks)))
					}
					ix.refs().add(f)
					x.files++
					for _, c := range f.Chunks {
						x.refs[c.ID]++
						x.chunks[c.ID], x.repl[c.ID] = c, f.Replication
					}
					live = append(live, f)
				case 5: // a removal
					if len(live) == 0 {
						continue
					}
					k := rng.IntN(len(live))
					f := live[k]
					live = slices.Delete(live, k, k+1)
					ix.refs().remove(f)
					x.files--
					for _, c := range f.Chunks {
						if x.refs[c.ID]--; x.refs[c.ID] == 0 {
							delete(x.refs, c.ID)
						}
					}
				case 6: // deletions decided
					id := testChunkID(rng.IntN(nChunks))
					ix.forget([]meta.Deletion{{Node: node, Chunk: id}})
					if m, ok := x.m[id][node]; ok {
						x.drop(x.m, id, node)
						x.set(x.held, id, node, m)
					}
				case 7: // a deletion called off
					id := testChunkID(rng.IntN(nChunks))
					ix.restore(node, id)
					if m, ok := x.held[id][node]; ok {
						x.drop(x.held, id, node)
						x.set(x.m, id, node, m)
					}
				case 8: // a copy found missing
					id := testChunkID(rng.IntN(nChunks))
					is.Equal(ix.lost(node, id), x.drop(x.m, id, node)) // lost says whether it was counted
				case 9: // a node forgotten
					if rng.IntN(3) > 0 {
						continue
					}
					ix.dropNodes(map[rpc.NodeID]bool{node: true})
					delete(x.seen, node)
					for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{x.m, x.held} {
						for id := range in {
							x.drop(in, id, node)
						}
					}
				}
				for i := range nChunks {
					id := testChunkID(i)
					ch := indexChunk(i)
					x.chunks[id] = ch
					good, bad := ix.check(ch)
					wg, wb := x.good(id)
					is.Equal(append([]rpc.NodeID{}, good...), wg)                                        // good copies
					is.Equal(append([]rpc.NodeID{}, bad...), wb)                                         // bad copies
					is.Equal(ix.nodes(id), append([]rpc.NodeID{}, slices.Sorted(maps.Keys(x.m[id]))...)) // counted copies
					is.Equal(ix.count(id), len(x.m[id]))                                                 // their count
					is.Equal(len(ix.heldCopies(id)), len(x.held[id]))                                    // held copies
					is.Equal(ix.refs().has(id), x.refs[id] > 0)                                          // referenced
					for n, m := range ix.copies(id) {
						is.Equal(m.matches(ch), x.m[id][n].matches(ch)) // each copy's verdict
						is.Equal(m.corrupt, x.m[id][n].corrupt)         // and corrupt mark
					}
				}
				want := map[rpc.NodeID]int64{}
				for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{x.m, x.held} {
					for _, reps := range in {
						for n := range reps {
							want[n]++
						}
					}
				}
				is.Equal(ix.perNode(), want) // copies per node
				for n := range nNodes {
					var on []rpc.ChunkID
					for _, in := range []map[rpc.ChunkID]map[rpc.NodeID]replicaMeta{x.m, x.held} {
						for id, reps := range in {
							if _, ok := reps[testNodeID(n)]; ok {
								on = append(on, id)
							}
						}
					}
					slices.Sort(on)
					got := ix.chunksOn(testNodeID(n))
					slices.Sort(got)
					is.Equal(append([]rpc.ChunkID{}, got...), append([]rpc.ChunkID{}, on...)) // chunksOn
				}
				m, u, tot := ix.counts()
				wm, wu, wt := x.counts()
				is.Equal([3]int{m, u, tot}, [3]int{wm, wu, wt}) // the counters, at step
				files, chunks := ix.refs().counts()
				is.Equal(files, x.files) // files
				is.Equal(chunks, wt)     // referenced chunks
				if t.Failed() {
					t.Fatalf("step %d (op %d)", step, what)
				}
			}
		})
	}
}

// TestChunkIndexSlots: a chunk with no file and no copy gives its slot
// back, and the next chunk takes it; IDs not in NewChunkID's form work.
func TestChunkIndexSlots(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	rc := func(i int) reportedCopy {
		ch := indexChunk(i)
		return reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
	}
	for i := range 1000 {
		ix.report(testNodeID(1), inventoryPage{}, []reportedCopy{rc(i)}, nil, nil, none)
	}
	is.Equal(ix.used, int32(1000))                                    // one slot per chunk
	is.Equal(ix.live, 1000)                                           // all in the table
	is.Equal(ix.nodes(testChunkID(999)), []rpc.NodeID{testNodeID(1)}) // found through the table
	for i := range 500 {
		ix.report(testNodeID(1), inventoryPage{}, nil, []rpc.ChunkID{testChunkID(i)}, nil, none)
	}
	is.Equal(len(ix.free), 500) // freed
	is.Equal(ix.live, 500)      // and out of the table
	for i := 1000; i < 1500; i++ {
		ix.report(testNodeID(2), inventoryPage{}, []reportedCopy{rc(i)}, nil, nil, none)
	}
	is.Equal(ix.used, int32(1000)) // the freed slots were reused
	for i := 500; i < 1500; i++ {
		is.Equal(ix.count(testChunkID(i)), 1) // every chunk still found after the shifts
	}
	for i := range 500 {
		is.Equal(ix.count(testChunkID(i)), 0) // the removed ones are gone
	}
	is.Equal(len(ix.chunksOn(testNodeID(1))), 500) // the node's list, compacted
	odd := rpc.ChunkID("c1")
	ix.report(testNodeID(1), inventoryPage{}, []reportedCopy{{id: odd, size: 1, frameSize: 4096, digest: make([]byte, 32)}}, nil, nil, none)
	is.Equal(ix.nodes(odd), []rpc.NodeID{testNodeID(1)}) // an ID of another form
	is.True(slices.Contains(ix.chunksOn(testNodeID(1)), odd))
	ix.report(testNodeID(1), inventoryPage{first: true, last: true}, nil, nil, nil, none)
	is.Equal(ix.count(odd), 0)                        // a full report forgot it
	is.Equal(len(ix.odd), 0)                          // and freed its slot
	is.Equal(ix.perNode()[testNodeID(2)], int64(500)) // the other node's copies stay
}

// TestChunkIndexOverflow: more copies than fit inline are kept, dropped
// and counted as the inline ones are.
func TestChunkIndexOverflow(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	ch := indexChunk(1)
	ix.refs().add(&meta.File{Replication: 6, Chunks: []meta.Chunk{ch}})
	m, u, tot := ix.counts()
	is.Equal([3]int{m, u, tot}, [3]int{1, 1, 1}) // referenced, no copy
	rc := reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
	for n := range 6 {
		ix.report(testNodeID(n), inventoryPage{}, []reportedCopy{rc}, nil, nil, none)
	}
	is.Equal(ix.count(ch.ID), 6)                // six copies
	is.Equal(len(ix.more[ix.lookup(ch.ID)]), 3) // three beyond the inline ones
	m, u, tot = ix.counts()
	is.Equal([3]int{m, u, tot}, [3]int{0, 0, 1}) // fully replicated
	ix.report(testNodeID(4), inventoryPage{}, nil, nil, []rpc.ChunkID{ch.ID}, none)
	m, u, _ = ix.counts()
	is.Equal([2]int{m, u}, [2]int{0, 1}) // a corrupt overflow copy does not count
	ix.forget([]meta.Deletion{{Node: testNodeID(5), Chunk: ch.ID}})
	is.Equal(ix.count(ch.ID), 5)           // held apart
	is.Equal(len(ix.heldCopies(ch.ID)), 1) // and listed as held
	ix.dropNodes(map[rpc.NodeID]bool{testNodeID(3): true, testNodeID(4): true, testNodeID(5): true})
	is.Equal(ix.nodes(ch.ID), []rpc.NodeID{testNodeID(0), testNodeID(1), testNodeID(2)}) // the inline ones stay
	is.Equal(len(ix.more), 0)                                                            // the overflow is gone
}

// TestChunkIndexCommitSettles: copies reported before their chunk's
// commit are judged against it at the commit, and the side table of
// their reports empties.
func TestChunkIndexCommitSettles(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	ch := indexChunk(2)
	good := reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
	bad := good
	bad.size++
	ix.report(testNodeID(1), inventoryPage{}, []reportedCopy{good}, nil, nil, none)
	ix.report(testNodeID(2), inventoryPage{}, []reportedCopy{bad}, nil, nil, none)
	is.Equal(len(ix.pending), 2) // kept until the commit
	g, b := ix.check(ch)
	is.Equal(g, []rpc.NodeID{testNodeID(1)}) // checked against the upload's receipt
	is.Equal(b, []rpc.NodeID{testNodeID(2)})
	ix.refs().add(&meta.File{Replication: 2, Chunks: []meta.Chunk{ch}})
	is.Equal(len(ix.pending), 0) // settled
	g, b = ix.check(ch)
	is.Equal(g, []rpc.NodeID{testNodeID(1)}) // the same verdicts
	is.Equal(b, []rpc.NodeID{testNodeID(2)})
	m, u, tot := ix.counts()
	is.Equal([3]int{m, u, tot}, [3]int{0, 1, 1})          // one good copy of two
	is.True(!ix.copies(ch.ID)[testNodeID(2)].matches(ch)) // the bad copy stays bad
	is.True(ix.copies(ch.ID)[testNodeID(1)].matches(ch))  // the good one good
}

// TestChunkIndexScanFrom: the cursor walks every referenced chunk once,
// a slice at a time, and wraps to 0.
func TestChunkIndexScanFrom(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	var f meta.File
	f.Replication = 1
	for i := range 25 {
		f.Chunks = append(f.Chunks, indexChunk(i))
	}
	ix.refs().add(&f)
	ix.report(testNodeID(1), inventoryPage{}, []reportedCopy{{id: testChunkID(99), size: 1, frameSize: 4096, digest: make([]byte, 32)}}, nil, nil,
		func(rpc.ChunkID) bool { return false }) // an orphan: not walked
	seen := map[rpc.ChunkID]bool{}
	cursor, calls := int32(0), 0
	for {
		got := 0
		next := ix.scanFrom(cursor, 10, nil, func(r ref, _ bool) {
			got++
			is.True(!seen[r.chunk.ID]) // once
			seen[r.chunk.ID] = true
			want := indexChunk(int(r.chunk.ID.Index()))
			want.Digest = want.Digest[:rpc.DigestPrefixSize]
			is.Equal(r.chunk, want) // the committed metadata, the digest's prefix
			is.Equal(r.repl, uint32(1))
			is.True(ix.refs().has(r.chunk.ID)) // fn may call the index
		})
		calls++
		is.True(got <= 10) // at most max
		if next == 0 {
			break
		}
		cursor = next
		is.True(calls < 10) // bounded
	}
	is.Equal(len(seen), 25) // every referenced chunk
	is.Equal(len(ix.refs().snapshot()), 25)
}

// TestChunkIndexKeys: an ID in rpc.NewChunkID's form is a key that gives
// the ID back; any other string is not a key.
func TestChunkIndexKeys(t *testing.T) {
	is := is.New(t)
	for _, id := range []rpc.ChunkID{testChunkID(0), testChunkID(7), testChunkID(rpc.MaxChunkIndex), rpc.NewChunkID("/a/b", "x", 3, 1234567)} {
		k, ok := parseKey(id)
		is.True(ok)          // a key
		is.Equal(k.id(), id) // that gives the ID back
		_, err := rpc.ParseChunkID(string(id))
		is.NoErr(err) // and rpc agrees
	}
	h := testChunkID(0).Hash()
	for _, s := range []string{"", "c1", h, h + "_", h + "_01", h + "_x", h + "_4294967296", h + "_2147483648",
		strings.ToUpper(h) + "_1", h[:31] + "g_1", h + "-1", "/" + h[1:] + "_1", h[:31] + ":_1", h[:30] + "`" + h[31:] + "_1",
		h[:30] + "\x80" + h[31:] + "_1"} {
		_, ok := parseKey(rpc.ChunkID(s))
		_, err := rpc.ParseChunkID(s)
		is.True(!ok)        // not a key
		is.True(err != nil) // nor a chunk ID to rpc
	}
}

// TestChunkIndexFullInventory: a full inventory's first page forgets the
// node's copies (counted and held) and only its; later pages add; the
// counters follow page by page.
func TestChunkIndexFullInventory(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	rc := func(i int) reportedCopy {
		ch := indexChunk(i)
		return reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}
	}
	none := func(rpc.ChunkID) bool { return false }
	f := &meta.File{Replication: 2}
	for i := range 4 {
		f.Chunks = append(f.Chunks, indexChunk(i))
	}
	ix.refs().add(f)
	a, b := testNodeID(1), testNodeID(2)
	ix.report(a, inventoryPage{first: true, last: true}, []reportedCopy{rc(0), rc(1), rc(2), rc(3)}, nil, nil, none)
	ix.report(b, inventoryPage{first: true, last: true}, []reportedCopy{rc(0), rc(1), rc(2), rc(3)}, nil, nil, none)
	ix.forget([]meta.Deletion{{Node: a, Chunk: indexChunk(3).ID}}) // held apart on a
	missing, under, total := ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{0, 1, 4}) // chunk 3 has one counted copy
	ix.report(a, inventoryPage{first: true, last: true}, []reportedCopy{rc(0)}, nil, []rpc.ChunkID{indexChunk(1).ID}, none)
	is.Equal(ix.perNode()[a], int64(2))               // a: chunk 0, and 1 known only as corrupt
	is.Equal(ix.perNode()[b], int64(4))               // b untouched
	is.Equal(len(ix.heldCopies(indexChunk(3).ID)), 0) // the held copy was forgotten too
	missing, under, total = ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{0, 3, 4}) // 1, 2, 3 have one good copy now
	queued := func(id rpc.ChunkID) bool { return id == indexChunk(3).ID }
	ix.report(a, inventoryPage{}, []reportedCopy{rc(2), rc(3)}, nil, nil, queued) // the next page
	is.Equal(len(ix.heldCopies(indexChunk(3).ID)), 1)                             // still held apart: its deletion is queued
	missing, under, total = ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{0, 2, 4}) // chunk 2 whole again
	on := ix.chunksOn(a)
	slices.Sort(on)
	want := []rpc.ChunkID{indexChunk(0).ID, indexChunk(1).ID, indexChunk(2).ID, indexChunk(3).ID}
	slices.Sort(want)
	is.Equal(on, want) // what a holds, counted or held apart
	ix.dropNodes(map[rpc.NodeID]bool{b: true})
	missing, under, total = ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{2, 4, 4}) // 1 (corrupt on a) and 3 (held on a) have no good copy
}
