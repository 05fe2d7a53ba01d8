package chunkstream_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
)

func TestFrameDigest(t *testing.T) {
	is := is.New(t)
	sum := sha256.Sum256([]byte("hello"))
	is.Equal(chunkstream.FrameDigest([]byte("hello")), sum[:]) // frame digest is plain SHA-256
	is.Equal(len(chunkstream.FrameDigest(nil)), sha256.Size)   // empty frames still have a digest
}

func TestDigestOf(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10) // 100 bytes
	tests := []struct {
		name      string
		data      []byte
		frameSize int
		frames    int
	}{
		{"one short frame", data[:5], 16, 1},
		{"exact multiple", data[:64], 16, 4},
		{"remainder", data, 16, 7},
		{"frame equals chunk", data, 100, 1},
		{"one-byte frames", data[:7], 1, 7},
		{"empty", nil, 16, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			chunk, frames := chunkstream.DigestOf(tt.data, tt.frameSize)
			is.Equal(len(frames), tt.frames) // one digest per frame

			// The definition, spelled out: SHA-256 over the frame digests in order.
			var cat []byte
			for i := range frames {
				off := i * tt.frameSize
				want := sha256.Sum256(tt.data[off:min(off+tt.frameSize, len(tt.data))])
				is.Equal(frames[i], want[:]) // frame digest i covers frame i
				cat = append(cat, frames[i]...)
			}
			want := sha256.Sum256(cat)
			is.Equal(chunk, want[:]) // chunk digest is the hash of the hash list

			cd := chunkstream.NewChunkDigest()
			for _, fd := range frames {
				cd.Add(fd)
			}
			is.Equal(cd.Sum(), chunk) // incremental accumulator agrees
		})
	}
}

func TestChunkDigestDependsOnFraming(t *testing.T) {
	is := is.New(t)
	data := bytes.Repeat([]byte{7}, 64)
	a, _ := chunkstream.DigestOf(data, 16)
	b, _ := chunkstream.DigestOf(data, 32)
	is.True(!bytes.Equal(a, b)) // the frame size is part of the chunk's identity
	data[63] ^= 1
	c, _ := chunkstream.DigestOf(data, 16)
	is.True(!bytes.Equal(a, c)) // one flipped bit changes the chunk digest
}

func TestChunkDigestSumIsRepeatable(t *testing.T) {
	is := is.New(t)
	cd := chunkstream.NewChunkDigest()
	cd.Add(chunkstream.FrameDigest([]byte("a")))
	first := cd.Sum()
	is.Equal(cd.Sum(), first) // Sum does not disturb the state
	cd.Add(chunkstream.FrameDigest([]byte("b")))
	is.True(!bytes.Equal(cd.Sum(), first)) // later frames change the sum
}

func TestEqual(t *testing.T) {
	is := is.New(t)
	d := chunkstream.FrameDigest([]byte("x"))
	is.True(chunkstream.Equal(d, bytes.Clone(d)))                // same digest
	is.True(!chunkstream.Equal(d, chunkstream.FrameDigest(nil))) // different digest
	is.True(!chunkstream.Equal(nil, nil))                        // missing digests never match
	is.True(!chunkstream.Equal([]byte{1}, []byte{1}))            // short digests never match
	is.True(!chunkstream.Equal(d[:31], d[:31]))                  // truncated digests never match
}
