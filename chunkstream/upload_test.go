package chunkstream_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const testSession = rpc.SessionID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")

// memSink is an in-memory Sink: it keeps the frames' bytes and, when
// backlog is set, reports a backlog after every frame for which it returns
// a channel.
type memSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	frames  []*dfspb.ChunkDataStream
	err     error
	backlog func(n int) <-chan struct{} // n: frames taken so far
}

var _ chunkstream.Sink = (*memSink)(nil)

func (s *memSink) Frame(pf *rpc.PiecedFrame) error {
	f := pf.Msg
	f.Data = pf.Pieces.Materialize()
	pf.Pieces.Free()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.buf.Write(f.Data)
	s.frames = append(s.frames, f)
	return nil
}

// pieced returns a copy of f as a received frame in pieces.
func pieced(f *dfspb.ChunkDataStream) *rpc.PiecedFrame { return rpc.Pieced(proto.CloneOf(f)) }

func (s *memSink) Backlog() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backlog == nil {
		return nil
	}
	return s.backlog(len(s.frames))
}

func (s *memSink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.frames)
}

// serve runs the datanode side of an upload over p: Receive, then the final
// ack. It returns the received bytes and the verifier.
type served struct {
	data  []byte
	first *dfspb.ChunkDataStream
	sink  *memSink
	v     *chunkstream.Verifier
	err   error
}

func serve(ctx context.Context, p *pipe, exp chunkstream.Expect, sink *memSink) <-chan served {
	out := make(chan served, 1)
	go func() {
		srv := p.server()
		first, err := srv.Recv()
		if err != nil {
			p.fail(err)
			out <- served{err: err}
			return
		}
		v, err := chunkstream.Receive(ctx, srv, testSession, pieced(first), exp, sink)
		if err != nil {
			p.fail(rpc.ToStatus(err))
			out <- served{err: err}
			return
		}
		_ = srv.Send(&dfspb.ChunkDataAck{SessionId: string(testSession), BytesReceived: v.Received(), IsFinal: true, Replicas: []string{"n1", "n2"}})
		p.finish()
		out <- served{data: sink.bytes(), first: first, sink: sink, v: v}
	}()
	return out
}

func TestSendChunkReceive(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		frameSize int
		window    int64
		backlog   bool
	}{
		{"one frame", 10, 16, 0, false},
		{"exact frames", 64, 16, 0, false},
		{"remainder", 100, 16, 0, false},
		{"window of one frame", 100, 16, 16, false},
		{"window smaller than a frame", 100, 16, 5, false},
		{"window of three frames", 1000, 16, 48, false},
		{"sink backlog", 1000, 16, 48, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := newPipe()
			data := testData(tt.size)
			sink := &memSink{}
			if tt.backlog {
				// Every third frame the sink's disk queue is full for a moment.
				sink.backlog = func(n int) <-chan struct{} {
					if n%3 != 0 {
						return nil
					}
					ch := make(chan struct{})
					go func() { runtime.Gosched(); close(ch) }()
					return ch
				}
			}
			got := serve(ctx, p, chunkstream.Expect{ChunkID: testID, Size: int64(tt.size), FrameSize: int64(tt.frameSize)}, sink)
			prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(testID), Size: int64(tt.size), FrameSize: int64(tt.frameSize)}

			ack, digest, err := chunkstream.SendChunk(ctx, p.client(), testSession, prep, testID, data, tt.frameSize, tt.window)
			is.NoErr(err) // upload succeeds
			srv := await(t, got, "server")
			is.NoErr(srv.err)                    // server accepted the chunk
			is.True(bytes.Equal(srv.data, data)) // byte for byte
			want, _ := chunkstream.DigestOf(data, tt.frameSize)
			is.Equal(digest, want)                                        // SendChunk returns the chunk digest
			is.Equal(srv.v.Sum(), want)                                   // the server computed the same
			is.True(ack.IsFinal)                                          // the returned ack is the final one
			is.Equal(ack.Replicas, []string{"n1", "n2"})                  // with what the server said
			is.Equal(ack.BytesReceived, int64(tt.size))                   // and the byte count
			is.Equal(srv.first.GetPrepare().GetChunkId(), string(testID)) // the inline prepare rides on the first frame
			for _, f := range srv.sink.frames[1:] {
				is.True(f.Prepare == nil) // and only on the first
			}
		})
	}
}

// TestUploadWindow drives a receiver that never acks on its own: the sender
// must stop with window bytes in flight and go on only as acks arrive.
func TestUploadWindow(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const frameSize, window, nframes = 16, 32, 6
	p := newPipe()
	data := testData(frameSize * nframes)
	sendDone := make(chan error, 1)
	go func() {
		u := chunkstream.NewUpload(ctx, p.client(), window)
		for _, f := range frames(data, frameSize) {
			if err := u.Send(f); err != nil {
				sendDone <- err
				return
			}
		}
		_, err := u.Finish()
		sendDone <- err
	}()

	srv := p.server()
	var arrived, acked int64
	for arrived < int64(len(data)) {
		f := nextFrame(t, srv)
		// Deterministic invariant: the sender can only have seen acks we sent,
		// so whatever it had in flight when it sent f is bounded by them.
		is.True(arrived-acked < window) // never more than window bytes unacknowledged
		is.Equal(f.Offset, arrived)     // frames in order
		arrived += int64(len(f.Data))
		if arrived-acked == window {
			if arrived < int64(len(data)) {
				noFrame(t, p, "the window is full") // the sender waits for an ack
			}
			acked = arrived
			sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: acked, ReadyForNext: true})
		}
	}
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: arrived, IsFinal: true})
	p.finish()
	is.NoErr(await(t, sendDone, "sender")) // upload finishes
}

// TestUploadReadyForNext: a receiver that answers ready_for_next=false
// pauses the sender until it says ready again, even with room in the window.
func TestUploadReadyForNext(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	data := testData(64)
	fs := frames(data, 16)
	u := chunkstream.NewUpload(ctx, p.client(), 1<<20)
	srv := p.server()
	waitRecvEntered(t, p, 1) // the ack reader is waiting for the first ack

	is.NoErr(u.Send(fs[0])) // first frame goes out at once
	f := nextFrame(t, srv)
	is.Equal(f.Offset, int64(0)) // first frame arrives

	// Not ready, twice: the sender must stay paused through both.
	for i := range 2 {
		sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 16, ReadyForNext: false})
		waitRecvEntered(t, p, 1) // the not-ready ack is applied
		if i == 0 {
			// Only now start the next Send, so no Send can be past its
			// check from before the pause.
			go func() {
				err := u.Send(fs[1])
				if err != nil {
					t.Errorf("paused Send: %v", err)
				}
			}()
		}
		noFrame(t, p, "the receiver said ready_for_next=false")
	}

	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 16, ReadyForNext: true})
	f = nextFrame(t, srv)
	is.Equal(f.Offset, int64(16)) // the paused frame goes out once the receiver is ready

	for _, fr := range fs[2:] {
		is.NoErr(u.Send(fr)) // the rest flows
		nextFrame(t, srv)
	}
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 64, IsFinal: true})
	ack, err := u.Finish()
	is.NoErr(err)                          // Finish returns the final ack
	is.Equal(ack.BytesReceived, int64(64)) // the final ack
}

func TestUploadReceiverFails(t *testing.T) {
	tests := []struct {
		name string
		err  error
		kind rpc.Kind
	}{
		{"full", status.Error(codes.ResourceExhausted, "datanode is full"), rpc.ResourceExhausted},
		{"bad frame", status.Error(codes.InvalidArgument, "frame checksum mismatch"), rpc.Invalid},
		{"with nodes", rpc.ToStatus(rpc.NodeError(rpc.Unavailable, []string{"n9"}, "replica down")), rpc.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := newPipe()
			// The receiver reads one frame, then fails the call while the
			// sender is blocked on a full window.
			go func() {
				if _, err := p.server().Recv(); err == nil {
					p.fail(tt.err)
				}
			}()
			_, _, err := chunkstream.SendChunk(ctx, p.client(), testSession, nil, testID, testData(100), 16, 16)
			is.True(err != nil)                                                         // the upload fails
			is.Equal(rpc.KindOf(err), tt.kind)                                          // with the receiver's kind
			is.Equal(rpc.FailedNodesOf(err), rpc.FailedNodesOf(rpc.FromStatus(tt.err))) // and its failed nodes
		})
	}
}

func TestUploadStreamEndsWithoutFinalAck(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	go func() {
		srv := p.server()
		for {
			if _, err := srv.Recv(); err != nil {
				break
			}
		}
		p.finish() // a clean end of stream, but no final ack
	}()
	_, _, err := chunkstream.SendChunk(ctx, p.client(), testSession, nil, testID, testData(40), 16, 0)
	is.True(errors.Is(err, rpc.Unavailable))                      // a missing final ack is Unavailable
	is.True(strings.Contains(err.Error(), "without a final ack")) // and says so
}

func TestUploadFinalAckTooEarly(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	u := chunkstream.NewUpload(ctx, p.client(), 0)
	fs := frames(testData(64), 16)
	is.NoErr(u.Send(fs[0]))
	sendAck(t, p.server(), &dfspb.ChunkDataAck{BytesReceived: 16, IsFinal: true})
	waitRecvEntered(t, p, 1) // first Recv (before the ack)
	// The ack reader stops after a final ack; wait until Send sees it.
	var err error
	for i := 0; i < 200 && err == nil; i++ { // bounded below the pipe's buffer
		time.Sleep(time.Millisecond)
		err = u.Send(fs[1])
	}
	is.True(errors.Is(err, rpc.Internal))                               // a final ack before the final frame is an error
	is.True(strings.Contains(err.Error(), "finished before the final")) // naming it
}

func TestUploadContextCanceledWhilePaused(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe()
	u := chunkstream.NewUpload(ctx, p.client(), 16)
	fs := frames(testData(64), 16)
	is.NoErr(u.Send(fs[0])) // fills the window
	done := make(chan error, 1)
	go func() { done <- u.Send(fs[1]) }()
	cancel()
	err := await(t, done, "paused Send")
	is.True(err != nil)                     // canceling the stream's context releases a waiting sender
	is.Equal(rpc.KindOf(err), rpc.Canceled) // with a Canceled error
	_, err = u.Finish()
	is.Equal(rpc.KindOf(err), rpc.Canceled) // Finish reports it too
}

func TestUploadConcurrentSendersAreNotRequired(t *testing.T) {
	// Upload is fed from one goroutine; this pins that Finish can run while
	// acks are still arriving and still returns the final ack.
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	u := chunkstream.NewUpload(ctx, p.client(), 0)
	for _, f := range frames(testData(48), 16) {
		is.NoErr(u.Send(f)) // send all
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv := p.server()
		for i := int64(1); i <= 3; i++ {
			_ = srv.Send(&dfspb.ChunkDataAck{BytesReceived: 16 * i, ReadyForNext: true, IsFinal: i == 3})
		}
	}()
	ack, err := u.Finish()
	wg.Wait()
	is.NoErr(err)                          // Finish waits for the final ack
	is.True(ack.IsFinal)                   // which it returns
	is.Equal(ack.BytesReceived, int64(48)) // all bytes
}

func TestReceiveRefuses(t *testing.T) {
	data := testData(48)
	exp := chunkstream.Expect{ChunkID: testID, Size: 48, FrameSize: 16}
	tests := []struct {
		name string
		// feed returns the frames to send: the first is handed to Receive,
		// the rest come over the stream, which then ends.
		feed func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream
		kind rpc.Kind
		msg  string
		sunk int // frames the sink must have seen
	}{
		{"corrupt frame", func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[1].Data = bytes.Clone(fs[1].Data)
			fs[1].Data[0]++
			return fs
		}, rpc.Invalid, "frame checksum mismatch", 1},
		{"other session", func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[1].SessionId = "2b4e28ba-2fa1-11d2-883f-0016d3cca427"
			return fs
		}, rpc.Invalid, "for session", 1},
		{"stream ends early", func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return fs[:2]
		}, rpc.Invalid, "stream ended at 32 of 48 bytes", 2},
		{"bad chunk digest", func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[2].ChunkChecksum = chunkstream.FrameDigest(nil)
			return fs
		}, rpc.Invalid, "chunk checksum mismatch", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := newPipe()
			feed := tt.feed(frames(data, 16))
			for _, f := range feed[1:] {
				p.frames <- f
			}
			close(p.frames)
			sink := &memSink{}
			_, err := chunkstream.Receive(ctx, p.server(), testSession, pieced(feed[0]), exp, sink)
			sunk := sink.count()
			is.True(err != nil)                            // refused
			is.Equal(rpc.KindOf(err), tt.kind)             // kind
			is.True(strings.Contains(err.Error(), tt.msg)) // message
			is.Equal(sunk, tt.sunk)                        // only verified frames reach the sink
		})
	}
}

func TestReceiveAcksEachFrame(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	fs := frames(testData(40), 16)
	for _, f := range fs[1:] {
		p.frames <- f
	}
	v, err := chunkstream.Receive(ctx, p.server(), testSession, pieced(fs[0]), chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}, &memSink{})
	is.NoErr(err)     // accepted
	is.True(v.Done()) // verifier done
	close(p.acks)
	var got []int64
	for a := range p.acks {
		is.True(a.ReadyForNext)                    // Receive is always ready
		is.True(!a.IsFinal)                        // the final ack is the caller's job
		is.Equal(a.SessionId, string(testSession)) // acks name the session
		got = append(got, a.BytesReceived)
	}
	is.Equal(got, []int64{16, 32}) // one ack per non-final frame, with the running count
}

func TestReceiveSinkError(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	fs := frames(testData(40), 16)
	diskFull := rpc.Errorf(rpc.ResourceExhausted, "disk full")
	_, err := chunkstream.Receive(ctx, p.server(), testSession, pieced(fs[0]), chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}, &memSink{err: diskFull})
	is.Equal(err, diskFull) // the sink's error comes back unchanged
}

// brokenRecv is a RecvStream whose sender has gone away: acks are taken,
// the next Recv fails.
type brokenRecv struct{ err error }

func (b brokenRecv) Recv() (*dfspb.ChunkDataStream, error) { return nil, b.err }
func (brokenRecv) Send(*dfspb.ChunkDataAck) error          { return nil }

func TestReceiveSenderGoesAway(t *testing.T) {
	fs := frames(testData(40), 16)
	exp := chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}
	sink := &memSink{}

	t.Run("context ended", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := chunkstream.Receive(ctx, brokenRecv{status.Error(codes.Canceled, "context canceled")}, testSession, pieced(fs[0]), exp, sink)
		is.Equal(rpc.KindOf(err), rpc.Canceled)                     // the sender went away
		is.True(strings.Contains(err.Error(), "at 16 of 40 bytes")) // saying how far it got
	})
	t.Run("transport error", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := chunkstream.Receive(ctx, brokenRecv{status.Error(codes.Unavailable, "connection reset")}, testSession, pieced(fs[0]), exp, sink)
		is.Equal(rpc.KindOf(err), rpc.Unavailable) // the stream's status is decoded
	})
}

// TestReceiveBacklog: while the sink has a backlog, Receive tells the
// sender to pause (ready_for_next=false), reads no further frame, and says
// ready again once the backlog clears.
func TestReceiveBacklog(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	fs := frames(testData(40), 16)
	for _, f := range fs[1:] {
		p.frames <- f
	}
	clear := make(chan struct{})
	sink := &memSink{backlog: func(n int) <-chan struct{} {
		if n == 1 {
			return clear
		}
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.Receive(ctx, p.server(), testSession, pieced(fs[0]), chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}, sink)
		done <- err
	}()
	a := await(t, p.acks, "not-ready ack")
	is.Equal(a.BytesReceived, int64(16)) // ack for the first frame
	is.True(!a.ReadyForNext)             // says the receiver is not ready
	select {
	case a := <-p.acks:
		t.Fatalf("ack %v while the sink still has a backlog", a)
	case err := <-done:
		t.Fatalf("Receive returned %v while the sink still has a backlog", err)
	case <-time.After(quiet):
	}
	is.Equal(len(p.frames), 2) // no frame read while the sink is backed up
	is.Equal(sink.count(), 1)  // nothing more sunk

	close(clear)
	a = await(t, p.acks, "ready ack")
	is.Equal(a.BytesReceived, int64(16))             // same count
	is.True(a.ReadyForNext)                          // now ready
	is.NoErr(await(t, done, "Receive"))              // the rest of the chunk goes through
	is.True(bytes.Equal(sink.bytes(), testData(40))) // all bytes sunk in order
}

func TestReceiveBacklogCanceled(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe()
	fs := frames(testData(40), 16)
	sink := &memSink{backlog: func(int) <-chan struct{} { return make(chan struct{}) }} // never clears
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.Receive(ctx, p.server(), testSession, pieced(fs[0]), chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}, sink)
		done <- err
	}()
	await(t, p.acks, "not-ready ack")
	cancel()
	err := await(t, done, "Receive")
	is.Equal(rpc.KindOf(err), rpc.Canceled) // a stuck backlog ends with the stream's context
}

// TestUploadSharedPieces: a frame sent in the pieces it was received in
// (a primary forwarding what it got) over a stream without SendMsg is
// sent joined, and arrives byte for byte; the window counts its bytes.
func TestUploadSharedPieces(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe()
	data := testData(40)
	digest, frames := chunkstream.DigestOf(data, 16)
	got := serve(ctx, p, chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}, &memSink{})
	u := chunkstream.NewUpload(ctx, p.client(), 1<<20)
	for i, off := 0, 0; off < len(data); i, off = i+1, off+16 {
		end := min(off+16, len(data))
		f := &dfspb.ChunkDataStream{SessionId: string(testSession), ChunkId: string(testID), Offset: int64(off),
			IsFinal: end == len(data), PartialChecksum: frames[i]}
		if f.IsFinal {
			f.ChunkChecksum = digest
		}
		var pieces mem.BufferSlice
		for q := off; q < end; q += 5 {
			pieces = append(pieces, mem.SliceBuffer(data[q:min(q+5, end)]))
		}
		is.NoErr(u.SendShared(rpc.SharedFrame{Frame: f, Pieces: pieces})) // sent
	}
	ack, err := u.Finish()
	is.NoErr(err)
	is.Equal(ack.BytesReceived, int64(40)) // every byte acknowledged
	srv := await(t, got, "server")
	is.NoErr(srv.err)                    // the receiver verified the chunk
	is.True(bytes.Equal(srv.data, data)) // byte for byte
}
