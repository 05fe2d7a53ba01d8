package chunkstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// fakeNode is a datanode-like gRPC server that serves one stored chunk
// through the real SendStored, and can be told to misbehave.
type fakeNode struct {
	dfspb.UnimplementedDataNodeServer
	chunk stored

	missing   bool                                      // PrepareChunkDownload says NotFound
	claim     func(*dfspb.PrepareChunkDownloadResponse) // alters what the prepare states
	stallFrom int                                       // with stall set, the frames sent before the stream stalls
	stall     bool                                      // the stream stops after stallFrom frames until the call ends
	cut       int                                       // if > 0, the stream ends cleanly after cut frames
	downloads atomic.Int32                              // DownloadChunkStream calls
}

func (f *fakeNode) PrepareChunkDownload(ctx context.Context, req *dfspb.PrepareChunkDownloadRequest) (*dfspb.PrepareChunkDownloadResponse, error) {
	if f.missing || req.ChunkId != string(testID) {
		return nil, status.Errorf(codes.NotFound, "chunk %s not found", req.ChunkId)
	}
	resp := &dfspb.PrepareChunkDownloadResponse{
		SessionId: string(testSession), Size: int64(len(f.chunk.data)), FrameSize: f.chunk.frameSize, ChunkChecksum: f.chunk.digest,
	}
	if f.claim != nil {
		f.claim(resp)
	}
	return resp, nil
}

func (f *fakeNode) DownloadChunkStream(req *dfspb.DownloadChunkStreamRequest, stream grpc.ServerStreamingServer[dfspb.ChunkDataStream]) error {
	f.downloads.Add(1)
	if req.SessionId != string(testSession) {
		return status.Errorf(codes.NotFound, "unknown download session %s", req.SessionId)
	}
	out := chunkstream.FrameSender(stream)
	switch {
	case f.stall:
		out = &stallingSender{FrameSender: stream, left: f.stallFrom, ctx: stream.Context()}
	case f.cut > 0:
		out = &cuttingSender{FrameSender: stream, left: f.cut}
	}
	err := chunkstream.SendStored(stream.Context(), out, testID, bytes.NewReader(f.chunk.data), int64(len(f.chunk.data)), f.chunk.frameSize, f.chunk.frames, f.chunk.digest)
	if errors.Is(err, errCut) {
		return nil // the stream ends early, with no error
	}
	return rpc.ToStatus(err)
}

// stallingSender sends left frames, then blocks until the call ends.
type stallingSender struct {
	chunkstream.FrameSender
	left int
	ctx  context.Context
}

func (s *stallingSender) Send(f *dfspb.ChunkDataStream) error {
	if s.left == 0 {
		<-s.ctx.Done()
		return s.ctx.Err()
	}
	s.left--
	return s.FrameSender.Send(f)
}

var errCut = errors.New("cut")

// cuttingSender sends left frames, then fails with errCut.
type cuttingSender struct {
	chunkstream.FrameSender
	left int
}

func (s *cuttingSender) Send(f *dfspb.ChunkDataStream) error {
	if s.left == 0 {
		return errCut
	}
	s.left--
	return s.FrameSender.Send(f)
}

// serve starts f on a loopback port and returns a client of it.
func serveNode(t *testing.T, f *fakeNode) dfspb.DataNodeClient {
	t.Helper()
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Stop waits for the handlers, so none logs into t after the test.
	opts := append(rpc.ServerOptions(zerolog.New(zerolog.NewTestWriter(t))), grpc.WaitForHandlers(true))
	srv := grpc.NewServer(opts...)
	dfspb.RegisterDataNodeServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	cc, err := rpc.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
	})
	return dfspb.NewDataNodeClient(cc)
}

// download describes a fetch of s from dn.
func download(s stored, dn dfspb.DataNodeClient) chunkstream.Download {
	return chunkstream.Download{Expect: s.expect(), From: dn, Peer: "datanode test", ProgressTimeout: 10 * time.Second}
}

// frameLog records what a fetch wrote, frame by frame.
type frameLog struct {
	mu      sync.Mutex
	frames  [][]byte
	onWrite func(n int) error // called with the frame's index, if set
}

func (l *frameLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	i := len(l.frames)
	l.frames = append(l.frames, bytes.Clone(p))
	l.mu.Unlock()
	if l.onWrite != nil {
		if err := l.onWrite(i); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (l *frameLog) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Join(l.frames, nil)
}

// TestFetch: a good chunk arrives whole, verified, frame by frame; a frame
// range writes only its frames.
func TestFetch(t *testing.T) {
	for _, size := range []int{1, 16, 50} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			is := is.New(t)
			s := newStored(size, 16)
			dn := serveNode(t, &fakeNode{chunk: s})
			var out frameLog
			got, err := chunkstream.Fetch(t.Context(), download(s, dn), &out)
			is.NoErr(err)                             // the chunk verifies
			is.True(bytes.Equal(out.bytes(), s.data)) // byte for byte
			is.Equal(len(out.frames), (size+15)/16)   // one write per frame
			is.Equal(got.Digest, s.digest)            // the committed digest
			is.Equal(got.FrameDigests, s.frames)      // and the frame digests, for a copy to store
			is.Equal(chunkstream.FaultOf(err), chunkstream.NoFault)
		})
	}
	t.Run("into a slice", func(t *testing.T) {
		is := is.New(t)
		s := newStored(50, 16)
		dst := make([]byte, 50)
		_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, &fakeNode{chunk: s})), chunkstream.SliceWriter(dst))
		is.NoErr(err)                     // the chunk verifies
		is.True(bytes.Equal(dst, s.data)) // and fills the buffer
	})
	t.Run("frame range", func(t *testing.T) {
		is := is.New(t)
		s := newStored(50, 16)
		d := download(s, serveNode(t, &fakeNode{chunk: s}))
		d.Frames = &chunkstream.FrameRange{First: 1, Last: 2}
		var out frameLog
		got, err := chunkstream.Fetch(t.Context(), d, &out)
		is.NoErr(err)                                    // the whole chunk is still verified
		is.True(bytes.Equal(out.bytes(), s.data[16:48])) // but only frames 1 and 2 are written
		is.Equal(len(got.FrameDigests), 4)               // every frame was checked
	})
}

// TestFetchFaults: each way a source can fail is refused with the fault
// that says whom to blame, and nothing unverified reaches the writer.
func TestFetchFaults(t *testing.T) {
	s := newStored(50, 16)
	flipped := s
	flipped.data = bytes.Clone(s.data)
	flipped.data[20] ^= 1
	tests := []struct {
		name     string
		node     *fakeNode
		fault    chunkstream.Fault
		kind     rpc.Kind
		written  int  // frames the writer got
		streamed bool // whether the stream was opened
	}{
		{"corrupt frame", &fakeNode{chunk: flipped}, chunkstream.SourceCorrupt, rpc.Invalid, 1, true},
		{"size mismatch at prepare", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.Size++ }},
			chunkstream.SourceCorrupt, rpc.Internal, 0, false},
		{"frame size mismatch at prepare", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameSize = 32 }},
			chunkstream.SourceCorrupt, rpc.Internal, 0, false},
		{"digest mismatch at prepare", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.ChunkChecksum = s.frames[0] }},
			chunkstream.SourceCorrupt, rpc.Internal, 0, false},
		{"missing chunk", &fakeNode{chunk: s, missing: true}, chunkstream.SourceMissing, rpc.NotFound, 0, false},
		{"stream ends early", &fakeNode{chunk: s, cut: 2}, chunkstream.SourceFailed, rpc.Unavailable, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, tt.node)), &out)
			is.True(err != nil)                                 // the fetch fails
			is.Equal(chunkstream.FaultOf(err), tt.fault)        // blaming the right party
			is.Equal(rpc.KindOf(err), tt.kind)                  // with the kind callers act on
			is.Equal(len(out.frames), tt.written)               // only verified frames were written
			is.Equal(tt.node.downloads.Load() > 0, tt.streamed) // a bad prepare opens no stream
		})
	}

	t.Run("writer fails", func(t *testing.T) {
		is := is.New(t)
		disk := rpc.Errorf(rpc.ResourceExhausted, "disk full")
		out := frameLog{onWrite: func(int) error { return disk }}
		_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, &fakeNode{chunk: s})), &out)
		is.Equal(chunkstream.FaultOf(err), chunkstream.WriterFailed) // the writer is to blame, not the source
		is.True(errors.Is(err, disk))                                // its error comes back
		is.Equal(len(out.frames), 1)                                 // and ends the fetch
	})
	t.Run("unreachable", func(t *testing.T) {
		is := is.New(t)
		lis, err := rpc.Listen("127.0.0.1:0")
		is.NoErr(err)
		addr := lis.Addr().String()
		lis.Close()
		cc, err := rpc.Dial(addr)
		is.NoErr(err)
		defer cc.Close()
		_, err = chunkstream.Fetch(t.Context(), download(s, dfspb.NewDataNodeClient(cc)), &frameLog{})
		is.Equal(chunkstream.FaultOf(err), chunkstream.SourceFailed) // a node that does not answer failed
		is.Equal(rpc.KindOf(err), rpc.Unavailable)
	})
	t.Run("no committed digest", func(t *testing.T) {
		is := is.New(t)
		d := download(s, serveNode(t, &fakeNode{chunk: s}))
		d.Digest = nil
		_, err := chunkstream.Fetch(t.Context(), d, &frameLog{})
		is.Equal(rpc.KindOf(err), rpc.Internal)                 // a fetch must name what was committed
		is.Equal(chunkstream.FaultOf(err), chunkstream.NoFault) // nobody else is to blame
	})
}

// TestFetchDigestPrefix: a repair copy names the committed digest by a
// prefix (all the coordinator keeps): the source's whole digest must start
// with it and the bytes must match that whole digest.
func TestFetchDigestPrefix(t *testing.T) {
	s := newStored(50, 16)
	prefix := s.digest[:rpc.DigestPrefixSize]
	t.Run("good copy", func(t *testing.T) {
		is := is.New(t)
		d := download(s, serveNode(t, &fakeNode{chunk: s}))
		d.Digest = prefix
		var out frameLog
		got, err := chunkstream.Fetch(t.Context(), d, &out)
		is.NoErr(err)                             // the prefix names the chunk
		is.True(bytes.Equal(out.bytes(), s.data)) // byte for byte
		is.Equal(got.Digest, s.digest)            // the whole digest, for the copy to store
	})
	otherLate := bytes.Clone(s.digest)
	otherLate[rpc.DigestPrefixSize] ^= 1
	otherEarly := bytes.Clone(s.digest)
	otherEarly[0] ^= 1
	tests := []struct {
		name   string
		digest []byte // what the fetch expects
		claim  []byte // what the source says it holds
		kind   rpc.Kind
	}{
		{"prefix differs", otherEarly[:rpc.DigestPrefixSize], s.digest, rpc.Internal},
		{"short prefix", s.digest[:rpc.DigestPrefixSize-1], s.digest, rpc.Internal},
		{"source claims a prefix", prefix, prefix, rpc.Internal},
		{"bytes do not match the source's claim", prefix, otherLate, rpc.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			node := &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.ChunkChecksum = tt.claim }}
			d := download(s, serveNode(t, node))
			d.Digest = tt.digest
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), d, &out)
			is.Equal(chunkstream.FaultOf(err), chunkstream.SourceCorrupt) // the source is to blame
			is.Equal(rpc.KindOf(err), tt.kind)
			is.True(len(out.bytes()) < len(s.data)) // the chunk was not accepted whole
		})
	}
}

// TestFetchStalled: a source that stops sending mid-chunk fails the fetch
// one progress timeout later, on the caller's clock, as a stall.
func TestFetchStalled(t *testing.T) {
	is := is.New(t)
	s := newStored(50, 16)
	fc := clockwork.NewFakeClock()
	d := download(s, serveNode(t, &fakeNode{chunk: s, stall: true, stallFrom: 1}))
	d.Clock = fc
	d.ProgressTimeout = time.Second
	wrote := make(chan struct{}, 1)
	out := frameLog{onWrite: func(int) error { wrote <- struct{}{}; return nil }}
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.Fetch(t.Context(), d, &out)
		done <- err
	}()
	<-wrote // the first frame arrived; no other comes
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	is.NoErr(fc.BlockUntilContext(ctx, 1)) // the progress deadline is armed again
	fc.Advance(time.Second - time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the fetch failed before its progress timeout: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	fc.Advance(time.Millisecond)
	err := await(t, done, "the stalled fetch to fail")
	is.Equal(rpc.KindOf(err), rpc.DeadlineExceeded)              // failed as a stall
	is.Equal(chunkstream.FaultOf(err), chunkstream.SourceFailed) // of the source
	is.True(errors.Is(err, rpc.DeadlineExceeded))
}

// TestFetchSlowWriter: time the writer takes is not the source's; a
// writer slower than the progress timeout does not fail the fetch.
func TestFetchSlowWriter(t *testing.T) {
	is := is.New(t)
	s := newStored(50, 16)
	fc := clockwork.NewFakeClock()
	d := download(s, serveNode(t, &fakeNode{chunk: s}))
	d.Clock = fc
	d.ProgressTimeout = time.Second
	out := frameLog{onWrite: func(i int) error {
		if i == 1 {
			fc.Advance(time.Minute) // a disk that takes its time
		}
		return nil
	}}
	_, err := chunkstream.Fetch(t.Context(), d, &out)
	is.NoErr(err)                             // not a stall
	is.True(bytes.Equal(out.bytes(), s.data)) // the chunk arrives whole
}

// TestFetchCanceled: canceling the caller's context ends a fetch whose
// source stalled, with no progress timeout to end it.
func TestFetchCanceled(t *testing.T) {
	is := is.New(t)
	s := newStored(50, 16)
	d := download(s, serveNode(t, &fakeNode{chunk: s, stall: true, stallFrom: 2}))
	d.ProgressTimeout = 0 // never fires
	ctx, cancel := context.WithCancel(t.Context())
	out := frameLog{onWrite: func(i int) error {
		if i == 1 {
			cancel()
		}
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.Fetch(ctx, d, &out)
		done <- err
	}()
	err := await(t, done, "the canceled fetch to end")
	is.Equal(rpc.KindOf(err), rpc.Canceled) // ended by the caller
	is.Equal(len(out.frames), 2)            // after the frames that came
}
