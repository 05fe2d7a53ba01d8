package datanode

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
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

// TestDownloadFrames: a download that names frames streams those alone,
// each at its offset with its stored digest, the last marked final; the
// prepare returns the frame digests when asked (and only then); a range
// outside the chunk is refused as Invalid, saying so.
func TestDownloadFrames(t *testing.T) {
	n := startNode(t, datanodetest.Start(t))
	dn := client(t, n)
	id, data := chunkID(t, 1), chunkData(3*testFrame+100, 1) // 4 frames, the last one short
	digest := upload(t, dn, id, data, testFrame)
	_, frames := chunkstream.DigestOf(data, testFrame)

	// stream prepares a download of id and streams the frames asked for.
	stream := func(t *testing.T, first, count uint32) ([]*dfspb.ChunkDataStream, error) {
		t.Helper()
		prep, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(id), FrameDigests: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(prep.FrameDigests, frames, bytes.Equal) {
			t.Fatalf("prepare returned %d frame digests, not the %d stored", len(prep.FrameDigests), len(frames))
		}
		st, err := dn.DownloadChunkStream(t.Context(), &dfspb.DownloadChunkStreamRequest{SessionId: prep.SessionId, FirstFrame: first, FrameCount: count})
		if err != nil {
			return nil, rpc.FromStatus(err)
		}
		var got []*dfspb.ChunkDataStream
		for range 10 {
			f, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, rpc.FromStatus(err)
			}
			got = append(got, f)
		}
		t.Fatal("more frames than the chunk has")
		return nil, nil
	}

	t.Run("not asked", func(t *testing.T) {
		is := is.New(t)
		prep, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(id)})
		is.NoErr(err)
		is.Equal(len(prep.FrameDigests), 0) // a whole-chunk reader gets no frame digests
	})
	for _, tt := range []struct {
		name        string
		first, cnt  uint32
		first0, end int // frames expected, first and last+1
	}{
		{"whole chunk", 0, 0, 0, 4},
		{"one frame", 1, 1, 1, 2},
		{"middle frames", 1, 2, 1, 3},
		{"to the end", 2, 0, 2, 4},
		{"the short last frame", 3, 1, 3, 4},
		{"first frames", 0, 2, 0, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			got, err := stream(t, tt.first, tt.cnt)
			is.NoErr(err)
			is.Equal(len(got), tt.end-tt.first0) // the frames asked for
			for k, f := range got {
				i := tt.first0 + k
				off := int64(i) * testFrame
				is.Equal(f.Offset, off)                                          // at its offset in the chunk
				is.Equal(f.Data, data[off:min(off+testFrame, int64(len(data)))]) // with its bytes
				is.Equal(f.PartialChecksum, frames[i])                           // and its digest
				is.Equal(f.IsFinal, k == len(got)-1)                             // the last is final
				is.Equal(f.ChunkChecksum != nil, k == len(got)-1)                // with the chunk digest
				is.True(k < len(got)-1 || bytes.Equal(f.ChunkChecksum, digest))
			}
		})
	}
	for _, tt := range []struct {
		name       string
		first, cnt uint32
		says       string
	}{
		{"first frame past the end", 4, 0, "first frame 4 out of range"},
		{"first frame far past the end", 1 << 31, 1, "out of range"},
		{"range past the end", 3, 2, "frames 3 to 4 out of range"},
		{"count overflowing", 1, 1<<32 - 1, "out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			_, err := stream(t, tt.first, tt.cnt)
			is.Equal(rpc.KindOf(err), rpc.Invalid)             // refused
			is.True(strings.Contains(err.Error(), tt.says))    // saying why
			is.True(strings.Contains(err.Error(), "4 frames")) // and what the chunk has
		})
	}
}

// TestDownloadByChunkID: a download that names its chunk (no prepare)
// streams it with the chunk's header on the first message alone (the
// frame digests only when asked for), whole or a range of frames; bad
// requests are refused as Invalid, saying why, and a chunk that is not
// here is NotFound; a chunk whose metadata turns out damaged is taken out
// of service and reported, as a prepare would.
func TestDownloadByChunkID(t *testing.T) {
	coord := datanodetest.Start(t)
	n := startNode(t, coord, filesOnly)
	dn := client(t, n)
	id, data := chunkID(t, 1), chunkData(3*testFrame+100, 1) // 4 frames, the last one short
	digest := upload(t, dn, id, data, testFrame)
	_, frames := chunkstream.DigestOf(data, testFrame)

	// stream streams what req asks for.
	stream := func(t *testing.T, req *dfspb.DownloadChunkStreamRequest) ([]*dfspb.ChunkDataStream, error) {
		t.Helper()
		st, err := dn.DownloadChunkStream(t.Context(), req)
		if err != nil {
			return nil, rpc.FromStatus(err)
		}
		var got []*dfspb.ChunkDataStream
		for range 10 {
			f, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, rpc.FromStatus(err)
			}
			got = append(got, f)
		}
		t.Fatal("more frames than the chunk has")
		return nil, nil
	}
	for _, tt := range []struct {
		name         string
		first, cnt   uint32
		frameDigests bool
		first0, end  int // frames expected, first and last+1
	}{
		{"whole chunk", 0, 0, false, 0, 4},
		{"whole chunk with digests", 0, 0, true, 0, 4},
		{"middle frames", 1, 2, true, 1, 3},
		{"the short last frame", 3, 1, false, 3, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			got, err := stream(t, &dfspb.DownloadChunkStreamRequest{ChunkId: string(id), FirstFrame: tt.first, FrameCount: tt.cnt, FrameDigests: tt.frameDigests})
			is.NoErr(err)
			is.Equal(len(got), tt.end-tt.first0) // the frames asked for
			hdr := got[0].Header
			is.True(hdr != nil)                                  // the first message carries the header
			is.Equal(hdr.Size, int64(len(data)))                 // with the size
			is.Equal(hdr.FrameSize, int64(testFrame))            // the frame size
			is.Equal(hdr.ChunkChecksum, digest)                  // and the digest
			is.Equal(hdr.SessionId, "")                          // no session
			is.Equal(len(hdr.FrameDigests) > 0, tt.frameDigests) // frame digests when asked for
			is.True(!tt.frameDigests || slices.EqualFunc(hdr.FrameDigests, frames, bytes.Equal))
			for k, f := range got {
				i := tt.first0 + k
				off := int64(i) * testFrame
				is.True(k == 0 || f.Header == nil)                               // the header comes once
				is.Equal(f.Offset, off)                                          // each frame at its offset
				is.Equal(f.Data, data[off:min(off+testFrame, int64(len(data)))]) // with its bytes
				is.Equal(f.PartialChecksum, frames[i])                           // and its digest
				is.Equal(f.IsFinal, k == len(got)-1)                             // the last is final
			}
		})
	}
	for _, tt := range []struct {
		name string
		req  *dfspb.DownloadChunkStreamRequest
		kind rpc.Kind
		says string
	}{
		{"session and chunk", &dfspb.DownloadChunkStreamRequest{ChunkId: string(id), SessionId: string(rpc.NewSessionID())}, rpc.Invalid, "name one"},
		{"neither", &dfspb.DownloadChunkStreamRequest{}, rpc.Invalid, "session"},
		{"frame digests with a session", &dfspb.DownloadChunkStreamRequest{SessionId: string(rpc.NewSessionID()), FrameDigests: true}, rpc.Invalid, "frame digests without a chunk_id"},
		{"bad chunk id", &dfspb.DownloadChunkStreamRequest{ChunkId: "../x_0"}, rpc.Invalid, "chunk"},
		{"range past the end", &dfspb.DownloadChunkStreamRequest{ChunkId: string(id), FirstFrame: 3, FrameCount: 2}, rpc.Invalid, "frames 3 to 4 out of range"},
		{"first frame far past the end", &dfspb.DownloadChunkStreamRequest{ChunkId: string(id), FirstFrame: 1 << 31, FrameCount: 1}, rpc.Invalid, "out of range"},
		{"not here", &dfspb.DownloadChunkStreamRequest{ChunkId: string(chunkID(t, 2))}, rpc.NotFound, "not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			got, err := stream(t, tt.req)
			is.Equal(rpc.KindOf(err), tt.kind)              // refused
			is.True(strings.Contains(err.Error(), tt.says)) // saying why
			is.Equal(len(got), 0)                           // before any frame
		})
	}
	t.Run("damaged metadata", func(t *testing.T) {
		is := is.New(t)
		bad, badData := chunkID(t, 3), chunkData(2*testFrame, 3)
		upload(t, dn, bad, badData, testFrame)
		eventually(t, "the chunk reported", func() bool { return coord.Has(n.ID(), bad) })
		testdisk.FlipByte(t, n.Store().ChunkPath(bad), int64(len(badData))+sha256.Size+3) // the second frame digest
		_, err := stream(t, &dfspb.DownloadChunkStreamRequest{ChunkId: string(bad), FirstFrame: 1, FrameCount: 1, FrameDigests: true})
		is.Equal(rpc.KindOf(err), rpc.Internal)                    // refused, as corrupt
		is.True(strings.Contains(err.Error(), "corrupt metadata")) // saying so
		eventually(t, "the damaged chunk reported", func() bool { return slices.Contains(coord.Corrupt(n.ID()), string(bad)) })
		_, err = stream(t, &dfspb.DownloadChunkStreamRequest{ChunkId: string(bad)})
		is.Equal(rpc.KindOf(err), rpc.NotFound) // and no longer served
	})
}

// TestReadChunks: one call reads several chunks whole, packed or in files
// of their own, each answered with the frames a download stream of it
// sends (the header on the first), in the order asked; a chunk that
// cannot be read is answered with the error its stream would fail with,
// and does not fail the others; a reply holds at most 1 MiB of chunks,
// and a chunk beyond that is ResourceExhausted; a call of no chunk or of
// too many is Invalid; a chunk whose metadata turns out damaged is taken
// out of service and reported, as a download would.
func TestReadChunks(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord) // chunks up to 256 KiB packed
	dn := client(t, n)
	small, big := chunkID(t, 1), chunkID(t, 2)
	smallData, bigData := chunkData(3*testFrame+100, 1), chunkData(300<<10, 2) // packed, and a file
	smallDigest, bigDigest := upload(t, dn, small, smallData, testFrame), upload(t, dn, big, bigData, testFrame)

	read := func(t *testing.T, ids ...string) ([]*dfspb.ChunkRead, error) {
		t.Helper()
		req := &dfspb.ReadChunksRequest{}
		for _, id := range ids {
			req.Chunks = append(req.Chunks, &dfspb.ReadChunk{ChunkId: id})
		}
		resp, err := dn.ReadChunks(t.Context(), req)
		if err != nil {
			return nil, rpc.FromStatus(err)
		}
		if len(resp.Chunks) != len(ids) {
			t.Fatalf("%d answers for %d chunks", len(resp.Chunks), len(ids))
		}
		return resp.Chunks, nil
	}
	// same checks that a chunk's answer is the chunk, as its stream is.
	same := func(t *testing.T, got *dfspb.ChunkRead, id rpc.ChunkID, data, digest []byte) {
		t.Helper()
		is := is.New(t)
		is.Equal(got.Code, uint32(0)) // read
		_, frames := chunkstream.DigestOf(data, testFrame)
		is.Equal(len(got.Frames), len(frames)) // every frame
		hdr := got.Frames[0].Header
		is.True(hdr != nil) // the first with the header
		is.Equal(hdr.Size, int64(len(data)))
		is.Equal(hdr.FrameSize, int64(testFrame))
		is.Equal(hdr.ChunkChecksum, digest)
		for i, f := range got.Frames {
			off := int64(i) * testFrame
			is.True(i == 0 || f.Header == nil)
			is.Equal(f.ChunkId, string(id))
			is.Equal(f.Offset, off)
			is.Equal(f.Data, data[off:min(off+testFrame, int64(len(data)))])
			is.Equal(f.PartialChecksum, frames[i])
			is.Equal(f.IsFinal, i == len(frames)-1)
			is.Equal(f.ChunkChecksum != nil, i == len(frames)-1)
		}
		var out bytes.Buffer
		_, err := chunkstream.Take(chunkstream.Expect{ChunkID: id, Size: int64(len(data)), FrameSize: testFrame, Digest: digest}, got, &out)
		is.NoErr(err)               // what a client verifies
		is.Equal(out.Bytes(), data) // and takes
	}

	got, err := read(t, string(small), string(chunkID(t, 3)), "../x_0", string(big))
	is.NoErr(err)
	same(t, got[0], small, smallData, smallDigest)
	is.Equal(rpc.KindOf(rpc.FromCode(got[1].Code, got[1].Message)), rpc.NotFound) // not here
	is.Equal(rpc.KindOf(rpc.FromCode(got[2].Code, got[2].Message)), rpc.Invalid)  // not a chunk ID
	is.Equal(len(got[1].Frames)+len(got[2].Frames), 0)                            // with no frame
	same(t, got[3], big, bigData, bigDigest)

	// At most 1 MiB of chunks in one reply.
	a, b := chunkID(t, 4), chunkID(t, 5)
	aData, bData := chunkData(700<<10, 4), chunkData(700<<10, 5)
	aDigest, bDigest := upload(t, dn, a, aData, testFrame), upload(t, dn, b, bData, testFrame)
	got, err = read(t, string(a), string(b), string(small))
	is.NoErr(err)
	same(t, got[0], a, aData, aDigest)
	err = rpc.FromCode(got[1].Code, got[1].Message)
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)                           // no room left for the second
	is.True(strings.Contains(err.Error(), "read it with DownloadChunkStream")) // saying what to do
	same(t, got[2], small, smallData, smallDigest)                             // a smaller one still fits
	got, err = read(t, string(b))
	is.NoErr(err)
	same(t, got[0], b, bData, bDigest) // alone it fits

	for _, ids := range [][]string{nil, slices.Repeat([]string{string(small)}, rpc.MaxReadChunks+1)} {
		_, err = read(t, ids...)
		is.Equal(rpc.KindOf(err), rpc.Invalid) // no chunk, or too many
		is.True(strings.Contains(err.Error(), "name 1 to 64"))
	}
	got, err = read(t, slices.Repeat([]string{string(small)}, rpc.MaxReadChunks)...)
	is.NoErr(err) // as many as a call may name
	same(t, got[rpc.MaxReadChunks-1], small, smallData, smallDigest)

	// Reads that take as long as cold ones: all but the first go at once.
	n.slowRead.Store(0)
	ids := append(slices.Repeat([]string{string(small)}, 30), string(big), string(chunkID(t, 3)), string(small))
	got, err = read(t, ids...)
	is.NoErr(err)
	for i := range 30 {
		same(t, got[i], small, smallData, smallDigest)
	}
	same(t, got[30], big, bigData, bigDigest)
	is.Equal(rpc.KindOf(rpc.FromCode(got[31].Code, got[31].Message)), rpc.NotFound) // each answer in its place
	same(t, got[32], small, smallData, smallDigest)

	t.Run("damaged metadata", func(t *testing.T) {
		is := is.New(t)
		fn := startNode(t, coord, filesOnly)
		dn := client(t, fn)
		bad, badData := chunkID(t, 6), chunkData(2*testFrame, 6)
		upload(t, dn, bad, badData, testFrame)
		eventually(t, "the chunk reported", func() bool { return coord.Has(fn.ID(), bad) })
		testdisk.FlipByte(t, fn.Store().ChunkPath(bad), int64(len(badData))+sha256.Size+3) // the second frame digest
		resp, err := dn.ReadChunks(t.Context(), &dfspb.ReadChunksRequest{Chunks: []*dfspb.ReadChunk{{ChunkId: string(bad)}}})
		is.NoErr(err)
		err = rpc.FromCode(resp.Chunks[0].Code, resp.Chunks[0].Message)
		is.Equal(rpc.KindOf(err), rpc.Internal)                    // refused, as corrupt
		is.True(strings.Contains(err.Error(), "corrupt metadata")) // saying so
		eventually(t, "the damaged chunk reported", func() bool { return slices.Contains(coord.Corrupt(fn.ID()), string(bad)) })
		resp, err = dn.ReadChunks(t.Context(), &dfspb.ReadChunksRequest{Chunks: []*dfspb.ReadChunk{{ChunkId: string(bad)}}})
		is.NoErr(err)
		is.Equal(rpc.KindOf(rpc.FromCode(resp.Chunks[0].Code, resp.Chunks[0].Message)), rpc.NotFound) // and no longer served
	})
}

// overlapDisk is a disk on which, while armed, reading a whole chunk of
// size bytes (at offset 0 of its file) waits up to 200 ms for another
// such read to be under way, as a read from a disk waits for the disk;
// most is the most such reads under way at once.
type overlapDisk struct {
	vfs.FS
	size   int
	armed  atomic.Bool
	inside atomic.Int32
	most   atomic.Int32
}

func (d *overlapDisk) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := d.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &overlapFile{File: f, d: d}, nil
}

type overlapFile struct {
	vfs.File
	d *overlapDisk
}

func (f *overlapFile) ReadAt(p []byte, off int64) (int, error) {
	if d := f.d; d.armed.Load() && off == 0 && len(p) == d.size {
		n := d.inside.Add(1)
		for m := d.most.Load(); n > m && !d.most.CompareAndSwap(m, n); m = d.most.Load() {
		}
		for range 200 {
			if d.inside.Load() >= 2 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		defer d.inside.Add(-1)
	}
	return f.File.ReadAt(p, off)
}

// TestReadChunksReadsColdChunksAtOnce: once reading a chunk's bytes takes
// as long as a disk does, the rest of the call's chunks are read at once,
// not one after another; every answer is still the chunk asked for, in
// its place.
func TestReadChunksReadsColdChunksAtOnce(t *testing.T) {
	is := is.New(t)
	const size = 5000
	disk := &overlapDisk{FS: vfs.Default, size: size}
	coord := datanodetest.Start(t)
	n := startNodeWith(t, coord, Deps{FS: disk}, filesOnly)
	dn := client(t, n)
	req := &dfspb.ReadChunksRequest{}
	var datas [][]byte
	for i := range 6 {
		id, data := chunkID(t, i), chunkData(size, byte(i))
		upload(t, dn, id, data, testFrame)
		req.Chunks = append(req.Chunks, &dfspb.ReadChunk{ChunkId: string(id)})
		datas = append(datas, data)
	}
	disk.armed.Store(true)
	resp, err := dn.ReadChunks(t.Context(), req)
	is.NoErr(err)
	for i, r := range resp.Chunks {
		is.Equal(r.Code, uint32(0)) // read
		var got []byte
		for _, f := range r.Frames {
			got = append(got, f.Data...)
		}
		is.Equal(got, datas[i]) // each chunk in its place
	}
	is.True(disk.most.Load() >= 2) // reads under way at once
}
