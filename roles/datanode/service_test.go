package datanode

import (
	"io/fs"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
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
	disk := &failingSyncDir{FS: vfs.Default}
	n := startNodeWith(t, coord, Deps{FS: disk})
	dn := client(t, n)
	id := chunkID(t, 1)
	upload(t, dn, id, chunkData(100, 1), testFrame)
	eventually(t, "the chunk reported", func() bool { return coord.Has(n.ID(), id) })

	disk.failing.Store(true)
	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}})
	is.NoErr(err)
	is.Equal(resp.Failed, []string{string(id)}) // not durable: failed, so GC tries again
	is.Equal(resp.Deleted, uint32(0))
	time.Sleep(300 * time.Millisecond) // several heartbeats: a queued report would be out by now
	is.True(coord.Has(n.ID(), id))     // not reported removed

	disk.failing.Store(false)
	resp, err = dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{string(id)}})
	is.NoErr(err)
	is.Equal(len(resp.Failed), 0) // GC's retry: the chunk is gone, durably now
	eventually(t, "the removal reported", func() bool { return !coord.Has(n.ID(), id) })
}

// TestMaxSessions: beyond --max-sessions prepared streams, Prepare calls
// are refused with ResourceExhausted, attributed to the node, and nothing
// is held for them; a download stream that starts makes room again. Upload
// streams count while they run, prepared inline on their first frame
// included.
func TestMaxSessions(t *testing.T) {
	is := is.New(t)
	n := startNode(t, datanodetest.Start(t), func(cfg *Config) { cfg.MaxSessions = 2; cfg.Capacity = 64 << 20 })
	dn := client(t, n)
	id, data := chunkID(t, 1), chunkData(3*testFrame, 1)
	exp := chunkstream.Expect{ChunkID: id, Size: int64(len(data)), FrameSize: testFrame, Digest: upload(t, dn, id, data, testFrame)}
	refused := func(err error, kind string) {
		t.Helper()
		err = rpc.FromStatus(err)
		is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)                 // refused
		is.Equal(rpc.FailedNodesOf(err), []string{string(n.ID())})       // by this node
		is.True(strings.Contains(err.Error(), kind+" streams prepared")) // saying why
		is.True(strings.Contains(err.Error(), "--max-sessions"))         // and what to change
	}

	// Downloads.
	var sids []string
	for range 2 {
		prep, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(id)})
		is.NoErr(err) // up to the limit
		sids = append(sids, prep.SessionId)
	}
	_, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(id)})
	refused(err, "download")
	st, err := dn.DownloadChunkStream(t.Context(), &dfspb.DownloadChunkStreamRequest{SessionId: sids[0]})
	is.NoErr(err)
	got := make([]byte, len(data))
	is.NoErr(chunkstream.ReceiveInto(st, exp, got))
	is.Equal(got, data) // a prepared session still streams
	_, err = download(t.Context(), dn, exp)
	is.NoErr(err) // and, started, made room for another

	// Uploads.
	var session string
	prepUpload := func(i int) error {
		resp, err := dn.PrepareChunkUpload(t.Context(), &dfspb.PrepareChunkUploadRequest{ChunkId: string(chunkID(t, i)), Size: testFrame, FrameSize: testFrame})
		if err == nil {
			session = resp.SessionId
		}
		return err
	}
	is.NoErr(prepUpload(2))
	is.NoErr(prepUpload(3)) // up to the limit
	free := n.Store().Usage().Free
	refused(prepUpload(4), "upload")
	is.Equal(n.Store().Usage().Free, free) // no space reserved for the refused one
	inline := func(i int) error {
		st, err := dn.UploadChunkStream(t.Context())
		is.NoErr(err)
		prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(chunkID(t, i)), Size: int64(len(data)), FrameSize: testFrame}
		_, _, err = chunkstream.SendChunk(t.Context(), st, "", prep, chunkID(t, i), data, testFrame, chunkstream.DefaultWindow)
		return err
	}
	refused(inline(5), "upload") // an inline upload counts too
	up, err := dn.UploadChunkStream(t.Context())
	is.NoErr(err)
	_, _, err = chunkstream.SendChunk(t.Context(), up, rpc.SessionID(session), nil, chunkID(t, 3), chunkData(testFrame, 3), testFrame, chunkstream.DefaultWindow)
	is.NoErr(err)                         // a prepared upload streams
	is.NoErr(inline(5))                   // and, finished, made room for an inline one
	is.True(n.Store().Has(chunkID(t, 5))) // which is stored
}

// failingSyncDir is a disk whose directory fsyncs fail while failing is
// set.
type failingSyncDir struct {
	vfs.FS
	failing atomic.Bool
}

func (d *failingSyncDir) SyncDir(name string) error {
	if d.failing.Load() {
		return &fs.PathError{Op: "sync", Path: name, Err: syscall.EIO}
	}
	return d.FS.SyncDir(name)
}
