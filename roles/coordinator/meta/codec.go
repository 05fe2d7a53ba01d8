package meta

import (
	"bytes"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/roles/coordinator/meta/metapb"
	"github.com/dfs-project/dfs/rpc"
)

// Backends store records in their protobuf encoding; these functions are
// the one place that maps them. Decoding validates what it reads, so a
// damaged value is an error, never a panic or a bad path.

// MarshalFile encodes f.
func MarshalFile(f *File) ([]byte, error) { return marshal(FileToPB(f)) }

// FileToPB converts f to its storage message.
func FileToPB(f *File) *metapb.File {
	m := &metapb.File{
		Path: string(f.Path), Size: f.Size, Sha256: f.SHA256, ChunkSize: f.ChunkSize,
		Replication: f.Replication, ModifiedUnixNano: f.Modified.UnixNano(), Version: f.Version,
		Session: string(f.Session), Owner: f.Attr.Owner, Group: f.Attr.Group, Mode: f.Attr.Mode, Metadata: f.Metadata,
	}
	for _, c := range f.Chunks {
		m.Chunks = append(m.Chunks, &metapb.Chunk{Id: string(c.ID), Size: c.Size, Digest: c.Digest, FrameSize: c.FrameSize})
	}
	return m
}

// UnmarshalFile decodes and validates a stored file.
func UnmarshalFile(b []byte) (*File, error) {
	var m metapb.File
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode file: %w", err)
	}
	return FileFromPB(&m)
}

// FileFromPB converts and validates a storage message.
func FileFromPB(m *metapb.File) (*File, error) {
	p, err := rpc.ParsePath(m.Path)
	if err != nil {
		return nil, fmt.Errorf("decode file: %w", err)
	}
	f := &File{
		Path: p, Size: m.Size, SHA256: bytes.Clone(m.Sha256), ChunkSize: m.ChunkSize, Replication: m.Replication,
		Modified: time.Unix(0, m.ModifiedUnixNano), Version: m.Version,
		Attr: Attr{Owner: m.Owner, Group: m.Group, Mode: m.Mode}, Metadata: m.Metadata,
	}
	if err := CheckAttr(&f.Attr); err != nil {
		return nil, fmt.Errorf("decode file %s: %w", p, err)
	}
	if err := CheckMetadata(f.Metadata); err != nil {
		return nil, fmt.Errorf("decode file %s: %w", p, err)
	}
	if m.Session != "" {
		sid, err := rpc.ParseSessionID(m.Session)
		if err != nil {
			return nil, fmt.Errorf("decode file %s: %w", p, err)
		}
		f.Session = sid
	}
	var total int64
	for _, c := range m.Chunks {
		id, err := rpc.ParseChunkID(c.Id)
		if err != nil {
			return nil, fmt.Errorf("decode file %s: %w", p, err)
		}
		if c.Size <= 0 || c.Size > rpc.MaxChunkSize || len(c.Digest) != rpc.DigestSize {
			return nil, fmt.Errorf("decode file %s: chunk %s has size %d, digest of %d bytes", p, id, c.Size, len(c.Digest))
		}
		total += c.Size
		f.Chunks = append(f.Chunks, Chunk{ID: id, Size: c.Size, Digest: bytes.Clone(c.Digest), FrameSize: c.FrameSize})
	}
	if total != f.Size || !fileDigest(f.SHA256) || f.Version == 0 {
		return nil, fmt.Errorf("decode file %s: inconsistent (size %d, chunks total %d, version %d)", p, f.Size, total, f.Version)
	}
	return f, nil
}

// fileDigest reports whether sum is a file's digest: a SHA-256, or none
// (a file made by concatenating others has none).
func fileDigest(sum []byte) bool { return len(sum) == rpc.DigestSize || len(sum) == 0 }

// MarshalUpload encodes u.
func MarshalUpload(u *Upload) ([]byte, error) { return marshal(UploadToPB(u)) }

// UploadToPB converts u to its storage message.
func UploadToPB(u *Upload) *metapb.Upload {
	m := &metapb.Upload{
		Id: string(u.ID), Path: string(u.Path), ChunkSize: u.ChunkSize, Replication: u.Replication,
		CreatedUnixNano: u.Created.UnixNano(), Owner: u.Owner,
	}
	for _, a := range u.Chunks {
		pa := &metapb.Allocation{Index: a.Index, Attempt: a.Attempt, Id: string(a.ID)}
		for _, n := range a.Nodes {
			pa.Nodes = append(pa.Nodes, string(n))
		}
		m.Chunks = append(m.Chunks, pa)
	}
	return m
}

// UnmarshalUpload decodes and validates a stored upload.
func UnmarshalUpload(b []byte) (*Upload, error) {
	var m metapb.Upload
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode upload: %w", err)
	}
	return UploadFromPB(&m)
}

// UploadFromPB converts and validates a storage message.
func UploadFromPB(m *metapb.Upload) (*Upload, error) {
	id, err := rpc.ParseSessionID(m.Id)
	if err != nil {
		return nil, fmt.Errorf("decode upload: %w", err)
	}
	p, err := rpc.ParsePath(m.Path)
	if err != nil {
		return nil, fmt.Errorf("decode upload %s: %w", id, err)
	}
	if err := CheckName(m.Owner); err != nil {
		return nil, fmt.Errorf("decode upload %s: %w", id, err)
	}
	u := &Upload{ID: id, Path: p, ChunkSize: m.ChunkSize, Replication: m.Replication, Created: time.Unix(0, m.CreatedUnixNano), Owner: m.Owner}
	for _, a := range m.Chunks {
		cid, err := rpc.ParseChunkID(a.Id)
		if err != nil {
			return nil, fmt.Errorf("decode upload %s: %w", id, err)
		}
		al := Allocation{Index: a.Index, Attempt: a.Attempt, ID: cid}
		for _, n := range a.Nodes {
			nid, err := rpc.ParseNodeID(n)
			if err != nil {
				return nil, fmt.Errorf("decode upload %s: %w", id, err)
			}
			al.Nodes = append(al.Nodes, nid)
		}
		u.Chunks = append(u.Chunks, al)
	}
	return u, nil
}

// DeletionFromPB converts and validates a storage message.
func DeletionFromPB(m *metapb.Deletion) (Deletion, error) {
	n, err := rpc.ParseNodeID(m.Node)
	if err != nil {
		return Deletion{}, fmt.Errorf("decode deletion: %w", err)
	}
	c, err := rpc.ParseChunkID(m.Chunk)
	if err != nil {
		return Deletion{}, fmt.Errorf("decode deletion: %w", err)
	}
	return Deletion{Node: n, Chunk: c}, nil
}

// DeletionKey is the canonical key of a deletion: "<node>/<chunk>".
func DeletionKey(d Deletion) string { return string(d.Node) + "/" + string(d.Chunk) }

// ParseDeletionKey parses a DeletionKey.
func ParseDeletionKey(k string) (Deletion, error) {
	if len(k) < 38 || k[36] != '/' {
		return Deletion{}, fmt.Errorf("decode deletion key %q", k)
	}
	return DeletionFromPB(&metapb.Deletion{Node: k[:36], Chunk: k[37:]})
}

func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "encode %T: %w", m, err)
	}
	return b, nil
}

// MaxChunkRecordSize is the most bytes one chunk adds to a stored file
// record: the largest chunk ID, size, digest and frame size, with the
// field's tag and length.
func MaxChunkRecordSize() int {
	id := rpc.NewChunkID("/", "s", 0, rpc.MaxChunkIndex)
	n := proto.Size(&metapb.Chunk{Id: string(id), Size: rpc.MaxChunkSize, Digest: make([]byte, rpc.DigestSize), FrameSize: rpc.MaxFrameSize})
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

// The field numbers of metapb.File and metapb.Chunk that
// DecodeFileChunks reads.
const (
	fileFieldPath        = 1
	fileFieldSize        = 2
	fileFieldSHA256      = 3
	fileFieldReplication = 5
	fileFieldVersion     = 7
	fileFieldChunks      = 8

	chunkFieldID        = 1
	chunkFieldSize      = 2
	chunkFieldDigest    = 3
	chunkFieldFrameSize = 4
)

// DecodeFileChunks decodes the replication and chunks of a stored file
// record b into fc, reusing fc's memory: fc's chunk digests are valid
// until its next use. It returns the record's path, a slice of b. It
// reads the wire format directly rather than through metapb.File, and
// allocates only each chunk's ID: a new term decodes every file, and the
// generic decoding (a message, its strings and bytes, then a File) was
// most of that time. It reads fields as proto.Unmarshal does (the last
// value of a scalar wins, a field of another wire type is unknown,
// unknown fields are skipped) and checks what UnmarshalFile checks of the
// chunks, sizes, digest and version; the path and session are not
// checked: the caller compares the path with the record's key.
func DecodeFileChunks(b []byte, fc *FileChunks) (path []byte, err error) {
	fc.Replication, fc.Chunks, fc.digests = 0, fc.Chunks[:0], fc.digests[:0]
	var (
		size, total int64
		sum         []byte
		version     uint64
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("decode file: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v uint64
		var field []byte
		switch {
		case typ == protowire.VarintType && (num == fileFieldSize || num == fileFieldReplication || num == fileFieldVersion):
			v, n = protowire.ConsumeVarint(b)
		case typ == protowire.BytesType && (num == fileFieldPath || num == fileFieldSHA256 || num == fileFieldChunks):
			field, n = protowire.ConsumeBytes(b)
		default:
			num, n = 0, protowire.ConsumeFieldValue(num, typ, b) // unknown: skipped
		}
		if n < 0 {
			return nil, fmt.Errorf("decode file: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fileFieldPath:
			path = field
		case fileFieldSize:
			size = int64(v)
		case fileFieldSHA256:
			sum = field
		case fileFieldReplication:
			fc.Replication = uint32(v)
		case fileFieldVersion:
			version = v
		case fileFieldChunks:
			c, err := decodeChunk(field, fc)
			if err != nil {
				return nil, fmt.Errorf("decode file %s: %w", path, err)
			}
			total += c.Size
			fc.Chunks = append(fc.Chunks, c)
		}
	}
	for i := range fc.Chunks { // the arena may have moved as it grew
		fc.Chunks[i].Digest = fc.digests[i*rpc.DigestSize : (i+1)*rpc.DigestSize : (i+1)*rpc.DigestSize]
	}
	if total != size || !fileDigest(sum) || version == 0 {
		return nil, fmt.Errorf("decode file %s: inconsistent (size %d, chunks total %d, version %d)", path, size, total, version)
	}
	return path, nil
}

// decodeChunk decodes and checks one metapb.Chunk, appending its digest
// to fc's arena; DecodeFileChunks sets the returned chunk's Digest.
func decodeChunk(b []byte, fc *FileChunks) (Chunk, error) {
	var c Chunk
	var id, digest []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Chunk{}, protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var field []byte
		switch {
		case typ == protowire.VarintType && (num == chunkFieldSize || num == chunkFieldFrameSize):
			v, n = protowire.ConsumeVarint(b)
		case typ == protowire.BytesType && (num == chunkFieldID || num == chunkFieldDigest):
			field, n = protowire.ConsumeBytes(b)
		default:
			num, n = 0, protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return Chunk{}, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case chunkFieldID:
			id = field
		case chunkFieldSize:
			c.Size = int64(v)
		case chunkFieldDigest:
			digest = field
		case chunkFieldFrameSize:
			c.FrameSize = int64(v)
		}
	}
	cid, err := rpc.ParseChunkID(string(id))
	if err != nil {
		return Chunk{}, err
	}
	c.ID = cid
	if c.Size <= 0 || c.Size > rpc.MaxChunkSize || len(digest) != rpc.DigestSize {
		return Chunk{}, fmt.Errorf("chunk %s has size %d, digest of %d bytes", cid, c.Size, len(digest))
	}
	fc.digests = append(fc.digests, digest...)
	return c, nil
}

// MarshalDir encodes d.
func MarshalDir(d *Dir) ([]byte, error) { return marshal(DirToPB(d)) }

// DirToPB converts d to its storage message.
func DirToPB(d *Dir) *metapb.Dir {
	return &metapb.Dir{Path: string(d.Path), ModifiedUnixNano: d.Modified.UnixNano(), Owner: d.Attr.Owner, Group: d.Attr.Group, Mode: d.Attr.Mode}
}

// UnmarshalDir decodes and validates a stored directory.
func UnmarshalDir(b []byte) (*Dir, error) {
	var m metapb.Dir
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode directory: %w", err)
	}
	return DirFromPB(&m)
}

// DirFromPB converts and validates a storage message. The root is never
// stored, so it is refused.
func DirFromPB(m *metapb.Dir) (*Dir, error) {
	p, err := rpc.ParsePath(m.Path)
	if err != nil {
		return nil, fmt.Errorf("decode directory: %w", err)
	}
	d := &Dir{Path: p, Modified: time.Unix(0, m.ModifiedUnixNano), Attr: Attr{Owner: m.Owner, Group: m.Group, Mode: m.Mode}}
	if err := CheckAttr(&d.Attr); err != nil {
		return nil, fmt.Errorf("decode directory %s: %w", p, err)
	}
	return d, nil
}
