package datanode

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
)

// maxReport bounds the chunks of one ReportChunks call.
const maxReport = 5000

// reporter tells the coordinator which chunks this node stored, removed or
// found corrupt. Changes are queued and sent by one goroutine as soon as it
// is free, so under load many changes share one call. A removed chunk is
// always reported removed (a stored report queued again, see holds, does
// not tell whether the coordinator heard of it before), and a corrupt
// chunk deleted before it was reported is reported removed, not corrupt.
//
// A full report (after registering, and every inventory interval) sends
// the whole inventory and the corrupt list instead, in numbered pages: the
// first page, empty, asks for a turn and begins the inventory, the last
// one says it is the last (the coordinator then forgets the copies no page
// listed). The coordinator applies a few
// nodes' inventories at a time: it may answer a page that its turn has
// not come (ResourceExhausted, with when to send it again). The reporter
// then holds the full report back until then (deferFull) and sends the
// queued changes meanwhile: they are not held behind the inventory.
type reporter struct {
	store inventory
	clock clockwork.Clock

	mu      sync.Mutex
	added   map[rpc.ChunkID]storedChunk
	removed map[rpc.ChunkID]bool
	corrupt map[rpc.ChunkID]bool
	full    bool                 // a full report is due
	rest    []storedChunk        // pages of a full report still to send
	restBad []string             // corrupt chunks of a full report still to send
	gone    map[rpc.ChunkID]bool // deleted since the full report's inventory was read
	fullAt  time.Time            // a full report due is not sent before this
	page    uint32               // the number of the full report's last page sent
	kick    chan struct{}
}

// inventory is what the reporter reads from the chunk store.
type inventory interface {
	// Inventory returns every stored (and served) chunk.
	Inventory() map[rpc.ChunkID]chunkstore.Meta
	// Corrupt returns the chunks that failed verification and are kept
	// until deleted.
	Corrupt() []rpc.ChunkID
	// IsCorrupt reports whether a chunk is on the Corrupt list.
	IsCorrupt(id rpc.ChunkID) bool
}

var _ inventory = (*chunkstore.Store)(nil)

func newReporter(store inventory, clock clockwork.Clock) *reporter {
	return &reporter{
		store:   store,
		clock:   clock,
		added:   map[rpc.ChunkID]storedChunk{},
		removed: map[rpc.ChunkID]bool{},
		corrupt: map[rpc.ChunkID]bool{},
		gone:    map[rpc.ChunkID]bool{},
		kick:    make(chan struct{}, 1),
	}
}

// requestFull schedules a full report.
func (r *reporter) requestFull() {
	r.mu.Lock()
	r.full = true
	r.mu.Unlock()
	r.wake()
}

// storedChunk is a stored chunk as a report describes it.
type storedChunk struct {
	id        rpc.ChunkID
	size      int64
	frameSize int64
	digest    []byte
}

func stat(id rpc.ChunkID, m chunkstore.Meta) storedChunk {
	return storedChunk{id: id, size: m.Size, frameSize: m.FrameSize, digest: m.Digest}
}

func (r *reporter) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// stored queues a newly stored chunk.
func (r *reporter) stored(id rpc.ChunkID, m chunkstore.Meta) {
	r.mu.Lock()
	delete(r.removed, id)
	delete(r.corrupt, id)
	r.added[id] = stat(id, m)
	r.mu.Unlock()
	r.wake()
}

// deleted queues a removed chunk. Call it after the store removed the
// chunk.
func (r *reporter) deleted(ids ...rpc.ChunkID) {
	r.mu.Lock()
	for _, id := range ids {
		delete(r.added, id)
		delete(r.corrupt, id)
		r.removed[id] = true
		if len(r.rest)+len(r.restBad) > 0 {
			// Pages read before the deletion must not list it again
			// after the coordinator has seen it go.
			r.gone[id] = true
		}
	}
	r.mu.Unlock()
	r.wake()
}

// corrupted queues a chunk found corrupt. Call it after the store
// quarantined the chunk: a chunk the store no longer lists as corrupt
// (deleted meanwhile) is not queued, so a deleted chunk is never reported
// corrupt.
func (r *reporter) corrupted(id rpc.ChunkID) {
	r.mu.Lock()
	if r.store.IsCorrupt(id) {
		delete(r.added, id)
		delete(r.removed, id)
		r.corrupt[id] = true
	}
	r.mu.Unlock()
	r.wake()
}

// report is one ReportChunks call's worth of changes.
type report struct {
	added   []storedChunk
	removed []string
	corrupt []string
	// full is set on the first page of a full report, page on every page,
	// last on the last page; number numbers the pages from 1.
	full, page, last bool
	number           uint32
}

// empty reports whether there is nothing to send. A page of a full report
// is always sent, even with nothing left in it (its chunks deleted since
// the inventory was read): its last page ends the inventory.
func (p report) empty() bool { return len(p.added)+len(p.removed)+len(p.corrupt) == 0 && !p.page }

// take removes up to maxReport queued changes, or the next page of a
// full report (once it may be sent: see deferFull).
func (r *reporter) take() report {
	r.mu.Lock()
	defer r.mu.Unlock()
	var p report
	if r.full && !r.clock.Now().Before(r.fullAt) {
		// The inventory is current: it subsumes every queued change.
		r.full = false
		inv := r.store.Inventory()
		r.rest = make([]storedChunk, 0, len(inv))
		for _, id := range slices.Sorted(maps.Keys(inv)) {
			r.rest = append(r.rest, stat(id, inv[id]))
		}
		r.restBad = nil
		for _, id := range slices.Sorted(slices.Values(r.store.Corrupt())) {
			r.restBad = append(r.restBad, string(id))
		}
		clear(r.added)
		clear(r.removed)
		clear(r.corrupt)
		// The first page carries no chunks: it asks for a turn, and the
		// coordinator may refuse it (see deferFull) many times over
		// before one comes; its pages are sent once it has.
		r.page = 1
		return report{full: true, page: true, number: 1, last: len(r.rest)+len(r.restBad) == 0}
	}
	if len(r.rest)+len(r.restBad) > 0 {
		// Corrupt chunks first: there are few, and the first page then
		// carries all of them.
		n := min(len(r.restBad), maxReport)
		p.corrupt, r.restBad = r.restBad[:n:n], r.restBad[n:]
		n = min(len(r.rest), maxReport-len(p.corrupt))
		p.added, r.rest = r.rest[:n:n], r.rest[n:]
		if len(r.gone) > 0 {
			p.corrupt = slices.DeleteFunc(p.corrupt, func(id string) bool { return r.gone[rpc.ChunkID(id)] })
			p.added = slices.DeleteFunc(p.added, func(a storedChunk) bool { return r.gone[a.id] })
		}
		if len(r.rest)+len(r.restBad) == 0 {
			clear(r.gone)
			p.last = true
		}
		r.page++
		p.page, p.number = true, r.page
		return p
	}
	for _, id := range slices.Sorted(maps.Keys(r.corrupt)) {
		if len(p.corrupt) == maxReport {
			break
		}
		p.corrupt = append(p.corrupt, string(id))
		delete(r.corrupt, id)
	}
	for _, id := range slices.Sorted(maps.Keys(r.added)) {
		if len(p.corrupt)+len(p.added) == maxReport {
			break
		}
		p.added = append(p.added, r.added[id])
		delete(r.added, id)
	}
	for _, id := range slices.Sorted(maps.Keys(r.removed)) {
		if len(p.corrupt)+len(p.added)+len(p.removed) == maxReport {
			break
		}
		p.removed = append(p.removed, string(id))
		delete(r.removed, id)
	}
	return p
}

// putBack requeues changes whose report failed, unless newer ones replaced
// them meanwhile. A failed page of a full report starts the full report
// over.
func (r *reporter) putBack(p report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.page {
		r.full, r.rest, r.restBad = true, nil, nil
		clear(r.gone)
		return
	}
	r.putBackChanges(p)
}

// deferFull puts back page p of a full report the coordinator had no turn
// for: the full report starts over, not before at.
func (r *reporter) deferFull(p report, at time.Time) {
	r.putBack(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fullAt = at
}

// putBackChanges requeues the changes of a failed incremental report.
func (r *reporter) putBackChanges(p report) {
	for _, a := range p.added {
		id := a.id
		if _, ok := r.added[id]; !ok && !r.removed[id] && !r.corrupt[id] {
			r.added[id] = a
		}
	}
	for _, s := range p.removed {
		id := rpc.ChunkID(s)
		if _, ok := r.added[id]; !ok && !r.corrupt[id] {
			r.removed[id] = true
		}
	}
	for _, s := range p.corrupt {
		id := rpc.ChunkID(s)
		if _, ok := r.added[id]; !ok && !r.removed[id] && r.store.IsCorrupt(id) {
			r.corrupt[id] = true
		}
	}
}

// reportLoop sends queued changes as they come, and at least every
// heartbeat interval, until ctx ends. After a failed report it pauses
// (backing off) before it tries again. A page of a full report the
// coordinator has no turn for is not a failure: the full report waits as
// long as the coordinator asks (the loop wakes then) while queued changes
// go on being sent.
//
// The coordinator answers within its --inventory-wait, which is kept
// below the per-call timeout (--rpc-timeout): a page is not sent again
// while the coordinator still holds it. One that times out all the same
// (a coordinator that is slow to apply it) is dropped by the coordinator
// at its deadline, and the full report starts over after the backoff.
func (n *Node) reportLoop(ctx context.Context) {
	backoff := rpc.Backoff{Initial: 100 * time.Millisecond, Max: n.cfg.HeartbeatInterval}
	failures := 0
	rpc.EveryOr(ctx, n.clock, n.cfg.HeartbeatInterval, n.reports.kick, func(ctx context.Context) {
		for ctx.Err() == nil {
			p := n.reports.take()
			if p.empty() {
				return
			}
			err := n.sendReport(ctx, p)
			if wait, ok := turnRefused(err); ok && p.page {
				n.reports.deferFull(p, n.clock.Now().Add(wait))
				n.clock.AfterFunc(wait, n.reports.wake)
				n.log.Debug().Err(err).Dur("retry_after", wait).Msg("the coordinator applies other inventories; sending ours later")
				continue
			}
			if err != nil {
				n.reports.putBack(p)
				failures++
				if rpc.KindOf(err) == rpc.NotFound {
					n.setRegistered(false)
				}
				n.log.Debug().Err(err).Int("failures", failures).Msg("chunk report failed")
				rpc.Sleep(ctx, n.clock, backoff.Delay(min(failures, 8)))
				return
			}
			failures = 0
		}
	})
}

// diskCheckRate bounds the directory entries per second the disk check
// reads: about 100 s for a million chunks, every inventory interval.
const diskCheckRate = 10000

// inventoryLoop, every inventory interval, checks the disk for chunks
// whose files are gone (FindLost: directory entries only, paced at
// diskCheckRate) and reports them removed, then sends a full inventory,
// which thus reflects the disk rather than what the index remembers.
func (n *Node) inventoryLoop(ctx context.Context) {
	p := pacer{rate: diskCheckRate, clock: n.clock}
	rpc.Every(ctx, n.clock, n.cfg.InventoryInterval, func(ctx context.Context) {
		p.reset()
		err := n.store.FindLost(ctx, func(entries int) error { return p.wait(ctx, int64(entries)) }, n.lostFound)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.log.Warn().Err(err).Msg("disk check failed; the inventory is sent from the index")
		}
		n.reports.requestFull()
	})
}

// turnRefused reports whether err is the coordinator's answer that it has
// no turn for a full inventory now, and when to send it again.
func turnRefused(err error) (time.Duration, bool) {
	ns, ok := rpc.NotServingOf(err)
	if !ok || rpc.KindOf(err) != rpc.ResourceExhausted {
		return 0, false
	}
	return max(ns.RetryAfter, 10*time.Millisecond), true
}

func (n *Node) sendReport(ctx context.Context, p report) error {
	if !n.isRegistered() {
		return rpc.Errorf(rpc.Unavailable, "not registered yet")
	}
	return n.callReport(ctx, p)
}
