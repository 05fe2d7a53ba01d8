package chunkstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
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

	missing     bool                                             // the node says it has no such chunk (NotFound)
	claim       func(*dfspb.PrepareChunkDownloadResponse)        // alters what the prepare or the header states
	noHeader    bool                                             // a download by chunk ID starts without the header
	headerDelay chan struct{}                                    // if set, a download by chunk ID sends nothing until it is closed
	prepares    atomic.Int32                                     // PrepareChunkDownload calls
	asked       atomic.Pointer[dfspb.DownloadChunkStreamRequest] // the last download request
	stallFrom   int                                              // with stall set, the frames sent before the stream stalls
	stall       bool                                             // the stream stops after stallFrom frames until the call ends
	cut         int                                              // if > 0, the stream ends cleanly after cut frames
	whole       bool                                             // a range asked for is ignored: the whole chunk streams
	downloads   atomic.Int32                                     // DownloadChunkStream calls
	sent        atomic.Int32                                     // frames sent
}

func (f *fakeNode) PrepareChunkDownload(ctx context.Context, req *dfspb.PrepareChunkDownloadRequest) (*dfspb.PrepareChunkDownloadResponse, error) {
	f.prepares.Add(1)
	hdr, err := f.header(req.ChunkId, req.FrameDigests)
	if err != nil {
		return nil, err
	}
	hdr.SessionId = string(testSession)
	return hdr, nil
}

// header is what the node states of the chunk id: its size, frame size and
// digest, its frame digests if asked for, as claim alters them.
func (f *fakeNode) header(id string, frameDigests bool) (*dfspb.PrepareChunkDownloadResponse, error) {
	if f.missing || id != string(testID) {
		return nil, status.Errorf(codes.NotFound, "chunk %s not found", id)
	}
	hdr := &dfspb.PrepareChunkDownloadResponse{Size: int64(len(f.chunk.data)), FrameSize: f.chunk.frameSize, ChunkChecksum: f.chunk.digest}
	if frameDigests {
		hdr.FrameDigests = slices.Clone(f.chunk.frames)
	}
	if f.claim != nil {
		f.claim(hdr)
	}
	return hdr, nil
}

func (f *fakeNode) DownloadChunkStream(req *dfspb.DownloadChunkStreamRequest, stream grpc.ServerStreamingServer[dfspb.ChunkDataStream]) error {
	f.downloads.Add(1)
	f.asked.Store(req)
	out := chunkstream.FrameSender(&countingSender{FrameSender: stream, n: &f.sent})
	if req.ChunkId != "" {
		hdr, err := f.header(req.ChunkId, req.FrameDigests)
		if err != nil {
			return err
		}
		if !f.noHeader {
			out = &headerSender{FrameSender: out, header: hdr}
		}
		if f.headerDelay != nil {
			<-f.headerDelay
		}
	} else if req.SessionId != string(testSession) {
		return status.Errorf(codes.NotFound, "unknown download session %s", req.SessionId)
	}
	switch {
	case f.stall:
		out = &stallingSender{FrameSender: out, left: f.stallFrom, ctx: stream.Context()}
	case f.cut > 0:
		out = &cuttingSender{FrameSender: out, left: f.cut}
	case f.cut < 0:
		out = &cuttingSender{FrameSender: out, left: 0}
	}
	c := f.chunk
	var err error
	if (req.FirstFrame != 0 || req.FrameCount != 0) && !f.whole {
		fr := chunkstream.FrameRange{First: int(req.FirstFrame), Last: int(req.FirstFrame + req.FrameCount - 1)}
		if req.FrameCount == 0 {
			fr.Last = len(c.frames) - 1
		}
		err = chunkstream.SendStoredFrames(stream.Context(), out, testID, bytes.NewReader(c.data), int64(len(c.data)), c.frameSize, c.frames, c.digest, fr)
	} else {
		err = chunkstream.SendStored(stream.Context(), out, testID, bytes.NewReader(c.data), int64(len(c.data)), c.frameSize, c.frames, c.digest)
	}
	if errors.Is(err, errCut) {
		return nil // the stream ends early, with no error
	}
	return rpc.ToStatus(err)
}

// headerSender sets a chunk's header on the first frame it sends, as a
// datanode does on a download that names its chunk.
type headerSender struct {
	chunkstream.FrameSender
	header *dfspb.PrepareChunkDownloadResponse
}

func (s *headerSender) Send(f *dfspb.ChunkDataStream) error {
	if s.header != nil {
		f.Header, s.header = s.header, nil
	}
	return s.FrameSender.Send(f)
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

// countingSender counts the frames it sends.
type countingSender struct {
	chunkstream.FrameSender
	n *atomic.Int32
}

func (s *countingSender) Send(f *dfspb.ChunkDataStream) error {
	s.n.Add(1)
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
}

// TestFetchFrames: a fetch of a range of frames streams those alone, each
// verified against the frame digests, which are checked against the
// committed digest; every way a source can lie or fail is blamed as for a
// whole chunk, and nothing unverified reaches the writer.
func TestFetchFrames(t *testing.T) {
	s := newStored(50, 16) // frames of 16, 16, 16 and 2 bytes
	for _, tt := range []struct {
		name        string
		first, last int
	}{
		{"one frame", 0, 0},
		{"middle frames", 1, 2},
		{"to the short last frame", 2, 3},
		{"the short last frame", 3, 3},
		{"every frame", 0, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			node := &fakeNode{chunk: s}
			d := download(s, serveNode(t, node))
			d.Frames = &chunkstream.FrameRange{First: tt.first, Last: tt.last}
			var out frameLog
			got, err := chunkstream.Fetch(t.Context(), d, &out)
			is.NoErr(err)                                                                 // the range verifies
			is.True(bytes.Equal(out.bytes(), s.data[tt.first*16:min(tt.last*16+16, 50)])) // byte for byte
			is.Equal(len(out.frames), tt.last-tt.first+1)                                 // one write per frame
			is.Equal(int(node.sent.Load()), tt.last-tt.first+1)                           // and only those frames were sent
			is.Equal(got.FrameDigests, s.frames)                                          // every frame digest
			is.Equal(got.Digest, s.digest)                                                // and the committed digest
		})
	}
	t.Run("committed digest prefix", func(t *testing.T) {
		is := is.New(t)
		d := download(s, serveNode(t, &fakeNode{chunk: s}))
		d.Digest = s.digest[:rpc.DigestPrefixSize]
		d.Frames = &chunkstream.FrameRange{First: 1, Last: 1}
		var out frameLog
		got, err := chunkstream.Fetch(t.Context(), d, &out)
		is.NoErr(err)                                    // a prefix names the chunk
		is.True(bytes.Equal(out.bytes(), s.data[16:32])) // byte for byte
		is.Equal(got.Digest, s.digest)                   // the whole digest comes back
	})

	flipped := s
	flipped.data = bytes.Clone(s.data)
	flipped.data[20] ^= 1 // in frame 1
	otherFrames := newStored(50, 16)
	otherFrames.data[0] ^= 1
	otherFrames = newStored2(otherFrames.data, 16)
	tests := []struct {
		name        string
		node        *fakeNode
		first, last int
		fault       chunkstream.Fault
		kind        rpc.Kind
		written     int // frames the writer got
	}{
		{"lying frame", &fakeNode{chunk: flipped}, 0, 2, chunkstream.SourceCorrupt, rpc.Invalid, 1},
		{"frame digest list altered", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameDigests[3] = s.frames[0] }},
			1, 1, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"frame digests of another chunk", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameDigests = otherFrames.frames }},
			1, 1, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"frame digest list short", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameDigests = r.FrameDigests[:3] }},
			0, 0, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"no frame digests", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameDigests = nil }},
			0, 0, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"short frame digest", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameDigests[0] = r.FrameDigests[0][:31] }},
			0, 0, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"chunk digest mismatch at prepare", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) {
			r.ChunkChecksum = otherFrames.digest
			r.FrameDigests = otherFrames.frames
		}},
			0, 0, chunkstream.SourceCorrupt, rpc.Internal, 0},
		{"short stream", &fakeNode{chunk: s, cut: 1}, 1, 3, chunkstream.SourceFailed, rpc.Unavailable, 1},
		{"range ignored", &fakeNode{chunk: s, whole: true}, 1, 2, chunkstream.SourceCorrupt, rpc.Invalid, 0},
		{"frames past the range", &fakeNode{chunk: s, whole: true}, 0, 1, chunkstream.SourceCorrupt, rpc.Invalid, 1},
		{"missing chunk", &fakeNode{chunk: s, missing: true}, 0, 0, chunkstream.SourceMissing, rpc.NotFound, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			d := download(s, serveNode(t, tt.node))
			d.Frames = &chunkstream.FrameRange{First: tt.first, Last: tt.last}
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), d, &out)
			is.True(err != nil)                          // the fetch fails
			is.Equal(chunkstream.FaultOf(err), tt.fault) // blaming the right party
			is.Equal(rpc.KindOf(err), tt.kind)           // with the kind callers act on
			is.Equal(len(out.frames), tt.written)        // only verified frames were written
			is.True(bytes.HasPrefix(s.data[tt.first*16:], out.bytes()))
		})
	}
	t.Run("range outside the chunk", func(t *testing.T) {
		is := is.New(t)
		for _, fr := range []chunkstream.FrameRange{{First: 4, Last: 4}, {First: 2, Last: 4}, {First: -1, Last: 0}, {First: 2, Last: 1}} {
			node := &fakeNode{chunk: s}
			d := download(s, serveNode(t, node))
			d.Frames = &fr
			_, err := chunkstream.Fetch(t.Context(), d, &frameLog{})
			is.Equal(rpc.KindOf(err), rpc.Internal)                 // the caller's mistake
			is.Equal(chunkstream.FaultOf(err), chunkstream.NoFault) // nobody else's
			is.Equal(node.downloads.Load(), int32(0))               // and nothing streamed
		}
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
		name    string
		node    *fakeNode
		fault   chunkstream.Fault
		kind    rpc.Kind
		written int // frames the writer got
	}{
		{"corrupt frame", &fakeNode{chunk: flipped}, chunkstream.SourceCorrupt, rpc.Invalid, 1},
		{"size mismatch in the header", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.Size++ }},
			chunkstream.SourceCorrupt, rpc.Internal, 0},
		{"frame size mismatch in the header", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.FrameSize = 32 }},
			chunkstream.SourceCorrupt, rpc.Internal, 0},
		{"digest mismatch in the header", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.ChunkChecksum = s.frames[0] }},
			chunkstream.SourceCorrupt, rpc.Internal, 0},
		{"missing chunk", &fakeNode{chunk: s, missing: true}, chunkstream.SourceMissing, rpc.NotFound, 0},
		{"stream ends early", &fakeNode{chunk: s, cut: 2}, chunkstream.SourceFailed, rpc.Unavailable, 2},
		{"stream ends before its first frame", &fakeNode{chunk: s, cut: -1}, chunkstream.SourceFailed, rpc.Unavailable, 0},
		{"no header", &fakeNode{chunk: s, noHeader: true}, chunkstream.SourceFailed, rpc.Unavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, tt.node)), &out)
			is.True(err != nil)                          // the fetch fails
			is.Equal(chunkstream.FaultOf(err), tt.fault) // blaming the right party
			is.Equal(rpc.KindOf(err), tt.kind)           // with the kind callers act on
			is.Equal(len(out.frames), tt.written)        // only verified frames were written
			is.Equal(tt.node.prepares.Load(), int32(0))  // in one call: no prepare
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

// newStored2 stores data cut into frames of frameSize.
func newStored2(data []byte, frameSize int64) stored {
	digest, fds := chunkstream.DigestOf(data, int(frameSize))
	return stored{data: data, frameSize: frameSize, frames: fds, digest: digest}
}

// TestFetchOneCall: a fetch is one DownloadChunkStream naming the chunk,
// with no prepare; a range asks for the frame digests in the header, a
// whole chunk does not (its frames carry their digests).
func TestFetchOneCall(t *testing.T) {
	s := newStored(50, 16)
	for _, fr := range []*chunkstream.FrameRange{nil, {First: 1, Last: 2}} {
		t.Run(fmt.Sprintf("frames %v", fr), func(t *testing.T) {
			is := is.New(t)
			node := &fakeNode{chunk: s}
			d := download(s, serveNode(t, node))
			d.Frames = fr
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), d, &out)
			is.NoErr(err)                             // the chunk or range verifies
			is.Equal(node.prepares.Load(), int32(0))  // no prepare
			is.Equal(node.downloads.Load(), int32(1)) // one call
			req := node.asked.Load()
			is.Equal(req.ChunkId, string(testID)) // naming the chunk
			is.Equal(req.SessionId, "")           // not a session
			is.Equal(req.FrameDigests, fr != nil) // digests asked for a range only
		})
	}
}

// TestFetchKnownFrameDigests: a range read with the frame digests an
// earlier fetch verified does not ask for them again and checks the
// frames against them; a source that lies is still blamed, and digests
// that do not fit the chunk are the caller's mistake.
func TestFetchKnownFrameDigests(t *testing.T) {
	s := newStored(50, 16)
	t.Run("good", func(t *testing.T) {
		is := is.New(t)
		node := &fakeNode{chunk: s}
		d := download(s, serveNode(t, node))
		d.Frames = &chunkstream.FrameRange{First: 2, Last: 3}
		d.FrameDigests = s.frames
		var out frameLog
		got, err := chunkstream.Fetch(t.Context(), d, &out)
		is.NoErr(err)                                    // the range verifies
		is.True(bytes.Equal(out.bytes(), s.data[32:50])) // byte for byte
		is.True(!node.asked.Load().FrameDigests)         // the digests were not asked for
		is.Equal(got.FrameDigests, s.frames)             // the known ones come back
		is.Equal(got.Digest, s.digest)
	})
	flipped := s
	flipped.data = bytes.Clone(s.data)
	flipped.data[40] ^= 1 // in frame 2
	for _, tt := range []struct {
		name string
		node *fakeNode
		kind rpc.Kind
	}{
		{"lying frame", &fakeNode{chunk: flipped}, rpc.Invalid},
		{"other chunk in the header", &fakeNode{chunk: s, claim: func(r *dfspb.PrepareChunkDownloadResponse) { r.ChunkChecksum = s.frames[1] }}, rpc.Internal},
		{"lying frame digests sent anyway", &fakeNode{chunk: flipped, claim: func(r *dfspb.PrepareChunkDownloadResponse) {
			_, r.FrameDigests = chunkstream.DigestOf(flipped.data, 16)
		}}, rpc.Invalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			d := download(s, serveNode(t, tt.node))
			d.Frames = &chunkstream.FrameRange{First: 1, Last: 2}
			d.FrameDigests = s.frames
			var out frameLog
			_, err := chunkstream.Fetch(t.Context(), d, &out)
			is.Equal(chunkstream.FaultOf(err), chunkstream.SourceCorrupt) // the source is blamed
			is.Equal(rpc.KindOf(err), tt.kind)
			is.True(len(out.frames) <= 1)                      // frame 2 never reached the writer
			is.True(bytes.HasPrefix(s.data[16:], out.bytes())) // only good bytes did
		})
	}
	t.Run("digests that do not fit the chunk", func(t *testing.T) {
		is := is.New(t)
		short := slices.Clone(s.frames)
		short[1] = short[1][:31]
		for _, fds := range [][][]byte{s.frames[:3], append(slices.Clone(s.frames), s.frames[0]), short} {
			node := &fakeNode{chunk: s}
			d := download(s, serveNode(t, node))
			d.Frames = &chunkstream.FrameRange{First: 0, Last: 0}
			d.FrameDigests = fds
			_, err := chunkstream.Fetch(t.Context(), d, &frameLog{})
			is.Equal(rpc.KindOf(err), rpc.Internal)                 // the caller's mistake
			is.Equal(chunkstream.FaultOf(err), chunkstream.NoFault) // nobody else's
			is.Equal(node.downloads.Load(), int32(0))               // and nothing streamed
		}
	})
}

// TestFetchHeaderTimeout: with a PrepareTimeout, a source that opens the
// stream but sends no header within it fails as a stall, on the caller's
// clock, though no progress timeout is set.
func TestFetchHeaderTimeout(t *testing.T) {
	is := is.New(t)
	s := newStored(50, 16)
	fc := clockwork.NewFakeClock()
	release := make(chan struct{})
	defer close(release)
	d := download(s, serveNode(t, &fakeNode{chunk: s, headerDelay: release}))
	d.Clock = fc
	d.ProgressTimeout = 0
	d.PrepareTimeout = time.Second
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.Fetch(t.Context(), d, &frameLog{})
		done <- err
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	is.NoErr(fc.BlockUntilContext(ctx, 1)) // the header's deadline is armed
	fc.Advance(time.Second)
	err := await(t, done, "the fetch without a header to fail")
	is.Equal(rpc.KindOf(err), rpc.DeadlineExceeded)              // failed as a stall
	is.Equal(chunkstream.FaultOf(err), chunkstream.SourceFailed) // of the source
}

// pieceLog is a PieceWriter that records each frame's pieces.
type pieceLog struct {
	frames [][]byte
	pieces []int // per frame
	fail   error
}

func (l *pieceLog) Write(p []byte) (int, error) {
	return 0, errors.New("a PieceWriter is written pieces")
}

func (l *pieceLog) WritePieces(data mem.BufferSlice) error {
	defer data.Free()
	if l.fail != nil {
		return l.fail
	}
	l.frames = append(l.frames, data.Materialize())
	l.pieces = append(l.pieces, len(data))
	return nil
}

// TestFetchPieces: a PieceWriter gets each verified frame in the pieces
// gRPC received it in, not joined (a 1 MiB frame comes in many), for a
// whole chunk and a range of frames; a frame whose pieces hold a flipped
// byte is refused, and nothing of it is written; a PieceWriter's error
// ends the fetch, blamed on the writer.
func TestFetchPieces(t *testing.T) {
	const frame = 1 << 20
	data := testData(2*frame + 1000)
	s := newStored2(data, frame)
	for _, fr := range []*chunkstream.FrameRange{nil, {First: 1, Last: 2}} {
		t.Run(fmt.Sprintf("frames %v", fr), func(t *testing.T) {
			is := is.New(t)
			d := download(s, serveNode(t, &fakeNode{chunk: s}))
			d.Frames = fr
			var out pieceLog
			_, err := chunkstream.Fetch(t.Context(), d, &out)
			is.NoErr(err) // the chunk verifies
			want := data
			if fr != nil {
				want = data[frame:]
			}
			is.True(bytes.Equal(bytes.Join(out.frames, nil), want)) // byte for byte
			is.True(out.pieces[0] > 1)                              // a whole frame in the pieces it came in, not joined
		})
	}
	t.Run("flipped byte", func(t *testing.T) {
		is := is.New(t)
		bad := s
		bad.data = bytes.Clone(data)
		bad.data[frame+frame/2] ^= 1
		var out pieceLog
		_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, &fakeNode{chunk: bad})), &out)
		is.Equal(chunkstream.FaultOf(err), chunkstream.SourceCorrupt) // the copy is blamed
		is.Equal(len(out.frames), 1)                                  // only the frame before it was written
	})
	t.Run("writer fails", func(t *testing.T) {
		is := is.New(t)
		disk := errors.New("disk full")
		_, err := chunkstream.Fetch(t.Context(), download(s, serveNode(t, &fakeNode{chunk: s})), &pieceLog{fail: disk})
		is.Equal(chunkstream.FaultOf(err), chunkstream.WriterFailed) // the writer is blamed
		is.True(errors.Is(err, disk))                                // with its own error
	})
}
