package coordinator

import (
	"slices"
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Bounds of the file cache: files whose chunk maps take more than one
// page, at most cacheFiles of them and cacheChunks chunks in all (about
// 150 MiB of memory at worst).
const (
	cacheFiles  = 16
	cacheChunks = rpc.MaxFileChunks
)

// fileCache keeps the files whose chunk maps readers are paging through,
// so that a page after the first does not read and decode the whole file
// record again (the record of a file of a million chunks is ~90 MiB). Every
// commit that names a path drops that path (cacheCommitter), and a file read
// from the store before such a commit is not added after it, so a file
// found here is the path's current version as far as this term knows.
type fileCache struct {
	mu     sync.Mutex
	gen    uint64 // counts the paths dropped
	files  map[rpc.Path]*meta.File
	order  []rpc.Path // oldest first
	chunks int
}

func newFileCache() *fileCache { return &fileCache{files: map[rpc.Path]*meta.File{}} }

// generation is to be read before the store: put takes a file only when no
// path was dropped since.
func (c *fileCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the cached file at p, or nil.
func (c *fileCache) get(p rpc.Path) *meta.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[p]
}

// put caches f, read from the store after generation returned gen, making
// room by dropping the oldest files; it does nothing if some path was
// dropped since gen or f alone is over the bound.
func (c *fileCache) put(f *meta.File, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || len(f.Chunks) > cacheChunks {
		return
	}
	c.remove(f.Path)
	for len(c.order) > 0 && (len(c.order) >= cacheFiles || c.chunks+len(f.Chunks) > cacheChunks) {
		c.remove(c.order[0])
	}
	c.files[f.Path] = f
	c.order = append(c.order, f.Path)
	c.chunks += len(f.Chunks)
}

// forget drops p: a commit changed it, or may have.
func (c *fileCache) forget(p rpc.Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.remove(p)
}

// forgetBelow drops every path below dir: a commit moved them.
func (c *fileCache) forgetBelow(dir rpc.Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, p := range slices.Clone(c.order) {
		if p.IsBelow(dir) {
			c.remove(p)
		}
	}
}

func (c *fileCache) remove(p rpc.Path) {
	f, ok := c.files[p]
	if !ok {
		return
	}
	delete(c.files, p)
	c.chunks -= len(f.Chunks)
	c.order = slices.DeleteFunc(c.order, func(q rpc.Path) bool { return q == p })
}
