package gc_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/gc/gctest"
	"github.com/dfs-project/dfs/rpc"
)

const (
	n1 = rpc.NodeID("11111111-1111-1111-1111-111111111111")
	n2 = rpc.NodeID("22222222-2222-2222-2222-222222222222")
)

func ids(prefix string, n int) []rpc.ChunkID {
	out := make([]rpc.ChunkID, n)
	for i := range out {
		out[i] = rpc.ChunkID(fmt.Sprintf("%s%031x_%d", prefix, i, i))
	}
	return out
}

// cfg is a test configuration: a 1s interval so backoffs are whole
// seconds, at most 10s.
func cfg() gc.Config {
	return gc.Config{Interval: time.Second, Batch: 100, MaxBackoff: 10 * time.Second, Timeout: 10 * time.Second}
}

// newCollector returns a collector on the real clock: the test passes
// time.Now() to Sweep.
func newCollector(t *testing.T, c gc.Config, nodes gc.Deleter) *gc.Collector {
	return gc.New(c, gc.Deps{Deleter: nodes, Log: zerolog.New(zerolog.NewTestWriter(t))})
}

// newFakeClock returns a fake clock at a fixed time.
func newFakeClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// newCollectorOn returns a collector on clk.
func newCollectorOn(t *testing.T, c gc.Config, nodes gc.Deleter, clk clockwork.Clock) *gc.Collector {
	return gc.New(c, gc.Deps{Deleter: nodes, Clock: clk, Log: zerolog.New(zerolog.NewTestWriter(t))})
}

func TestSweepDeletes(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	a, b := ids("a", 5), ids("b", 3)
	nodes.Add(n1, a...)
	nodes.Add(n2, b...)
	nodes.Add(n2, "keep")
	c := newCollector(t, cfg(), nodes)

	c.Enqueue(n1, a...)
	c.Enqueue(n2, b...)
	c.Enqueue(n2)                      // nothing
	is.Equal(c.Pending(), 8)           // one pending deletion per (node, chunk)
	is.Equal(c.Deleted(), int64(0))    // none done yet
	is.Equal(len(nodes.Chunks(n1)), 5) // Enqueue does not delete by itself

	c.Sweep(context.Background(), time.Now())
	is.Equal(c.Pending(), 0)                          // all done
	is.Equal(c.Deleted(), int64(8))                   // and counted
	is.Equal(len(nodes.Chunks(n1)), 0)                // gone from n1
	is.Equal(nodes.Chunks(n2), []rpc.ChunkID{"keep"}) // only the queued chunks go
	is.Equal(nodes.Calls(n1), 1)                      // one bulk call per node
	is.Equal(nodes.Calls(n2), 1)

	c.Sweep(context.Background(), time.Now())
	is.Equal(nodes.Calls(n1), 1) // an empty queue sends nothing
}

func TestEnqueueDeduplicates(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 3)...)
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, ids("a", 3)...)
	c.Enqueue(n1, ids("a", 2)...)
	is.Equal(c.Pending(), 3) // the same deletion queued twice counts once
	c.Sweep(context.Background(), time.Now())
	is.Equal(c.Deleted(), int64(3)) // and is done once
}

// TestDelay: a deletion is due Delay after it was queued, by the
// collector's clock, and not a moment before.
func TestDelay(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 2)...)
	conf := cfg()
	conf.Delay = time.Hour
	clk := newFakeClock()
	c := newCollectorOn(t, conf, nodes, clk)
	c.Enqueue(n1, ids("a", 2)...)
	c.Sweep(context.Background(), clk.Now())
	is.Equal(nodes.Calls(n1), 0) // nothing is sent before the delay
	is.Equal(c.Pending(), 2)     // still pending
	clk.Advance(time.Hour - time.Nanosecond)
	c.Sweep(context.Background(), clk.Now())
	is.Equal(nodes.Calls(n1), 0) // still too early
	clk.Advance(time.Nanosecond)
	c.Sweep(context.Background(), clk.Now())
	is.Equal(c.Pending(), 0)           // due deletions go out
	is.Equal(len(nodes.Chunks(n1)), 0) // and are done
}

func TestDelayPerDeletion(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	early, late := ids("e", 2), ids("f", 2)
	nodes.Add(n1, early...)
	nodes.Add(n1, late...)
	conf := cfg()
	conf.Delay = time.Minute
	clk := newFakeClock()
	c := newCollectorOn(t, conf, nodes, clk)
	c.Enqueue(n1, early...)
	// Deletions queued later are due later; re-queuing keeps the first due time.
	clk.Advance(time.Second)
	c.Enqueue(n1, late...)
	c.Enqueue(n1, early...)
	clk.Advance(59 * time.Second)
	c.Sweep(context.Background(), clk.Now())
	is.Equal(nodes.Chunks(n1), late) // only the deletions already due went out
	clk.Advance(time.Second)
	c.Sweep(context.Background(), clk.Now())
	is.Equal(len(nodes.Chunks(n1)), 0) // the rest when due
}

func TestBatching(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	all := ids("a", 10)
	nodes.Add(n1, all...)
	conf := cfg()
	conf.Batch = 3
	c := newCollector(t, conf, nodes)
	c.Enqueue(n1, all...)
	now := time.Now()
	for i, want := range []int{7, 4, 1, 0} {
		c.Sweep(context.Background(), now)
		is.Equal(c.Pending(), want)           // one batch per sweep
		is.Equal(len(nodes.Chunks(n1)), want) // deleted on the node
		is.Equal(c.Deleted(), int64(10-want)) // counted
		is.Equal(nodes.Calls(n1), i+1)        // one call per sweep
	}
	is.Equal(nodes.MaxBatch(n1), 3) // never more than Batch IDs in one call
}

func TestDefaultBatch(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	all := ids("a", 1001)
	nodes.Add(n1, all...)
	c := gc.New(gc.Config{}, gc.Deps{Deleter: nodes, Log: zerolog.Nop()}) // zero config: defaults
	c.Enqueue(n1, all...)
	c.Sweep(context.Background(), time.Now())
	is.Equal(nodes.MaxBatch(n1), gc.DefaultConfig().Batch) // default batch size
	is.Equal(c.Pending(), 1)                               // the rest waits for the next sweep
}

// TestBackoff pins the retry schedule after whole-call failures: 2, 4, 8
// intervals, then MaxBackoff; a success resets it.
func TestBackoff(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 2)...)
	nodes.SetDown(n1, rpc.Errorf(rpc.Unavailable, "connection refused"))
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, ids("a", 2)...)
	ctx := context.Background()

	t0 := time.Now()
	c.Sweep(ctx, t0)
	is.Equal(nodes.Calls(n1), 1) // first attempt
	is.Equal(c.Pending(), 2)     // failed: still pending
	is.Equal(c.Deleted(), int64(0))

	at := t0
	for i, wait := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		c.Sweep(ctx, at.Add(wait-time.Millisecond))
		is.Equal(nodes.Calls(n1), i+1) // no retry before the backoff
		at = at.Add(wait)
		c.Sweep(ctx, at)
		is.Equal(nodes.Calls(n1), i+2) // retried once the backoff passed
	}

	nodes.SetDown(n1, nil)
	at = at.Add(10 * time.Second)
	c.Sweep(ctx, at)
	is.Equal(c.Pending(), 0)        // the node came back: done
	is.Equal(c.Deleted(), int64(2)) // counted

	// A success resets the schedule.
	nodes.Add(n1, ids("b", 1)...)
	c.Enqueue(n1, ids("b", 1)...)
	nodes.FailNext(n1, 1)
	calls := nodes.Calls(n1)
	c.Sweep(ctx, at)
	is.Equal(nodes.Calls(n1), calls+1) // a fresh queue is tried at once
	c.Sweep(ctx, at.Add(2*time.Second))
	is.Equal(nodes.Calls(n1), calls+2) // and backs off from the start again
	is.Equal(c.Pending(), 0)           // done
}

func TestBackoffIsPerNode(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 1)...)
	nodes.Add(n2, ids("b", 4)...)
	nodes.SetDown(n1, rpc.Errorf(rpc.Unavailable, "down"))
	conf := cfg()
	conf.Batch = 1
	c := newCollector(t, conf, nodes)
	c.Enqueue(n1, ids("a", 1)...)
	c.Enqueue(n2, ids("b", 4)...)
	now := time.Now()
	for range 4 {
		c.Sweep(context.Background(), now)
	}
	is.Equal(len(nodes.Chunks(n2)), 0) // a failing node does not hold up the others
	is.Equal(nodes.Calls(n1), 1)       // while it waits out its backoff
	is.Equal(c.Pending(), 1)           // its deletion is still pending
}

func TestPartialFailure(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	all := ids("a", 5)
	nodes.Add(n1, all...)
	nodes.SetStuck(n1, all[1], true)
	nodes.SetStuck(n1, all[3], true)
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, all...)
	ctx := context.Background()

	t0 := time.Now()
	c.Sweep(ctx, t0)
	is.Equal(c.Pending(), 2)                                  // the failed chunks stay queued
	is.Equal(c.Deleted(), int64(3))                           // the others are done
	is.Equal(nodes.Chunks(n1), []rpc.ChunkID{all[1], all[3]}) // on the node too

	nodes.SetStuck(n1, all[1], false)
	c.Sweep(ctx, t0.Add(time.Second))
	is.Equal(nodes.Calls(n1), 1) // partial failures back off too
	c.Sweep(ctx, t0.Add(2*time.Second))
	is.Equal(nodes.MaxBatch(n1), 5)                   // (first call had all five)
	is.Equal(nodes.Calls(n1), 2)                      // retried after the backoff
	is.Equal(nodes.Chunks(n1), []rpc.ChunkID{all[3]}) // with only the failed chunks
	is.Equal(c.Pending(), 1)
	is.Equal(c.Deleted(), int64(4))

	nodes.SetStuck(n1, all[3], false)
	c.Sweep(ctx, t0.Add(2*time.Second+4*time.Second)) // second failure: 4 intervals
	is.Equal(c.Pending(), 0)                          // all done
	is.Equal(c.Deleted(), int64(5))                   // each counted once
}

func TestNodeGoneDropsQueue(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 4)...)
	nodes.Add(n2, ids("b", 2)...)
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, ids("a", 4)...)
	c.Enqueue(n2, ids("b", 2)...)
	nodes.Remove(n1)
	c.Sweep(context.Background(), time.Now())
	is.Equal(c.Pending(), 0)        // the departed node's deletions are dropped
	is.Equal(c.Deleted(), int64(2)) // and not counted as done; n2's are
	is.Equal(len(nodes.Chunks(n2)), 0)

	// A node that rejoins under the same ID gets a fresh queue.
	nodes.Add(n1, ids("c", 1)...)
	c.Enqueue(n1, ids("c", 1)...)
	c.Sweep(context.Background(), time.Now())
	is.Equal(len(nodes.Chunks(n1)), 0) // deleted
}

func TestCanceledSweepKeepsQueue(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 3)...)
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, ids("a", 3)...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	now := time.Now()
	c.Sweep(ctx, now)
	is.Equal(c.Pending(), 3) // shutting down leaves the deletions queued
	c.Sweep(context.Background(), now)
	is.Equal(c.Pending(), 0) // with no backoff charged to the node
}

func TestTimeout(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 2)...)
	nodes.SetHang(n1, true)
	conf := cfg()
	conf.Timeout = 10 * time.Millisecond
	c := newCollector(t, conf, nodes)
	c.Enqueue(n1, ids("a", 2)...)
	t0 := time.Now()
	c.Sweep(context.Background(), t0) // returns once the call times out
	is.Equal(c.Pending(), 2)          // a hung node keeps its deletions
	nodes.SetHang(n1, false)
	c.Sweep(context.Background(), t0.Add(time.Second))
	is.Equal(nodes.Calls(n1), 1) // and backs off like any failure
	c.Sweep(context.Background(), t0.Add(2*time.Second))
	is.Equal(c.Pending(), 0) // then succeeds
}

// notifying is a Deleter that tells each bulk delete it carried out, and
// when by its clock.
type notifying struct {
	gc.Deleter
	clock clockwork.Clock
	calls chan time.Time
}

func (n *notifying) DeleteChunks(ctx context.Context, node rpc.NodeID, ids []rpc.ChunkID) ([]rpc.ChunkID, error) {
	failed, err := n.Deleter.DeleteChunks(ctx, node, ids)
	n.calls <- n.clock.Now()
	return failed, err
}

func (n *notifying) next(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-n.calls:
		return at
	case <-time.After(10 * time.Second):
		t.Fatal("no bulk delete")
	}
	return time.Time{}
}

func TestRun(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 3)...)
	conf := cfg()
	conf.Interval = time.Hour // only Enqueue's kick can start a sweep
	clk := newFakeClock()
	d := &notifying{Deleter: nodes, clock: clk, calls: make(chan time.Time, 10)}
	c := newCollectorOn(t, conf, d, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	c.Enqueue(n1, ids("a", 3)...)
	d.next(t)
	is.Equal(len(nodes.Chunks(n1)), 0) // Enqueue wakes Run, which deletes on the node
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestRunDelay: Run carries a deletion out once its clock says the delay
// is over, on the tick after it.
func TestRunDelay(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n1, ids("a", 3)...)
	conf := cfg()
	conf.Interval = time.Minute
	conf.Delay = time.Hour
	clk := newFakeClock()
	t0 := clk.Now()
	d := &notifying{Deleter: nodes, clock: clk, calls: make(chan time.Time, 10)}
	c := newCollectorOn(t, conf, d, clk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	is.NoErr(clk.BlockUntilContext(bctx, 1)) // Run waits on its ticker
	c.Enqueue(n1, ids("a", 3)...)            // wakes Run: nothing is due yet
	clk.Advance(time.Hour)
	at := d.next(t)
	is.True(!at.Before(t0.Add(time.Hour))) // not sent before the delay was over
	is.Equal(len(nodes.Chunks(n1)), 0)     // then done on the node
	cancel()
	<-done
}
func TestConcurrentEnqueueAndSweep(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	c := newCollector(t, cfg(), nodes)
	var wg sync.WaitGroup
	for g := range 4 {
		node := rpc.NodeID(fmt.Sprintf("%08d-0000-0000-0000-000000000000", g))
		batch := ids(fmt.Sprint(g), 50)
		nodes.Add(node, batch...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, id := range batch {
				c.Enqueue(node, id)
			}
		}()
	}
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	sweeps.Add(1)
	go func() {
		defer sweeps.Done()
		for {
			select {
			case <-stop:
				return
			default:
				c.Sweep(context.Background(), time.Now())
			}
		}
	}()
	wg.Wait()
	close(stop)
	sweeps.Wait()
	c.Sweep(context.Background(), time.Now())
	is.Equal(c.Pending(), 0)          // every deletion done
	is.Equal(c.Deleted(), int64(200)) // each counted exactly once
}

// TestEnqueueAfter: a deletion queued with a shorter delay is carried out
// at once, also one queued before with the default delay; Queued tells
// which deletions are still to do.
func TestEnqueueAfter(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	a, b := ids("a", 1), ids("b", 1)
	nodes.Add(n1, a...)
	nodes.Add(n1, b...)
	conf := cfg()
	conf.Delay = time.Hour
	c := newCollector(t, conf, nodes)
	c.Enqueue(n1, a...)
	c.Enqueue(n1, b...)
	c.EnqueueAfter(0, n1, b...)
	is.True(c.Queued(n1, a[0]))  // queued
	is.True(!c.Queued(n2, a[0])) // not on another node
	c.Sweep(context.Background(), time.Now())
	is.Equal(nodes.Chunks(n1), a) // b went at once, a waits for its hour
	is.True(!c.Queued(n1, b[0]))  // done
	is.True(c.Queued(n1, a[0]))   // still to do
}

// TestCancel: a queued deletion can be called off until it is sent; one
// being sent to its node cannot.
func TestCancel(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	a := ids("a", 3)
	nodes.Add(n1, a...)
	conf := cfg()
	conf.Timeout = 200 * time.Millisecond
	c := newCollector(t, conf, nodes)
	c.Enqueue(n1, a...)
	is.True(c.Cancel(n1, a[0]))  // queued: called off
	is.True(!c.Queued(n1, a[0])) // no longer queued
	is.True(!c.Cancel(n1, a[0])) // nothing left to call off
	is.True(!c.Cancel(n2, a[1])) // nor on a node without the deletion

	nodes.SetHang(n1, true)
	done := make(chan struct{})
	go func() { c.Sweep(context.Background(), time.Now()); close(done) }()
	for end := time.Now().Add(5 * time.Second); nodes.Calls(n1) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the bulk delete was never sent")
		}
	}
	is.True(!c.Cancel(n1, a[1])) // being sent: too late to call off
	<-done
	nodes.SetHang(n1, false)
	is.True(c.Cancel(n1, a[1])) // the call failed: queued again, and can be called off
	c.Sweep(context.Background(), time.Now().Add(time.Minute))
	is.Equal(nodes.Chunks(n1), []rpc.ChunkID{a[0], a[1]}) // the called-off chunks stay
	is.Equal(c.Pending(), 0)
}

// TestDrop: the deletions of a node gone for good are dropped, returned
// for the caller to record, and never retried.
func TestDrop(t *testing.T) {
	is := is.New(t)
	nodes := gctest.New()
	nodes.Add(n2, ids("b", 2)...)
	nodes.SetDown(n1, rpc.Errorf(rpc.Unavailable, "down"))
	c := newCollector(t, cfg(), nodes)
	c.Enqueue(n1, ids("a", 3)...)
	c.Enqueue(n2, ids("b", 2)...)
	is.Equal(c.Nodes(), []rpc.NodeID{n1, n2}) // both have deletions queued

	is.Equal(c.Drop(n1), ids("a", 3)) // n1's deletions, sorted
	is.Equal(c.Drop(n1), nil)         // once
	is.Equal(c.Nodes(), []rpc.NodeID{n2})
	is.Equal(c.Pending(), 2) // n2's stay
	c.Sweep(context.Background(), time.Now())
	is.Equal(nodes.Calls(n1), 0) // nothing is tried on the dropped node
	is.Equal(c.Pending(), 0)     // n2's are done
}
