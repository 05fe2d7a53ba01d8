package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// heldSender is a batcher's send that records each call's key and items
// and, while held, keeps calls waiting until released.
type heldSender struct {
	mu      sync.Mutex
	calls   [][]int
	keys    []string
	started chan struct{}    // a call started
	release chan struct{}    // closed or sent on to let a call return
	fail    error            // every call's error
	ended   chan error       // each call's ctx.Err() when it returns
	answer  func(int) string // the result of an item
}

func newHeldSender() *heldSender {
	return &heldSender{started: make(chan struct{}, 100), release: make(chan struct{}), ended: make(chan error, 100),
		answer: func(i int) string { return fmt.Sprint("r", i) }}
}

func (h *heldSender) send(ctx context.Context, key string, items []int) ([]string, error) {
	h.mu.Lock()
	h.calls = append(h.calls, append([]int(nil), items...))
	h.keys = append(h.keys, key)
	h.mu.Unlock()
	h.started <- struct{}{}
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	h.ended <- ctx.Err()
	if h.fail != nil {
		return nil, h.fail
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = h.answer(it)
	}
	return out, nil
}

func (h *heldSender) recorded() ([][]int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]int(nil), h.calls...), append([]string(nil), h.keys...)
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitQueued waits until n items of key wait in b.
func waitQueued[T, R any](t *testing.T, b *batcher[T, R], key string, n int) {
	t.Helper()
	for range 10000 {
		b.mu.Lock()
		got := 0
		if q := b.queues[key]; q != nil {
			got = len(q.waiting)
		}
		b.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d items of %s never waited", n, key)
}

// waitQueues waits until b has n keys with items waiting or in flight.
func waitQueues[T, R any](t *testing.T, b *batcher[T, R], n int) {
	t.Helper()
	for range 10000 {
		b.mu.Lock()
		got := len(b.queues)
		b.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("never %d keys", n)
}

type result struct {
	item int
	res  string
	err  error
}

// TestBatcherGathersWaitingItems: a lone item goes at once in a call of
// its own; items asked for while that call is in flight wait, and go
// together in the next call (no more than a call carries), each getting
// its own result.
func TestBatcherGathersWaitingItems(t *testing.T) {
	is := is.New(t)
	h := newHeldSender()
	b := &batcher[int, string]{calls: 1, maxItems: 4, send: h.send}
	results := make(chan result, 10)
	do := func(i int) {
		res, err := b.do(t.Context(), "n1", i, 1)
		results <- result{i, res, err}
	}
	go do(0)
	wait(t, h.started, "the first call")
	for i := 1; i <= 6; i++ {
		go do(i)
	}
	// The six wait for the call in flight.
	waitQueued(t, b, "n1", 6)
	close(h.release)
	got := map[int]string{}
	for range 7 {
		r := <-results
		is.NoErr(r.err)
		got[r.item] = r.res
	}
	for i := range 7 {
		is.Equal(got[i], fmt.Sprint("r", i)) // each item its own result
	}
	calls, _ := h.recorded()
	is.Equal(len(calls), 3)
	is.Equal(calls[0], []int{0}) // alone
	is.Equal(len(calls[1]), 4)   // then four that waited (maxItems)
	is.Equal(len(calls[2]), 2)   // then the rest
	sent := map[int]int{}
	for _, c := range calls {
		for _, i := range c {
			sent[i]++
		}
	}
	is.Equal(len(sent), 7) // every item sent once
	waitQueues(t, b, 0)    // nothing left behind
}

// TestBatcherBoundsBytes: a call carries items up to maxBytes together;
// an item larger than that goes alone.
func TestBatcherBoundsBytes(t *testing.T) {
	is := is.New(t)
	h := newHeldSender()
	b := &batcher[int, string]{calls: 1, maxItems: 64, maxBytes: 10, send: h.send}
	var wg sync.WaitGroup
	wg.Go(func() { b.do(t.Context(), "n1", 0, 1) })
	wait(t, h.started, "the first call")
	sizes := []int64{4, 4, 4, 20, 1}
	for i, size := range sizes {
		wg.Go(func() { b.do(t.Context(), "n1", i+1, size) })
		waitQueued(t, b, "n1", i+1)
	}
	close(h.release)
	wg.Wait()
	calls, _ := h.recorded()
	is.Equal(calls, [][]int{{0}, {1, 2}, {3}, {4}, {5}}) // 4+4, 4 (and not 20 more), 20 alone, 1 (not after 20)
}

// TestBatcherKeepsKeysApart: items of different keys (datanodes, or the
// users a gateway acts for) never share a call, and one key's calls in
// flight do not hold up another's.
func TestBatcherKeepsKeysApart(t *testing.T) {
	is := is.New(t)
	h := newHeldSender()
	b := &batcher[int, string]{calls: 1, maxItems: 64, send: h.send}
	var wg sync.WaitGroup
	wg.Go(func() { b.do(t.Context(), "as alice", 1, 1) })
	wait(t, h.started, "alice's call")
	wg.Go(func() { b.do(t.Context(), "as bob", 2, 1) })
	wait(t, h.started, "bob's call, while alice's is in flight")
	close(h.release)
	wg.Wait()
	calls, keys := h.recorded()
	is.Equal(len(calls), 2)
	for i, k := range keys {
		want := map[string]int{"as alice": 1, "as bob": 2}[k]
		is.Equal(calls[i], []int{want}) // each call one key's items
	}
}

// TestBatcherCallError: a failed call's error is every item's in it.
func TestBatcherCallError(t *testing.T) {
	is := is.New(t)
	h := newHeldSender()
	h.fail = rpc.Errorf(rpc.Unavailable, "node down")
	close(h.release)
	b := &batcher[int, string]{calls: 1, maxItems: 64, send: h.send}
	_, err := b.do(t.Context(), "n1", 1, 1)
	is.Equal(rpc.KindOf(err), rpc.Unavailable)

	// A reply with a result missing fails every item of the call.
	var wg sync.WaitGroup
	hold, started := make(chan struct{}), make(chan struct{})
	b.send = func(ctx context.Context, key string, items []int) ([]string, error) {
		if len(items) == 1 && items[0] == 0 {
			close(started)
			<-hold
		}
		return []string{"only one"}, nil
	}
	errs := make(chan error, 2)
	wg.Go(func() { b.do(t.Context(), "n1", 0, 1) })
	wait(t, started, "the first call")
	for i := 1; i <= 2; i++ {
		wg.Go(func() { _, err := b.do(t.Context(), "n1", i, 1); errs <- err })
	}
	waitQueued(t, b, "n1", 2)
	close(hold)
	wg.Wait()
	for range 2 {
		err := <-errs
		is.Equal(rpc.KindOf(err), rpc.Unavailable) // 1 result for 2 items
	}
}

// TestBatcherCallers: a caller whose ctx ends while its item waits
// returns at once and its item is not sent; a call goes on while any of
// its callers still waits, and ends once all of them have gone.
func TestBatcherCallers(t *testing.T) {
	is := is.New(t)
	h := newHeldSender()
	b := &batcher[int, string]{calls: 1, maxItems: 64, send: h.send}
	results := make(chan result, 10)
	do := func(ctx context.Context, i int) {
		res, err := b.do(ctx, "n1", i, 1)
		results <- result{i, res, err}
	}
	go do(t.Context(), 0)
	wait(t, h.started, "the first call")
	gone, leave := context.WithCancel(t.Context())
	go do(gone, 1)
	waitQueued(t, b, "n1", 1)
	leave()
	r := <-results
	is.Equal(r.item, 1)
	is.True(errors.Is(r.err, context.Canceled)) // the waiting caller left at once
	h.release <- struct{}{}                     // the first call returns
	r = <-results
	is.Equal(r.item, 0)
	is.NoErr(r.err)
	is.NoErr(<-h.ended)
	calls, _ := h.recorded()
	is.Equal(calls, [][]int{{0}}) // the gone caller's item was never sent
	waitQueues(t, b, 0)

	// A caller whose ctx is done before it asks returns at once, leaving
	// nothing behind.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.do(done, "n2", 7, 1)
	is.True(errors.Is(err, context.Canceled))
	waitQueues(t, b, 0)

	// A call of two callers: one leaving does not end it, both do.
	a, leaveA := context.WithCancel(t.Context())
	bctx, leaveB := context.WithCancel(t.Context())
	hold, first := make(chan struct{}), make(chan struct{})
	b.send = func(ctx context.Context, key string, items []int) ([]string, error) {
		if items[0] == 10 {
			close(first)
			<-hold
			return []string{"r10"}, nil
		}
		return h.send(ctx, key, items)
	}
	go do(t.Context(), 10)
	wait(t, first, "the call of 10")
	go do(a, 11)
	go do(bctx, 12)
	waitQueued(t, b, "n1", 2)
	close(hold)
	wait(t, h.started, "the call of 11 and 12")
	is.Equal((<-results).item, 10)
	leaveA()
	r = <-results
	is.Equal(r.item, 11) // the caller that left returns at once
	select {
	case err := <-h.ended:
		t.Fatalf("the call ended (%v) while a caller still waits", err)
	case <-time.After(50 * time.Millisecond):
	}
	leaveB()
	is.True(errors.Is(<-h.ended, context.Canceled)) // ended once no caller is left
	r = <-results
	is.Equal(r.item, 12)
	calls, _ = h.recorded()
	is.Equal(len(calls[len(calls)-1]), 2) // 11 and 12 shared that call
}
