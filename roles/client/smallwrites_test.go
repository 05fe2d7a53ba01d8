package client

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"

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
	addr := serveDatanode(t, dn)
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, &olderCoordinator{})}
	c := newClient(t, cfg)

	data := bytes.Repeat([]byte("small chunk "), 700) // 8,400 bytes: three 4 KiB frames
	plan := &dfspb.ChunkPlan{ChunkId: "abababababababababababababababab_0", Primary: &dfspb.NodeRef{NodeId: dn.id, Addr: addr}}
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

// fakeWrites answers WriteChunks: each chunk whose ID ends in "_1" fails,
// blaming node-bad, the others are stored by node-1 and node-2; it counts
// its calls and chunks, and holds each call until release is closed.
type fakeWrites struct {
	dfspb.UnimplementedDataNodeServer
	calls, chunks atomic.Int32
	release       chan struct{}
}

func (d *fakeWrites) WriteChunks(req *dfspb.WriteChunksRequest, st dfspb.DataNode_WriteChunksServer) error {
	d.calls.Add(1)
	d.chunks.Add(int32(len(req.Chunks)))
	<-d.release
	resp := &dfspb.WriteChunksResponse{}
	for _, wc := range req.Chunks {
		if strings.HasSuffix(wc.Prepare.ChunkId, "_1") {
			resp.Chunks = append(resp.Chunks, &dfspb.ChunkWritten{Code: uint32(codes.Unavailable), Message: "replica node-bad: gone", FailedNodes: []string{"node-bad"}})
			continue
		}
		resp.Chunks = append(resp.Chunks, &dfspb.ChunkWritten{Replicas: []string{"node-1", "node-2"}})
	}
	return st.Send(resp)
}

// TestSmallWritesShareCalls: small chunks stored at once on one primary
// go in fewer WriteChunks calls than there are chunks (a lone one at
// once, the others together while the calls before them are under
// way), and each chunk gets its own answer: a receipt naming the nodes
// that stored it, or an error blaming the node its answer names, which
// the put then places the chunk without.
func TestSmallWritesShareCalls(t *testing.T) {
	is := is.New(t)
	dn := &fakeWrites{release: make(chan struct{})}
	addr := serveDatanode(t, dn)
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, &olderCoordinator{})}
	c := newClient(t, cfg)

	const n = 3 * writeCalls
	receipts := make([]*dfspb.ChunkReceipt, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			plan := &dfspb.ChunkPlan{Index: uint32(i), ChunkId: fmt.Sprintf("%032x_%d", i, i%4), Primary: &dfspb.NodeRef{NodeId: "node-1", Addr: addr}}
			receipts[i], errs[i] = c.storeChunk(t.Context(), plan, bytes.Repeat([]byte{byte(i)}, 1000+i))
		})
	}
	for dn.chunks.Load() < int32(writeCalls) { // the first calls hold their chunks...
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // ...while the others gather
	close(dn.release)
	wg.Wait()
	is.Equal(dn.chunks.Load(), int32(n))     // every chunk sent once
	is.True(dn.calls.Load() <= writeCalls+2) // in a few calls
	for i := range n {
		if i%4 == 1 {
			is.True(errs[i] != nil)                                        // refused
			is.Equal(rpc.KindOf(errs[i]), rpc.Unavailable)                 // as its answer says
			is.Equal(rpc.FailedNodesOf(errs[i]), []string{"node-bad"})     // blaming its node
			is.True(strings.Contains(errs[i].Error(), "replica node-bad")) // saying why
			continue
		}
		is.NoErr(errs[i])
		is.Equal(receipts[i].NodeIds, []string{"node-1", "node-2"})
		is.Equal(receipts[i].Size, int64(1000+i))
		digest, _ := chunkstream.DigestOf(bytes.Repeat([]byte{byte(i)}, 1000+i), int(cfg.FrameSize))
		is.Equal(receipts[i].Digest, digest) // of the bytes sent
	}
}
