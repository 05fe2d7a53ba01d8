package datanode

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestForwardedFramesIntact: a primary forwards each frame to its
// replicas from the buffer it received the frame in, and recycles that
// buffer for later frames once its disk and every replica's transport
// are done with it. Under many concurrent uploads through three nodes,
// each the primary of some and a replica of the others, some of them
// canceled by their client mid-chunk, every chunk that was stored is on
// all three nodes byte for byte: no replica got another frame's bytes,
// of its own chunk or another's, in place of the ones sent (which a
// buffer recycled while a transport still held it would give).
func TestForwardedFramesIntact(t *testing.T) {
	is := is.New(t)
	const uploads, size, frame = 18, 6<<17 + 12345, 128 << 10
	coord := datanodetest.Start(t)
	nodes := []*Node{startNode(t, coord), startNode(t, coord), startNode(t, coord)}
	clients := make([]dfspb.DataNodeClient, len(nodes))
	for i, n := range nodes {
		clients[i] = client(t, n)
	}
	ids := make([]rpc.ChunkID, uploads)
	datas := make([][]byte, uploads)
	for i := range uploads {
		ids[i] = rpc.NewChunkID("/forward", rpc.NewSessionID(), 0, uint32(i))
		datas[i] = make([]byte, size)
		rand.NewChaCha8([32]byte{byte(i), 1}).Read(datas[i])
	}
	// canceled reports whether upload i is cut off by its client after
	// a few frames.
	canceled := func(i int) bool { return i%4 == 3 }

	var wg sync.WaitGroup
	errs := make([]error, uploads)
	digests := make([][]byte, uploads)
	for i := range uploads {
		wg.Go(func() {
			primary := i % len(nodes)
			var replicas []*dfspb.NodeRef
			for j := 1; j < len(nodes); j++ {
				r := nodes[(primary+j)%len(nodes)]
				replicas = append(replicas, &dfspb.NodeRef{NodeId: string(r.ID()), Addr: r.Addr()})
			}
			prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(ids[i]), Size: size, FrameSize: frame, Replicas: replicas}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			st, err := clients[primary].UploadChunkStream(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			if canceled(i) {
				errs[i] = sendSome(ctx, cancel, st, prep, ids[i], datas[i], frame, 3)
				return
			}
			var ack *dfspb.ChunkDataAck
			ack, digests[i], errs[i] = chunkstream.SendChunk(ctx, st, "", prep, ids[i], datas[i], frame, chunkstream.DefaultWindow)
			if errs[i] == nil && len(ack.Replicas) != len(nodes) {
				errs[i] = fmt.Errorf("stored on %v", ack.Replicas)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	for i := range uploads {
		if canceled(i) {
			continue
		}
		for k, dn := range clients {
			got, err := download(t.Context(), dn, chunkstream.Expect{ChunkID: ids[i], Size: size, FrameSize: frame, Digest: digests[i]})
			if err != nil {
				t.Fatalf("chunk %d from node %d: %v", i, k, err)
			}
			is.True(bytes.Equal(got, datas[i])) // every node has the chunk as sent
		}
	}
}

// sendSome sends the first n frames of a chunk (prepared inline by prep)
// over st, then cancels the stream; it returns an error only if the
// frames could not be sent. Its window is one frame, so the primary has
// taken and forwarded the frames before the last when it is canceled.
func sendSome(ctx context.Context, cancel context.CancelFunc, st dfspb.DataNode_UploadChunkStreamClient, prep *dfspb.PrepareChunkUploadRequest, id rpc.ChunkID, data []byte, frame, n int) error {
	u := chunkstream.NewUpload(ctx, st, int64(frame))
	for k := range n {
		b := data[k*frame : (k+1)*frame]
		f := &dfspb.ChunkDataStream{ChunkId: string(id), Data: b, Offset: int64(k * frame), PartialChecksum: chunkstream.FrameDigest(b)}
		if k == 0 {
			f.Prepare = prep
		}
		if err := u.Send(f); err != nil {
			return fmt.Errorf("frame %d: %w", k, err)
		}
	}
	cancel()
	return nil
}
