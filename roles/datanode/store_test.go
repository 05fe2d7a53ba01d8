package datanode

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/chunkstoretest"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// The chunk store's own tests are in package chunkstore and its
// conformance suite in chunkstoretest; these helpers serve the datanode
// tests that use a store.

const (
	testFrame = chunkstoretest.FrameSize
	testCap   = 1 << 20 // 1 MiB store
)

// The chunk helpers of the store's conformance suite, under the names
// the datanode's tests use.
func chunkID(t *testing.T, n int) rpc.ChunkID { return chunkstoretest.ChunkID(t, n) }

func chunkData(size int, seed byte) []byte { return chunkstoretest.ChunkData(size, seed) }

func put(t *testing.T, s *chunkstore.Store, id rpc.ChunkID, data []byte) (digest []byte, frames [][]byte) {
	return chunkstoretest.Put(t, s, id, data)
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
