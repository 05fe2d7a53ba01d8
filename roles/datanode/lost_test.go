package datanode

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// spreadID returns a chunk ID whose hash starts with n in hex, so that
// IDs of different n live in different directories.
func spreadID(t *testing.T, n int) rpc.ChunkID {
	t.Helper()
	id, err := rpc.ParseChunkID(fmt.Sprintf("%03x%029x_0", n, n))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestStoreLostChunk: a chunk whose file is removed behind the store's
// back is found lost by Open (and so by Verify), by Check and by
// FindLost: dropped from the index, its space no longer counted, and
// reported once. A chunk the store deleted itself is never taken for
// lost, and Delete of a lost chunk forgets it.
func TestStoreLostChunk(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	var ids []rpc.ChunkID
	for i := range 6 {
		id := spreadID(t, i*0x111)
		put(t, s, id, chunkData(2*testFrame+5, byte(i)))
		ids = append(ids, id)
	}
	before := s.Usage()
	fileSize := chunkstore.FileSize(2*testFrame+5, testFrame)

	// Open, and Verify through it.
	is.NoErr(os.Remove(s.ChunkPath(ids[0])))
	_, err := s.Open(ids[0])
	is.True(chunkstore.IsLost(err))                // Open finds the file gone
	is.Equal(rpc.KindOf(err), rpc.NotFound)        // which callers see as absent
	is.True(!s.Has(ids[0]))                        // it left the index
	is.Equal(s.Usage().Chunks, before.Chunks-1)    // and the count
	is.Equal(s.Usage().Used, before.Used-fileSize) // and its bytes the space used
	_, err = s.Open(ids[0])
	is.True(!chunkstore.IsLost(err) && rpc.KindOf(err) == rpc.NotFound) // lost once, then simply absent
	is.NoErr(os.Remove(s.ChunkPath(ids[1])))
	err = s.Verify(context.Background(), ids[1], nil)
	is.True(chunkstore.IsLost(err)) // Verify (the scrubber) finds it too

	// Check, as a repair target's "already stored" test.
	is.NoErr(os.Remove(s.ChunkPath(ids[2])))
	_, err = s.Check(ids[2])
	is.True(chunkstore.IsLost(err)) // Check stats the file
	_, err = s.Check(ids[3])
	is.NoErr(err) // an intact chunk checks

	// FindLost: only the files removed by hand, not the ones deleted.
	is.NoErr(os.Remove(s.ChunkPath(ids[4])))
	freed, err := s.Delete(ids[5])
	is.NoErr(err)
	is.Equal(freed, fileSize) // deleted by the store
	var found []rpc.ChunkID
	var entries int
	err = s.FindLost(context.Background(), func(n int) error { entries += n; return nil }, func(id rpc.ChunkID, err error) {
		is.True(chunkstore.IsLost(err)) // handed a LostError
		found = append(found, id)
	})
	is.NoErr(err)
	is.Equal(found, []rpc.ChunkID{ids[4]}) // only the lost one
	is.True(entries > 0)                   // paced by the entries read
	is.Equal(s.IDs(), []rpc.ChunkID{ids[3]})
	is.Equal(s.Usage().Used, fileSize) // only the intact chunk's bytes

	// Delete of a chunk whose file is gone forgets it.
	is.NoErr(os.Remove(s.ChunkPath(ids[3])))
	freed, err = s.Delete(ids[3])
	is.NoErr(err)
	is.Equal(freed, int64(0)) // nothing on disk to free
	is.True(!s.Has(ids[3]))   // but the index no longer lists it
	is.Equal(s.Usage().Used, int64(0))
	is.Equal(s.Usage().Chunks, int64(0))
}

// TestScrubPassFindsLost: a scrub pass reports a chunk whose file was
// removed by hand; one the store deleted is not reported.
func TestScrubPassFindsLost(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	var ids []rpc.ChunkID
	for i := range 3 {
		id := spreadID(t, i)
		put(t, s, id, chunkData(100, byte(i)))
		ids = append(ids, id)
	}
	sc, corrupt := testScrubber(t, s, 1<<30)
	var lost []rpc.ChunkID
	sc.lost = func(id rpc.ChunkID, err error) { lost = append(lost, id) }
	is.NoErr(os.Remove(s.ChunkPath(ids[0])))
	_, err := s.Delete(ids[2])
	is.NoErr(err)
	var st scrubState
	stats := sc.pass(context.Background(), &st)
	is.Equal(stats.lost, 1)                  // the file removed by hand
	is.Equal(lost, []rpc.ChunkID{ids[0]})    // is handed on
	is.Equal(stats.chunks, 1)                // the intact one is checked
	is.Equal(len(*corrupt), 0)               // nothing is corrupt
	is.Equal(s.IDs(), []rpc.ChunkID{ids[1]}) // the lost one left the index
}

// lostSetup starts a node against a fake coordinator, stores n chunks on
// it, waits until they are reported and removes their files by hand.
func lostSetup(t *testing.T, n int, opts ...func(*Config)) (*datanodetest.Coordinator, *Node, []rpc.ChunkID, []byte, map[rpc.ChunkID][]byte) {
	t.Helper()
	coord := datanodetest.Start(t)
	node := startNode(t, coord, append([]func(*Config){filesOnly}, opts...)...)
	dn := client(t, node)
	var ids []rpc.ChunkID
	digests := map[rpc.ChunkID][]byte{}
	data := chunkData(3*testFrame, 9)
	for i := range n {
		id := spreadID(t, i*0x123)
		digests[id] = upload(t, dn, id, data, testFrame)
		ids = append(ids, id)
	}
	eventually(t, "the chunks are reported", func() bool {
		for _, id := range ids {
			if !coord.Has(node.ID(), id) {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if err := os.Remove(node.Store().ChunkPath(id)); err != nil {
			t.Fatal(err)
		}
	}
	return coord, node, ids, data, digests
}

// TestLostChunkReported: a node reports a chunk whose file was removed by
// hand as removed when a read, VerifyChunk or a repair asked to copy it
// here finds it gone (the disk check, every 10 minutes by default, is not
// due).
func TestLostChunkReported(t *testing.T) {
	is := is.New(t)
	coord, n, ids, data, digests := lostSetup(t, 3)
	dn := client(t, n)

	_, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(ids[0])})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.NotFound) // the reader is told it is not here
	eventually(t, "the chunk a read found gone reported", func() bool { return !coord.Has(n.ID(), ids[0]) })

	v, err := dn.VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: string(ids[1])})
	is.NoErr(err)
	is.True(!v.Present && !v.Corrupt) // not present
	eventually(t, "the chunk VerifyChunk found gone reported", func() bool { return !coord.Has(n.ID(), ids[1]) })

	// A repair copy to this node of a chunk it still indexes: made again,
	// not taken for stored.
	src := startNode(t, coord, filesOnly)
	upload(t, client(t, src), ids[2], data, testFrame)
	resp, err := dn.ReplicateChunk(t.Context(), &dfspb.ReplicateChunkRequest{ChunkId: string(ids[2]), Size: int64(len(data)), FrameSize: testFrame,
		Digest: digests[ids[2]], Source: &dfspb.NodeRef{NodeId: string(src.ID()), Addr: src.Addr()}})
	is.NoErr(err)
	is.Equal(resp.Bytes, int64(len(data))) // copied
	got, err := download(t.Context(), dn, chunkstream.Expect{ChunkID: ids[2], Size: int64(len(data)), FrameSize: testFrame, Digest: digests[ids[2]]})
	is.NoErr(err)
	is.True(slices.Equal(got, data))                 // and readable again
	is.Equal(n.Store().IDs(), []rpc.ChunkID{ids[2]}) // all the node holds
	is.Equal(n.Store().Usage().Used, chunkstore.FileSize(int64(len(data)), testFrame))
}

// TestDiskCheckFindsLost: a chunk file removed by hand that nobody reads
// is found by the disk check that precedes each full inventory, and the
// inventory no longer lists it.
func TestDiskCheckFindsLost(t *testing.T) {
	is := is.New(t)
	coord, n, ids, _, _ := lostSetup(t, 2, func(cfg *Config) { cfg.InventoryInterval = 200 * time.Millisecond })
	full := coord.FullReports(n.ID())
	eventually(t, "the lost chunks no longer counted", func() bool {
		return !coord.Has(n.ID(), ids[0]) && !coord.Has(n.ID(), ids[1])
	})
	eventually(t, "a full inventory after the check", func() bool { return coord.FullReports(n.ID()) > full })
	is.True(!coord.Has(n.ID(), ids[0]) && !coord.Has(n.ID(), ids[1])) // not listed by it either
	is.Equal(n.Store().Usage().Chunks, int64(0))
}

// TestUnreadableChunkQuarantined: a chunk file that is there but cannot
// be opened (permission) is handled as corrupt, not left indexed. Root
// reads any file, so the test needs another user.
func TestUnreadableChunkQuarantined(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root opens any file whatever its permissions")
	}
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	id := spreadID(t, 3)
	put(t, s, id, chunkData(100, 1))
	is.NoErr(os.Chmod(s.ChunkPath(id), 0))
	_, err := s.Open(id)
	is.True(chunkstore.IsCorrupt(err))                  // unreadable is as good as corrupt
	is.True(!s.Has(id))                                 // out of service
	is.Equal(s.Corrupt(), []rpc.ChunkID{id})            // on the corrupt list
	is.True(fileExistsAt(s.ChunkPath(id) + ".corrupt")) // its file marked, kept for Delete
}

func fileExistsAt(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
