package datanode

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestPackedChunksOnNode: with small chunks packed, a node serves them,
// its scrubber finds a damaged one (not served, reported corrupt, deleted
// by the coordinator with the others), and its disk check reports the
// chunks of a pack file removed by hand as lost.
func TestPackedChunksOnNode(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord, func(cfg *Config) {
		cfg.ScrubRate = 1 << 30
		cfg.ScrubInterval = 0
		cfg.InventoryInterval = 200 * time.Millisecond
	})
	dn := client(t, n)
	size := 3*testFrame + 100
	ids := []rpc.ChunkID{chunkID(t, 1), chunkID(t, 2), chunkID(t, 3)}
	digests := map[rpc.ChunkID][]byte{}
	for i, id := range ids {
		digests[id] = upload(t, dn, id, chunkData(size, byte(i)), testFrame)
	}
	eventually(t, "the chunks are reported", func() bool {
		return coord.Has(n.ID(), ids[0]) && coord.Has(n.ID(), ids[1]) && coord.Has(n.ID(), ids[2])
	})
	_, err := os.Stat(n.Store().ChunkPath(ids[0]))
	is.True(os.IsNotExist(err)) // a small chunk is no file of its own
	for _, id := range ids {
		got, err := download(t.Context(), dn, chunkstream.Expect{ChunkID: id, Size: int64(size), FrameSize: testFrame, Digest: digests[id]})
		is.NoErr(err)
		is.Equal(len(got), size) // each packed chunk is served whole and verified
	}

	bad := ids[1]
	pack, off := n.Store().Location(bad)
	testdisk.FlipByte(t, pack, off+testFrame+7)
	eventually(t, "the scrubber reports the damaged chunk", func() bool { return slices.Equal(coord.Corrupt(n.ID()), []string{string(bad)}) })
	_, err = dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(bad)})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.NotFound) // a corrupt packed chunk is not served
	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(bad)}})
	is.NoErr(err)
	is.Equal(resp.Deleted, uint32(1))     // the coordinator deletes it
	is.Equal(len(n.Store().Corrupt()), 0) // and the node forgets it
	eventually(t, "the deletion is reported", func() bool { return len(coord.Corrupt(n.ID())) == 0 })

	is.NoErr(os.Remove(pack))
	eventually(t, "the disk check reports the pack's chunks lost", func() bool {
		return !coord.Has(n.ID(), ids[0]) && !coord.Has(n.ID(), ids[2])
	})
	is.Equal(n.Store().Usage().Chunks, int64(0)) // none is counted
}

// TestBulkDeletePacked: a bulk delete of many packed chunks removes each
// (their delete records group-committed) and counts them all.
func TestBulkDeletePacked(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord)
	dn := client(t, n)
	var ids []string
	for i := range 20 {
		id := spreadID(t, i*0x55)
		upload(t, dn, id, chunkData(testFrame+i, byte(i)), testFrame)
		ids = append(ids, string(id))
	}
	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: ids})
	is.NoErr(err)
	is.Equal(resp.Deleted, uint32(20))           // every chunk deleted
	is.Equal(len(resp.Failed), 0)                // none failed
	is.Equal(n.Store().Usage().Chunks, int64(0)) // none left
}
