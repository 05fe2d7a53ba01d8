package client

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// olderUploads takes chunks in upload streams, and has no WriteChunks (a
// datanode from before it).
type olderUploads struct {
	dfspb.UnimplementedDataNodeServer
	id      string
	streams atomic.Int32
	got     [][]byte
}

func (d *olderUploads) UploadChunkStream(st dfspb.DataNode_UploadChunkStreamServer) error {
	d.streams.Add(1)
	var v *chunkstream.Verifier
	var data []byte
	for {
		f, err := st.Recv()
		if err != nil {
			return err
		}
		if v == nil {
			if f.Prepare == nil {
				return rpc.ToStatus(rpc.Errorf(rpc.Invalid, "no prepare"))
			}
			v = chunkstream.NewVerifier(chunkstream.Expect{ChunkID: rpc.ChunkID(f.ChunkId), Size: f.Prepare.Size, FrameSize: f.Prepare.FrameSize})
		}
		if err := v.Check(f); err != nil {
			return rpc.ToStatus(err)
		}
		data = append(data, f.Data...)
		if v.Done() {
			d.got = append(d.got, data)
			return st.Send(&dfspb.ChunkDataAck{BytesReceived: v.Received(), IsFinal: true, ReadyForNext: true, Replicas: []string{d.id}})
		}
		if err := st.Send(&dfspb.ChunkDataAck{BytesReceived: v.Received(), ReadyForNext: true}); err != nil {
			return err
		}
	}
}

// TestSmallPutToOlderDatanode: a client stores a small chunk on a primary
// without WriteChunks (an earlier release, during a rolling upgrade) as
// it did before: in an upload stream.
func TestSmallPutToOlderDatanode(t *testing.T) {
	is := is.New(t)
	dn := &olderUploads{id: "node-1"}
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	dfspb.RegisterDataNodeServer(srv, dn)
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, &olderCoordinator{})}
	c := newClient(t, cfg)

	data := bytes.Repeat([]byte("small chunk "), 700) // 8,400 bytes: three 4 KiB frames
	plan := &dfspb.ChunkPlan{ChunkId: "abababababababababababababababab_0", Primary: &dfspb.NodeRef{NodeId: dn.id, Addr: lis.Addr().String()}}
	receipt, err := c.storeChunk(t.Context(), plan, data)
	is.NoErr(err)                              // stored
	is.Equal(receipt.NodeIds, []string{dn.id}) // by the older node
	is.Equal(dn.streams.Load(), int32(1))      // in a stream
	is.True(bytes.Equal(dn.got[0], data))      // whole
	digest, _ := chunkstream.DigestOf(data, int(cfg.FrameSize))
	is.Equal(receipt.Digest, digest)
	_, _, ok := c.writeSmall(t.Context(), plan, data)
	is.True(!ok) // WriteChunks is not there
}
