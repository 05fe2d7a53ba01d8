package datanode

import (
	"errors"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestBulkDeleteForAnotherNode: deletions meant for another node (the one
// that had this address before) are refused, and the chunk stays; those
// for this node, or for no node in particular, are carried out.
func TestBulkDeleteForAnotherNode(t *testing.T) {
	is := is.New(t)
	n := startNode(t, datanodetest.Start(t))
	dn := client(t, n)
	id := chunkID(t, 1)
	upload(t, dn, id, chunkData(100, 1), testFrame)

	other := "11111111-1111-1111-1111-111111111111"
	_, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}, NodeId: other})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.FailedPrecondition) // refused
	is.True(n.Store().Has(id))                                        // and the chunk is still here

	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}, NodeId: string(n.ID())})
	is.NoErr(err)
	is.Equal(resp.Deleted, uint32(1)) // meant for this node: deleted
	is.True(!n.Store().Has(id))
}

// TestDeleteNotDurable: when the directory of a deleted chunk cannot be
// fsynced, the deletion is neither acknowledged nor reported.
func TestDeleteNotDurable(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord)
	dn := client(t, n)
	id := chunkID(t, 1)
	upload(t, dn, id, chunkData(100, 1), testFrame)
	eventually(t, "the chunk reported", func() bool { return coord.Has(n.ID(), id) })

	n.Store().fsyncDir = func(string) error { return errors.New("injected EIO") }
	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}})
	is.NoErr(err)
	is.Equal(resp.Failed, []string{string(id)}) // not durable: failed, so GC tries again
	is.Equal(resp.Deleted, uint32(0))
	time.Sleep(300 * time.Millisecond) // several heartbeats: a queued report would be out by now
	is.True(coord.Has(n.ID(), id))     // not reported removed

	n.Store().fsyncDir = syncDir
	resp, err = dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}})
	is.NoErr(err)
	is.Equal(len(resp.Failed), 0) // GC's retry: the chunk is gone, durably now
	eventually(t, "the removal reported", func() bool { return !coord.Has(n.ID(), id) })
}
