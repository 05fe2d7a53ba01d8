package rpc

import (
	"bytes"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/mem"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

func TestDirtyPoolSizes(t *testing.T) {
	is := is.New(t)
	p := &dirtyPool{}
	for _, n := range []int{0, 1, minPooled - 1, minPooled, minPooled + 1, 4096, 65536, 65537, maxPooled, maxPooled + 1} {
		b := p.Get(n)
		is.Equal(len(*b), n) // the length asked for
		c := cap(*b)
		if n >= minPooled && n <= maxPooled {
			is.True(c&(c-1) == 0 && c >= n && c < 2*n) // pooled: the next power of two
		}
		p.Put(b)
	}
	// A buffer handed back is handed out again at the same capacity, its
	// length the one asked for.
	b := p.Get(5000)
	(*b)[0] = 7
	p.Put(b)
	again := p.Get(4097)
	is.Equal(len(*again), 4097)       // the length asked for
	is.Equal(cap(*again), 8192)       // the tier of 5000 and 4097
	odd := make([]byte, 3000)         // a capacity no tier holds
	p.Put(&odd)                       // is dropped, not pooled
	is.Equal(cap(*p.Get(2100)), 4096) // never the odd buffer
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
