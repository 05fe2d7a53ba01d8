package chunkstore

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// copyTree copies the directory tree src of the operating system's file
// system to dst on fsys.
func copyTree(t *testing.T, src string, fsys vfs.FS, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return fsys.MkdirAll(to, 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return vfs.WriteFile(fsys, to, b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, info.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpensDataDirV1: a data dir written before the store moved to this
// package (testdata/datadir-v1: two chunks, one quarantined as corrupt)
// opens as it did, and a chunk written now is byte for byte the file
// written then.
func TestOpensDataDirV1(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		copyTree(t, filepath.Join("testdata", "datadir-v1"), fsys, dir)
		s := openStore(t, fsys, dir)
		one, two, bad := chunkID(t, 1), chunkID(t, 2), chunkID(t, 3)
		is.Equal(s.IDs(), []rpc.ChunkID{one, two}) // both intact chunks are indexed
		is.Equal(s.Corrupt(), []rpc.ChunkID{bad})  // the quarantined one is listed
		u := s.Usage()
		is.Equal(u.Chunks, int64(2))                                                     // counted
		is.Equal(u.Used, FileSize(1, testFrame)+FileSize(3*testFrame+17, testFrame)+196) // with the corrupt file's bytes
		for id, data := range map[rpc.ChunkID][]byte{one: chunkData(1, 1), two: chunkData(3*testFrame+17, 2)} {
			is.NoErr(s.Verify(context.Background(), id, nil)) // each verifies
			c, err := s.Open(id)
			is.NoErr(err)
			got := make([]byte, len(data))
			_, err = c.ReadAt(got, 0)
			is.NoErr(err)
			c.Close()
			is.True(bytes.Equal(got, data)) // and holds its bytes

			golden := readAll(t, fsys, s.ChunkPath(id))
			_, err = s.Delete(id)
			is.NoErr(err)
			put(t, s, id, data)
			is.True(bytes.Equal(readAll(t, fsys, s.ChunkPath(id)), golden)) // written again, the file is the same
		}
		freed, err := s.Delete(bad)
		is.NoErr(err)
		is.Equal(freed, int64(196)) // the corrupt file is deleted by its ID
	})
}

func TestFileSize(t *testing.T) {
	is := is.New(t)
	is.Equal(FileSize(1, 4096), int64(1+32+64))            // one frame
	is.Equal(FileSize(4096, 4096), int64(4096+32+64))      // exactly one frame
	is.Equal(FileSize(4097, 4096), int64(4097+2*32+64))    // a second, partial frame
	is.Equal(FileSize(8<<20, 1<<20), int64(8<<20+8*32+64)) // default sizes
}
