package datanode

import (
	"testing"

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
