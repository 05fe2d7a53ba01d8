package datanodesim

import (
	"testing"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

func testFleet(t *testing.T, nodes, chunks, copies int) *Fleet {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Coordinator, cfg.Nodes, cfg.Chunks, cfg.Copies = "127.0.0.1:1", nodes, chunks, copies
	cfg.Chunk = func(i int) Chunk {
		return Chunk{ID: rpc.NewChunkID(rpc.Path("/f"), rpc.SessionID("s"), 0, uint32(i)), Size: 100, FrameSize: 4 << 10, Digest: make([]byte, 32)}
	}
	f, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestPlacement: copy j of chunk i is on node (i+j) mod nodes, every
// chunk on exactly Copies distinct nodes; a node's share, its usage and
// its lookups agree.
func TestPlacement(t *testing.T) {
	is := is.New(t)
	f := testFleet(t, 7, 100, 3)
	holders := make([]int, 100)
	for _, n := range f.nodes {
		var shared []int
		n.share(func(i int) bool { shared = append(shared, i); return true })
		chunks, used := n.usage()
		is.Equal(int64(len(shared)), chunks) // usage counts the share
		is.Equal(used, chunks*100)           // of 100-byte chunks
		for _, i := range shared {
			is.True(n.placed(i)) // the share holds placed chunks only
			holders[i]++
			_, ok := n.lookup(f.cfg.Chunk(i).ID)
			is.True(ok) // and the node finds them
		}
		for i := range 100 {
			d := ((i-n.k)%7 + 7) % 7 // copy index that would land here
			want := (7-d)%7 < 3
			is.Equal(n.placed(i), want) // placed follows (i+j) mod nodes
		}
	}
	for i, h := range holders {
		if h != 3 {
			t.Fatalf("chunk %d on %d nodes, want 3", i, h)
		}
	}
	is.True(f.nodes[0].placed(0) && f.nodes[1].placed(0) && f.nodes[2].placed(0))  // chunk 0 on nodes 0, 1, 2
	is.True(f.nodes[0].placed(6) && f.nodes[1].placed(6) && !f.nodes[2].placed(6)) // chunk 6 wraps to 6, 0, 1
}

// TestDeleteAndReplicate: a deleted chunk is gone and queued as removed;
// a copied one is held and queued as added; a deletion meant for another
// node is refused.
func TestDeleteAndReplicate(t *testing.T) {
	is := is.New(t)
	f := testFleet(t, 3, 10, 3)
	n := f.nodes[0]
	id := f.cfg.Chunk(4).ID
	resp, err := n.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id), "nope"}, NodeId: string(n.id)})
	is.NoErr(err)                         // the deletion is taken
	is.Equal(resp.Deleted, uint32(1))     // one chunk held was deleted
	is.Equal(resp.BytesFreed, int64(100)) // its bytes freed
	_, ok := n.lookup(id)
	is.True(!ok)           // it is gone
	is.True(n.removed[id]) // and queued as removed
	v, err := n.VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: string(id)})
	is.NoErr(err)       // verify answers
	is.True(!v.Present) // that it is gone
	chunks, _ := n.usage()
	is.Equal(chunks, int64(9)) // the usage drops

	_, err = n.ReplicateChunk(t.Context(), &dfspb.ReplicateChunkRequest{ChunkId: string(id), Size: 100, FrameSize: 4 << 10, Digest: make([]byte, 32)})
	is.NoErr(err) // the copy is taken
	_, ok = n.lookup(id)
	is.True(ok)             // the chunk is held again
	is.True(!n.removed[id]) // no longer queued as removed
	_, queued := n.added[id]
	is.True(queued) // but as added
	st, err := n.StatChunks(t.Context(), &dfspb.StatChunksRequest{ChunkIds: []string{string(id)}})
	is.NoErr(err)                           // stat answers
	is.True(st.Chunks[0].Present)           // present
	is.Equal(st.Chunks[0].Size, int64(100)) // with its size

	// A copy named by a digest prefix takes the source's whole digest.
	other := f.cfg.Chunk(5)
	_, err = n.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(other.ID)}, NodeId: string(n.id)})
	is.NoErr(err)
	req := &dfspb.ReplicateChunkRequest{ChunkId: string(other.ID), Size: 100, FrameSize: 4 << 10, Digest: other.Digest[:rpc.DigestPrefixSize],
		Source: &dfspb.NodeRef{NodeId: string(f.nodes[1].id), Addr: f.nodes[1].addr}}
	_, err = n.ReplicateChunk(t.Context(), req)
	is.NoErr(err) // the copy is taken
	c, ok := n.lookup(other.ID)
	is.True(ok)                      // held
	is.Equal(c.Digest, other.Digest) // with the whole digest
	req.Digest = []byte("0123456789abcdef")
	_, err = n.ReplicateChunk(t.Context(), req)
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.NotFound) // a source without a matching copy fails it

	_, err = n.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}, NodeId: string(f.nodes[1].id)})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.FailedPrecondition) // deletions for another node are refused
}
