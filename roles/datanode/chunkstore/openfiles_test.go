package chunkstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// countingFS counts the chunk files opened for reading and those still
// open.
type countingFS struct {
	vfs.FS
	mu     sync.Mutex
	opened int
	open   int
}

func (c *countingFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil || flag != os.O_RDONLY {
		return f, err
	}
	c.mu.Lock()
	c.opened++
	c.open++
	c.mu.Unlock()
	return &countedFile{File: f, c: c}, nil
}

func (c *countingFS) counts() (opened, open int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened, c.open
}

// countedFile is a file of a countingFS.
type countedFile struct {
	vfs.File
	c    *countingFS
	once sync.Once
}

func (f *countedFile) Close() error {
	f.once.Do(func() {
		f.c.mu.Lock()
		f.c.open--
		f.c.mu.Unlock()
	})
	return f.File.Close()
}

// readChunk reads chunk id whole through Open and closes it.
func readChunk(t *testing.T, s *Store, id rpc.ChunkID) ([]byte, error) {
	t.Helper()
	c, err := s.Open(id)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b := make([]byte, c.Size)
	_, err = c.ReadAt(b, 0)
	return b, err
}

// TestOpenKeepsFiles: reads of a chunk share one open file and its
// metadata; at most maxOpenChunks files stay open between reads; a
// delete, a quarantine or CloseFiles closes a kept file once its readers
// let go, and a reader holding it meanwhile still reads it.
func TestOpenKeepsFiles(t *testing.T) {
	forDisks(t, testOpenKeepsFiles)
}

func testOpenKeepsFiles(t *testing.T, fsys vfs.FS, dir string) {
	is := is.New(t)
	cfs := &countingFS{FS: fsys}
	s, err := Open(cfs, dir, 8<<20)
	is.NoErr(err)
	_, open0 := cfs.counts()
	data := chunkData(3*testFrame, 1)
	id := chunkID(t, 1)
	put(t, s, id, data)

	for range 3 {
		got, err := readChunk(t, s, id)
		is.NoErr(err)
		is.True(bytes.Equal(got, data)) // every read reads the chunk
	}
	opened, open := cfs.counts()
	is.Equal(opened, 1)     // from one file, opened once
	is.Equal(open, open0+1) // and kept open

	// A reader holds the file while the chunk is deleted: it still reads
	// it, the file closes when it lets go, and the chunk is gone.
	held, err := s.Open(id)
	is.NoErr(err)
	_, err = s.Delete(id)
	is.NoErr(err)
	_, open = cfs.counts()
	is.Equal(open, open0+1) // held
	b := make([]byte, testFrame)
	_, err = held.ReadAt(b, 0)
	is.NoErr(err)
	is.True(bytes.Equal(b, data[:testFrame])) // the holder reads on
	is.NoErr(held.Close())
	is.NoErr(held.Close()) // idempotent
	_, open = cfs.counts()
	is.Equal(open, open0) // closed after its last reader
	_, err = s.Open(id)
	is.Equal(rpc.KindOf(err), rpc.NotFound) // deleted is deleted

	// The bound.
	var ids []rpc.ChunkID
	for i := range maxOpenChunks + 5 {
		id, err := rpc.ParseChunkID(strings.Repeat("c", 32) + "_" + strconv.Itoa(i))
		is.NoErr(err)
		ids = append(ids, id)
		put(t, s, id, chunkData(testFrame, byte(i)))
		_, err = readChunk(t, s, id)
		is.NoErr(err)
	}
	_, open = cfs.counts()
	is.Equal(open, open0+maxOpenChunks) // no more than the bound stay open
	_, err = readChunk(t, s, ids[len(ids)-1])
	is.NoErr(err)
	opened, _ = cfs.counts()
	_, err = readChunk(t, s, ids[0]) // dropped long ago: opened again
	is.NoErr(err)
	opened2, _ := cfs.counts()
	is.Equal(opened2, opened+1)
	s.CloseFiles()
	_, open = cfs.counts()
	is.Equal(open, open0) // every kept file closed
	_, err = readChunk(t, s, ids[1])
	is.NoErr(err) // and reads open them again
	s.CloseFiles()
}

// TestVerifyReadsMetadataAnew: metadata damaged on disk after a read kept
// the chunk's file open is still found by Verify, which reads it anew;
// the chunk is quarantined and its kept file closed.
func TestVerifyReadsMetadataAnew(t *testing.T) {
	forDisks(t, func(t *testing.T, fsys vfs.FS, dir string) {
		is := is.New(t)
		cfs := &countingFS{FS: fsys}
		s, err := Open(cfs, dir, 8<<20)
		is.NoErr(err)
		_, open0 := cfs.counts()
		data := chunkData(2*testFrame, 2)
		id := chunkID(t, 2)
		put(t, s, id, data)
		_, err = readChunk(t, s, id)
		is.NoErr(err) // the file is kept open, its metadata read

		// Flip a byte of the second frame digest on disk.
		f, err := fsys.OpenFile(s.path(id), os.O_RDWR, 0)
		is.NoErr(err)
		off := int64(len(data)) + sha256.Size + 3
		b := make([]byte, 1)
		_, err = f.ReadAt(b, off)
		is.NoErr(err)
		b[0] ^= 0xff
		_, err = f.WriteAt(b, off)
		is.NoErr(err)
		is.NoErr(f.Close())

		err = s.Verify(context.Background(), id, nil)
		is.True(IsCorrupt(err)) // the damaged metadata is found
		_, open := cfs.counts()
		is.Equal(open, open0) // the kept file is closed
		_, err = s.Open(id)
		is.Equal(rpc.KindOf(err), rpc.NotFound) // and the chunk no longer served
	})
}
