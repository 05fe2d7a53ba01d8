package datanode

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// maxReport bounds the chunks of one ReportChunks call.
const maxReport = 5000

// reporter tells the coordinator which chunks this node stored or removed.
// Changes are queued and sent by one goroutine as soon as it is free, so
// under load many changes share one call. A chunk added and removed before
// it was reported is never mentioned.
//
// A full report (after registering, and every inventory interval) sends
// the whole inventory instead, in pages; the first page tells the
// coordinator to forget what it thought the node held.
type reporter struct {
	inventory func() map[rpc.ChunkID]Meta

	mu      sync.Mutex
	added   map[rpc.ChunkID]*dfspb.ChunkStat
	removed map[rpc.ChunkID]bool
	full    bool               // a full report is due
	rest    []*dfspb.ChunkStat // pages of a full report still to send
	kick    chan struct{}
}

func newReporter(inventory func() map[rpc.ChunkID]Meta) *reporter {
	return &reporter{inventory: inventory, added: map[rpc.ChunkID]*dfspb.ChunkStat{}, removed: map[rpc.ChunkID]bool{}, kick: make(chan struct{}, 1)}
}

// requestFull schedules a full report.
func (r *reporter) requestFull() {
	r.mu.Lock()
	r.full = true
	r.mu.Unlock()
	r.wake()
}

func stat(id rpc.ChunkID, m Meta) *dfspb.ChunkStat {
	return &dfspb.ChunkStat{ChunkId: string(id), Present: true, Size: m.Size, Digest: m.Digest, FrameSize: m.FrameSize}
}

func (r *reporter) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// stored queues a newly stored chunk.
func (r *reporter) stored(id rpc.ChunkID, m Meta) {
	r.mu.Lock()
	delete(r.removed, id)
	r.added[id] = stat(id, m)
	r.mu.Unlock()
	r.wake()
}

// deleted queues a removed chunk.
func (r *reporter) deleted(ids ...rpc.ChunkID) {
	r.mu.Lock()
	for _, id := range ids {
		if _, pending := r.added[id]; pending {
			delete(r.added, id)
			continue
		}
		r.removed[id] = true
	}
	r.mu.Unlock()
	r.wake()
}

// take removes up to maxReport queued changes, or the next page of a
// full report (full is set on its first page, page on every page).
func (r *reporter) take() (added []*dfspb.ChunkStat, removed []string, full, page bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full {
		// The inventory is current: it subsumes every queued change.
		r.full = false
		inv := r.inventory()
		r.rest = make([]*dfspb.ChunkStat, 0, len(inv))
		for _, id := range slices.Sorted(maps.Keys(inv)) {
			r.rest = append(r.rest, stat(id, inv[id]))
		}
		clear(r.added)
		clear(r.removed)
		full = true
	}
	if full || len(r.rest) > 0 {
		n := min(len(r.rest), maxReport)
		added, r.rest = r.rest[:n], r.rest[n:]
		return added, nil, full, true
	}
	for _, id := range slices.Sorted(maps.Keys(r.added)) {
		if len(added) == maxReport {
			break
		}
		added = append(added, r.added[id])
		delete(r.added, id)
	}
	for _, id := range slices.Sorted(maps.Keys(r.removed)) {
		if len(added)+len(removed) == maxReport {
			break
		}
		removed = append(removed, string(id))
		delete(r.removed, id)
	}
	return added, removed, false, false
}

// putBack requeues changes whose report failed, unless newer ones replaced
// them meanwhile. A failed page of a full report starts the full report
// over.
func (r *reporter) putBack(added []*dfspb.ChunkStat, removed []string, fullPage bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fullPage {
		r.full, r.rest = true, nil
		return
	}
	for _, a := range added {
		id := rpc.ChunkID(a.ChunkId)
		if _, ok := r.added[id]; !ok && !r.removed[id] {
			r.added[id] = a
		}
	}
	for _, s := range removed {
		id := rpc.ChunkID(s)
		if _, ok := r.added[id]; !ok {
			r.removed[id] = true
		}
	}
}

// reportLoop sends queued changes until ctx ends.
func (n *Node) reportLoop(ctx context.Context) {
	backoff := chunkstream.Backoff{Initial: 100 * time.Millisecond, Max: n.cfg.HeartbeatInterval}
	failures := 0
	tick := time.NewTicker(n.cfg.HeartbeatInterval)
	defer tick.Stop()
	inventory := time.NewTicker(n.cfg.InventoryInterval)
	defer inventory.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.reports.kick:
		case <-tick.C:
		case <-inventory.C:
			n.reports.requestFull()
		}
		for ctx.Err() == nil {
			added, removed, full, page := n.reports.take()
			if len(added)+len(removed) == 0 && !full {
				break
			}
			if err := n.sendReport(ctx, added, removed, full); err != nil {
				n.reports.putBack(added, removed, page)
				failures++
				if rpc.KindOf(err) == rpc.NotFound {
					n.setRegistered(false)
				}
				n.log.Debug().Err(err).Int("failures", failures).Msg("chunk report failed")
				t := time.NewTimer(backoff.Delay(min(failures, 8)))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				break
			}
			failures = 0
		}
	}
}

func (n *Node) sendReport(ctx context.Context, added []*dfspb.ChunkStat, removed []string, full bool) error {
	if !n.isRegistered() {
		return rpc.Errorf(rpc.Unavailable, "not registered yet")
	}
	c, _, err := n.coordinator()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	_, err = c.ReportChunks(cctx, &dfspb.ReportChunksRequest{NodeId: string(n.id), Added: added, Removed: removed, Full: full})
	return rpc.FromStatus(err)
}
