package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/dfs-project/dfs/rpc"
)

// A stored chunk is one file: the chunk's bytes from offset 0, then the
// frame digests, then a fixed footer. One file means one rename makes data
// and metadata visible together.
//
//	footer: magic[8] version u32 nframes u32 size u64 frameSize u64 digest[32]
const (
	footerSize   = 64
	footerMagic  = "DFSCHUNK"
	chunkVersion = 1
)

// Meta describes a stored chunk.
type Meta struct {
	Size      int64
	FrameSize int64
	Digest    []byte
	Frames    [][]byte
}

// FileSize returns the bytes a chunk of size bytes in frames of frameSize
// takes on disk.
func FileSize(size, frameSize int64) int64 {
	return size + (size+frameSize-1)/frameSize*sha256.Size + footerSize
}

func encodeFooter(nframes int, size, frameSize int64, digest []byte) []byte {
	b := make([]byte, footerSize)
	copy(b, footerMagic)
	binary.BigEndian.PutUint32(b[8:], chunkVersion)
	binary.BigEndian.PutUint32(b[12:], uint32(nframes))
	binary.BigEndian.PutUint64(b[16:], uint64(size))
	binary.BigEndian.PutUint64(b[24:], uint64(frameSize))
	copy(b[32:], digest)
	return b
}

// readMeta reads and checks the digests and footer of an open chunk file.
// The frame digests must hash to the recorded chunk digest, so damaged
// metadata is caught as surely as damaged data.
func readMeta(id rpc.ChunkID, f io.ReaderAt, fileSize int64) (Meta, error) {
	bad := func(why string, args ...any) (Meta, error) {
		return Meta{}, rpc.Errorf(rpc.Internal, "chunk %s: corrupt metadata: %s", id, fmt.Sprintf(why, args...))
	}
	if fileSize < footerSize {
		return bad("file of %d bytes", fileSize)
	}
	foot := make([]byte, footerSize)
	if _, err := f.ReadAt(foot, fileSize-footerSize); err != nil {
		return bad("read footer: %v", err)
	}
	if string(foot[:8]) != footerMagic || binary.BigEndian.Uint32(foot[8:]) != chunkVersion {
		return bad("bad magic or version")
	}
	n := int64(binary.BigEndian.Uint32(foot[12:]))
	m := Meta{
		Size:      int64(binary.BigEndian.Uint64(foot[16:])),
		FrameSize: int64(binary.BigEndian.Uint64(foot[24:])),
		Digest:    bytes.Clone(foot[32:64]),
	}
	if m.Size <= 0 || m.Size > rpc.MaxChunkSize || rpc.CheckFrameSize(m.FrameSize) != nil {
		return bad("size %d, frame size %d", m.Size, m.FrameSize)
	}
	if want := (m.Size + m.FrameSize - 1) / m.FrameSize; n != want {
		return bad("%d frame digests for %d", n, want)
	}
	if fileSize != m.Size+n*sha256.Size+footerSize {
		return bad("file of %d bytes for a chunk of %d", fileSize, m.Size)
	}
	digests := make([]byte, n*sha256.Size)
	if _, err := f.ReadAt(digests, m.Size); err != nil {
		return bad("read digests: %v", err)
	}
	if sum := sha256.Sum256(digests); !bytes.Equal(sum[:], m.Digest) {
		return bad("frame digests do not match the chunk digest")
	}
	for i := int64(0); i < n; i++ {
		m.Frames = append(m.Frames, digests[i*sha256.Size:(i+1)*sha256.Size])
	}
	return m, nil
}
