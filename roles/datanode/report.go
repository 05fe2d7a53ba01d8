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
type reporter struct {
	mu      sync.Mutex
	added   map[rpc.ChunkID]*dfspb.ChunkStat
	removed map[rpc.ChunkID]bool
	kick    chan struct{}
}

func newReporter() *reporter {
	return &reporter{added: map[rpc.ChunkID]*dfspb.ChunkStat{}, removed: map[rpc.ChunkID]bool{}, kick: make(chan struct{}, 1)}
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
	r.added[id] = &dfspb.ChunkStat{ChunkId: string(id), Present: true, Size: m.Size, Digest: m.Digest, FrameSize: m.FrameSize}
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

// take removes up to maxReport queued changes.
func (r *reporter) take() (added []*dfspb.ChunkStat, removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
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
	return added, removed
}

// putBack requeues changes whose report failed, unless newer ones replaced
// them meanwhile.
func (r *reporter) putBack(added []*dfspb.ChunkStat, removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.reports.kick:
		case <-tick.C:
		}
		for ctx.Err() == nil {
			added, removed := n.reports.take()
			if len(added)+len(removed) == 0 {
				break
			}
			if err := n.sendReport(ctx, added, removed); err != nil {
				n.reports.putBack(added, removed)
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

func (n *Node) sendReport(ctx context.Context, added []*dfspb.ChunkStat, removed []string) error {
	if !n.isRegistered() {
		return rpc.Errorf(rpc.Unavailable, "not registered yet")
	}
	c, _, err := n.coordinator()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	_, err = c.ReportChunks(cctx, &dfspb.ReportChunksRequest{NodeId: string(n.id), Added: added, Removed: removed})
	return rpc.FromStatus(err)
}
