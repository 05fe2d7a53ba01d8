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
		Session: string(f.Session),
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
	if total != f.Size || len(f.SHA256) != rpc.DigestSize || f.Version == 0 {
		return nil, fmt.Errorf("decode file %s: inconsistent (size %d, chunks total %d, version %d)", p, f.Size, total, f.Version)
	}
	return f, nil
}

// MarshalUpload encodes u.
func MarshalUpload(u *Upload) ([]byte, error) { return marshal(UploadToPB(u)) }

// UploadToPB converts u to its storage message.
func UploadToPB(u *Upload) *metapb.Upload {
	m := &metapb.Upload{
		Id: string(u.ID), Path: string(u.Path), ChunkSize: u.ChunkSize, Replication: u.Replication,
		CreatedUnixNano: u.Created.UnixNano(),
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
	u := &Upload{ID: id, Path: p, ChunkSize: m.ChunkSize, Replication: m.Replication, Created: time.Unix(0, m.CreatedUnixNano)}
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
