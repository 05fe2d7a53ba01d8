package chunkstream_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// pipe is an in-memory UploadChunkStream: frames flow from the client end
// to the server end, acks the other way. Like gRPC, Send copies the message
// (callers may reuse their buffers) and a server that fails the call makes
// the client's Send return io.EOF and its Recv return the real status.
// Channels are buffered generously so that only Upload's own window and
// ready logic can hold a sender back.
type pipe struct {
	frames chan *dfspb.ChunkDataStream
	acks   chan *dfspb.ChunkDataAck
	// recvEntered gets a token each time the client end's Recv is entered,
	// which tells a test that every earlier ack has been fully processed.
	recvEntered chan struct{}

	closeSendOnce sync.Once
	finishOnce    sync.Once
	abortOnce     sync.Once
	abort         chan struct{}
	abortErr      error
}

const pipeBuffer = 256

func newPipe() *pipe {
	return &pipe{
		frames:      make(chan *dfspb.ChunkDataStream, pipeBuffer),
		acks:        make(chan *dfspb.ChunkDataAck, pipeBuffer),
		recvEntered: make(chan struct{}, pipeBuffer),
		abort:       make(chan struct{}),
	}
}

// client returns the sending side (a chunkstream.SendStream).
func (p *pipe) client() *clientEnd { return &clientEnd{p: p} }

// server returns the receiving side (a chunkstream.RecvStream).
func (p *pipe) server() *serverEnd { return &serverEnd{p: p} }

// fail ends the call with err, as a server handler returning err does.
func (p *pipe) fail(err error) {
	p.abortOnce.Do(func() {
		p.abortErr = err
		close(p.abort)
	})
}

// finish ends the call cleanly: the client reads io.EOF after the acks.
func (p *pipe) finish() { p.finishOnce.Do(func() { close(p.acks) }) }

type clientEnd struct {
	p      *pipe
	mu     sync.Mutex
	closed bool
}

func (c *clientEnd) Send(f *dfspb.ChunkDataStream) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		panic("pipe: Send after CloseSend")
	}
	select {
	case <-c.p.abort:
		return io.EOF
	default:
	}
	select {
	case c.p.frames <- proto.Clone(f).(*dfspb.ChunkDataStream):
		return nil
	case <-c.p.abort:
		return io.EOF
	}
}

func (c *clientEnd) Recv() (*dfspb.ChunkDataAck, error) {
	select {
	case c.p.recvEntered <- struct{}{}:
	default:
	}
	select {
	case a, ok := <-c.p.acks:
		if !ok {
			return nil, io.EOF
		}
		return a, nil
	case <-c.p.abort:
		return nil, c.p.abortErr
	}
}

func (c *clientEnd) CloseSend() error {
	c.p.closeSendOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.p.frames)
	})
	return nil
}

type serverEnd struct{ p *pipe }

func (s *serverEnd) Recv() (*dfspb.ChunkDataStream, error) {
	select {
	case f, ok := <-s.p.frames:
		if !ok {
			return nil, io.EOF
		}
		return f, nil
	case <-s.p.abort:
		return nil, context.Canceled
	}
}

func (s *serverEnd) Send(a *dfspb.ChunkDataAck) error {
	select {
	case s.p.acks <- proto.Clone(a).(*dfspb.ChunkDataAck):
		return nil
	case <-s.p.abort:
		return io.EOF
	}
}

// waitTimeout bounds every wait in these tests so that a bug shows up as a
// failure rather than a hung test; it is never used to assert speed.
const waitTimeout = 10 * time.Second

// quiet is how long a test gives a sender that should be paused the
// chance to misbehave. A correct sender can never fail the check, however
// the scheduler runs it.
const quiet = 20 * time.Millisecond

// nextFrame returns the next frame the server end receives.
func nextFrame(t *testing.T, s *serverEnd) *dfspb.ChunkDataStream {
	t.Helper()
	type res struct {
		f   *dfspb.ChunkDataStream
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := s.Recv()
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("server Recv: %v", r.err)
		}
		return r.f
	case <-time.After(waitTimeout):
		t.Fatal("no frame arrived")
		return nil
	}
}

// noFrame checks that no frame arrives while the sender should be paused.
func noFrame(t *testing.T, p *pipe, why string) {
	t.Helper()
	select {
	case f, ok := <-p.frames:
		if !ok {
			t.Fatalf("stream closed although %s", why)
		}
		t.Fatalf("frame at offset %d arrived although %s", f.GetOffset(), why)
	case <-time.After(quiet):
	}
}

// waitRecvEntered waits until the client's ack reader has entered Recv n
// more times.
func waitRecvEntered(t *testing.T, p *pipe, n int) {
	t.Helper()
	for range n {
		select {
		case <-p.recvEntered:
		case <-time.After(waitTimeout):
			t.Fatal("ack reader did not come back for the next ack")
		}
	}
}

// sendAck sends an ack from the server end.
func sendAck(t *testing.T, s *serverEnd, a *dfspb.ChunkDataAck) {
	t.Helper()
	if err := s.Send(a); err != nil {
		t.Fatalf("server Send: %v", err)
	}
}

// await waits for a result from a goroutine.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}
