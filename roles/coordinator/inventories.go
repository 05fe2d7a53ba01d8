package coordinator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/rpc"
)

// inventories gives datanodes turns to have their full inventories
// applied: at most max nodes at once (--max-inventories), the others
// queued first come, first served. A node's turn begins with its
// inventory's first page and ends with its last page, with a page that
// failed (the node starts over), or when no page of it has come for idle
// (a node that died or gave up mid-inventory). A first page waits for a
// turn at most wait (--inventory-wait), then is refused with
// ResourceExhausted and a retry-after (rpc.NotServing's RetryAfter), which
// the datanode honours without counting it a failure. Incremental
// reports take no turn.
//
// No page is applied before the term has loaded the committed files
// (loaded): a page applied against a half-loaded index would keep the
// copies of every chunk not loaded yet aside, in the index's table of
// copies of uncommitted chunks, at great cost in memory. A page waits for
// the load as it waits for a turn, and is refused the same way.
//
// After a restart every datanode sends its inventory at once; turns keep
// the reports applied at any moment, and what they hold in memory,
// bounded whatever the number of datanodes, and a datanode told to wait
// does not time out and send the same pages again.
type inventories struct {
	max   int
	wait  time.Duration
	idle  time.Duration
	clock clockwork.Clock
	// loaded is closed once the term has loaded the committed files; nil
	// when there is nothing to wait for. ended is closed when the term
	// ends (its load with it): a page waiting for the load is refused then,
	// so that a stop does not wait for it.
	loaded, ended <-chan struct{}

	mu    sync.Mutex
	turns map[rpc.NodeID]*turn
	queue []*waiter
}

// turn is a node's turn: when a page of it was last admitted or done, and
// how many of its pages are being applied.
type turn struct {
	last     time.Time
	applying int
}

// waiter is a first page waiting for its node's turn; ready is closed
// when the turn is granted.
type waiter struct {
	node    rpc.NodeID
	ready   chan struct{}
	granted bool
}

func newInventories(max int, wait, idle time.Duration, clock clockwork.Clock) *inventories {
	return &inventories{max: max, wait: wait, idle: idle, clock: clock, turns: map[rpc.NodeID]*turn{}}
}

// inventoryPage says where a report page sits in its node's inventory.
type inventoryPage struct {
	first bool // the first page: it starts (or restarts) the node's turn
	last  bool // the last page: it ends the turn
}

// admit returns once node may apply page p: a first page waits for the
// node's turn (a node that has one, restarting its inventory, keeps it),
// a later one needs the turn to be the node's still. It fails with
// ResourceExhausted, naming when to try again, when no turn came within
// the wait or a later page's turn has lapsed, and with ctx's error when
// ctx ends first. The caller calls done once the page is applied (ok) or
// not: a last page or a failed one ends the turn.
func (q *inventories) admit(ctx context.Context, node rpc.NodeID, p inventoryPage) (done func(ok bool), err error) {
	if err := q.awaitLoad(ctx, node); err != nil {
		return nil, err
	}
	q.mu.Lock()
	now := q.clock.Now()
	q.lapseLocked(now)
	t := q.turns[node]
	switch {
	case t != nil && p.first && t.applying > 0:
		// A page of the node's last inventory is still being applied (its
		// caller gave up on it): the new inventory waits until it is done,
		// or that page's sweep could run after the new first page and
		// forget copies the new inventory has not listed yet.
		q.mu.Unlock()
		return nil, q.busy(node, "a page of its previous inventory is still being applied")
	case t != nil:
	case !p.first:
		q.mu.Unlock()
		return nil, q.busy(node, "its turn to have its inventory applied lapsed; send the inventory again")
	case len(q.turns) < q.max && len(q.queue) == 0:
		t = &turn{}
		q.turns[node] = t
	default:
		w := &waiter{node: node, ready: make(chan struct{})}
		q.queue = append(q.queue, w)
		q.mu.Unlock()
		if err := q.await(ctx, w); err != nil {
			return nil, err
		}
		q.mu.Lock()
		if t = q.turns[node]; t == nil { // ended meanwhile by a page of its own that failed
			t = &turn{}
			q.turns[node] = t
		}
	}
	t.applying++
	t.last = now
	q.mu.Unlock()
	return func(ok bool) { q.done(node, ok && !p.last) }, nil
}

// await waits until w is granted its turn, the wait is over or ctx ends;
// a waiter that gives up leaves the queue (a turn granted meanwhile to a
// caller gone is given back). The wait ends at three quarters of the time
// left to ctx's deadline if that comes first, so that the caller hears
// when to come back rather than its own timeout.
func (q *inventories) await(ctx context.Context, w *waiter) error {
	timer := q.clock.NewTimer(q.waitFor(ctx))
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = rpc.E("", rpc.Other, ctx.Err())
	case <-timer.Chan():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.granted {
		q.lapseLocked(q.clock.Now()) // a lapsed turn may free a slot for w
	}
	switch {
	case w.granted && err != nil:
		q.endLocked(w.node)
		return err
	case w.granted:
		return nil
	}
	q.queue = slices.DeleteFunc(q.queue, func(x *waiter) bool { return x == w })
	if err != nil {
		return err
	}
	return q.busy(w.node, "too many datanodes' inventories being applied")
}

// waitFor returns how long a page waits, for the load or for a turn:
// --inventory-wait, or three quarters of the time left to ctx's deadline
// if that is less.
func (q *inventories) waitFor(ctx context.Context) time.Duration {
	wait := q.wait
	if dl, ok := ctx.Deadline(); ok {
		if left := dl.Sub(q.clock.Now()) * 3 / 4; left > 0 && left < wait {
			wait = left
		}
	}
	return wait
}

// awaitLoad returns once the term has loaded the committed files. A page
// still waiting after waitFor, or when the term ends, is refused with
// ResourceExhausted and when to send it again, as one that got no turn
// is; one whose ctx ends first gets ctx's error.
func (q *inventories) awaitLoad(ctx context.Context, node rpc.NodeID) error {
	if q.loaded == nil {
		return nil
	}
	select {
	case <-q.loaded:
		return nil
	default:
	}
	timer := q.clock.NewTimer(q.waitFor(ctx))
	defer timer.Stop()
	select {
	case <-q.loaded:
		return nil
	case <-ctx.Done():
		return rpc.E("", rpc.Other, ctx.Err())
	case <-q.ended:
	case <-timer.Chan():
	}
	retry := q.retryAfter()
	return &rpc.Error{Kind: rpc.ResourceExhausted, Err: &rpc.NotServing{RetryAfter: retry},
		Msg: fmt.Sprintf("datanode %s: the coordinator is still loading its metadata; send the inventory again in %s", node.Short(), retry)}
}

// busy is the ResourceExhausted answer to a page that gets no turn. The
// retry-after is short and spread (between 100 ms and a quarter of the
// wait, at random): the first page that asks again is empty and cheap to
// refuse, and the nodes that come back while others wait keep the queue
// from running dry, so that no turn stays unused while inventories are
// due (with a retry-after as long as the wait, a thousand nodes refused
// together came back together, and the turns idled in between).
func (q *inventories) busy(node rpc.NodeID, why string) error {
	retry := q.retryAfter()
	return &rpc.Error{Kind: rpc.ResourceExhausted, Err: &rpc.NotServing{RetryAfter: retry},
		Msg: fmt.Sprintf("datanode %s: %s (--max-inventories %d); send it again in %s", node.Short(), why, q.max, retry)}
}

// retryAfter is when a refused page is to be sent again (see busy).
func (q *inventories) retryAfter() time.Duration {
	lo := 100 * time.Millisecond
	return (lo + rand.N(max(q.wait/4-lo, 0)+1)).Truncate(time.Millisecond) // the wire carries milliseconds
}

// done ends the application of one of node's pages; keep says whether
// the turn goes on (more pages to come).
func (q *inventories) done(node rpc.NodeID, keep bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := q.turns[node]
	if t == nil {
		return
	}
	t.applying--
	t.last = q.clock.Now()
	if !keep {
		q.endLocked(node)
	}
}

// endLocked ends node's turn and grants the freed one.
func (q *inventories) endLocked(node rpc.NodeID) {
	delete(q.turns, node)
	q.grantLocked()
}

// lapseLocked ends the turns of nodes that have sent no page for idle.
func (q *inventories) lapseLocked(now time.Time) {
	for node, t := range q.turns {
		if t.applying == 0 && now.Sub(t.last) >= q.idle {
			delete(q.turns, node)
		}
	}
	q.grantLocked()
}

// grantLocked gives the free turns to the queue's first waiters.
func (q *inventories) grantLocked() {
	for len(q.queue) > 0 && len(q.turns) < q.max {
		w := q.queue[0]
		q.queue = q.queue[1:]
		if q.turns[w.node] == nil {
			q.turns[w.node] = &turn{last: q.clock.Now()}
		}
		w.granted = true
		close(w.ready)
	}
}

// stats returns the inventories being applied and those waiting.
func (q *inventories) stats() (applying, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.turns), len(q.queue)
}
