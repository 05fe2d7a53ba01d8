package coordinator

import (
	"fmt"
	"testing"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

func TestFileCache(t *testing.T) {
	is := is.New(t)
	c := newFileCache()
	f := metatest.NewFile("/a", 3, 1)

	gen := c.generation()
	c.put(f, gen)
	is.Equal(c.get("/a"), f) // a file read before no commit is cached

	gen = c.generation()
	c.forget("/a")              // a commit of /a while /a was being read
	is.True(c.get("/a") == nil) // drops it
	c.put(f, gen)
	is.True(c.get("/a") == nil) // and the read from before it is not cached

	for i := range cacheFiles + 3 {
		c.put(metatest.NewFile(fmt.Sprintf("/f%d", i), 1, 1), c.generation())
	}
	is.Equal(len(c.files), cacheFiles)                                 // at most cacheFiles files
	is.True(c.get("/f0") == nil)                                       // the oldest dropped first
	is.True(c.get(rpc.Path(fmt.Sprintf("/f%d", cacheFiles+2))) != nil) // the newest kept
	big := &meta.File{Path: "/big", Chunks: make([]meta.Chunk, cacheChunks)}
	c.put(big, c.generation())
	is.Equal(c.chunks, cacheChunks) // at most cacheChunks chunks: the others made room
	is.Equal(len(c.order), 1)
}

// limitedStore is a store that holds files of at most max chunks.
type limitedStore struct {
	*metatest.Mem
	max int
}

func (s limitedStore) MaxFileChunks() int { return s.max }

// TestStoreLowersChunkLimit pins that a store that cannot hold files of
// --max-file-chunks chunks lowers the limit the coordinator enforces.
func TestStoreLowersChunkLimit(t *testing.T) {
	is := is.New(t)
	cfg := DefaultConfig()
	c, err := New(cfg, Deps{Log: zerolog.Nop(), Store: limitedStore{metatest.NewMem(), 1000}})
	is.NoErr(err)
	is.Equal(c.maxChunks, 1000) // lowered to what the store holds
	cfg.MaxFileChunks = 10
	c, err = New(cfg, Deps{Log: zerolog.Nop(), Store: limitedStore{metatest.NewMem(), 1000}})
	is.NoErr(err)
	is.Equal(c.maxChunks, 10) // a lower configured limit stays
	cfg.MaxFileChunks = rpc.MaxFileChunks + 1
	_, err = New(cfg, Deps{Log: zerolog.Nop(), Store: metatest.NewMem()})
	is.True(err != nil) // above 2^20 is refused
}
