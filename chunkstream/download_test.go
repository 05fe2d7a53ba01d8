package chunkstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// memDownload is an in-memory DownloadChunkStream. Send copies the frame,
// as gRPC serializes it, because SendStored reuses its buffer.
type memDownload struct {
	frames  []*dfspb.ChunkDataStream
	sendErr error // returned by Send once set
	recvErr error // returned by Recv after the frames (io.EOF when nil)
}

func (m *memDownload) Send(f *dfspb.ChunkDataStream) error {
	if m.sendErr != nil {
		return m.sendErr
	}
	m.frames = append(m.frames, proto.Clone(f).(*dfspb.ChunkDataStream))
	return nil
}

func (m *memDownload) Recv() (*dfspb.ChunkDataStream, error) {
	if len(m.frames) == 0 {
		if m.recvErr != nil {
			return nil, m.recvErr
		}
		return nil, io.EOF
	}
	f := m.frames[0]
	m.frames = m.frames[1:]
	return f, nil
}

// stored is a chunk as a datanode keeps it: bytes, frame digests, digest.
type stored struct {
	data      []byte
	frameSize int64
	frames    [][]byte
	digest    []byte
}

func newStored(size int, frameSize int64) stored {
	data := testData(size)
	digest, fds := chunkstream.DigestOf(data, int(frameSize))
	return stored{data: data, frameSize: frameSize, frames: fds, digest: digest}
}

func (s stored) send(ctx context.Context, m *memDownload) error {
	return chunkstream.SendStored(ctx, m, testID, bytes.NewReader(s.data), int64(len(s.data)), s.frameSize, s.frames, s.digest)
}

func (s stored) expect() chunkstream.Expect {
	return chunkstream.Expect{ChunkID: testID, Size: int64(len(s.data)), FrameSize: s.frameSize, Digest: s.digest}
}

func TestSendStoredReceiveInto(t *testing.T) {
	for _, size := range []int{1, 16, 17, 100, 4096} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			is := is.New(t)
			s := newStored(size, 16)
			m := &memDownload{}
			is.NoErr(s.send(context.Background(), m)) // stored chunk streams out
			want := (size + 15) / 16
			is.Equal(len(m.frames), want) // one frame per stored digest
			last := m.frames[len(m.frames)-1]
			is.True(last.IsFinal)                  // the last frame is final
			is.Equal(last.ChunkChecksum, s.digest) // and carries the stored chunk digest
			for i, f := range m.frames[:len(m.frames)-1] {
				is.True(!f.IsFinal)                      // only the last is final
				is.Equal(f.PartialChecksum, s.frames[i]) // each frame carries its stored digest
			}
			dst := make([]byte, size)
			is.NoErr(chunkstream.ReceiveInto(m, s.expect(), dst)) // verified download
			is.True(bytes.Equal(dst, s.data))                     // byte for byte
		})
	}
}

func TestReceiveIntoDetectsCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(s *stored) (exp chunkstream.Expect)
		msg     string
	}{
		{"flipped data byte on disk", func(s *stored) chunkstream.Expect {
			e := s.expect()
			s.data = bytes.Clone(s.data)
			s.data[40] ^= 0x01
			return e
		}, "frame checksum mismatch at offset 32"},
		{"damaged stored frame digest", func(s *stored) chunkstream.Expect {
			e := s.expect()
			s.frames = append([][]byte(nil), s.frames...)
			s.frames[1] = bytes.Clone(s.frames[1])
			s.frames[1][0] ^= 0xff
			return e
		}, "frame checksum mismatch at offset 16"},
		{"consistent but different chunk", func(s *stored) chunkstream.Expect {
			// The node holds another, self-consistent chunk under this ID.
			e := s.expect()
			other := newStored(len(s.data), s.frameSize)
			other.data[0]++
			other.digest, other.frames = chunkstream.DigestOf(other.data, int(other.frameSize))
			*s = other
			return e
		}, "chunk checksum mismatch"},
		{"stored chunk digest lies", func(s *stored) chunkstream.Expect {
			e := s.expect()
			s.digest = chunkstream.FrameDigest(nil)
			return e // the recorded digest, not the node's, is checked
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			s := newStored(50, 16)
			exp := tt.corrupt(&s)
			m := &memDownload{}
			is.NoErr(s.send(context.Background(), m)) // the node sends what it has
			dst := make([]byte, 50)
			err := chunkstream.ReceiveInto(m, exp, dst)
			if tt.msg == "" {
				is.NoErr(err) // the data matches what was recorded at commit
				return
			}
			is.True(errors.Is(err, rpc.Invalid))           // corruption is refused as Invalid
			is.True(strings.Contains(err.Error(), tt.msg)) // naming where
		})
	}
}

func TestReceiveIntoRefuses(t *testing.T) {
	s := newStored(50, 16)
	t.Run("no expected digest", func(t *testing.T) {
		is := is.New(t)
		exp := s.expect()
		exp.Digest = nil
		err := chunkstream.ReceiveInto(&memDownload{}, exp, make([]byte, 50))
		is.Equal(rpc.KindOf(err), rpc.Internal) // a download must name the committed digest
	})
	t.Run("buffer size", func(t *testing.T) {
		is := is.New(t)
		err := chunkstream.ReceiveInto(&memDownload{}, s.expect(), make([]byte, 49))
		is.Equal(rpc.KindOf(err), rpc.Internal) // dst must be exactly the chunk
	})
	t.Run("stream ends early", func(t *testing.T) {
		is := is.New(t)
		m := &memDownload{}
		is.NoErr(s.send(context.Background(), m))
		m.frames = m.frames[:2]
		err := chunkstream.ReceiveInto(m, s.expect(), make([]byte, 50))
		is.Equal(rpc.KindOf(err), rpc.Unavailable)                        // a short stream is retryable elsewhere
		is.True(strings.Contains(err.Error(), "ended at 32 of 50 bytes")) // saying how far it got
	})
	t.Run("server error", func(t *testing.T) {
		is := is.New(t)
		m := &memDownload{recvErr: status.Error(codes.NotFound, "chunk gone")}
		err := chunkstream.ReceiveInto(m, s.expect(), make([]byte, 50))
		is.Equal(rpc.KindOf(err), rpc.NotFound) // the server's status is decoded
	})
	t.Run("extra data", func(t *testing.T) {
		is := is.New(t)
		big := newStored(64, 16)
		m := &memDownload{}
		is.NoErr(big.send(context.Background(), m))
		exp := s.expect() // 50 bytes expected, 64 sent
		err := chunkstream.ReceiveInto(m, exp, make([]byte, 50))
		is.True(errors.Is(err, rpc.Invalid)) // data beyond the size is refused, not written past dst
	})
}

func TestSendStoredErrors(t *testing.T) {
	s := newStored(50, 16)
	t.Run("canceled", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m := &memDownload{}
		err := s.send(ctx, m)
		is.Equal(rpc.KindOf(err), rpc.Canceled) // a canceled download stops
		is.Equal(len(m.frames), 0)              // before sending anything
	})
	t.Run("missing frame digests", func(t *testing.T) {
		is := is.New(t)
		short := s
		short.frames = s.frames[:2]
		err := short.send(context.Background(), &memDownload{})
		is.Equal(rpc.KindOf(err), rpc.Internal) // fewer stored digests than frames is internal damage
	})
	t.Run("short file", func(t *testing.T) {
		is := is.New(t)
		err := chunkstream.SendStored(context.Background(), &memDownload{}, testID, bytes.NewReader(s.data[:40]), 50, 16, s.frames, s.digest)
		is.Equal(rpc.KindOf(err), rpc.Internal) // a truncated file is internal damage
	})
	t.Run("send fails", func(t *testing.T) {
		is := is.New(t)
		err := s.send(context.Background(), &memDownload{sendErr: status.Error(codes.Unavailable, "client went away")})
		is.Equal(rpc.KindOf(err), rpc.Unavailable) // the stream's status is decoded
	})
}

// TestReceiveFrames: frames reach the callback in order and at their
// offsets, each only once verified; a bad frame never reaches it, and the
// callback's error ends the read unchanged.
func TestReceiveFrames(t *testing.T) {
	s := newStored(50, 16)
	t.Run("in order", func(t *testing.T) {
		is := is.New(t)
		m := &memDownload{}
		is.NoErr(s.send(context.Background(), m))
		var got []byte
		var offs []int64
		v, err := chunkstream.ReceiveFrames(m, s.expect(), func(off int64, data []byte) error {
			offs = append(offs, off)
			got = append(got, data...)
			return nil
		})
		is.NoErr(err)                          // the chunk verifies
		is.True(bytes.Equal(got, s.data))      // every byte arrives once, in order
		is.Equal(offs, []int64{0, 16, 32, 48}) // frame by frame
		is.Equal(v.Sum(), s.digest)            // the verifier holds the chunk digest
		is.Equal(v.FrameDigests(), s.frames)   // and the frame digests
	})
	t.Run("bad frame withheld", func(t *testing.T) {
		is := is.New(t)
		bad := s
		bad.data = bytes.Clone(s.data)
		bad.data[20] ^= 1
		m := &memDownload{}
		is.NoErr(bad.send(context.Background(), m))
		var offs []int64
		_, err := chunkstream.ReceiveFrames(m, s.expect(), func(off int64, data []byte) error {
			offs = append(offs, off)
			return nil
		})
		is.True(errors.Is(err, rpc.Invalid)) // the damaged frame is refused
		is.Equal(offs, []int64{0})           // and never handed on
	})
	t.Run("callback error", func(t *testing.T) {
		is := is.New(t)
		m := &memDownload{}
		is.NoErr(s.send(context.Background(), m))
		disk := rpc.Errorf(rpc.ResourceExhausted, "disk full")
		calls := 0
		_, err := chunkstream.ReceiveFrames(m, s.expect(), func(off int64, data []byte) error {
			calls++
			return disk
		})
		is.Equal(err, disk) // the callback's error comes back unchanged
		is.Equal(calls, 1)  // and ends the read
	})
	t.Run("no expected digest", func(t *testing.T) {
		is := is.New(t)
		exp := s.expect()
		exp.Digest = nil
		_, err := chunkstream.ReceiveFrames(&memDownload{}, exp, func(int64, []byte) error { return nil })
		is.Equal(rpc.KindOf(err), rpc.Internal) // the committed digest is required
	})
}

// sharedDownload is a download stream that takes shared frames, as a
// datanode's gRPC stream does: like gRPC's transport, it holds each
// frame's buffer after SendShared returns, until it lets them all go.
type sharedDownload struct {
	memDownload
	held []rpc.SharedFrame
}

func (m *sharedDownload) SendShared(f rpc.SharedFrame) error {
	f.Holder.Hold()
	m.held = append(m.held, f)
	m.frames = append(m.frames, f.Frame)
	return nil
}

// TestSendStoredShared: a sender that takes shared frames gets each frame
// in a buffer of its own that stays as read while the sender holds it,
// even as later frames are read, and the chunk verifies.
func TestSendStoredShared(t *testing.T) {
	is := is.New(t)
	const frameSize = 4096
	s := newStored(10*frameSize+5, frameSize)
	m := &sharedDownload{}
	is.NoErr(chunkstream.SendStored(context.Background(), m, testID, bytes.NewReader(s.data), int64(len(s.data)), s.frameSize, s.frames, s.digest))
	is.Equal(len(m.held), 11) // every frame went out shared
	// Read another chunk through the pool meanwhile: a buffer handed back
	// early would now hold its bytes.
	other := newStored(10*frameSize+5, frameSize)
	for i := range other.data {
		other.data[i] ^= 0xff
	}
	is.NoErr(chunkstream.SendStored(context.Background(), &sharedDownload{}, testID, bytes.NewReader(other.data), int64(len(other.data)), other.frameSize, other.frames, other.digest))
	dst := make([]byte, len(s.data))
	is.NoErr(chunkstream.ReceiveInto(&m.memDownload, s.expect(), dst)) // every held frame still verifies
	is.True(bytes.Equal(dst, s.data))
	for _, f := range m.held {
		f.Holder.Release()
	}
}
