package chunkstream_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const testID = rpc.ChunkID("0123456789abcdef0123456789abcdef_0")

// frames cuts data into well-formed frames of frameSize with digests; the
// last one is final and carries the chunk digest.
func frames(data []byte, frameSize int) []*dfspb.ChunkDataStream {
	var out []*dfspb.ChunkDataStream
	cd := chunkstream.NewChunkDigest()
	for off := 0; off < len(data); off += frameSize {
		end := min(off+frameSize, len(data))
		fd := chunkstream.FrameDigest(data[off:end])
		cd.Add(fd)
		f := &dfspb.ChunkDataStream{ChunkId: string(testID), Data: data[off:end], Offset: int64(off), PartialChecksum: fd}
		if end == len(data) {
			f.IsFinal = true
			f.ChunkChecksum = cd.Sum()
		}
		out = append(out, f)
	}
	return out
}

func testData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestVerifierAcceptsWellFormedChunk(t *testing.T) {
	for _, size := range []int{1, 15, 16, 17, 64, 100} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			is := is.New(t)
			data := testData(size)
			digest, fds := chunkstream.DigestOf(data, 16)
			for _, expDigest := range [][]byte{nil, digest} {
				v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: testID, Size: int64(size), FrameSize: 16, Digest: expDigest})
				for _, f := range frames(data, 16) {
					is.True(!v.Done())   // not done before the final frame
					is.NoErr(v.Check(f)) // well-formed frame accepted
				}
				is.True(v.Done())                   // done after the final frame
				is.Equal(v.Received(), int64(size)) // every byte counted
				is.Equal(v.Sum(), digest)           // chunk digest
				is.Equal(v.FrameDigests(), fds)     // frame digests in order
			}
		})
	}
}

func TestVerifierEmptyFinalFrame(t *testing.T) {
	is := is.New(t)
	data := testData(32)
	digest, _ := chunkstream.DigestOf(data, 16)
	fs := frames(data, 16)
	fs[1].IsFinal, fs[1].ChunkChecksum = false, nil
	v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: testID, Size: 32, FrameSize: 16})
	is.NoErr(v.Check(fs[0]))
	is.NoErr(v.Check(fs[1]))
	is.NoErr(v.Check(&dfspb.ChunkDataStream{Offset: 32, IsFinal: true, ChunkChecksum: digest})) // an empty final frame may close a chunk of whole frames
	is.True(v.Done())                                                                           // done
	is.Equal(len(v.FrameDigests()), 2)                                                          // the empty frame adds no digest
	is.Equal(v.Sum(), digest)                                                                   // same digest as without it
}

func TestVerifierRefuses(t *testing.T) {
	data := testData(40) // frames of 16, 16, 8
	digest, _ := chunkstream.DigestOf(data, 16)
	exp := chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16}
	tests := []struct {
		name string
		exp  chunkstream.Expect
		// mutate gets well-formed frames and returns what to feed; the last
		// one fed must fail.
		mutate func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream
		msg    string
	}{
		{"gap in offsets", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{fs[0], fs[2]}
		}, "offset 32, expected 16"},
		{"repeated frame", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{fs[0], fs[0]}
		}, "offset 0, expected 16"},
		{"first frame not at zero", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{fs[1]}
		}, "expected 0"},
		{"negative offset", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[0].Offset = -1
			return fs[:1]
		}, "expected 0"},
		{"frame bigger than frame size", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			d := data[:17]
			return []*dfspb.ChunkDataStream{{Data: d, PartialChecksum: chunkstream.FrameDigest(d)}}
		}, "exceeds frame size"},
		{"short non-final frame", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			d := data[:8]
			return []*dfspb.ChunkDataStream{{Data: d, PartialChecksum: chunkstream.FrameDigest(d)}}
		}, "non-final frame"},
		{"empty non-final frame", chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 0}, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{{}}
		}, "empty frame"},
		{"empty final frame of an empty chunk", chunkstream.Expect{ChunkID: testID, Size: 0, FrameSize: 16}, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{{IsFinal: true, ChunkChecksum: chunkstream.NewChunkDigest().Sum()}}
		}, "empty frame"},
		{"empty final frame too early", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return []*dfspb.ChunkDataStream{fs[0], {Offset: 16, IsFinal: true, ChunkChecksum: digest}}
		}, "empty frame"},
		{"frame digest mismatch", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[1].Data = bytes.Clone(fs[1].Data)
			fs[1].Data[3] ^= 0x80
			return fs[:2]
		}, "frame checksum mismatch at offset 16"},
		{"missing frame digest", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[0].PartialChecksum = nil
			return fs[:1]
		}, "frame checksum mismatch"},
		{"truncated frame digest", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[0].PartialChecksum = fs[0].PartialChecksum[:16]
			return fs[:1]
		}, "frame checksum mismatch"},
		{"chunk digest mismatch", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[2].ChunkChecksum = bytes.Clone(fs[2].ChunkChecksum)
			fs[2].ChunkChecksum[0] ^= 1
			return fs
		}, "chunk checksum mismatch"},
		{"missing chunk digest", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[2].ChunkChecksum = nil
			return fs
		}, "chunk checksum mismatch"},
		{"expected digest differs", chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16, Digest: chunkstream.FrameDigest(nil)}, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return fs // the sender's own chunk digest is right, but not what was recorded
		}, "chunk checksum mismatch"},
		{"reordered frames with matching digests", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			a, b := fs[0], fs[1]
			a.Offset, b.Offset = 16, 0
			return []*dfspb.ChunkDataStream{b, a, fs[2]}
		}, "chunk checksum mismatch"},
		{"data beyond size", chunkstream.Expect{ChunkID: testID, Size: 30, FrameSize: 16}, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return fs[:2]
		}, "beyond the declared size 30"},
		{"final frame before size", chunkstream.Expect{ChunkID: testID, Size: 48, FrameSize: 16}, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return fs
		}, "final frame at 40 bytes, declared size is 48"},
		{"frame after final", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			return append(fs, &dfspb.ChunkDataStream{Offset: 40, IsFinal: true})
		}, "after the final frame"},
		{"frame names another chunk", exp, func(fs []*dfspb.ChunkDataStream) []*dfspb.ChunkDataStream {
			fs[1].ChunkId = "ffffffffffffffffffffffffffffffff_0"
			return fs[:2]
		}, "frame names chunk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			feed := tt.mutate(frames(data, 16))
			v := chunkstream.NewVerifier(tt.exp)
			for _, f := range feed[:len(feed)-1] {
				is.NoErr(v.Check(f)) // frames before the bad one pass
			}
			err := v.Check(feed[len(feed)-1])
			is.True(err != nil)                                    // the bad frame is refused
			is.True(errors.Is(err, rpc.Invalid))                   // as Invalid
			is.True(strings.Contains(err.Error(), tt.msg))         // naming what is wrong
			is.True(strings.Contains(err.Error(), string(testID))) // and the chunk
			if !strings.Contains(tt.msg, "after the final") {
				is.True(!v.Done()) // a refused chunk is never done
			}
		})
	}
}

func TestVerifierExpectedDigestWins(t *testing.T) {
	is := is.New(t)
	data := testData(40)
	digest, _ := chunkstream.DigestOf(data, 16)
	fs := frames(data, 16)
	fs[2].ChunkChecksum = []byte("garbage from an old server")
	v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: testID, Size: 40, FrameSize: 16, Digest: digest})
	for _, f := range fs {
		is.NoErr(v.Check(f)) // the recorded digest, not the sender's, decides
	}
	is.True(v.Done()) // accepted
}

func TestVerifierEmptyChunkIDIsAccepted(t *testing.T) {
	is := is.New(t)
	fs := frames(testData(20), 16)
	for _, f := range fs {
		f.ChunkId = "" // replicas and downloads may leave it out
	}
	v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: testID, Size: 20, FrameSize: 16})
	for _, f := range fs {
		is.NoErr(v.Check(f)) // frames without a chunk ID
	}
	is.True(v.Done()) // accepted
}
