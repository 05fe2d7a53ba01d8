package coordinator

import (
	"bytes"
	"context"
	"maps"
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
	corrupt   bool // failed verification on the node; not served
}

// matches reports whether the copy is a good copy of ch.
func (m replicaMeta) matches(ch meta.Chunk) bool {
	return !m.corrupt && m.size == ch.Size && m.frameSize == ch.FrameSize && bytes.Equal(m.digest, ch.Digest)
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

// copies returns every reported copy of id.
func (l *locations) copies(id rpc.ChunkID) map[rpc.NodeID]replicaMeta {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m[id])
}

// each calls fn for every chunk with reported copies, under the lock: fn
// must be quick and must not call l.
func (l *locations) each(fn func(id rpc.ChunkID, copies map[rpc.NodeID]replicaMeta)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, reps := range l.m {
		fn(id, reps)
	}
}

// forget drops copies the coordinator has decided to delete, so that the
// decision is not taken twice. Reports do not bring such a copy back while
// its deletion is queued (see ReportChunks); one whose deletion GC gave up
// (its node left the cluster) comes back with the node's next report.
func (l *locations) forget(dels []meta.Deletion) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range dels {
		if reps := l.m[d.Chunk]; reps != nil {
			delete(reps, d.Node)
			if len(reps) == 0 {
				delete(l.m, d.Chunk)
			}
		}
	}
	l.notifyLocked()
}

func (l *locations) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// report applies one datanode report. A full report first forgets every
// chunk the node was thought to hold. Corrupt chunks keep their copy on
// record, marked, until the coordinator has it deleted.
func (l *locations) report(node rpc.NodeID, full bool, added []*dfspb.ChunkStat, removed, corrupt []rpc.ChunkID) {
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
	for _, id := range corrupt {
		reps := l.m[id]
		if reps == nil {
			reps = make(map[rpc.NodeID]replicaMeta, 3)
			l.m[id] = reps
		}
		m := reps[node]
		m.corrupt = true
		reps[node] = m
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
		if m.matches(ch) {
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
