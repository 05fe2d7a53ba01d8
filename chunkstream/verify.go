package chunkstream

import (
	"encoding/hex"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Expect describes the chunk a stream must carry.
type Expect struct {
	ChunkID   rpc.ChunkID
	Size      int64
	FrameSize int64
	// Digest is the chunk digest the final frame must match; when nil the
	// final frame's chunk_checksum is used (uploads) and still verified
	// against the frames.
	Digest []byte
}

// Verifier checks a sequence of frames against an Expect: offset
// continuity, frame sizes, each frame's digest and finally the chunk digest.
// It hashes every byte exactly once.
type Verifier struct {
	exp      Expect
	received int64
	chunk    *ChunkDigest
	frames   [][]byte
	done     bool
}

// NewVerifier returns a verifier for one chunk.
func NewVerifier(exp Expect) *Verifier {
	return &Verifier{exp: exp, chunk: NewChunkDigest()}
}

// Received returns the bytes accepted so far.
func (v *Verifier) Received() int64 { return v.received }

// FrameDigests returns the digests of the frames accepted so far.
func (v *Verifier) FrameDigests() [][]byte { return v.frames }

// Done reports whether the final frame was accepted.
func (v *Verifier) Done() bool { return v.done }

// Check verifies the next frame. It returns an Invalid error naming what is
// wrong; after an error the verifier must not be used again. On the final
// frame it also checks the total size and the chunk digest.
func (v *Verifier) Check(f *dfspb.ChunkDataStream) error {
	return v.check(f, len(f.Data), func() []byte { return FrameDigest(f.Data) })
}

// CheckPieces is Check of a frame received in pieces.
func (v *Verifier) CheckPieces(f *rpc.PiecedFrame) error {
	return v.check(f.Msg, f.Len(), func() []byte { return PiecesDigest(f.Pieces) })
}

// check is Check of frame f whose data is n bytes long and hashes to
// digest().
func (v *Verifier) check(f *dfspb.ChunkDataStream, n int, digest func() []byte) error {
	id := v.exp.ChunkID
	switch {
	case v.done:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame after the final frame", id)
	case f.ChunkId != "" && f.ChunkId != string(id):
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame names chunk %q", id, f.ChunkId)
	case f.Offset != v.received:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame at offset %d, expected %d", id, f.Offset, v.received)
	case int64(n) > v.exp.FrameSize:
		return rpc.Errorf(rpc.Invalid, "chunk %s: frame of %d bytes exceeds frame size %d", id, n, v.exp.FrameSize)
	case v.received+int64(n) > v.exp.Size:
		return rpc.Errorf(rpc.Invalid, "chunk %s: data beyond the declared size %d", id, v.exp.Size)
	case !f.IsFinal && int64(n) != v.exp.FrameSize:
		return rpc.Errorf(rpc.Invalid, "chunk %s: non-final frame of %d bytes, frame size is %d", id, n, v.exp.FrameSize)
	case n == 0 && !(f.IsFinal && v.exp.Size == v.received && v.received > 0):
		return rpc.Errorf(rpc.Invalid, "chunk %s: empty frame", id)
	}
	if n > 0 {
		fd := digest()
		if !Equal(fd, f.PartialChecksum) {
			return rpc.Errorf(rpc.Invalid, "chunk %s: frame checksum mismatch at offset %d (got %s, computed %s)",
				id, f.Offset, short(f.PartialChecksum), short(fd))
		}
		v.frames = append(v.frames, fd)
		v.chunk.Add(fd)
		v.received += int64(n)
	}
	if !f.IsFinal {
		return nil
	}
	if v.received != v.exp.Size {
		return rpc.Errorf(rpc.Invalid, "chunk %s: final frame at %d bytes, declared size is %d", id, v.received, v.exp.Size)
	}
	want := v.exp.Digest
	if want == nil {
		want = f.ChunkChecksum
	}
	if got := v.chunk.Sum(); !Equal(got, want) {
		return rpc.Errorf(rpc.Invalid, "chunk %s: chunk checksum mismatch (expected %s, computed %s)", id, short(want), short(got))
	}
	v.done = true
	return nil
}

// Sum returns the chunk digest; valid once Done.
func (v *Verifier) Sum() []byte { return v.chunk.Sum() }

func short(d []byte) string {
	s := hex.EncodeToString(d)
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "none"
	}
	return s
}
