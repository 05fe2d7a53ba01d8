// Package chunkstream moves one chunk's bytes over a gRPC stream: framing,
// SHA-256 per frame and per chunk, windowed back-pressure and retries. It is
// shared by the client (client -> primary), the datanode (primary ->
// replica) and repair copies, and knows nothing of files or the coordinator.
package chunkstream

import (
	"bytes"
	"crypto/sha256"
	"hash"

	"google.golang.org/grpc/mem"
)

// FrameDigest returns the SHA-256 of one frame's data.
func FrameDigest(data []byte) []byte {
	sum := sha256.Sum256(data)
	return sum[:]
}

// PiecesDigest returns the SHA-256 of one frame's data received in
// pieces (rpc.PiecedFrame).
func PiecesDigest(data mem.BufferSlice) []byte {
	if len(data) == 1 {
		return FrameDigest(data[0].ReadOnlyData())
	}
	h := sha256.New()
	for _, p := range data {
		h.Write(p.ReadOnlyData())
	}
	return h.Sum(nil)
}

// ChunkDigest accumulates frame digests into a chunk digest: the SHA-256 of
// the concatenated frame digests. Together with the frame size it names the
// chunk's content, and lets every party verify frames and chunk in one pass.
type ChunkDigest struct {
	h hash.Hash
}

// NewChunkDigest returns an empty accumulator.
func NewChunkDigest() *ChunkDigest { return &ChunkDigest{h: sha256.New()} }

// Add appends one frame digest.
func (c *ChunkDigest) Add(frameDigest []byte) { c.h.Write(frameDigest) }

// Sum returns the chunk digest of the frames added so far.
func (c *ChunkDigest) Sum() []byte { return c.h.Sum(nil) }

// DigestOf computes the chunk digest of data cut into frames of frameSize,
// with the frame digests in order.
func DigestOf(data []byte, frameSize int) (chunk []byte, frames [][]byte) {
	cd := NewChunkDigest()
	for off := 0; off < len(data); off += frameSize {
		end := min(off+frameSize, len(data))
		fd := FrameDigest(data[off:end])
		frames = append(frames, fd)
		cd.Add(fd)
	}
	return cd.Sum(), frames
}

// Equal reports whether two digests are the same.
func Equal(a, b []byte) bool { return len(a) == sha256.Size && bytes.Equal(a, b) }
