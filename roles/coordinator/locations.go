package coordinator

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// replicaMeta is what a datanode reported about its copy of a chunk.
type replicaMeta struct {
	size      int64
	frameSize int64
	digest    []byte
}

// locations records, from the datanodes' own reports, which nodes hold
// each chunk and what they hold. Waiters are woken on every change.
type locations struct {
	mu      sync.Mutex
	m       map[rpc.ChunkID]map[rpc.NodeID]replicaMeta
	changed chan struct{} // closed and replaced on every change
}

func newLocations() *locations {
	return &locations{m: make(map[rpc.ChunkID]map[rpc.NodeID]replicaMeta), changed: make(chan struct{})}
}

func (l *locations) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// report applies one datanode report. A full report first forgets every
// chunk the node was thought to hold.
func (l *locations) report(node rpc.NodeID, full bool, added []*dfspb.ChunkStat, removed []rpc.ChunkID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if full {
		for id, reps := range l.m {
			delete(reps, node)
			if len(reps) == 0 {
				delete(l.m, id)
			}
		}
	}
	for _, a := range added {
		id := rpc.ChunkID(a.ChunkId)
		reps := l.m[id]
		if reps == nil {
			reps = make(map[rpc.NodeID]replicaMeta, 3)
			l.m[id] = reps
		}
		reps[node] = replicaMeta{size: a.Size, frameSize: a.FrameSize, digest: bytes.Clone(a.Digest)}
	}
	for _, id := range removed {
		if reps := l.m[id]; reps != nil {
			delete(reps, node)
			if len(reps) == 0 {
				delete(l.m, id)
			}
		}
	}
	l.notifyLocked()
}

// count returns how many nodes reported a copy of id.
func (l *locations) count(id rpc.ChunkID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m[id])
}

// nodes returns the nodes holding a copy of id, sorted.
func (l *locations) nodes(id rpc.ChunkID) []rpc.NodeID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]rpc.NodeID, 0, len(l.m[id]))
	for n := range l.m[id] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// check returns the nodes whose copy of ch has its size, frame size and
// digest, and the nodes whose copy differs.
func (l *locations) check(ch meta.Chunk) (good, bad []rpc.NodeID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, m := range l.m[ch.ID] {
		if m.size == ch.Size && m.frameSize == ch.FrameSize && bytes.Equal(m.digest, ch.Digest) {
			good = append(good, n)
		} else {
			bad = append(bad, n)
		}
	}
	slices.Sort(good)
	slices.Sort(bad)
	return good, bad
}

// wait blocks until ready returns true (checked after every change) or ctx
// ends.
func (l *locations) wait(ctx context.Context, ready func() bool) error {
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
