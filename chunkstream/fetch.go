package chunkstream

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/mem"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Download names a committed chunk and the datanode to read it from, for
// Fetch.
type Download struct {
	// Expect is the chunk as committed: its ID, size, frame size and
	// digest, from the chunk map (never from the datanode). All are
	// required. The digest may be a prefix of the committed one of at
	// least rpc.DigestPrefixSize bytes (a repair copy's: the coordinator's
	// index keeps no more): the datanode's whole digest must then start
	// with it, and the bytes must match that whole digest.
	Expect
	// From is the datanode holding a copy, a client of a connection made
	// with rpc.Dial (whose codec receives frames in pieces).
	From dfspb.DataNodeClient
	// Token is the chunk's read token, passed on as given (a datanode
	// running with TLS refuses the read without a valid one).
	Token *dfspb.ChunkToken
	// Peer names From in a stall's error ("datanode 10.0.0.3:7001").
	Peer string
	// ProgressTimeout fails a source that shows no progress for this long,
	// from the call to the last frame (see NewWatchdog); 0 never does.
	ProgressTimeout time.Duration
	// PrepareTimeout, if positive, bounds the wait for the stream's first
	// message (the chunk's header, where a prepare call once answered);
	// the whole fetch is bounded by the caller's context.
	PrepareTimeout time.Duration
	// Heard, if set, tells when the connection to From last moved (see
	// Watchdog.HeardFrom).
	Heard func() time.Time
	// Clock runs the progress deadline; nil is the real clock.
	Clock clockwork.Clock
	// Frames, if set, picks the frames to read; nil is the whole chunk.
	// Only those frames are streamed: each is verified against the chunk's
	// frame digests, which the datanode sends and which must hash to the
	// committed chunk digest.
	Frames *FrameRange
	// FrameDigests, if set with Frames, are the chunk's frame digests as
	// an earlier Fetch of the same committed chunk returned them
	// (Fetched.FrameDigests, verified then): the datanode is not asked for
	// them again, and the frames are verified against these. A list that
	// does not fit the chunk (a digest per frame, of rpc.DigestSize bytes)
	// is Internal, the caller's mistake.
	FrameDigests [][]byte
}

// PieceWriter is a writer that Fetch hands each frame in the pieces gRPC
// received it in (rpc.PiecedFrame), saving the copy that joins them into
// the one slice Write takes.
type PieceWriter interface {
	io.Writer
	// WritePieces takes the data of the next frame and owns it from then
	// on: it frees the pieces once done with them, whatever it returns.
	// An error ends the fetch and is returned unchanged inside.
	WritePieces(data mem.BufferSlice) error
}

// FrameRange picks the frames First through Last (counted from 0, Last
// included) of a chunk.
type FrameRange struct {
	First, Last int
}

// Fetched is what a successful Fetch verified: the chunk's frame digests
// (all of them, for a range of frames too) and its digest (the committed
// one).
type Fetched struct {
	FrameDigests [][]byte
	Digest       []byte
}

// Fault says whom a failed Fetch blames, so that the caller knows what to
// report: a copy to replace, a node that failed, or neither.
type Fault uint8

const (
	// NoFault: not a Fetch error (or none).
	NoFault Fault = iota
	// SourceFailed: the datanode did not deliver the chunk. It could not
	// be reached, refused the call, stalled (a DeadlineExceeded from the
	// progress deadline) or its stream broke; or the caller's context
	// ended, which callers check first.
	SourceFailed
	// SourceMissing: the datanode says it holds no such chunk (NotFound),
	// though the chunk map lists it: its copy may be lost.
	SourceMissing
	// SourceCorrupt: the datanode holds a chunk of another size, frame
	// size or digest than was committed, or served bytes that fail their
	// digests. Its copy is bad.
	SourceCorrupt
	// WriterFailed: the caller's writer failed; its error is returned
	// unchanged inside.
	WriterFailed
)

var faultNames = [...]string{
	NoFault:       "no fault",
	SourceFailed:  "source failed",
	SourceMissing: "source missing the chunk",
	SourceCorrupt: "source corrupt",
	WriterFailed:  "writer failed",
}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "fault(?)"
}

// fetchError is a Fetch error with its fault. It reads as its cause, and
// errors.Is, errors.As, rpc.KindOf and rpc.FailedNodesOf see through it.
type fetchError struct {
	fault Fault
	err   error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// FaultOf returns the fault of an error from Fetch, and NoFault for any
// other error.
func FaultOf(err error) Fault {
	var fe *fetchError
	if errors.As(err, &fe) {
		return fe.fault
	}
	return NoFault
}

func blame(f Fault, err error) error { return &fetchError{fault: f, err: err} }

// Fetch reads the committed chunk d names from d.From and writes its bytes
// to w, in order, in one call: it streams the chunk (DownloadChunkStream
// naming it by ID), compares the size, frame size and digest the first
// message's header states with the committed ones, and verifies each
// frame, and the chunk digest against the committed one, under a progress
// deadline. Each Write gets one frame whose digest was verified; the chunk
// as a whole is verified only when Fetch returns nil, and what w got must
// not be used (made visible) before. Each frame is a buffer of its own,
// so w may keep the slice, and hand it back with rpc.RecycleFrame. A w
// that is a PieceWriter gets each frame in the pieces it arrived in
// instead, with no copy to join them. Time spent writing is not the
// source's: the progress deadline is paused meanwhile.
//
// A failed Fetch's error carries its Fault (see FaultOf). Its kinds:
// Internal for a copy of another chunk, Invalid for bytes that fail their
// digests, Unavailable for a stream that ends early or starts without a
// header, DeadlineExceeded for a stall, NotFound when the datanode holds
// no such chunk, and otherwise the datanode's status; a writer's error
// comes back unchanged inside. Canceling ctx ends the fetch.
//
// With d.Frames set, Fetch reads those frames alone: it asks for the
// chunk's frame digests in the header (unless d.FrameDigests holds them),
// checks that they hash to the datanode's chunk digest (which must agree
// with the committed one, as for a whole chunk), and checks each frame of
// the range against its digest as it arrives. A frame digest list that
// does not add up is SourceCorrupt, as are bytes that fail their digest;
// w gets only verified frames, and the range is whole when Fetch returns
// nil. A range outside the chunk is Internal (the caller's mistake).
func Fetch(ctx context.Context, d Download, w io.Writer) (Fetched, error) {
	id := d.ChunkID
	if d.Digest == nil || d.Size <= 0 || d.FrameSize <= 0 || d.From == nil {
		return Fetched{}, rpc.Errorf(rpc.Internal, "chunk %s: fetch without a committed chunk or a source", id)
	}
	if d.Frames != nil {
		if err := CheckFrameRange(*d.Frames, d.Size, d.FrameSize); err != nil {
			return Fetched{}, rpc.Errorf(rpc.Internal, "chunk %s: bad frame range: %v", id, err)
		}
	}
	if d.FrameDigests != nil {
		if err := checkFrameDigests(id, d.FrameDigests, d.Size, d.FrameSize); err != nil {
			return Fetched{}, rpc.Errorf(rpc.Internal, "chunk %s: bad known frame digests: %v", id, err)
		}
	}
	clk := d.Clock
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	ctx, wd := NewWatchdog(ctx, clk, d.ProgressTimeout, d.Peer)
	defer wd.Stop()
	if d.Heard != nil {
		wd.HeardFrom(d.Heard)
	}
	// The wait for the header alone may have a bound of its own.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var headerLate atomic.Bool
	stopHeaderTimer := func() {}
	if d.PrepareTimeout > 0 {
		t := clk.AfterFunc(d.PrepareTimeout, func() {
			headerLate.Store(true)
			cancel(context.DeadlineExceeded)
		})
		stopHeaderTimer = func() { t.Stop() }
		defer stopHeaderTimer()
	}
	// failed classifies an error from a call to the source; a stall is
	// the watchdog's error, not the canceled call's.
	failed := func(err error) error {
		if werr := wd.Err(); werr != nil {
			err = werr
		} else if headerLate.Load() {
			err = rpc.Errorf(rpc.DeadlineExceeded, "%s: no chunk header within %s", d.Peer, d.PrepareTimeout)
		}
		err = rpc.FromStatus(err)
		return blame(sourceFault(err), err)
	}

	req := &dfspb.DownloadChunkStreamRequest{ChunkId: string(id), Token: d.Token}
	if fr := d.Frames; fr != nil {
		req.FirstFrame, req.FrameCount = uint32(fr.First), uint32(fr.Last-fr.First+1)
		req.FrameDigests = d.FrameDigests == nil
	}
	stream, err := d.From.DownloadChunkStream(ctx, req)
	if err != nil {
		return Fetched{}, failed(err)
	}
	src := wd.watch(piecesOf(stream))
	first := true
	next := func() (*rpc.PiecedFrame, error) {
		f, err := src()
		if first {
			first = false
			stopHeaderTimer()
		}
		return f, err
	}
	write := func(f *rpc.PiecedFrame) error {
		wd.Pause()
		defer wd.Kick()
		return writeFrame(w, f)
	}
	return fetchFrom(d, next, failed, write)
}

// Take verifies one chunk of a ReadChunks reply as Fetch verifies a
// stream of it, and writes it to w as Fetch would: read holds the frames
// of the whole chunk exp describes (d.Frames must be nil), or the
// datanode's error for it, which Take returns with its Fault.
func Take(exp Expect, read *dfspb.ChunkRead, w io.Writer) (Fetched, error) {
	if exp.Digest == nil || exp.Size <= 0 || exp.FrameSize <= 0 {
		return Fetched{}, rpc.Errorf(rpc.Internal, "chunk %s: take without a committed chunk", exp.ChunkID)
	}
	failed := func(err error) error {
		err = rpc.FromStatus(err)
		return blame(sourceFault(err), err)
	}
	if err := rpc.FromCode(read.GetCode(), read.GetMessage()); err != nil {
		return Fetched{}, failed(err)
	}
	frames := read.Frames
	next := func() (*rpc.PiecedFrame, error) {
		if len(frames) == 0 {
			return nil, io.EOF
		}
		f := frames[0]
		frames = frames[1:]
		return rpc.Pieced(f), nil
	}
	got, err := fetchFrom(Download{Expect: exp}, next, failed, func(f *rpc.PiecedFrame) error { return writeFrame(w, f) })
	if err == nil && len(frames) > 0 {
		return Fetched{}, blame(SourceCorrupt, rpc.Errorf(rpc.Invalid, "chunk %s: %d frames after the last one", exp.ChunkID, len(frames)))
	}
	return got, err
}

// writeFrame writes a verified frame to w: in its pieces to a
// PieceWriter, else joined.
func writeFrame(w io.Writer, f *rpc.PiecedFrame) error {
	if pw, ok := w.(PieceWriter); ok {
		return pw.WritePieces(f.Pieces)
	}
	_, err := w.Write(f.Join())
	return err
}

// fetchFrom is Fetch of the frames next yields, the first with the
// chunk's header: it checks the header against the committed chunk, then
// receives and verifies the frames d asks for, handing each to write.
// failed classifies an error from next.
func fetchFrom(d Download, next source, failed func(error) error, write func(*rpc.PiecedFrame) error) (Fetched, error) {
	id := d.ChunkID
	first, err := next()
	if errors.Is(err, io.EOF) {
		return Fetched{}, blame(SourceFailed, rpc.Errorf(rpc.Unavailable, "chunk %s: stream ended before its first frame", id))
	}
	if err != nil {
		return Fetched{}, failed(err)
	}
	hdr := first.Msg.Header
	if hdr == nil {
		first.Pieces.Free()
		return Fetched{}, blame(SourceFailed, rpc.Errorf(rpc.Unavailable, "chunk %s: stream started without the chunk's header", id))
	}
	if hdr.Size != d.Size || hdr.FrameSize != d.FrameSize || len(hdr.ChunkChecksum) != rpc.DigestSize || !rpc.DigestsMatch(hdr.ChunkChecksum, d.Digest) {
		first.Pieces.Free()
		return Fetched{}, blame(SourceCorrupt, rpc.Errorf(rpc.Internal,
			"holds a different chunk than was committed (size %d, frame size %d, digest %.6x; committed %d, %d, %.6x)",
			hdr.Size, hdr.FrameSize, hdr.ChunkChecksum, d.Size, d.FrameSize, d.Digest))
	}
	next = pushBack(first, next)
	if d.Frames != nil {
		return fetchFrames(d, hdr, next, failed, write)
	}

	// The bytes must match the datanode's whole digest, which agrees with
	// the committed one (and is it, when the committed one is whole).
	exp := d.Expect
	exp.Digest = hdr.ChunkChecksum
	v, fault, err := receive(next, exp, func(_ int64, f *rpc.PiecedFrame) error { return write(f) })
	if err != nil {
		return Fetched{}, blame(fault, err)
	}
	return Fetched{FrameDigests: v.FrameDigests(), Digest: v.Sum()}, nil
}

// pushBack returns next with first, received from it already, before
// what it yields.
func pushBack(first *rpc.PiecedFrame, next source) source {
	return func() (*rpc.PiecedFrame, error) {
		if f := first; f != nil {
			first = nil
			return f, nil
		}
		return next()
	}
}

// checkFrameDigests checks that frames holds one digest of the right size
// per frame of a chunk of size bytes in frames of frameSize; an Invalid
// error says what is wrong.
func checkFrameDigests(id rpc.ChunkID, frames [][]byte, size, frameSize int64) error {
	if n := FrameCount(size, frameSize); len(frames) != n {
		return rpc.Errorf(rpc.Invalid, "chunk %s: %d frame digests for %d frames", id, len(frames), n)
	}
	for _, fd := range frames {
		if len(fd) != rpc.DigestSize {
			return rpc.Errorf(rpc.Invalid, "chunk %s: a frame digest of %d bytes", id, len(fd))
		}
	}
	return nil
}

// fetchFrames is Fetch of the frames d.Frames picks, once the header
// agreed with the committed chunk: it checks the frame digests (the
// header's, or d.FrameDigests, checked before) and then each frame
// against its own.
func fetchFrames(d Download, hdr *dfspb.PrepareChunkDownloadResponse, next source, failed func(error) error, write func(*rpc.PiecedFrame) error) (Fetched, error) {
	id, fr := d.ChunkID, *d.Frames
	frames := d.FrameDigests
	if frames == nil {
		// The frame digests are trusted once they hash to the chunk
		// digest, itself checked against the committed one.
		frames = hdr.FrameDigests
		if err := checkFrameDigests(id, frames, d.Size, d.FrameSize); err != nil {
			return Fetched{}, blame(SourceCorrupt, err)
		}
		cd := NewChunkDigest()
		for _, fd := range frames {
			cd.Add(fd)
		}
		if sum := cd.Sum(); !Equal(sum, hdr.ChunkChecksum) {
			return Fetched{}, blame(SourceCorrupt, rpc.Errorf(rpc.Invalid, "chunk %s: frame digests do not match the chunk checksum (expected %s, computed %s)",
				id, short(hdr.ChunkChecksum), short(sum)))
		}
	}
	for i := fr.First; i <= fr.Last; i++ {
		f, err := next()
		if errors.Is(err, io.EOF) {
			return Fetched{}, blame(SourceFailed, rpc.Errorf(rpc.Unavailable, "chunk %s: stream of frames %d to %d ended at frame %d", id, fr.First, fr.Last, i))
		}
		if err != nil {
			return Fetched{}, failed(err)
		}
		if err := checkFrame(f, d.Expect, i, i == fr.Last, frames[i]); err != nil {
			f.Pieces.Free()
			return Fetched{}, blame(SourceCorrupt, err)
		}
		if err := write(f); err != nil {
			return Fetched{}, blame(WriterFailed, err)
		}
	}
	// The datanode ends the stream after the range; reading its end lets
	// the call finish cleanly on both sides.
	if f, err := next(); err == nil {
		f.Pieces.Free()
		return Fetched{}, blame(SourceCorrupt, rpc.Errorf(rpc.Invalid, "chunk %s: frame at offset %d after the last frame asked for", id, f.Msg.Offset))
	} else if !errors.Is(err, io.EOF) {
		return Fetched{}, failed(err)
	}
	return Fetched{FrameDigests: frames, Digest: hdr.ChunkChecksum}, nil
}

// checkFrame verifies frame i of the chunk exp describes, received in a
// stream of a range of frames whose last one is final: its offset, size
// and bytes against its digest fd. It returns an Invalid error naming
// what is wrong.
func checkFrame(pf *rpc.PiecedFrame, exp Expect, i int, final bool, fd []byte) error {
	id, f := exp.ChunkID, pf.Msg
	off := int64(i) * exp.FrameSize
	size := min(exp.FrameSize, exp.Size-off)
	switch {
	case f.ChunkId != "" && f.ChunkId != string(id):
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame names chunk %q", id, f.ChunkId)
	case f.Offset != off:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame at offset %d, expected %d", id, f.Offset, off)
	case int64(pf.Len()) != size:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame %d of %d bytes, expected %d", id, i, pf.Len(), size)
	case f.IsFinal != final:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame %d final %t, expected %t", id, i, f.IsFinal, final)
	}
	if got := PiecesDigest(pf.Pieces); !Equal(got, fd) {
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame checksum mismatch at offset %d (expected %s, computed %s)", id, off, short(fd), short(got))
	}
	return nil
}

// sliceWriter writes into a byte slice, in order.
type sliceWriter struct {
	dst []byte
	n   int
}

func (s *sliceWriter) Write(p []byte) (int, error) {
	if len(p) > len(s.dst)-s.n {
		return 0, io.ErrShortBuffer
	}
	s.n += copy(s.dst[s.n:], p)
	return len(p), nil
}

// SliceWriter returns a writer that fills dst from its start, failing a
// write past its end; for a Fetch into a buffer of the chunk's size.
func SliceWriter(dst []byte) io.Writer { return &sliceWriter{dst: dst} }
