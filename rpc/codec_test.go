package rpc

import (
	"bytes"
	"io"
	"slices"
	"sync/atomic"
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

// countPool is a buffer pool that counts the buffers handed out and not
// yet back.
type countPool struct{ out atomic.Int32 }

func (p *countPool) Get(n int) *[]byte {
	p.out.Add(1)
	b := make([]byte, n)
	return &b
}

func (p *countPool) Put(*[]byte) { p.out.Add(-1) }

// TestPiecedFrame: a frame received as a PiecedFrame has the fields
// protobuf decodes and its data in the buffers it arrived in, not copied:
// they go back to their pool only once the frame's pieces are freed, after
// gRPC freed its own references. A message the frame decoder leaves to the
// general one still decodes, its data one piece; a broken one fails.
func TestPiecedFrame(t *testing.T) {
	is := is.New(t)
	data := bytes.Repeat([]byte("pieces "), 10000) // ~68 KiB: pooled
	msg := &dfspb.ChunkDataStream{ChunkId: "c_0", Data: data, Offset: 1 << 20, IsFinal: true, PartialChecksum: []byte{1, 2}}
	wire, err := proto.Marshal(msg)
	is.NoErr(err)
	for _, step := range []int{16384, 5000, 1500} { // buffers above gRPC's pooling threshold
		var pool countPool
		var in mem.BufferSlice
		for off := 0; off < len(wire); off += step {
			n := min(step, len(wire)-off)
			if mem.IsBelowBufferPoolingThreshold(n) {
				in = append(in, mem.SliceBuffer(wire[off:off+n])) // as gRPC has it
				continue
			}
			b := pool.Get(n)
			copy(*b, wire[off:])
			in = append(in, mem.NewBuffer(b, &pool))
		}
		pieces := pool.out.Load()
		var pf PiecedFrame
		is.NoErr(codec{}.Unmarshal(in, &pf))
		in.Free()                                                  // as gRPC does once Unmarshal returns
		is.Equal(pf.Msg.Data, nil)                                 // the data is in the pieces alone
		is.True(bytes.Equal(pf.Pieces.Materialize(), data))        // every byte, in order
		is.Equal(pf.Len(), len(data))                              // the frame's length
		is.Equal(pf.Msg.ChunkId, "c_0")                            // the fields beside the data came through
		is.Equal(pf.Msg.Offset, int64(1<<20))                      // the offset
		is.True(pf.Msg.IsFinal)                                    // the flag
		is.True(bytes.Equal(pf.Msg.PartialChecksum, []byte{1, 2})) // the frame digest
		is.True(pool.out.Load() >= pieces-1)                       // the buffers holding data are not back: not copied
		joined := pf.Join()
		is.True(bytes.Equal(joined, data)) // joined, the same bytes
		RecycleFrame(joined)
		is.Equal(pool.out.Load(), int32(0)) // every buffer back once the pieces are freed
	}

	// A field the frame decoder does not know: the general one decodes
	// it, the data one piece.
	unknown := protowire.AppendVarint(protowire.AppendTag(slices.Clone(wire), 99, protowire.VarintType), 1)
	var pf PiecedFrame
	is.NoErr(codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(unknown[:100]), mem.SliceBuffer(unknown[100:])}, &pf))
	is.Equal(len(pf.Pieces), 1)                         // one piece
	is.True(bytes.Equal(pf.Pieces.Materialize(), data)) // the data came through
	is.Equal(pf.Msg.Offset, int64(1<<20))               // so did the rest

	// Cut short: an error, not a frame.
	is.True(codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire[:len(wire)-5])}, &PiecedFrame{}) != nil) // a truncated message fails

	// A received message whole, as a PiecedFrame.
	whole := Pieced(&dfspb.ChunkDataStream{Data: []byte("abc"), Offset: 3})
	is.Equal(whole.Msg.Data, nil)                          // moved to the pieces
	is.Equal(string(whole.Pieces.Materialize()), "abc")    // one piece
	is.Equal(Pieced(&dfspb.ChunkDataStream{}).Pieces, nil) // no data, no piece
}

// countHolder is a FrameHolder that counts its holders and the times the
// count fell to zero (the frame would have been recycled).
type countHolder struct {
	refs, recycled atomic.Int32
}

func (h *countHolder) Hold() { h.refs.Add(1) }

func (h *countHolder) Release() {
	if h.refs.Add(-1) == 0 {
		h.recycled.Add(1)
	}
}

// TestSharedFrameWire: a SharedFrame goes on the wire byte for byte as
// protobuf marshals its message, whichever fields are set beside the
// data (before it, after it, none, unknown ones), and decodes back to it.
func TestSharedFrameWire(t *testing.T) {
	data := bytes.Repeat([]byte("shared "), 10000) // ~68 KiB: sent from its buffer
	unknown := func(m *dfspb.ChunkDataStream, b []byte) *dfspb.ChunkDataStream {
		m.ProtoReflect().SetUnknown(b)
		return m
	}
	for _, tt := range []struct {
		name string
		msg  *dfspb.ChunkDataStream
	}{
		{"data only", &dfspb.ChunkDataStream{Data: data}},
		{"fields before", &dfspb.ChunkDataStream{SessionId: "s", ChunkId: "c_0", Data: data}},
		{"fields after", &dfspb.ChunkDataStream{Data: data, Offset: 1 << 40, IsFinal: true, PartialChecksum: []byte{1, 2}}},
		{"every field", &dfspb.ChunkDataStream{
			SessionId: "s", ChunkId: "c_0", Data: data, Offset: 5, IsFinal: true,
			PartialChecksum: []byte{1, 2}, ChunkChecksum: []byte{3, 4},
			Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: "c_0", Size: 7, Token: &dfspb.ChunkToken{ChunkId: "c_0", NodeIds: []string{"a", "b"}, Mac: []byte{9}}},
			Header:  &dfspb.PrepareChunkDownloadResponse{Size: 9, FrameSize: 3, FrameDigests: [][]byte{{5}, {6}}},
		}},
		{"unknown fields", unknown(&dfspb.ChunkDataStream{ChunkId: "c", Data: data, Offset: 3},
			protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))},
		{"unknown field of a known number", unknown(&dfspb.ChunkDataStream{Data: data},
			protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1))},
		{"small data, copied", &dfspb.ChunkDataStream{ChunkId: "c", Data: []byte("tiny"), Offset: 3}},
		{"no data", &dfspb.ChunkDataStream{ChunkId: "c", IsFinal: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			want, err := proto.Marshal(tt.msg)
			is.NoErr(err)
			var h countHolder
			h.Hold() // the sender's
			enc, err := codec{}.Marshal(SharedFrame{Frame: tt.msg, Holder: &h})
			is.NoErr(err)
			is.True(bytes.Equal(enc.Materialize(), want)) // the bytes protobuf makes
			var got dfspb.ChunkDataStream
			is.NoErr(codec{}.Unmarshal(enc, &got))
			is.True(proto.Equal(&got, tt.msg)) // which decode to the message sent
			enc.Free()
			h.Release()
			is.Equal(h.refs.Load(), int32(0))     // every hold released
			is.Equal(h.recycled.Load(), int32(1)) // once

			// The same frame with its data in pieces, as received:
			// the same bytes, each piece referenced until gRPC frees
			// what it sent.
			if len(tt.msg.Data) == 0 {
				return
			}
			var pool countPool
			var pieces mem.BufferSlice
			for off := 0; off < len(tt.msg.Data); off += 16384 {
				if n := min(16384, len(tt.msg.Data)-off); mem.IsBelowBufferPoolingThreshold(n) {
					pieces = append(pieces, mem.SliceBuffer(tt.msg.Data[off:off+n])) // as gRPC has it
					continue
				}
				b := pool.Get(min(16384, len(tt.msg.Data)-off))
				copy(*b, tt.msg.Data[off:])
				pieces = append(pieces, mem.NewBuffer(b, &pool))
			}
			bare := proto.CloneOf(tt.msg)
			bare.Data = nil
			enc, err = codec{}.Marshal(SharedFrame{Frame: bare, Pieces: pieces})
			is.NoErr(err)
			is.True(bytes.Equal(enc.Materialize(), want)) // the bytes protobuf makes of the joined data
			pieces.Free()                                 // the sender's references, once SendMsg returned
			if len(tt.msg.Data) >= SharedMin {
				is.True(pool.out.Load() > 0) // gRPC's references keep the pieces: not copied
			}
			enc.Free()
			is.Equal(pool.out.Load(), int32(0)) // every piece back once gRPC freed them
		})
	}
}

// TestSharedFrameRelease: a SharedFrame's data is sent from the frame's
// own buffer, held from Marshal until gRPC frees the last reference to
// it (the transport's, after writing it out), not when the sender's
// SendMsg drops its own; then released exactly once. Small data is copied
// and holds nothing: the sender may reuse it as soon as SendMsg returns.
func TestSharedFrameRelease(t *testing.T) {
	is := is.New(t)
	data := bytes.Repeat([]byte{7}, 64<<10)
	var h countHolder
	h.Hold() // the sender's, while it sends
	enc, err := codec{}.Marshal(SharedFrame{Frame: &dfspb.ChunkDataStream{ChunkId: "c", Data: data, Offset: 9}, Holder: &h})
	is.NoErr(err)
	is.Equal(h.refs.Load(), int32(2)) // the codec's buffer holds the frame
	shared := false
	for _, b := range enc {
		if d := b.ReadOnlyData(); len(d) == len(data) && &d[0] == &data[0] {
			shared = true
		}
	}
	is.True(shared) // the data is sent from its own buffer, not a copy

	// As gRPC sends it: the transport takes a reference and reads it
	// out later; SendMsg drops its own on return.
	r := enc.Reader()
	enc.Free()
	h.Release()                           // the sender's Send has returned
	is.Equal(h.refs.Load(), int32(1))     // the transport still holds it
	is.Equal(h.recycled.Load(), int32(0)) // so it is not recycled
	out, err := io.ReadAll(r)
	is.NoErr(err)
	is.Equal(len(out), proto.Size(&dfspb.ChunkDataStream{ChunkId: "c", Data: data, Offset: 9})) // the whole message was read
	is.NoErr(r.Close())
	is.Equal(h.refs.Load(), int32(0))     // written out: released
	is.Equal(h.recycled.Load(), int32(1)) // exactly once

	// Small data is copied: no hold outlives the call.
	var small countHolder
	small.Hold()
	tiny := []byte("tiny")
	enc, err = codec{}.Marshal(SharedFrame{Frame: &dfspb.ChunkDataStream{Data: tiny}, Holder: &small})
	is.NoErr(err)
	is.Equal(small.refs.Load(), int32(1)) // only the sender's
	want := slices.Clone(enc.Materialize())
	copy(tiny, "XXXX")
	is.True(bytes.Equal(enc.Materialize(), want)) // the data was copied
	enc.Free()
}

// FuzzCodecFrame checks the codec's own frame decoder against protobuf's:
// whatever bytes it accepts, in whatever pieces, it decodes to the message
// protobuf decodes them to, and it accepts nothing protobuf refuses. Every
// message protobuf decodes, sent as a SharedFrame, goes on the wire as
// protobuf encodes it, and holds its frame until its buffers are freed.
func FuzzCodecFrame(f *testing.F) {
	full, _ := proto.Marshal(&dfspb.ChunkDataStream{
		SessionId: "s", ChunkId: "c_0", Data: bytes.Repeat([]byte{7}, 2000), Offset: 5, IsFinal: true,
		PartialChecksum: []byte{1}, ChunkChecksum: []byte{2},
		Header: &dfspb.PrepareChunkDownloadResponse{Size: 9, FrameDigests: [][]byte{{5}}},
	})
	f.Add(full, uint8(7))
	f.Add(full[:40], uint8(1))
	f.Add([]byte{0x1a, 0x80, 0x01}, uint8(2))
	f.Add(append(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1), full...), uint8(3))
	f.Fuzz(func(t *testing.T, wire []byte, step uint8) {
		var in mem.BufferSlice
		for off, n := 0, int(step)+1; off < len(wire); off += n {
			in = append(in, mem.SliceBuffer(wire[off:min(off+n, len(wire))]))
		}
		var want dfspb.ChunkDataStream
		werr := proto.Unmarshal(wire, &want)
		if werr == nil {
			checkShared(t, &want)
		}
		var got dfspb.ChunkDataStream
		if !unmarshalFrame(in, &got, nil) {
			return // left to protobuf's decoder
		}
		if werr != nil {
			t.Fatalf("frame decoder accepted what protobuf refuses (%v): %x", werr, wire)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("frame decoder made %v, protobuf %v, of %x", &got, &want, wire)
		}
		// In pieces: the same fields, the data not copied.
		var pf PiecedFrame
		if err := (codec{}).Unmarshal(in, &pf); err != nil {
			t.Fatalf("pieced decoder refused what the frame decoder took: %v", err)
		}
		if pf.Msg.Data != nil {
			t.Fatalf("pieced frame has data outside its pieces")
		}
		if len(want.Data) > 0 || pf.Len() > 0 {
			pf.Msg.Data = pf.Pieces.Materialize()
		}
		if !proto.Equal(pf.Msg, &want) {
			t.Fatalf("pieced decoder made %v, protobuf %v, of %x", pf.Msg, &want, wire)
		}
	})
}

// checkShared fails t unless m, sent as a SharedFrame, encodes as
// protobuf encodes it and releases its holds once freed.
func checkShared(t *testing.T, m *dfspb.ChunkDataStream) {
	t.Helper()
	want, err := proto.Marshal(m)
	if err != nil {
		return // not ours to encode (bad UTF-8 from unknown bytes, say)
	}
	var h countHolder
	h.Hold()
	enc, err := codec{}.Marshal(SharedFrame{Frame: m, Holder: &h})
	if err != nil {
		t.Fatalf("shared frame refused what protobuf encodes: %v", err)
	}
	if got := enc.Materialize(); !bytes.Equal(got, want) {
		t.Fatalf("shared frame encoded %x, protobuf %x", got, want)
	}
	enc.Free()
	h.Release()
	if h.refs.Load() != 0 || h.recycled.Load() != 1 {
		t.Fatalf("holds left %d, recycled %d times", h.refs.Load(), h.recycled.Load())
	}
}
