package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// admitted is the outcome of an admit run on a goroutine.
type admitted struct {
	done func(bool)
	err  error
}

func admitAsync(ctx context.Context, q *inventories, node rpc.NodeID, p inventoryPage) <-chan admitted {
	ch := make(chan admitted, 1)
	go func() {
		done, err := q.admit(ctx, node, p)
		ch <- admitted{done, err}
	}()
	return ch
}

// waitQueued waits until n first pages wait in q.
func waitQueued(t *testing.T, q *inventories, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if _, w := q.stats(); w == n {
			return
		}
	}
	_, w := q.stats()
	t.Fatalf("%d waiting, want %d", w, n)
}

func receive(t *testing.T, ch <-chan admitted) admitted {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("admit did not return")
		return admitted{}
	}
}

var (
	firstPage = inventoryPage{first: true}
	midPage   = inventoryPage{}
	lastPage  = inventoryPage{last: true}
)

// TestInventoryTurns: with one turn, the first node's inventory is
// applied page by page while the others wait, first come first served,
// each getting the turn when the one before sends its last page.
func TestInventoryTurns(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	q := newInventories(1, time.Minute, time.Hour, clock)
	a, b, c := rpc.NodeID("a"), rpc.NodeID("b"), rpc.NodeID("c")

	done, err := q.admit(t.Context(), a, firstPage)
	is.NoErr(err) // a free turn: at once
	bch := admitAsync(t.Context(), q, b, firstPage)
	waitQueued(t, q, 1)
	cch := admitAsync(t.Context(), q, c, firstPage)
	waitQueued(t, q, 2)
	done(true)
	done, err = q.admit(t.Context(), a, midPage)
	is.NoErr(err) // a's second page: its turn still
	done(true)
	select {
	case <-bch:
		t.Fatal("b got a turn while a's inventory was still being applied")
	default:
	}
	done, err = q.admit(t.Context(), a, lastPage)
	is.NoErr(err) // a's last page
	done(true)    // ends a's turn

	got := receive(t, bch)
	is.NoErr(got.err) // b next
	applying, waiting := q.stats()
	is.Equal(applying, 1) // b alone
	is.Equal(waiting, 1)  // c still waits
	got.done(false)       // b's page failed: its turn ends too

	got = receive(t, cch)
	is.NoErr(got.err) // then c
	got.done(true)
	_, err = q.admit(t.Context(), c, inventoryPage{first: true, last: true})
	is.NoErr(err) // c restarting its inventory keeps its turn
}

// TestInventoryWaitOver: a first page that waits longer than the wait is
// refused with ResourceExhausted and a retry-after, and leaves the queue.
func TestInventoryWaitOver(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	q := newInventories(1, 2*time.Second, time.Hour, clock)
	_, err := q.admit(t.Context(), "a", firstPage)
	is.NoErr(err)
	bch := admitAsync(t.Context(), q, "b", firstPage)
	is.NoErr(clock.BlockUntilContext(t.Context(), 1)) // b's wait timer
	clock.Advance(2 * time.Second)
	got := receive(t, bch)
	is.Equal(rpc.KindOf(got.err), rpc.ResourceExhausted) // refused
	ns, ok := rpc.NotServingOf(got.err)
	is.True(ok) // saying when to come back: soon, spread (100 ms to a quarter of the wait)
	is.True(ns.RetryAfter >= 100*time.Millisecond && ns.RetryAfter <= 500*time.Millisecond)
	_, waiting := q.stats()
	is.Equal(waiting, 0) // out of the queue

	// Over the wire the retry-after survives.
	back := rpc.FromStatus(rpc.ToStatus(got.err))
	is.Equal(rpc.KindOf(back), rpc.ResourceExhausted) // the kind
	want := ns.RetryAfter
	ns, ok = rpc.NotServingOf(back)
	is.True(ok && ns.RetryAfter == want) // and the retry-after
}

// TestInventoryWaiterGone: a caller that gives up while it waits leaves
// the queue and never gets a turn; a later page without a turn is
// refused.
func TestInventoryWaiterGone(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	q := newInventories(1, time.Minute, time.Hour, clock)
	done, err := q.admit(t.Context(), "a", firstPage)
	is.NoErr(err)
	ctx, cancel := context.WithCancel(t.Context())
	bch := admitAsync(ctx, q, "b", firstPage)
	waitQueued(t, q, 1)
	cancel()
	got := receive(t, bch)
	is.Equal(rpc.KindOf(got.err), rpc.Canceled) // the caller's end
	done(false)
	applying, waiting := q.stats()
	is.Equal(applying, 0) // b got no turn
	is.Equal(waiting, 0)  // and no longer waits

	_, err = q.admit(t.Context(), "b", lastPage)
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted) // a later page needs its turn
}

// TestInventoryTurnLapses: a node that sends no page for the idle time
// loses its turn, which goes to the next waiter.
func TestInventoryTurnLapses(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	q := newInventories(1, 5*time.Second, 10*time.Second, clock)
	done, err := q.admit(t.Context(), "a", firstPage)
	is.NoErr(err)
	done(true) // more pages to come, which never do
	clock.Advance(6 * time.Second)
	bch := admitAsync(t.Context(), q, "b", firstPage)
	is.NoErr(clock.BlockUntilContext(t.Context(), 1))
	clock.Advance(5 * time.Second) // b's wait ends after a's turn lapsed
	got := receive(t, bch)
	is.NoErr(got.err) // b has the turn
	_, err = q.admit(t.Context(), "a", midPage)
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted) // a's lapsed
}

// TestReportTurns: through membership.report, an incremental report is
// applied while another node's inventory holds the only turn; a first
// page whose caller is gone before its turn is not applied; a report
// whose caller gave up before it was applied changes nothing.
func TestReportTurns(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.MaxInventories = 1 })
	a, b, c := f.ids[0], f.ids[1], f.ids[2]
	cid := rpc.ChunkID("0123456789abcdef0123456789abcdef_0")
	digest, frame := chunkData(cid, testChunk)
	cp := reportedCopy{id: cid, size: testChunk, frameSize: frame, digest: digest}

	f.report(a, chunkReport{full: true, page: 1}) // a's turn, more pages to come
	f.report(b, chunkReport{added: []reportedCopy{cp}})
	is.Equal(f.term.locs.count(cid), 1) // an incremental report goes past the turn

	ctx, cancel := context.WithTimeout(f.ctx, 50*time.Millisecond)
	defer cancel()
	err := f.term.membership.report(ctx, c, chunkReport{full: true, page: 1, added: []reportedCopy{cp}})
	is.True(err != nil)                 // no turn before the caller gave up (the fake clock never ends the wait)
	is.Equal(f.term.locs.count(cid), 1) // c's copy not applied

	gone, cancel := context.WithCancel(f.ctx)
	cancel()
	err = f.term.membership.report(gone, a, chunkReport{page: 2, last: true, added: []reportedCopy{cp}})
	is.Equal(rpc.KindOf(err), rpc.Canceled) // abandoned
	is.Equal(f.term.locs.count(cid), 1)     // a's copy not applied
	applying, _ := f.term.membership.inventories.stats()
	is.Equal(applying, 0) // and the failed page ended a's turn

	f.report(c, chunkReport{full: true, page: 1, last: true, added: []reportedCopy{cp}})
	is.Equal(f.term.locs.count(cid), 2) // c's turn now
}

// TestInventoryWaitWithinDeadline: a first page whose caller's deadline
// comes before the wait is over is answered ResourceExhausted before the
// deadline, not left to time out.
func TestInventoryWaitWithinDeadline(t *testing.T) {
	is := is.New(t)
	q := newInventories(1, time.Minute, time.Hour, clockwork.NewRealClock())
	_, err := q.admit(t.Context(), "a", firstPage)
	is.NoErr(err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err = q.admit(ctx, "b", firstPage)
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted) // told to come back
	is.NoErr(ctx.Err())                              // before its deadline
}

// TestInventoryKeepsCopiesUntilLastPage: a node's full inventory replaces
// what it was thought to hold only at its last page, so its copies stay
// counted while the pages arrive (no chunk looks under-replicated in
// between); the copies no page listed are forgotten then, and their chunk
// is marked for the health scan.
func TestInventoryKeepsCopiesUntilLastPage(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	a := f.ids[0]
	copyOf := func(id rpc.ChunkID) reportedCopy {
		digest, frame := chunkData(id, testChunk)
		return reportedCopy{id: id, size: testChunk, frameSize: frame, digest: digest}
	}
	kept := rpc.ChunkID("0123456789abcdef0123456789abcdef_0")
	lost := rpc.ChunkID("0123456789abcdef0123456789abcdef_1")
	f.report(a, chunkReport{added: []reportedCopy{copyOf(kept), copyOf(lost)}})
	is.Equal(f.term.locs.count(kept), 1)
	f.term.heal.queue.start()
	f.term.heal.queue.take()

	f.report(a, chunkReport{full: true, page: 1}) // the inventory begins: nothing is forgotten yet
	is.Equal(f.term.locs.count(kept), 1)
	is.Equal(f.term.locs.count(lost), 1)
	f.report(a, chunkReport{page: 2, added: []reportedCopy{copyOf(kept)}})
	is.Equal(f.term.locs.count(lost), 1) // still counted between pages
	f.report(a, chunkReport{page: 3, last: true})
	is.Equal(f.term.locs.count(kept), 1) // listed: kept
	is.Equal(f.term.locs.count(lost), 0) // not listed by any page: forgotten at the last one
	_, marked := f.term.heal.queue.take()[lost]
	is.True(marked) // the health scan looks at it next
}

// TestAwaitingInventories: a registered node counts as awaited until the
// last page of a full inventory of it is applied; a page before the last
// does not do.
func TestAwaitingInventories(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	is.Equal(f.term.membership.awaitingInventories(), 3) // none reported yet
	f.report(f.ids[0], chunkReport{full: true, page: 1})
	f.report(f.ids[0], chunkReport{page: 2})
	is.Equal(f.term.membership.awaitingInventories(), 3) // not whole yet
	f.report(f.ids[0], chunkReport{page: 3, last: true})
	f.report(f.ids[1], chunkReport{full: true}) // an inventory of one page
	is.Equal(f.term.membership.awaitingInventories(), 1)
	f.report(f.ids[2], chunkReport{added: nil}) // an incremental report is no inventory
	is.Equal(f.term.membership.awaitingInventories(), 1)
}

// TestInventoryRestartWaitsForItsOldPage: a node's new first page is
// refused while a page of its previous inventory (whose caller gave up)
// is still being applied, so that page's sweep cannot run inside the new
// inventory; once that page is done, the new one gets the turn.
func TestInventoryRestartWaitsForItsOldPage(t *testing.T) {
	is := is.New(t)
	q := newInventories(4, time.Second, time.Hour, clockwork.NewFakeClock())
	done, err := q.admit(t.Context(), "a", firstPage)
	is.NoErr(err)
	done(true)
	applying, err := q.admit(t.Context(), "a", lastPage) // the old inventory's last page, being applied
	is.NoErr(err)
	_, err = q.admit(t.Context(), "a", firstPage) // the node started over meanwhile
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)
	applying(false) // the old page ends (its caller was gone)
	done, err = q.admit(t.Context(), "a", firstPage)
	is.NoErr(err) // now the new inventory begins
	done(true)
	_, err = q.admit(t.Context(), "a", midPage)
	is.NoErr(err) // and its pages go on in its turn
}
