package meta_test

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metapb"
	"github.com/dfs-project/dfs/rpc"
)

// codecFile returns a committed file of n chunks.
func codecFile(n int) *meta.File {
	p := rpc.Path("/dir/file")
	f := &meta.File{Path: p, SHA256: make([]byte, rpc.DigestSize), ChunkSize: 1 << 20, Replication: 3,
		Modified: time.Unix(1_700_000_000, 0), Version: 2, Session: "5f0f8a56-6c3b-4c56-9a55-3d2b8c1f6a10"}
	for i := range n {
		d := sha256.Sum256([]byte{byte(i)})
		f.Chunks = append(f.Chunks, meta.Chunk{ID: rpc.NewChunkID(p, f.Session, 0, uint32(i)), Size: 1 << 20, Digest: d[:], FrameSize: 1 << 16})
		f.Size += 1 << 20
	}
	return f
}

// TestDecodeFileChunks: the chunk-only decoding of a stored file gives
// what the full decoding gives of its replication and chunks, reusing
// one FileChunks from a larger file to a smaller one, and refuses what
// the full decoding refuses of those fields.
func TestDecodeFileChunks(t *testing.T) {
	is := is.New(t)
	var fc meta.FileChunks
	for _, n := range []int{5, 1, 0, 3} {
		f := codecFile(n)
		b, err := meta.MarshalFile(f)
		is.NoErr(err)
		path, err := meta.DecodeFileChunks(b, &fc)
		is.NoErr(err)                           // a good record decodes
		is.Equal(string(path), string(f.Path))  // with its path
		is.Equal(fc.Replication, f.Replication) // and replication
		is.Equal(len(fc.Chunks), len(f.Chunks)) // and every chunk
		for i, c := range fc.Chunks {
			is.Equal(c.ID, f.Chunks[i].ID)                     // its ID
			is.Equal(c.Size, f.Chunks[i].Size)                 // size
			is.Equal(c.FrameSize, f.Chunks[i].FrameSize)       // frame size
			is.True(bytes.Equal(c.Digest, f.Chunks[i].Digest)) // and digest
		}
	}

	bad := map[string]func(m *metapb.File){
		"chunk id":        func(m *metapb.File) { m.Chunks[0].Id = "../../etc/passwd" },
		"chunk size":      func(m *metapb.File) { m.Chunks[0].Size = 0 },
		"digest":          func(m *metapb.File) { m.Chunks[0].Digest = m.Chunks[0].Digest[:16] },
		"total":           func(m *metapb.File) { m.Size++ },
		"file digest":     func(m *metapb.File) { m.Sha256 = m.Sha256[:16] },
		"version":         func(m *metapb.File) { m.Version = 0 },
		"huge chunk size": func(m *metapb.File) { m.Chunks[0].Size = rpc.MaxChunkSize + 1; m.Size = m.Chunks[0].Size },
	}
	for name, damage := range bad {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			m := meta.FileToPB(codecFile(1))
			damage(m)
			b, err := proto.Marshal(m)
			is.NoErr(err)
			_, full := meta.UnmarshalFile(b)
			is.True(full != nil) // the full decoding refuses it
			_, err = meta.DecodeFileChunks(b, &fc)
			is.True(err != nil) // and so does the chunk-only one
		})
	}
	t.Run("cut", func(t *testing.T) {
		is := is.New(t)
		b, err := meta.MarshalFile(codecFile(2))
		is.NoErr(err)
		for n := range len(b) {
			_, full := meta.UnmarshalFile(b[:n])
			_, err := meta.DecodeFileChunks(b[:n], &fc)
			is.Equal(err == nil, full == nil) // a cut record is refused by both, unless only its session is cut off
		}
	})
}

// TestDecodeFileChunksAsProto: fields come as proto.Unmarshal reads them:
// unknown fields and a known number of another wire type are skipped,
// the last of a repeated scalar wins.
func TestDecodeFileChunksAsProto(t *testing.T) {
	is := is.New(t)
	f := codecFile(1)
	b, err := meta.MarshalFile(f)
	is.NoErr(err)
	b = protowire.AppendTag(b, 99, protowire.BytesType) // a field added later
	b = protowire.AppendBytes(b, []byte("later"))
	b = protowire.AppendTag(b, 5, protowire.Fixed32Type) // replication, of another wire type: unknown
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 5, protowire.VarintType) // replication again: the last wins
	b = protowire.AppendVarint(b, 2)
	got, err := meta.UnmarshalFile(b)
	is.NoErr(err)
	is.Equal(got.Replication, uint32(2)) // as proto reads it
	var fc meta.FileChunks
	_, err = meta.DecodeFileChunks(b, &fc)
	is.NoErr(err)
	is.Equal(fc.Replication, uint32(2)) // the same
	is.Equal(len(fc.Chunks), 1)         // with its chunk
}

// FuzzDecodeFileChunks: whatever the bytes, the chunk-only decoding does
// not panic, and a record the full decoding accepts is decoded to the
// same replication and chunks.
func FuzzDecodeFileChunks(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		b, err := meta.MarshalFile(codecFile(n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fc meta.FileChunks
		_, err := meta.DecodeFileChunks(b, &fc)
		want, full := meta.UnmarshalFile(b)
		if full != nil {
			return
		}
		if err != nil {
			t.Fatalf("the full decoding accepts %x, the chunk-only one refuses it: %v", b, err)
		}
		if fc.Replication != want.Replication || len(fc.Chunks) != len(want.Chunks) {
			t.Fatalf("decoded replication %d, %d chunks; want %d, %d", fc.Replication, len(fc.Chunks), want.Replication, len(want.Chunks))
		}
		for i, c := range fc.Chunks {
			w := want.Chunks[i]
			if c.ID != w.ID || c.Size != w.Size || c.FrameSize != w.FrameSize || !bytes.Equal(c.Digest, w.Digest) {
				t.Fatalf("chunk %d decoded as %+v, want %+v", i, c, w)
			}
		}
	})
}
