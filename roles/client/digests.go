package client

import (
	"container/list"
	"sync"

	"github.com/dfs-project/dfs/rpc"
)

// maxDigestBytes bounds the frame digests a Reader keeps: 1 MiB holds
// those of about 1 GiB of file in 64 KiB frames, or 18 GiB in 1 MiB ones.
const maxDigestBytes = 1 << 20

// digestCost is what one frame digest costs in a digestCache: its bytes
// and its slice header.
const digestCost = rpc.DigestSize + 24

// digestCache keeps the verified frame digests of the chunks a Reader read
// lately, so that a later read of frames of the same chunk asks only for
// the frames and checks them against these (they were checked against the
// committed chunk digest when they were fetched). It holds at most max
// bytes (see digestCost), dropping the chunks used least recently. Its
// methods are safe for concurrent use.
type digestCache struct {
	mu    sync.Mutex
	max   int
	size  int
	lru   *list.List // of *digestEntry, the most recently used first
	index map[string]*list.Element
}

// digestEntry is one chunk's frame digests in a digestCache.
type digestEntry struct {
	chunkID string
	frames  [][]byte
}

// newDigestCache returns an empty cache of at most max bytes.
func newDigestCache(max int) *digestCache {
	return &digestCache{max: max, lru: list.New(), index: map[string]*list.Element{}}
}

// get returns the frame digests of chunk id, or nil. The caller must not
// change them.
func (c *digestCache) get(id string) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.index[id]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*digestEntry).frames
}

// put keeps a copy of frames, the verified frame digests of chunk id, in
// one block; digests too large for the whole cache are not kept.
func (c *digestCache) put(id string, frames [][]byte) {
	cost := len(frames) * digestCost
	if cost == 0 || cost > c.max {
		return
	}
	flat := make([]byte, 0, len(frames)*rpc.DigestSize)
	kept := make([][]byte, len(frames))
	for i, fd := range frames {
		flat = append(flat, fd...)
		kept[i] = flat[len(flat)-len(fd) : len(flat) : len(flat)]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.index[id]; ok {
		c.lru.MoveToFront(e)
		return
	}
	for c.size+cost > c.max {
		last := c.lru.Back()
		old := c.lru.Remove(last).(*digestEntry)
		delete(c.index, old.chunkID)
		c.size -= len(old.frames) * digestCost
	}
	c.index[id] = c.lru.PushFront(&digestEntry{chunkID: id, frames: kept})
	c.size += cost
}
