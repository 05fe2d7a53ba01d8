package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// olderCoordinator answers DownloadFile with one file of one chunk, and
// has no DownloadFiles (a coordinator from before it).
type olderCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	file  *dfspb.FileInfo
	calls atomic.Int32
}

func (c *olderCoordinator) DownloadFile(_ context.Context, req *dfspb.DownloadFileRequest) (*dfspb.DownloadFileResponse, error) {
	c.calls.Add(1)
	if req.Path != c.file.Path {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "%s not found", req.Path))
	}
	return &dfspb.DownloadFileResponse{File: c.file, NextChunk: c.file.ChunkCount}, nil
}

// olderDatanode streams its one chunk, and has no ReadChunks (a datanode
// from before it).
type olderDatanode struct {
	dfspb.UnimplementedDataNodeServer
	id     string
	data   []byte
	frame  int64
	frames [][]byte
	digest []byte
	calls  atomic.Int32
}

func (d *olderDatanode) DownloadChunkStream(req *dfspb.DownloadChunkStreamRequest, st dfspb.DataNode_DownloadChunkStreamServer) error {
	d.calls.Add(1)
	if req.ChunkId != d.id {
		return rpc.ToStatus(rpc.Errorf(rpc.NotFound, "chunk %s not found", req.ChunkId))
	}
	for i, fd := range d.frames {
		off := int64(i) * d.frame
		f := &dfspb.ChunkDataStream{ChunkId: d.id, Data: d.data[off:min(off+d.frame, int64(len(d.data)))], Offset: off, PartialChecksum: fd}
		if i == 0 {
			f.Header = &dfspb.PrepareChunkDownloadResponse{Size: int64(len(d.data)), FrameSize: d.frame, ChunkChecksum: d.digest}
		}
		if i == len(d.frames)-1 {
			f.IsFinal, f.ChunkChecksum = true, d.digest
		}
		if err := st.Send(f); err != nil {
			return err
		}
	}
	return nil
}

// olderServers starts a datanode without ReadChunks holding one small
// chunk, and returns it, a coordinator without DownloadFiles whose
// /small is that chunk, and the file's bytes.
func olderServers(t *testing.T) (*olderCoordinator, *olderDatanode, []byte) {
	t.Helper()
	is := is.New(t)
	data := bytes.Repeat([]byte("small file "), 600) // 6,600 bytes: two 4 KiB frames
	const frame = 4 << 10
	digest, frames := chunkstream.DigestOf(data, frame)
	id := strings.Repeat("ab", 16) + "_0"
	_, err := rpc.ParseChunkID(id)
	is.NoErr(err) // a well-formed chunk ID

	dn := &olderDatanode{id: id, data: data, frame: frame, frames: frames, digest: digest}
	addr := serveDatanode(t, dn)

	sum := sha256.Sum256(data)
	coord := &olderCoordinator{file: &dfspb.FileInfo{
		Path: "/small", Size: int64(len(data)), Sha256: sum[:], ChunkSize: 64 << 10, Replication: 1, Version: 1, ChunkCount: 1,
		Chunks: []*dfspb.ChunkInfo{{Index: 0, ChunkId: id, Size: int64(len(data)), Digest: digest, FrameSize: frame,
			Replicas: []*dfspb.ReplicaInfo{{NodeId: "node-1", Addr: addr, State: dfspb.NodeState_NODE_STATE_HEALTHY}}}},
	}}
	return coord, dn, data
}

// TestSmallGetFromOlderServers: a client reads a small file from a
// coordinator without DownloadFiles and a datanode without ReadChunks
// (servers of an earlier release, during a rolling upgrade) as it did
// before them: with DownloadFile and a download stream.
func TestSmallGetFromOlderServers(t *testing.T) {
	is := is.New(t)
	coord, dn, data := olderServers(t)
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, coord)}
	c := newClient(t, cfg)

	for range 2 {
		var out bytes.Buffer
		_, err := c.Get(t.Context(), "/small", &out, nil)
		is.NoErr(err)                           // read
		is.True(bytes.Equal(out.Bytes(), data)) // whole and right
	}
	is.Equal(coord.calls.Load(), int32(2)) // one DownloadFile per get
	is.Equal(dn.calls.Load(), int32(2))    // one stream per get

	_, err := c.Get(t.Context(), "/other", &bytes.Buffer{}, nil)
	is.True(rpc.KindOf(err) == rpc.NotFound) // the older coordinator's errors come through
}

// notServingCoordinator answers every file of DownloadFiles not_serving
// (its chunks not located yet, in safe mode), and DownloadFile as the
// older coordinator does.
type notServingCoordinator struct {
	*olderCoordinator
	many atomic.Int32
}

func (c *notServingCoordinator) DownloadFiles(_ context.Context, req *dfspb.DownloadFilesRequest) (*dfspb.DownloadFilesResponse, error) {
	c.many.Add(1)
	resp := &dfspb.DownloadFilesResponse{}
	for range req.Files {
		resp.Files = append(resp.Files, &dfspb.FileDownload{Code: uint32(codes.Unavailable), Message: "coordinator in safe mode", NotServing: true})
	}
	return resp, nil
}

// TestFirstPageNotServingYet: a file DownloadFiles answers not_serving
// (safe mode) is asked for again with DownloadFile, which waits as for
// any NotServing answer, and is read.
func TestFirstPageNotServingYet(t *testing.T) {
	is := is.New(t)
	older, _, data := olderServers(t)
	coord := &notServingCoordinator{olderCoordinator: older}
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, coord)}
	c := newClient(t, cfg)
	var out bytes.Buffer
	_, err := c.Get(t.Context(), "/small", &out, nil)
	is.NoErr(err)                           // read
	is.True(bytes.Equal(out.Bytes(), data)) // whole and right
	is.Equal(coord.many.Load(), int32(1))   // asked with DownloadFiles
	is.Equal(older.calls.Load(), int32(1))  // then with DownloadFile
}
