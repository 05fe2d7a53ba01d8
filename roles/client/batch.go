package client

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/dfs-project/dfs/rpc"
)

// batcher gathers the calls a client makes at once to one place into
// fewer calls that each carry many of them: small chunk reads from one
// datanode (ReadChunks), the first page of files to read from the
// coordinator (DownloadFiles). A gRPC call costs tens of microseconds of
// CPU on each side however little it carries, which for a 4 KiB file is
// most of what reading it costs.
//
// Items wait per key (where they go, and for whom). A key has at most
// calls in flight: an item asked for when fewer are goes at once, in a
// call the asking goroutine makes, with the items waiting longest (its
// own among them, unless more are waiting than one call carries); an item
// asked for while they are all in flight waits, and goes with the others
// waiting in the next call, which the call that returns first starts. A
// lone item therefore goes at once, and many share a call.
type batcher[T, R any] struct {
	calls    int   // calls in flight per key
	maxItems int   // items per call
	maxBytes int64 // sizes of the items of a call, together; 0: no bound
	// send makes one call for items, all of one key, and returns one
	// result for each, in their order, or the call's error.
	send func(ctx context.Context, key string, items []T) ([]R, error)

	mu     sync.Mutex
	queues map[string]*batchQueue[T, R]
}

type batchQueue[T, R any] struct {
	calls   int // in flight
	waiting []*batchItem[T, R]
}

// batchItem is one item, waiting for its call or its result.
type batchItem[T, R any] struct {
	ctx  context.Context
	item T
	size int64
	done chan struct{} // closed once res or err is set
	res  R
	err  error
}

// do sends item (of size bytes, for maxBytes) in a call for key, and
// returns its result, or the call's error. A call carries the values of
// the context of its first item (not its deadline: send bounds its
// calls); it ends early only once every item's ctx is done. Callers whose
// ctx is done return at once, but for the one making the call, which
// returns when the call does.
func (b *batcher[T, R]) do(ctx context.Context, key string, item T, size int64) (R, error) {
	it := &batchItem[T, R]{ctx: ctx, item: item, size: size, done: make(chan struct{})}
	b.mu.Lock()
	if b.queues == nil {
		b.queues = map[string]*batchQueue[T, R]{}
	}
	q := b.queues[key]
	if q == nil {
		q = &batchQueue[T, R]{}
		b.queues[key] = q
	}
	q.waiting = append(q.waiting, it)
	batch := b.takeLocked(q)
	b.dropIdleLocked(key, q) // it came with its ctx done: dropped
	b.mu.Unlock()
	if batch != nil {
		b.call(key, batch)
	}
	select {
	case <-it.done:
		return it.res, it.err
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	}
}

// takeLocked takes the items of the next call of q, when fewer than
// b.calls are in flight and any is waiting: those waiting longest, as
// many as a call carries. An item whose caller has gone is dropped.
func (b *batcher[T, R]) takeLocked(q *batchQueue[T, R]) []*batchItem[T, R] {
	if q.calls >= b.calls {
		return nil
	}
	var batch []*batchItem[T, R]
	var bytes int64
	n := 0
	for _, it := range q.waiting {
		if err := it.ctx.Err(); err != nil {
			it.err = err
			close(it.done)
			n++
			continue
		}
		if len(batch) == b.maxItems || (b.maxBytes > 0 && len(batch) > 0 && bytes+it.size > b.maxBytes) {
			break
		}
		batch = append(batch, it)
		bytes += it.size
		n++
	}
	clear(q.waiting[:n])
	q.waiting = q.waiting[n:]
	if len(batch) > 0 {
		q.calls++
	}
	return batch
}

// dropIdleLocked forgets key's queue q when nothing waits in it and no
// call of it is in flight.
func (b *batcher[T, R]) dropIdleLocked(key string, q *batchQueue[T, R]) {
	if q.calls == 0 && len(q.waiting) == 0 {
		delete(b.queues, key)
	}
}

// call makes one call for batch, gives each item its result, and starts
// the next call of the key if items are waiting.
func (b *batcher[T, R]) call(key string, batch []*batchItem[T, R]) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	defer cancel()
	callers := atomic.Int32{}
	callers.Store(int32(len(batch)))
	items := make([]T, len(batch))
	for i, it := range batch {
		items[i] = it.item
		stop := context.AfterFunc(it.ctx, func() {
			if callers.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	res, err := b.send(ctx, key, items)
	if err == nil && len(res) != len(batch) {
		err = rpc.Errorf(rpc.Unavailable, "%d results for %d items", len(res), len(batch))
	}
	for i, it := range batch {
		if err != nil {
			it.err = err
		} else {
			it.res = res[i]
		}
		close(it.done)
	}

	b.mu.Lock()
	q := b.queues[key]
	q.calls--
	next := b.takeLocked(q)
	b.dropIdleLocked(key, q)
	b.mu.Unlock()
	if next != nil {
		rpc.Go(func() { b.call(key, next) })
	}
}
