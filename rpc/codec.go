package rpc

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Buffer pooling. gRPC's default pool zeroes every buffer it hands out;
// for a 64 KiB frame that is a sixth of the CPU a ranged read costs, and
// pays for nothing: every buffer taken here is filled whole before it is
// read (a marshaled message, a received message's bytes, an HTTP/2 frame
// read from the connection).
const (
	minShift  = 8
	maxShift  = 24
	minPooled = 1 << minShift // smaller buffers come from the smallest class
	maxPooled = 1 << maxShift // larger ones (beyond its slack) are not pooled
)

// dirtyPool is a gRPC buffer pool that does not zero the buffers it hands
// out. It has two size classes per power of two 2^k, from minPooled to
// maxPooled: 2^k bytes, and 2^k plus a sixteenth, so that a message of a
// frame of a power-of-two size and its few header bytes does not take a
// buffer twice its size. Each class is a sync.Pool of buffers of exactly
// its capacity.
type dirtyPool struct {
	classes [2 * (maxShift - minShift + 1)]sync.Pool
}

// buffers is the pool every dfs client and server shares, through
// DialOptions and ServerOptions.
var buffers = &dirtyPool{}

var _ mem.BufferPool = (*dirtyPool)(nil)

// class returns the index and capacity of the smallest class that holds n
// bytes, and false when n is beyond the pooled sizes.
func class(n int) (idx, capacity int, ok bool) {
	if n <= minPooled {
		return 0, minPooled, true
	}
	k := bits.Len(uint(n - 1)) // 2^(k-1) < n <= 2^k
	if lo := 1 << (k - 1); n <= lo+lo/16 && k-1 >= minShift && k-1 <= maxShift {
		return 2*(k-1-minShift) + 1, lo + lo/16, true
	}
	if k > maxShift {
		return 0, 0, false
	}
	return 2 * (k - minShift), 1 << k, true
}

// Get returns a buffer of length n whose bytes are undefined.
func (p *dirtyPool) Get(n int) *[]byte {
	i, c, ok := class(n)
	if !ok {
		b := make([]byte, n)
		return &b
	}
	if b, _ := p.classes[i].Get().(*[]byte); b != nil {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, c)
	return &b
}

// Put returns a buffer from Get to the pool; one whose capacity is not a
// class's is left to the garbage collector.
func (p *dirtyPool) Put(b *[]byte) {
	i, c, ok := class(cap(*b))
	if !ok || c != cap(*b) {
		return
	}
	*b = (*b)[:0]
	p.classes[i].Put(b)
}

// codec is gRPC's protobuf codec with its buffers from the dirty pool: a
// message is marshaled into a pooled buffer, and a received one that
// arrived in several pieces is joined in one, without zeroing either.
type codec struct{}

var _ encoding.CodecV2 = codec{}

// Name is "proto", so that peers see the content type they expect.
func (codec) Name() string { return "proto" }

// Marshal encodes v, which must be a protobuf message or a SharedFrame.
func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if s, ok := v.(SharedFrame); ok {
		return marshalShared(s)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto: cannot marshal %T, not a protobuf message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses the size just computed; v is not changed
	// meanwhile (gRPC marshals a message before Send returns).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	b := buffers.Get(size)
	out, err := opts.MarshalAppend((*b)[:0], m)
	if err != nil {
		buffers.Put(b)
		return nil, err
	}
	*b = out
	return mem.BufferSlice{mem.NewBuffer(b, buffers)}, nil
}

// FrameHolder counts the holders of a frame's data buffer: Hold adds
// one, Release drops one, and whoever drops the last hands the buffer
// back (RecycleFrame). Both are safe for concurrent use.
type FrameHolder interface {
	Hold()
	Release()
}

// SharedFrame is a ChunkDataStream to send whose Data the codec does not
// copy: gRPC writes it to the connection from the frame's own buffer.
// Send it with a gRPC stream's SendMsg (the generated Send takes only
// the bare message, which the codec copies). The codec takes a Hold on
// Holder for the buffer it makes of Data, and Releases it once gRPC frees
// that buffer: when its bytes are written to the connection, or the
// stream or connection failed before; a buffer gRPC never frees (its
// connection closed while the message was queued) is never released, and
// its frame's memory goes to the garbage collector instead of the pool.
// So Data must stay unchanged until then, and the sender must hold the
// frame itself while SendMsg runs (the codec's Hold is taken during it).
// A frame with less than 64 KiB of data is copied, as the plain message
// would be, and holds nothing after SendMsg returns.
//
// A frame received in pieces (a PiecedFrame's) is sent with Pieces set
// instead of Frame.Data and Holder: the codec takes a reference on each
// piece, which gRPC frees once written, so the sender keeps its own
// until SendMsg returns and may free them then.
type SharedFrame struct {
	Frame  *dfspb.ChunkDataStream
	Holder FrameHolder
	Pieces mem.BufferSlice
}

// dataField is ChunkDataStream's data field number.
const dataField = 3

// SharedMin is the least data a SharedFrame sends from its own buffer:
// splitting the message costs more than copying a few kilobytes (a
// datanode serving 4 KiB gets spent 14 % more CPU when it split them).
const SharedMin = 64 << 10

// marshalShared encodes s.Frame as proto.Marshal does, byte for byte, in
// three pieces: the fields before Data and Data's tag and length, Data
// itself (not copied: a buffer that Releases s.Holder when gRPC frees
// it), and the fields after Data. Protobuf writes known fields in field
// number order and unknown ones last, so Data goes after the last
// known field numbered below its own.
func marshalShared(s SharedFrame) (mem.BufferSlice, error) {
	f := s.Frame
	if s.Pieces != nil && f != nil && len(f.Data) == 0 {
		if s.Pieces.Len() < SharedMin {
			g := proto.CloneOf(f)
			g.Data = s.Pieces.Materialize()
			return codec{}.Marshal(g)
		}
		return marshalPieces(f, s.Pieces)
	}
	if s.Holder == nil || f == nil || len(f.Data) < SharedMin {
		return codec{}.Marshal(f)
	}
	head, tail, err := aroundData(f, len(f.Data))
	if err != nil {
		return nil, err
	}
	s.Holder.Hold()
	d := f.Data
	data := mem.NewBuffer(&d, releaser{s.Holder})
	if _, ok := data.(mem.SliceBuffer); ok {
		// gRPC would not free it, so it cannot release the frame: copy.
		s.Holder.Release()
		data = mem.SliceBuffer(slices.Clone(f.Data))
	}
	out := mem.BufferSlice{head, data}
	if tail != nil {
		out = append(out, tail)
	}
	return out, nil
}

// marshalPieces encodes f with pieces as its data, as proto.Marshal
// would encode it with them joined: the fields before the data, the
// pieces themselves (a new reference on each, which gRPC frees once it
// wrote them), the fields after.
func marshalPieces(f *dfspb.ChunkDataStream, pieces mem.BufferSlice) (mem.BufferSlice, error) {
	head, tail, err := aroundData(f, pieces.Len())
	if err != nil {
		return nil, err
	}
	out := make(mem.BufferSlice, 0, len(pieces)+2)
	out = append(out, head)
	for _, p := range pieces {
		p.Ref()
		out = append(out, p)
	}
	if tail != nil {
		out = append(out, tail)
	}
	return out, nil
}

// aroundData returns the encoding of f's fields other than Data that go
// before it, with Data's tag and a length of n, and of those that go
// after it (nil if none). Protobuf writes known fields in field number
// order and unknown ones last, so Data goes after the last known field
// numbered below its own.
func aroundData(f *dfspb.ChunkDataStream, n int) (head, tail mem.SliceBuffer, err error) {
	m := f.ProtoReflect()
	rest := m.New() // every field but Data
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != dataField {
			rest.Set(fd, v)
		}
		return true
	})
	rest.SetUnknown(m.GetUnknown())
	b, err := proto.Marshal(rest.Interface())
	if err != nil {
		return nil, nil, err
	}
	known := len(b) - len(m.GetUnknown())
	cut := 0
	for cut < known {
		num, _, k := protowire.ConsumeField(b[cut:known])
		if k < 0 {
			return nil, nil, fmt.Errorf("proto: marshal %T: %w", f, protowire.ParseError(k))
		}
		if num > dataField {
			break
		}
		cut += k
	}
	h := make([]byte, 0, cut+1+binary.MaxVarintLen64)
	h = append(h, b[:cut]...)
	h = protowire.AppendTag(h, dataField, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(n))
	if cut < len(b) {
		tail = b[cut:]
	}
	return h, tail, nil
}

// releaser is the "pool" of a SharedFrame's data buffer: gRPC hands the
// buffer back to it (Put) exactly once, when the last reference to it is
// freed, and it releases the frame. It hands out nothing of its own.
type releaser struct{ h FrameHolder }

func (r releaser) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (r releaser) Put(*[]byte) { r.h.Release() }

// Unmarshal decodes data into v, which must be a protobuf message or a
// *PiecedFrame. A message copies what it keeps, so data may be freed
// after; a PiecedFrame keeps references on the buffers its data lies in.
func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if pf, ok := v.(*PiecedFrame); ok {
		return unmarshalPieced(data, pf)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto: cannot unmarshal into %T, not a protobuf message", v)
	}
	if f, ok := m.(*dfspb.ChunkDataStream); ok && !mem.IsBelowBufferPoolingThreshold(data.Len()) {
		if unmarshalFrame(data, f, nil) {
			return nil
		}
		proto.Reset(f) // something this decoder leaves to the general one
	}
	if len(data) == 1 {
		return proto.Unmarshal(data[0].ReadOnlyData(), m)
	}
	buf := data.MaterializeToBuffer(buffers)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// PiecedFrame is a received ChunkDataStream whose data stays in the
// buffers gRPC read it into, as many pieces as the HTTP/2 frames it came
// in (16 KiB each), where a ChunkDataStream's Data is one slice the codec
// copies the pieces into. Receive one with a stream's RecvMsg: Msg holds
// every field but Data (which is nil) and Pieces the data, with a
// reference on each of its buffers. Whoever receives it owns Pieces and
// hands them back with Pieces.Free once done; nothing may use them after.
type PiecedFrame struct {
	Msg    *dfspb.ChunkDataStream
	Pieces mem.BufferSlice
}

// Len returns the number of data bytes.
func (f *PiecedFrame) Len() int { return f.Pieces.Len() }

// Join returns the frame's data in one buffer of the frame pool, which
// its owner may hand back with RecycleFrame, and frees the pieces.
func (f *PiecedFrame) Join() []byte {
	b := (*buffers.Get(f.Pieces.Len()))[:f.Pieces.Len()]
	f.Pieces.CopyTo(b)
	f.Pieces.Free()
	f.Pieces = nil
	return b
}

// Pieced returns f received as a PiecedFrame: its Data, whole, as the
// only piece; f must not be used after.
func Pieced(f *dfspb.ChunkDataStream) *PiecedFrame {
	pf := &PiecedFrame{Msg: f}
	if len(f.Data) > 0 {
		pf.Pieces = mem.BufferSlice{mem.SliceBuffer(f.Data)}
	}
	f.Data = nil
	return pf
}

// unmarshalPieced decodes data into pf, taking a reference on each
// buffer pf's data lies in instead of copying it. What the frame decoder
// leaves to the general one is decoded by it, its data then one piece.
func unmarshalPieced(data mem.BufferSlice, pf *PiecedFrame) error {
	pf.Msg, pf.Pieces = &dfspb.ChunkDataStream{}, nil
	if unmarshalFrame(data, pf.Msg, &pf.Pieces) {
		return nil
	}
	pf.Pieces.Free()
	pf.Msg = &dfspb.ChunkDataStream{}
	if err := (codec{}).Unmarshal(data, pf.Msg); err != nil {
		return err
	}
	*pf = *Pieced(pf.Msg)
	return nil
}

// unmarshalFrame decodes a ChunkDataStream (a frame of chunk bytes) from
// the pieces gRPC received it in. With pieces nil it copies its data
// once, from the pieces into a buffer of the dirty pool, where the
// general decoder copies it twice (joining the pieces, then out of the
// joined buffer) into memory the runtime zeroes; the frame's owner may
// hand that buffer back with RecycleFrame. With pieces set, the data is
// not copied at all: *pieces gets a reference on each part of a buffer
// the data lies in, and f.Data stays nil. It reports false, leaving f
// to be reset and decoded again by the general decoder (and *pieces to
// be freed), for what it does not decode itself: unknown or repeated
// fields, another wire type, bad UTF-8 or a broken encoding (which the
// general decoder then reports).
func unmarshalFrame(data mem.BufferSlice, f *dfspb.ChunkDataStream, pieces *mem.BufferSlice) bool {
	r := &cursor{s: data, left: data.Len()}
	seenData := false
	for r.left > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil || tag>>3 > uint64(protowire.MaxValidNumber) {
			return false
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch {
		case typ == protowire.VarintType && (num == 4 || num == 5):
			v, err := binary.ReadUvarint(r)
			if err != nil {
				return false
			}
			if num == 4 {
				f.Offset = int64(v)
			} else {
				f.IsFinal = v != 0
			}
			continue
		case typ != protowire.BytesType:
			return false
		}
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.left) {
			return false
		}
		if num == 3 {
			if seenData {
				return false
			}
			seenData = true
			if pieces != nil {
				*pieces = r.take(int(n))
				continue
			}
		}
		var b []byte
		if num == 3 && !mem.IsBelowBufferPoolingThreshold(int(n)) {
			b = (*buffers.Get(int(n)))[:n]
		} else {
			b = make([]byte, n)
		}
		r.read(b)
		switch num {
		case 1, 2:
			if !utf8.Valid(b) {
				return false
			}
			if num == 1 {
				f.SessionId = string(b)
			} else {
				f.ChunkId = string(b)
			}
		case 3:
			f.Data = b
		case 6:
			f.PartialChecksum = b
		case 7:
			f.ChunkChecksum = b
		case 8:
			if f.Prepare != nil {
				return false
			}
			f.Prepare = &dfspb.PrepareChunkUploadRequest{}
			if proto.Unmarshal(b, f.Prepare) != nil {
				return false
			}
		case 9:
			if f.Header != nil {
				return false
			}
			f.Header = &dfspb.PrepareChunkDownloadResponse{}
			if proto.Unmarshal(b, f.Header) != nil {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// cursor reads a received message from the pieces it came in, without
// consuming them: it copies bytes out (ReadByte, read) or takes new
// references on them (take).
type cursor struct {
	s    mem.BufferSlice
	i    int // the piece being read
	off  int // the next byte's offset in it
	left int // bytes left in all pieces
}

// skipEmpty moves past pieces read to their end.
func (c *cursor) skipEmpty() {
	for c.i < len(c.s) && c.off == c.s[c.i].Len() {
		c.i, c.off = c.i+1, 0
	}
}

// ReadByte returns the next byte, or io.EOF at the end.
func (c *cursor) ReadByte() (byte, error) {
	c.skipEmpty()
	if c.left == 0 || c.i == len(c.s) {
		return 0, io.EOF
	}
	b := c.s[c.i].ReadOnlyData()[c.off]
	c.off++
	c.left--
	return b, nil
}

// read copies the next len(b) bytes, which the caller checked are left,
// into b.
func (c *cursor) read(b []byte) {
	for len(b) > 0 {
		c.skipEmpty()
		n := copy(b, c.s[c.i].ReadOnlyData()[c.off:])
		b, c.off, c.left = b[n:], c.off+n, c.left-n
	}
}

// take returns the next n bytes, which the caller checked are left, as
// references on the parts of the pieces they lie in.
func (c *cursor) take(n int) mem.BufferSlice {
	var out mem.BufferSlice
	for n > 0 {
		c.skipEmpty()
		p := c.s[c.i]
		k := min(n, p.Len()-c.off)
		out = append(out, p.Slice(c.off, c.off+k))
		n, c.off, c.left = n-k, c.off+k, c.left-k
	}
	return out
}

// HeldFrame is a frame's data in a buffer of the frame pool, with a count
// of its holders (a FrameHolder): the last Release hands the buffer back
// (RecycleFrame). A sender reads a frame into it and sends it as a
// SharedFrame, so that gRPC writes the bytes from it.
type HeldFrame struct {
	Data []byte
	refs atomic.Int32
}

var _ FrameHolder = (*HeldFrame)(nil)

// NewHeldFrame returns a frame of n bytes, their values undefined, held
// once, by the caller.
func NewHeldFrame(n int) *HeldFrame {
	f := &HeldFrame{Data: *buffers.Get(n)}
	f.refs.Store(1)
	return f
}

// Hold adds a holder; it is called only while another holds the frame.
func (f *HeldFrame) Hold() { f.refs.Add(1) }

// Release drops a holder; the last hands the buffer back.
func (f *HeldFrame) Release() {
	if f.refs.Add(-1) == 0 {
		RecycleFrame(f.Data)
	}
}

// RecycleFrame hands the data of a received ChunkDataStream back to the
// buffer pool once its owner is done with it, so that the next frame
// received reuses its memory instead of new memory the runtime must
// zero. Nothing may use b, or any slice of it, after: it is the caller's
// promise that b is a frame's Data as the codec decoded it and that no
// other reference to it is left. Data the pool did not hand out is left
// to the garbage collector, or pooled if its capacity is a pool class's
// (it is then the caller's memory to give away).
func RecycleFrame(b []byte) {
	if cap(b) >= minPooled {
		buffers.Put(&b)
	}
}
