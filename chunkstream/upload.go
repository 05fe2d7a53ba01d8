package chunkstream

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// DefaultWindow is how many bytes a sender keeps unacknowledged.
const DefaultWindow = 4 << 20

// SendStream is the sending side of an UploadChunkStream (a gRPC client
// stream). Upload owns it: it closes the send direction when done.
type SendStream interface {
	Send(*dfspb.ChunkDataStream) error
	Recv() (*dfspb.ChunkDataAck, error)
	CloseSend() error
}

// Upload sends frames over one SendStream with windowed back-pressure: at
// most window bytes are unacknowledged, and a receiver that answers
// ready_for_next=false pauses the sender until it says ready again. Frames
// are sent in order from one goroutine; acks are read by another.
type Upload struct {
	stream SendStream
	window int64
	wd     *Watchdog // from the stream's context; nil without one

	finishing bool // Finish was called: the final ack is awaited

	mu      sync.Mutex
	cond    *sync.Cond
	sent    int64
	acked   int64
	ready   bool
	final   *dfspb.ChunkDataAck
	err     error
	recvErr chan struct{}
}

// NewUpload starts reading acks from stream. ctx must be the stream's
// context: when it ends, waiting senders give up. When ctx comes from
// NewWatchdog, the watchdog is armed whenever frames are unacknowledged,
// the receiver asked for a pause or the final ack is awaited, and each ack
// kicks it: a receiver that stops answering fails the upload with
// DeadlineExceeded after the watchdog's timeout.
func NewUpload(ctx context.Context, stream SendStream, window int64) *Upload {
	if window <= 0 {
		window = DefaultWindow
	}
	u := &Upload{stream: stream, window: window, wd: watchdogOf(ctx), ready: true, recvErr: make(chan struct{})}
	u.cond = sync.NewCond(&u.mu)
	// No goroutine waits for ctx: a primary opens two uploads per chunk,
	// and a goroutine each, however idle, is a stack to make and grow.
	stop := context.AfterFunc(ctx, func() { u.fail(context.Cause(ctx)) })
	rpc.Go(func() { u.readAcks(stop) })
	return u
}

func (u *Upload) fail(err error) {
	if u.wd != nil {
		if werr := u.wd.Err(); werr != nil {
			err = werr // the stall, not the cancellation it caused
		}
	}
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.cond.Broadcast()
	u.mu.Unlock()
}

// readAcks reads acks until the final one or an error, then stops
// watching the context (stop).
func (u *Upload) readAcks(stop func() bool) {
	defer close(u.recvErr)
	defer stop()
	for {
		ack, err := u.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = rpc.Errorf(rpc.Unavailable, "stream ended without a final ack")
			}
			u.fail(rpc.FromStatus(err))
			return
		}
		u.mu.Lock()
		if ack.BytesReceived > u.acked {
			u.acked = ack.BytesReceived
		}
		u.ready = ack.ReadyForNext
		if ack.IsFinal {
			u.final = ack
			if u.wd != nil {
				u.wd.Pause()
			}
			u.cond.Broadcast()
			u.mu.Unlock()
			return
		}
		if u.wd != nil {
			if u.sent > u.acked || !u.ready || u.finishing {
				u.wd.Kick()
			} else {
				u.wd.Pause()
			}
		}
		u.cond.Broadcast()
		u.mu.Unlock()
	}
}

// Send sends one frame, first waiting until the window has room and the
// receiver is ready. The frame's data must not be modified until Finish.
func (u *Upload) Send(f *dfspb.ChunkDataStream) error {
	return u.send(f, len(f.Data), nil)
}

// msgSender is a stream that sends any message its codec encodes: a
// gRPC stream's SendMsg.
type msgSender interface {
	SendMsg(m any) error
}

// SendShared sends f.Frame as Send does, through the stream's SendMsg, so
// that gRPC writes its data from the frame's own buffer instead of a copy
// (rpc.SharedFrame says who holds that buffer, and until when). The
// caller holds the frame while SendShared runs. The stream's connection
// must use the rpc codec (rpc.DialOptions): gRPC's own refuses a
// SharedFrame. A stream without SendMsg is sent f.Frame with Send (its
// data joined, for a frame in pieces), and must be done with its data
// when Send returns.
func (u *Upload) SendShared(f rpc.SharedFrame) error {
	msg := f.Frame
	if _, ok := u.stream.(msgSender); !ok && f.Pieces != nil {
		msg = proto.CloneOf(f.Frame)
		msg.Data = f.Pieces.Materialize()
	}
	return u.send(msg, len(f.Frame.Data)+f.Pieces.Len(), f)
}

// send sends f, of n data bytes, as shared through SendMsg when shared is
// not nil and the stream has it.
func (u *Upload) send(f *dfspb.ChunkDataStream, n int, shared any) error {
	u.mu.Lock()
	for u.err == nil && u.final == nil && (!u.ready || u.sent-u.acked >= u.window) {
		u.cond.Wait()
	}
	err := u.err
	if err == nil && u.final != nil {
		err = rpc.Errorf(rpc.Internal, "receiver finished before the final frame")
	}
	if err == nil {
		// Counted before it goes out, so an ack never runs ahead of sent.
		u.sent += int64(n)
		if u.wd != nil {
			u.wd.Arm()
		}
	}
	u.mu.Unlock()
	if err != nil {
		return err
	}
	if ms, ok := u.stream.(msgSender); ok && shared != nil {
		err = ms.SendMsg(shared)
	} else {
		err = u.stream.Send(f)
	}
	if err != nil {
		// The real cause arrives through Recv.
		<-u.recvErr
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.err != nil {
			return u.err
		}
		return rpc.FromStatus(err)
	}
	if u.wd != nil {
		// The transport took the frame once this stream's earlier bytes
		// went out, which the receiver's flow-control window allowed: it
		// is reading. A frame that waits behind other streams on a busy
		// connection is not the receiver's stall; a receiver that stops
		// reading blocks Send and the deadline fires.
		u.wd.Kick()
	}
	return nil
}

// Finish closes the send direction and waits for the final ack.
func (u *Upload) Finish() (*dfspb.ChunkDataAck, error) {
	_ = u.stream.CloseSend()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.finishing = true
	if u.wd != nil && u.final == nil {
		u.wd.Arm()
	}
	for u.err == nil && u.final == nil {
		u.cond.Wait()
	}
	if u.final != nil {
		return u.final, nil
	}
	return nil, u.err
}

// SendChunk cuts data into frames of frameSize, sends them with their
// digests over stream and waits for the final ack. It returns the ack and
// the chunk digest. data must hold the whole chunk (at least one byte).
// The stream is either a prepared session, or, with session empty, is
// prepared inline by prepare riding on the first frame.
func SendChunk(ctx context.Context, stream SendStream, session rpc.SessionID, prepare *dfspb.PrepareChunkUploadRequest, id rpc.ChunkID, data []byte, frameSize int, window int64) (*dfspb.ChunkDataAck, []byte, error) {
	u := NewUpload(ctx, stream, window)
	cd := NewChunkDigest()
	for off := 0; off < len(data); off += frameSize {
		end := min(off+frameSize, len(data))
		fd := FrameDigest(data[off:end])
		cd.Add(fd)
		f := &dfspb.ChunkDataStream{
			SessionId:       string(session),
			ChunkId:         string(id),
			Data:            data[off:end],
			Offset:          int64(off),
			PartialChecksum: fd,
		}
		if off == 0 {
			f.Prepare = prepare
		}
		if end == len(data) {
			f.IsFinal = true
			f.ChunkChecksum = cd.Sum()
		}
		if err := u.Send(f); err != nil {
			return nil, nil, err
		}
	}
	ack, err := u.Finish()
	if err != nil {
		return nil, nil, err
	}
	return ack, cd.Sum(), nil
}

// RecvStream is the receiving side of an UploadChunkStream (a gRPC server
// stream).
type RecvStream interface {
	Recv() (*dfspb.ChunkDataStream, error)
	Send(*dfspb.ChunkDataAck) error
}

// PieceRecvStream is a RecvStream that can also receive a frame with its
// data in the pieces gRPC read it into (rpc.PiecedFrame): a datanode's
// upload stream. Receive uses it where it can.
type PieceRecvStream interface {
	RecvStream
	RecvPieces() (*rpc.PiecedFrame, error)
}

// Sink consumes verified frames: a datanode queues them for its disk and
// forwards them to its replicas. It must not modify f.
type Sink interface {
	// Frame takes one verified frame, and owns its pieces from then on:
	// it frees them once done with them, whatever it returns.
	Frame(f *rpc.PiecedFrame) error
	// Backlog returns nil when the sink can take more frames now, or a
	// channel that is closed once it can again.
	Backlog() <-chan struct{}
}

// Receive reads frames from stream, starting with first (already read by
// the caller to find the session), verifies each against exp, hands it to
// sink and acknowledges it. When the sink has a backlog, the ack says
// ready_for_next=false and a second ack says ready again once the backlog
// clears; a well-behaved sender pauses in between. Receive returns once
// the final frame is verified and sunk; the caller makes the chunk durable
// and sends the final ack. The returned verifier holds the frame digests
// and the chunk digest. The frames' pieces go to the sink, or are freed.
func Receive(ctx context.Context, stream RecvStream, session rpc.SessionID, first *rpc.PiecedFrame, exp Expect, sink Sink) (*Verifier, error) {
	recv := wholeOf(stream)
	if ps, ok := stream.(PieceRecvStream); ok {
		recv = ps.RecvPieces
	}
	v := NewVerifier(exp)
	f := first
	for {
		if id := f.Msg.SessionId; id != "" && id != string(session) {
			f.Pieces.Free()
			return nil, rpc.Errorf(rpc.Invalid, "chunk %s: frame for session %q on session %s", exp.ChunkID, id, session)
		}
		if err := v.CheckPieces(f); err != nil {
			f.Pieces.Free()
			return nil, err
		}
		if err := sink.Frame(f); err != nil {
			return nil, err
		}
		if v.Done() {
			return v, nil
		}
		ack := &dfspb.ChunkDataAck{SessionId: string(session), BytesReceived: v.Received(), ReadyForNext: true}
		backlog := sink.Backlog()
		if backlog != nil {
			ack.ReadyForNext = false
		}
		if err := stream.Send(ack); err != nil {
			return nil, rpc.FromStatus(err)
		}
		if backlog != nil {
			select {
			case <-backlog:
			case <-ctx.Done():
				return nil, rpc.Errorf(rpc.Canceled, "chunk %s: sender went away at %d of %d bytes", exp.ChunkID, v.Received(), exp.Size)
			}
			if err := stream.Send(&dfspb.ChunkDataAck{SessionId: string(session), BytesReceived: v.Received(), ReadyForNext: true}); err != nil {
				return nil, rpc.FromStatus(err)
			}
		}
		var err error
		if f, err = recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, rpc.Errorf(rpc.Invalid, "chunk %s: stream ended at %d of %d bytes without a final frame", exp.ChunkID, v.Received(), exp.Size)
			}
			if ctx.Err() != nil {
				return nil, rpc.Errorf(rpc.Canceled, "chunk %s: sender went away at %d of %d bytes", exp.ChunkID, v.Received(), exp.Size)
			}
			return nil, rpc.FromStatus(err)
		}
	}
}
