package chunkstream

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// FrameSender is the sending side of a DownloadChunkStream.
type FrameSender interface {
	Send(*dfspb.ChunkDataStream) error
}

// SharedSender is a FrameSender that can also send a frame whose data it
// does not copy (a gRPC stream's SendMsg of an rpc.SharedFrame, on a
// server with the rpc codec): a datanode's download stream.
type SharedSender interface {
	FrameSender
	SendShared(rpc.SharedFrame) error
}

// SendStored streams a stored chunk of size bytes from r in frames of
// frameSize, each with its stored digest, so that the reader verifies the
// bytes against the digests recorded when the chunk was written. The final
// frame carries the stored chunk digest.
func SendStored(ctx context.Context, stream FrameSender, id rpc.ChunkID, r io.ReaderAt, size, frameSize int64, frames [][]byte, chunkDigest []byte) error {
	return sendStored(ctx, stream, id, r, size, frameSize, frames, chunkDigest, 0, size)
}

// SendStoredFrames streams the frames fr picks of a stored chunk, as
// SendStored streams them all: each frame at its offset in the chunk with
// its stored digest. The last frame of the range is marked final and
// carries the chunk digest, so that the reader knows the stream is
// complete; it verifies each frame against the frame digests it was given
// (see Fetch). fr must lie within the chunk (see CheckFrameRange).
func SendStoredFrames(ctx context.Context, stream FrameSender, id rpc.ChunkID, r io.ReaderAt, size, frameSize int64, frames [][]byte, chunkDigest []byte, fr FrameRange) error {
	if err := CheckFrameRange(fr, size, frameSize); err != nil {
		return rpc.Errorf(rpc.Internal, "chunk %s: %w", id, err)
	}
	return sendStored(ctx, stream, id, r, size, frameSize, frames, chunkDigest, int64(fr.First)*frameSize, min(int64(fr.Last+1)*frameSize, size))
}

// sendStored streams the frames of a stored chunk from offset from (a
// frame boundary) to offset to (a frame boundary or size); the last one
// is final. A SharedSender is handed each frame in a pooled buffer of its
// own, which gRPC writes from and hands back once written; any other
// sender gets one buffer, reused, whose frames it must be done with when
// Send returns.
func sendStored(ctx context.Context, stream FrameSender, id rpc.ChunkID, r io.ReaderAt, size, frameSize int64, frames [][]byte, chunkDigest []byte, from, to int64) error {
	shared, _ := stream.(SharedSender)
	var buf []byte
	if shared == nil {
		buf = make([]byte, min(frameSize, max(to-from, 1)))
	}
	// send reads the frame at off into data and sends it, shared with
	// held as its holder when the stream takes shared frames.
	send := func(data []byte, held *rpc.HeldFrame, off int64, digest []byte) error {
		if _, err := r.ReadAt(data, off); err != nil {
			return rpc.Errorf(rpc.Internal, "chunk %s: read at %d: %w", id, off, err)
		}
		f := &dfspb.ChunkDataStream{ChunkId: string(id), Data: data, Offset: off, PartialChecksum: digest}
		if off+int64(len(data)) == to {
			f.IsFinal = true
			f.ChunkChecksum = chunkDigest
		}
		var err error
		if held != nil {
			err = shared.SendShared(rpc.SharedFrame{Frame: f, Holder: held})
		} else {
			err = stream.Send(f)
		}
		return rpc.FromStatus(err)
	}
	for i, off := int(from/frameSize), from; off < to; i, off = i+1, off+frameSize {
		if err := ctx.Err(); err != nil {
			return rpc.Errorf(rpc.Canceled, "chunk %s: download canceled", id)
		}
		if i >= len(frames) {
			return rpc.Errorf(rpc.Internal, "chunk %s: stored frame digests end at frame %d", id, i)
		}
		n := min(frameSize, size-off)
		if shared == nil {
			if err := send(buf[:n], nil, off, frames[i]); err != nil {
				return err
			}
			continue
		}
		held := rpc.NewHeldFrame(int(n))
		err := send(held.Data, held, off, frames[i])
		held.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// FrameCount returns the number of frames of a chunk of size bytes in
// frames of frameSize (both positive).
func FrameCount(size, frameSize int64) int {
	return int((size + frameSize - 1) / frameSize)
}

// CheckFrameRange checks that fr picks frames of a chunk of size bytes in
// frames of frameSize: an Invalid error says what is out of range.
func CheckFrameRange(fr FrameRange, size, frameSize int64) error {
	n := FrameCount(size, frameSize)
	switch {
	case fr.First < 0 || fr.First >= n:
		return rpc.Errorf(rpc.Invalid, "first frame %d out of range: the chunk has %d frames (0 to %d)", fr.First, n, n-1)
	case fr.Last < fr.First || fr.Last >= n:
		return rpc.Errorf(rpc.Invalid, "frames %d to %d out of range: the chunk has %d frames (0 to %d)", fr.First, fr.Last, n, n-1)
	}
	return nil
}

// FrameReceiver is the receiving side of a DownloadChunkStream.
type FrameReceiver interface {
	Recv() (*dfspb.ChunkDataStream, error)
}

// ReceiveInto reads a whole chunk from stream into dst (len(dst) ==
// exp.Size), verifying every frame and the chunk digest against exp, whose
// Digest must be the digest recorded at commit. On a mismatch it returns an
// Invalid error and dst holds unverified bytes that must not be used.
func ReceiveInto(stream FrameReceiver, exp Expect, dst []byte) error {
	if int64(len(dst)) != exp.Size {
		return rpc.Errorf(rpc.Internal, "chunk %s: buffer of %d bytes for %d", exp.ChunkID, len(dst), exp.Size)
	}
	_, err := ReceiveFrames(stream, exp, func(off int64, data []byte) error {
		copy(dst[off:], data)
		return nil
	})
	return err
}

// ReceiveFrames reads a whole chunk from stream and hands each frame's data
// to fn, in order and at its offset, once the frame's digest has been
// verified; it never holds more than one frame, so a caller can write a
// chunk of any size through a bounded buffer. exp.Digest must be the digest
// recorded at commit: the final frame's chunk digest is checked against it,
// not against what the stream claims.
//
// The chunk as a whole is verified only when ReceiveFrames returns nil: the
// bytes fn received must not be used (made visible) before. fn may keep
// data, as each frame is a message of its own; an error from fn ends the
// read and is returned unchanged. A frame or chunk that does not match its
// digests is an Invalid error, a stream that ends early Unavailable, and a
// failed Recv returns the stream's status. The returned Verifier holds the
// frame digests and the chunk digest.
func ReceiveFrames(stream FrameReceiver, exp Expect, fn func(off int64, data []byte) error) (*Verifier, error) {
	v, _, err := receive(wholeOf(stream), exp, func(off int64, f *rpc.PiecedFrame) error {
		return fn(off, f.Pieces[0].ReadOnlyData()) // one piece, the message's own
	})
	return v, err
}

// source yields the frames of a download, each with its data in pieces
// (rpc.PiecedFrame) that the caller owns.
type source func() (*rpc.PiecedFrame, error)

// wholeOf is the source of the frames r receives, each frame's data one
// piece.
func wholeOf(r FrameReceiver) source {
	return func() (*rpc.PiecedFrame, error) {
		f, err := r.Recv()
		if err != nil {
			return nil, err
		}
		return rpc.Pieced(f), nil
	}
}

// piecesOf is the source of the frames of a download stream of a
// connection made with rpc.Dial, each frame's data left in the buffers
// gRPC read it into.
func piecesOf(s grpc.ClientStream) source {
	return func() (*rpc.PiecedFrame, error) {
		f := new(rpc.PiecedFrame)
		if err := s.RecvMsg(f); err != nil {
			return nil, err
		}
		return f, nil
	}
}

// receive is ReceiveFrames of the frames next yields: fn takes each
// frame with its pieces, which it owns from then on, whatever it
// returns. It says whom an error blames: SourceCorrupt for bytes that
// fail their digests, WriterFailed for fn's error, and SourceFailed
// (SourceMissing for NotFound) for the stream's.
func receive(next source, exp Expect, fn func(off int64, f *rpc.PiecedFrame) error) (*Verifier, Fault, error) {
	if exp.Digest == nil {
		return nil, NoFault, rpc.Errorf(rpc.Internal, "chunk %s: no expected digest", exp.ChunkID)
	}
	v := NewVerifier(exp)
	for !v.Done() {
		f, err := next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, SourceFailed, rpc.Errorf(rpc.Unavailable, "chunk %s: stream ended at %d of %d bytes", exp.ChunkID, v.Received(), exp.Size)
			}
			err = rpc.FromStatus(err)
			return nil, sourceFault(err), err
		}
		off := v.Received()
		if err := v.CheckPieces(f); err != nil {
			f.Pieces.Free()
			return nil, SourceCorrupt, err
		}
		if f.Len() == 0 {
			f.Pieces.Free()
			continue
		}
		if err := fn(off, f); err != nil {
			return nil, WriterFailed, err
		}
	}
	return v, NoFault, nil
}

// sourceFault is the fault of a failed call to a source: SourceMissing
// when it says it has no such chunk, else SourceFailed.
func sourceFault(err error) Fault {
	if rpc.KindOf(err) == rpc.NotFound {
		return SourceMissing
	}
	return SourceFailed
}
