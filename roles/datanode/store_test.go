package datanode

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// The chunk store's own tests are in package chunkstore and its
// conformance suite in chunkstoretest; these helpers serve the datanode
// tests that use a store.

const (
	testFrame = rpc.MinFrameSize // 4 KiB
	testCap   = 1 << 20          // 1 MiB store
)

func chunkID(t *testing.T, n int) rpc.ChunkID {
	t.Helper()
	id, err := rpc.ParseChunkID(strings.Repeat("ab", 15) + string(rune('0'+n%10)) + "f_" + string(rune('0'+n%10)))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func chunkData(size int, seed byte) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = seed + byte(i*31+i/97)
	}
	return b
}

// put stores data as chunk id the way the upload path does: frame by
// frame, then Commit with the frame digests and chunk digest.
func put(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, data []byte) (digest []byte, frames [][]byte) {
	t.Helper()
	w, err := s.Create(id, int64(len(data)), testFrame)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for off := 0; off < len(data); off += testFrame {
		if _, err := w.Write(data[off:min(off+testFrame, len(data))]); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	digest, frames = chunkstream.DigestOf(data, testFrame)
	if err := w.Commit(frames, digest); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return digest, frames
}

// openStore opens a chunk store in dir on the operating system's disk.
func openStore(t *testing.T, dir string, capacity int64) *chunkstore.Store {
	t.Helper()
	s, err := chunkstore.Open(vfs.Default, dir, capacity)
	if err != nil {
		t.Fatalf("chunkstore.Open: %v", err)
	}
	return s
}

// tempFiles returns the temporary files (chunks being written) in a store.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tmp") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// corrupt rewrites a stored chunk file.
func corrupt(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, fn func(b []byte) []byte) {
	t.Helper()
	p := s.ChunkPath(id)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o640); err != nil {
		t.Fatal(err)
	}
}
