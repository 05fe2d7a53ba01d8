package datanode

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestFrameBudget: many concurrent uploads through a primary and its
// replica all complete, byte for byte, while the frames each node holds
// never exceed its budget (half of it on the primary, which forwards).
// Without the budget each stream would hold its disk queue and the frame
// being forwarded: 64 streams of 512 KiB frames, far above 8 MiB.
func TestFrameBudget(t *testing.T) {
	is := is.New(t)
	const budget, streams, size, frame = 8 << 20, 64, 1 << 20, 512 << 10
	small := func(c *Config) { c.FrameBudget = budget; c.Capacity = 1 << 30 }
	coord := datanodetest.Start(t)
	primary, replica := startNode(t, coord, small), startNode(t, coord, small)
	dn := client(t, primary)
	data := chunkData(size, 9)
	ids := make([]rpc.ChunkID, streams)
	for i := range ids {
		ids[i] = rpc.NewChunkID("/budget", rpc.NewSessionID(), 0, uint32(i))
	}

	var wg sync.WaitGroup
	errs := make([]error, streams)
	digests := make([][]byte, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := ids[i]
			st, err := dn.UploadChunkStream(t.Context())
			if err != nil {
				errs[i] = err
				return
			}
			prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: size, FrameSize: frame,
				Replicas: []*dfspb.NodeRef{{NodeId: string(replica.ID()), Addr: replica.Addr()}}}
			var ack *dfspb.ChunkDataAck
			ack, digests[i], errs[i] = chunkstream.SendChunk(t.Context(), st, "", prep, id, data, frame, chunkstream.DefaultWindow)
			if errs[i] == nil && len(ack.Replicas) != 2 {
				errs[i] = rpc.Errorf(rpc.Internal, "stored on %v", ack.Replicas)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	for _, n := range []*Node{primary, replica} {
		for i := range streams {
			m, err := n.Store().Stat(ids[i])
			is.NoErr(err)                              // every chunk is stored on both nodes
			is.True(bytes.Equal(m.Digest, digests[i])) // as sent (frames and chunk verified on receipt)
		}
	}
	inUse, high := primary.FrameBytes()
	t.Logf("frame bytes high water: primary %s, replica %s", rpc.FormatBytes(high), func() string { _, h := replica.FrameBytes(); return rpc.FormatBytes(h) }())
	is.Equal(inUse, int64(0)) // every frame's bytes were returned
	is.True(high > 0)         // the budget was used
	is.True(high <= budget/2) // a primary holds at most half the budget
	inUse, high = replica.FrameBytes()
	is.Equal(inUse, int64(0)) // on the replica too
	is.True(high <= budget)   // which holds at most the budget
}

// TestMaxSessionsCountsRunningUploads: upload streams count against
// --max-sessions while they run, prepared inline or not; one beyond is
// refused with ResourceExhausted, attributed to the node.
func TestMaxSessionsCountsRunningUploads(t *testing.T) {
	is := is.New(t)
	n := startNode(t, datanodetest.Start(t), func(c *Config) { c.MaxSessions = 2 })
	dn := client(t, n)
	data := chunkData(3*testFrame, 1)
	// open starts an inline upload and leaves it running after its first
	// frame; it returns the error of the first ack.
	open := func(i int) error {
		st, err := dn.UploadChunkStream(t.Context())
		is.NoErr(err) // the stream opens
		f := cutFrame(chunkID(t, i), data, testFrame)
		f.Prepare = &dfspb.PrepareChunkUploadRequest{ChunkId: string(chunkID(t, i)), Size: int64(len(data)), FrameSize: testFrame}
		is.NoErr(st.Send(f)) // its first frame goes out
		_, err = st.Recv()
		return err
	}
	for i := range 2 {
		is.NoErr(open(i)) // up to the limit, streams run
	}
	err := open(2)
	err = rpc.FromStatus(err)
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)                             // beyond it, refused
	is.Equal(rpc.FailedNodesOf(err), []string{string(n.ID())})                   // by this node
	is.True(strings.Contains(err.Error(), "upload streams prepared or running")) // saying why
	_, err = dn.PrepareChunkUpload(t.Context(), &dfspb.PrepareChunkUploadRequest{ChunkId: string(chunkID(t, 3)), Size: 10, FrameSize: testFrame})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.ResourceExhausted) // a prepare too
}

// cutFrame returns the first frame of data as chunk id, with its digest.
func cutFrame(id rpc.ChunkID, data []byte, frameSize int) *dfspb.ChunkDataStream {
	return &dfspb.ChunkDataStream{ChunkId: string(id), Data: data[:frameSize], PartialChecksum: chunkstream.FrameDigest(data[:frameSize])}
}

// TestBudgetWaitsOnTheClock: a stream that would go over the budget waits
// for bytes to be released, up to its wait on the node's clock, then is
// refused with ResourceExhausted; the end of its context ends the wait
// with the context's kind and cause.
func TestBudgetWaitsOnTheClock(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	b := newBudget(10, clk)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is.NoErr(b.acquire(ctx, 10, 10, time.Second)) // the whole budget

	done := make(chan error, 1)
	go func() { done <- b.acquire(ctx, 5, 10, time.Second) }()
	is.NoErr(clk.BlockUntilContext(ctx, 1)) // waiting on the clock
	b.release(5)
	is.NoErr(<-done) // room made: taken without the clock moving

	go func() { done <- b.acquire(ctx, 5, 10, time.Second) }()
	is.NoErr(clk.BlockUntilContext(ctx, 1)) // full again: waiting
	clk.Advance(999 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("gave up before its wait: %v", err)
	default:
	}
	clk.Advance(time.Millisecond)
	err := <-done
	is.True(errors.Is(err, rpc.ResourceExhausted)) // refused after the wait

	stop, end := context.WithCancel(ctx)
	go func() { done <- b.acquire(stop, 5, 10, time.Second) }()
	is.NoErr(clk.BlockUntilContext(ctx, 1)) // waiting
	end()
	err = <-done
	is.True(errors.Is(err, rpc.Canceled))     // the context's kind
	is.True(errors.Is(err, context.Canceled)) // and cause
	used, high := b.usage()
	is.Equal(used, int64(10)) // nothing taken by the refused streams
	is.Equal(high, int64(10)) // never above the budget
}
