package rpc

import (
	"bytes"
	"slices"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestDirtyPoolSizes: a buffer has the length asked for and the capacity
// of the smallest class that holds it (a power of two, or one plus a
// sixteenth); buffers handed back are handed out again, and those of a
// capacity no class has are dropped.
func TestDirtyPoolSizes(t *testing.T) {
	is := is.New(t)
	p := &dirtyPool{}
	for _, tt := range []struct{ n, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 272}, {272, 272}, {273, 512},
		{4096, 4096}, {65536, 65536}, {65536 + 100, 69632}, {69633, 131072},
		{1<<20 + 200, 1<<20 + 1<<16}, {maxPooled, maxPooled}, {maxPooled + 1, maxPooled + maxPooled/16},
		{maxPooled + maxPooled/16 + 1, maxPooled + maxPooled/16 + 1}, // not pooled
	} {
		b := p.Get(tt.n)
		is.Equal(len(*b), tt.n)   // the length asked for
		is.Equal(cap(*b), tt.cap) // the class's capacity
		p.Put(b)
	}
	// A buffer handed back is handed out again, its length the one
	// asked for.
	b := p.Get(5000)
	p.Put(b)
	again := p.Get(6000)
	is.Equal(len(*again), 6000)       // the length asked for
	is.Equal(cap(*again), 8192)       // the class of 5000 and 6000
	odd := make([]byte, 3000)         // a capacity no class has
	p.Put(&odd)                       // is dropped, not pooled
	is.Equal(cap(*p.Get(2500)), 4096) // never the odd buffer
}

func TestCodecRoundTrip(t *testing.T) {
	is := is.New(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 12345) // ~193 KiB: pooled
	for _, msg := range []*dfspb.ChunkDataStream{
		{ChunkId: "c", Data: data, Offset: 65536, PartialChecksum: []byte{1, 2, 3}, IsFinal: true},
		{ChunkId: "small", Data: []byte("x")}, // below the pooling threshold
	} {
		enc, err := codec{}.Marshal(msg)
		is.NoErr(err)
		wire := enc.Materialize()
		enc.Free()
		// In one piece, and in several as a stream's frames arrive.
		for _, pieces := range []int{1, 3} {
			var in mem.BufferSlice
			step := (len(wire) + pieces - 1) / pieces
			for off := 0; off < len(wire); off += step {
				in = append(in, mem.SliceBuffer(wire[off:min(off+step, len(wire))]))
			}
			var got dfspb.ChunkDataStream
			is.NoErr(codec{}.Unmarshal(in, &got))
			is.Equal(got.ChunkId, msg.ChunkId)       // the chunk ID came through
			is.True(bytes.Equal(got.Data, msg.Data)) // every byte came through
			is.Equal(got.Offset, msg.Offset)         // the offset came through
			is.Equal(got.IsFinal, msg.IsFinal)       // the flag came through
		}
	}
	_, err := codec{}.Marshal("not a message")
	is.True(err != nil)                       // only protobuf messages
	is.True(codec{}.Unmarshal(nil, 3) != nil) // only into protobuf messages
}

// TestCodecFrameDecoder: a frame the codec decodes itself (its data from
// the buffer pool) equals what the protobuf decoder makes of the same
// bytes, however gRPC split them into pieces; bytes it does not decode
// itself (an unknown field) still decode, and broken ones fail.
func TestCodecFrameDecoder(t *testing.T) {
	is := is.New(t)
	data := bytes.Repeat([]byte("frame bytes "), 1000) // ~12 KiB: pooled
	msg := &dfspb.ChunkDataStream{
		SessionId: "s", ChunkId: "c_0", Data: data, Offset: 1 << 40, IsFinal: true,
		PartialChecksum: []byte{1, 2}, ChunkChecksum: []byte{3, 4},
		Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: "c_0", Size: 7},
		Header:  &dfspb.PrepareChunkDownloadResponse{Size: 9, FrameSize: 3, FrameDigests: [][]byte{{5}, {6}}},
	}
	wire, err := proto.Marshal(msg)
	is.NoErr(err)
	split := func(b []byte, step int) mem.BufferSlice {
		var in mem.BufferSlice
		for off := 0; off < len(b); off += step {
			in = append(in, mem.SliceBuffer(b[off:min(off+step, len(b))]))
		}
		return in
	}
	for _, step := range []int{1, 2, 5, 4096, len(wire)} {
		var got dfspb.ChunkDataStream
		is.NoErr(codec{}.Unmarshal(split(wire, step), &got))
		is.True(proto.Equal(&got, msg)) // the same message as protobuf decodes
		RecycleFrame(got.Data)
	}

	// A field the frame decoder does not know: the general one decodes
	// the rest.
	unknown := protowire.AppendVarint(protowire.AppendTag(slices.Clone(wire), 99, protowire.VarintType), 1)
	var got dfspb.ChunkDataStream
	is.NoErr(codec{}.Unmarshal(split(unknown, 100), &got))
	is.True(bytes.Equal(got.Data, data))     // the data came through
	is.Equal(got.Header.GetSize(), int64(9)) // so did the header

	// Cut short: an error, not a frame.
	var cut dfspb.ChunkDataStream
	is.True(codec{}.Unmarshal(split(wire[:len(wire)-5], 100), &cut) != nil) // a truncated message fails
}

// FuzzCodecFrame checks the codec's own frame decoder against protobuf's:
// whatever bytes it accepts, in whatever pieces, it decodes to the message
// protobuf decodes them to, and it accepts nothing protobuf refuses.
func FuzzCodecFrame(f *testing.F) {
	full, _ := proto.Marshal(&dfspb.ChunkDataStream{
		SessionId: "s", ChunkId: "c_0", Data: bytes.Repeat([]byte{7}, 2000), Offset: 5, IsFinal: true,
		PartialChecksum: []byte{1}, ChunkChecksum: []byte{2},
		Header: &dfspb.PrepareChunkDownloadResponse{Size: 9, FrameDigests: [][]byte{{5}}},
	})
	f.Add(full, uint8(7))
	f.Add(full[:40], uint8(1))
	f.Add([]byte{0x1a, 0x80, 0x01}, uint8(2))
	f.Fuzz(func(t *testing.T, wire []byte, step uint8) {
		var in mem.BufferSlice
		for off, n := 0, int(step)+1; off < len(wire); off += n {
			in = append(in, mem.SliceBuffer(wire[off:min(off+n, len(wire))]))
		}
		var got, want dfspb.ChunkDataStream
		if !unmarshalFrame(in, &got) {
			return // left to protobuf's decoder
		}
		if err := proto.Unmarshal(wire, &want); err != nil {
			t.Fatalf("frame decoder accepted what protobuf refuses (%v): %x", err, wire)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("frame decoder made %v, protobuf %v, of %x", &got, &want, wire)
		}
	})
}
