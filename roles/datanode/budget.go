package datanode

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/rpc"
)

// budget counts the bytes of chunk frames a datanode holds in memory, from
// the moment a stream hands a frame over until the frame is on disk (and,
// on a primary, forwarded to every replica). A stream that would go over
// the budget waits: it reads no further frame, so gRPC's flow control
// holds its sender back. It is safe for concurrent use.
type budget struct {
	limit int64
	clock clockwork.Clock

	mu    sync.Mutex
	used  int64
	high  int64         // the most used at once
	freed chan struct{} // closed (and replaced) by every release
}

func newBudget(limit int64, clk clockwork.Clock) *budget {
	return &budget{limit: limit, clock: clk, freed: make(chan struct{})}
}

// acquire takes n bytes once no more than ceiling (at most the limit) are
// then in use, waiting at most wait and while ctx lasts. Streams that
// forward to replicas take at most half the budget, so the streams they
// wait for (replicas and repair copies, which only write to disk) always
// find room and no chain of waiting nodes can close into a cycle. It fails
// with ResourceExhausted.
func (b *budget) acquire(ctx context.Context, n, ceiling int64, wait time.Duration) error {
	ceiling = min(ceiling, b.limit)
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if b.used+n <= ceiling || (b.used == 0 && n > ceiling) {
			b.used += n
			b.high = max(b.high, b.used)
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		if timeout == nil {
			t := b.clock.NewTimer(wait)
			defer t.Stop()
			timeout = t.Chan()
		}
		select {
		case <-freed:
		case <-timeout:
			return rpc.Errorf(rpc.ResourceExhausted, "frame budget of %s in use for %s (--frame-budget)", rpc.FormatBytes(b.limit), wait)
		case <-ctx.Done():
			return rpc.Errorf(rpc.Other, "waiting for the frame budget: %w", ctx.Err())
		}
	}
}

// release returns n bytes taken by acquire.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// usage returns the bytes in use and the most ever in use at once.
func (b *budget) usage() (used, high int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.high
}

// FrameBytes returns the bytes of chunk frames the node's streams hold in
// memory now, and the most they held at once (never above
// Config.FrameBudget).
func (n *Node) FrameBytes() (inUse, highWater int64) { return n.frames.usage() }
