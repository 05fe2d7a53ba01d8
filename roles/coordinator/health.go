package coordinator

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// health is the result of the last scan of every chunk's copies, and the
// decisions it feeds: what to copy (repair), what to trim (surplus copies
// on nodes that came back, corrupt copies already replaced), which
// reported chunks are orphans, and which draining nodes can go.
type health struct {
	mu             sync.Mutex
	short          []ref // the chunks short of copies at the last scan
	chunks         int64
	under          int64
	missing        int64
	corrupt        int64
	corruptOn      map[rpc.NodeID]int64
	decommissioned map[rpc.NodeID]bool
	orphanSeen     map[rpc.ChunkID]time.Time
	orphans        int64
	chunksDeleted  int64
	bytesReclaimed int64
}

func newHealth() *health {
	return &health{orphanSeen: map[rpc.ChunkID]time.Time{}, decommissioned: map[rpc.NodeID]bool{}, corruptOn: map[rpc.NodeID]int64{}}
}

// healthLoop scans every interval until ctx ends.
func (t *term) healthLoop(ctx context.Context) {
	tick := time.NewTicker(t.c.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if on, _ := t.safe.Status(); on {
			continue // locations are still arriving
		}
		t.scan(ctx)
	}
}

// copyState classifies one reported copy of a committed chunk.
type copyState struct {
	node     rpc.NodeID
	info     nodeInfo
	good     bool // matches the commit and not corrupt
	live     bool // on a node that serves reads
	counted  bool // counts toward replication: good, live, not draining
	corrupt  bool // reported corrupt
	registry time.Time
}

// assessment is where one committed chunk's copies stand.
type assessment struct {
	want    int
	states  []copyState
	counted int
	// sources hold a good copy on a live node, healthy and non-draining
	// ones first.
	sources []placement.Node
	holders []rpc.NodeID // every node with any copy
}

// need returns what the chunk lacks, if anything can be copied.
func (a assessment) need(ch meta.Chunk) (repair.Need, bool) {
	if a.counted >= a.want || len(a.sources) == 0 {
		return repair.Need{}, false
	}
	return repair.Need{Chunk: ch.ID, Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest,
		Missing: a.want - a.counted, Sources: a.sources, Holders: a.holders}, true
}

// assess classifies the reported copies of r's chunk as they are now.
func (t *term) assess(r ref, nodes map[rpc.NodeID]nodeInfo) assessment {
	ch := r.chunk
	a := assessment{want: int(r.repl)}
	for n, m := range t.locs.copies(ch.ID) {
		info := nodes[n]
		cs := copyState{node: n, info: info, good: m.matches(ch), live: info.live(), registry: info.registered, corrupt: m.corrupt}
		cs.counted = cs.good && cs.live && !info.draining
		a.states = append(a.states, cs)
		a.holders = append(a.holders, n)
		if cs.counted {
			a.counted++
		}
		if cs.good && cs.live {
			a.sources = append(a.sources, placement.Node{ID: n, Addr: info.addr, State: info.state})
		}
	}
	// Prefer healthy, non-draining sources.
	slices.SortStableFunc(a.sources, func(x, y placement.Node) int {
		dx, dy := nodes[x.ID].draining, nodes[y.ID].draining
		switch {
		case x.State != y.State:
			return int(x.State) - int(y.State)
		case dx != dy && dx:
			return 1
		case dx != dy:
			return -1
		}
		return 0
	})
	return a
}

// hasRoom reports whether a new copy of ch could go anywhere: to a
// healthy candidate with room for it that holds no copy and has no
// deletion of it queued (the nodes repair's placement would take).
func (t *term) hasRoom(candidates []placement.Node, holders []rpc.NodeID, ch meta.Chunk) bool {
	return slices.ContainsFunc(candidates, func(c placement.Node) bool {
		return c.State == placement.Healthy && c.Free >= ch.Size &&
			!slices.Contains(holders, c.ID) && !t.gc.Queued(c.ID, ch.ID)
	})
}

// trimFirst orders a chunk's surplus copies for trimming: copies on
// suspect nodes go first, the ones a healthy node holds are kept; among
// equals, the copies on the node that (re)joined last go first.
func trimFirst(a, b copyState) int {
	if sa, sb := a.info.state != placement.Healthy, b.info.state != placement.Healthy; sa != sb {
		if sa {
			return -1
		}
		return 1
	}
	return b.registry.Compare(a.registry)
}

// scan looks at every committed chunk and every reported copy.
func (t *term) scan(ctx context.Context) {
	nodes := t.nodes.infos()
	candidates := t.nodes.candidates()
	refs := t.refs.snapshot()
	var short []ref
	var trims []meta.Deletion // surplus good copies: readers may still use them
	var bad []meta.Deletion   // corrupt or mismatched copies: never served
	var under, missing, corrupt int64
	corruptOn := map[rpc.NodeID]int64{}
	stillNeeded := map[rpc.NodeID]bool{} // draining nodes some chunk still depends on

	for _, r := range refs {
		ch, want := r.chunk, int(r.repl)
		a := t.assess(r, nodes)
		states, counted := a.states, a.counted
		for _, cs := range states {
			if cs.corrupt {
				corrupt++
				corruptOn[cs.node]++
			}
		}
		if counted < want && t.recall(ctx, r, nodes, want-counted) > 0 {
			a = t.assess(r, nodes)
			states, counted = a.states, a.counted
		}
		if counted < want {
			under++
			if _, ok := a.need(ch); ok {
				short = append(short, r)
				if !t.hasRoom(candidates, a.holders, ch) {
					// No node could take a new copy but those holding a
					// bad one (a cluster of as many nodes as copies, or
					// the others full or unhealthy): delete the bad
					// copies first to make room for good ones.
					for _, cs := range states {
						if !cs.good && cs.live {
							bad = append(bad, meta.Deletion{Node: cs.node, Chunk: ch.ID})
						}
					}
				}
			} else {
				missing++
			}
			for _, cs := range states {
				if cs.good && cs.live && cs.info.draining {
					stillNeeded[cs.node] = true
				}
			}
			continue
		}
		if t.repair.Repairing(ch.ID) {
			continue
		}
		// Fully replicated: the extra copies and the corrupt ones can go.
		for _, cs := range states {
			if !cs.good && cs.live {
				bad = append(bad, meta.Deletion{Node: cs.node, Chunk: ch.ID})
			}
		}
		if extra := counted - want; extra > 0 {
			var counts []copyState
			for _, cs := range states {
				if cs.counted {
					counts = append(counts, cs)
				}
			}
			slices.SortFunc(counts, trimFirst)
			for _, cs := range counts[:extra] {
				trims = append(trims, meta.Deletion{Node: cs.node, Chunk: ch.ID})
			}
		}
	}

	orphans := t.findOrphans()
	t.delete(ctx, append(trims, orphans...), "trim or orphan")
	t.deleteAfter(ctx, bad, "bad copy", 0) // no reader can be using it

	// A draining node can go once no chunk depends on it, as far as the
	// scan can tell: so only a live node whose copies the coordinator
	// knows, all of them (its report may still be arriving in pages, or,
	// dead or not registered yet, not have been sent at all).
	decommissioned := map[rpc.NodeID]bool{}
	var known map[rpc.NodeID]int64
	for id, info := range nodes {
		if !info.draining || stillNeeded[id] || !info.live() {
			continue
		}
		if known == nil {
			known = t.locs.perNode()
		}
		if known[id] >= info.chunks {
			decommissioned[id] = true
		}
	}
	repaired := t.repair.Stats().Done
	h := t.health
	h.mu.Lock()
	switch prev := h.under; {
	case prev == 0 && under > 0 && missing > 0:
		t.c.events.add("repair", "%d chunks under-replicated, %d of them without a live good copy", under, missing)
	case prev == 0 && under > 0:
		t.c.events.add("repair", "%d chunks under-replicated; repairing", under)
	case prev > 0 && under == 0:
		t.c.events.add("repair", "repair done: every chunk has its copies again (%d copied since this coordinator took over)", repaired)
	}
	h.short, h.chunks, h.under, h.missing, h.corrupt, h.corruptOn = short, int64(len(refs)), under, missing, corrupt, corruptOn
	for id := range decommissioned {
		if !h.decommissioned[id] {
			t.log.Info().Str("node_id", string(id)).Msg("decommissioned: every chunk it held is replicated elsewhere; safe to remove")
			t.c.events.add("decommission", "datanode %s decommissioned: every chunk it held is replicated elsewhere; safe to remove", id.Short())
		}
	}
	h.decommissioned = decommissioned
	h.orphans += int64(len(orphans))
	h.mu.Unlock()
}

// findOrphans returns deletions for reported chunks that no committed file
// references and no open upload placed, first seen more than the orphan
// grace period ago. A session loaded from the store after a restart or a
// takeover knows only its header, so a chunk it stored before is
// recognized by its ID (upload.find) and kept while the session is open.
func (t *term) findOrphans() []meta.Deletion {
	// An upload moves from t.uploads to t.confirming to refs (or back to
	// t.uploads when its confirm may be retried): reading them in that
	// order sees every upload at least once.
	var open []*upload
	t.uploads.Range(func(_ rpc.SessionID, u *upload) { open = append(open, u) })
	open = append(open, t.confirming.list()...)
	t.uploads.Range(func(_ rpc.SessionID, u *upload) { open = append(open, u) })
	allocated := map[rpc.ChunkID]bool{}
	for _, u := range open {
		u.mu.Lock()
		for _, a := range u.allocs {
			allocated[a.ID] = true
		}
		u.mu.Unlock()
	}
	for _, r := range t.refs.snapshot() {
		allocated[r.chunk.ID] = true // referenced: not an orphan either
	}
	now := time.Now()
	grace := t.c.cfg.OrphanGrace
	seen := map[rpc.ChunkID]bool{}
	expired := map[rpc.ChunkID][]rpc.NodeID{}
	h := t.health
	h.mu.Lock()
	t.locs.each(func(id rpc.ChunkID, copies map[rpc.NodeID]replicaMeta) {
		if allocated[id] {
			return
		}
		seen[id] = true
		first, ok := h.orphanSeen[id]
		if !ok {
			h.orphanSeen[id] = now
			return
		}
		if now.Sub(first) < grace {
			return
		}
		for n := range copies {
			expired[id] = append(expired[id], n)
		}
	})
	for id := range h.orphanSeen {
		if !seen[id] {
			delete(h.orphanSeen, id)
		}
	}
	h.mu.Unlock()

	var out []meta.Deletion
	for id, nodes := range expired {
		if slices.ContainsFunc(open, func(u *upload) bool {
			u.mu.Lock()
			defer u.mu.Unlock()
			_, ok := u.find(id)
			return ok
		}) {
			continue // an open upload's, from before this term
		}
		for _, n := range nodes {
			out = append(out, meta.Deletion{Node: n, Chunk: id})
		}
	}
	return out
}

// recall calls off the queued deletion of up to n good copies of a chunk
// that is short of copies and counts them again: a trimmed copy still on
// a live node's disk is worth more than a new one, and when it is the
// last copy, deleting it would lose the chunk. It returns how many copies
// it took back.
func (t *term) recall(ctx context.Context, r ref, nodes map[rpc.NodeID]nodeInfo, n int) int {
	id, took := r.chunk.ID, 0
	for node, m := range t.locs.heldCopies(id) {
		if took == n {
			break
		}
		info := nodes[node]
		if !m.matches(r.chunk) || !info.live() || info.draining || !t.gc.Cancel(node, id) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, t.c.cfg.RPCTimeout)
		err := t.commit(cctx, &meta.Txn{DoneDeletions: []meta.Deletion{{Node: node, Chunk: id}}})
		cancel()
		if err != nil {
			// Still recorded, so still to do; the next scan tries again.
			t.gc.Enqueue(node, id)
			t.log.Warn().Err(err).Str("chunk_id", string(id)).Str("node_id", string(node)).Msg("cannot call off a deletion")
			continue
		}
		t.locs.restore(node, id)
		took++
		t.log.Info().Str("chunk_id", string(id)).Str("node_id", string(node)).Msg("deletion called off: the chunk needs this copy")
	}
	return took
}

// queuedOn reports, for node, whether the deletion of a chunk's copy there
// is queued.
func (t *term) queuedOn(node rpc.NodeID) func(rpc.ChunkID) bool {
	return func(id rpc.ChunkID) bool { return t.gc.Queued(node, id) }
}

// delete records deletions durably, forgets the copies and hands them to
// GC, which carries them out after --gc-delay.
func (t *term) delete(ctx context.Context, dels []meta.Deletion, why string) {
	t.deleteAfter(ctx, dels, why, t.c.cfg.GCDelay)
}

// deleteAfter is delete with GC carrying the deletions out after delay.
func (t *term) deleteAfter(ctx context.Context, dels []meta.Deletion, why string, delay time.Duration) {
	if len(dels) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, t.c.cfg.RPCTimeout)
	defer cancel()
	if err := t.commit(cctx, &meta.Txn{AddDeletions: dels}); err != nil {
		t.log.Warn().Err(err).Int("copies", len(dels)).Msg("cannot record deletions")
		return
	}
	t.enqueueAfter(delay, dels) // before forget: repair never sees the node free of the copy and not queued
	t.locs.forget(dels)
	t.log.Info().Int("copies", len(dels)).Str("why", why).Msg("deleting copies")
}

// Needs implements repair.Cluster: the chunks the last scan found short
// of copies, each assessed again against the copies reported since, so a
// copy that finished after the scan is not planned a second time, and a
// chunk whose file is gone is not copied at all.
func (t *term) Needs() []repair.Need {
	t.health.mu.Lock()
	short := t.health.short
	t.health.mu.Unlock()
	if len(short) == 0 {
		return nil
	}
	nodes := t.nodes.infos()
	candidates := t.nodes.candidates()
	var needs []repair.Need
	for _, r := range short {
		if !t.refs.has(r.chunk.ID) {
			continue
		}
		n, ok := t.assess(r, nodes).need(r.chunk)
		if !ok {
			continue
		}
		// A node whose (bad) copy is still to be deleted takes no new
		// one: the deletion, by chunk ID, would take it too.
		for _, c := range candidates {
			if t.gc.Queued(c.ID, n.Chunk) {
				n.Holders = append(n.Holders, c.ID)
			}
		}
		needs = append(needs, n)
	}
	// Most endangered first.
	slices.SortStableFunc(needs, func(a, b repair.Need) int { return len(a.Sources) - len(b.Sources) })
	return needs
}

// Candidates implements repair.Cluster.
func (t *term) Candidates() []placement.Node { return t.nodes.candidates() }

var _ repair.Cluster = (*term)(nil)

// replicator copies chunks with DataNode.ReplicateChunk.
type replicator struct{ t *term }

var _ repair.Copier = replicator{}

func (r replicator) Copy(ctx context.Context, task repair.Task) error {
	// One request ID for the copy: the target's logs and the source's
	// (the target reads from it) then tell the same story.
	ctx = rpc.EnsureRequestID(ctx)
	cc, err := r.t.c.pool.Get(task.Target.Addr)
	if err != nil {
		return err
	}
	_, err = dfspb.NewDataNodeClient(cc).ReplicateChunk(ctx, &dfspb.ReplicateChunkRequest{
		ChunkId: string(task.Chunk), Size: task.Size, FrameSize: task.FrameSize, Digest: task.Digest,
		Source: &dfspb.NodeRef{NodeId: string(task.Source.ID), Addr: task.Source.Addr},
	})
	if err != nil {
		err = rpc.FromStatus(err)
		if rpc.KindOf(err) == rpc.NotFound && slices.Contains(rpc.FailedNodesOf(err), string(task.Source.ID)) {
			// The source does not have it: once it confirms, its copy
			// no longer counts, and the next attempt takes another.
			if _, _, cerr := r.t.checkCopy(ctx, task.Source.ID, task.Chunk, "a repair"); cerr != nil {
				r.t.log.Debug().Err(cerr).Str("chunk_id", string(task.Chunk)).Str("node_id", string(task.Source.ID)).Msg("cannot verify a repair source's copy")
			}
		}
		return err
	}
	// The target confirmed: count the copy now rather than at its report.
	r.t.locs.report(task.Target.ID, false, []*dfspb.ChunkStat{{
		ChunkId: string(task.Chunk), Present: true, Size: task.Size, Digest: task.Digest, FrameSize: task.FrameSize,
	}}, nil, nil, r.t.queuedOn(task.Target.ID))
	if !r.t.refs.has(task.Chunk) {
		// Its file was removed while the copy ran (see unreference).
		r.t.delete(ctx, []meta.Deletion{{Node: task.Target.ID, Chunk: task.Chunk}}, "copied after its file was removed")
	}
	return nil
}

// clusterHealth renders the health for ListNodes and fsck.
func (t *term) clusterHealth() *dfspb.ClusterHealth {
	rs := t.repair.Stats()
	h := t.health
	h.mu.Lock()
	defer h.mu.Unlock()
	return &dfspb.ClusterHealth{
		Chunks: h.chunks, UnderReplicated: h.under, Missing: h.missing, CorruptCopies: h.corrupt,
		RepairsInProgress: int64(rs.InProgress), RepairsDone: rs.Done, BytesRepaired: rs.BytesCopied,
		PendingDeletions: int64(t.gc.Pending()), ChunksDeleted: h.chunksDeleted, BytesReclaimed: h.bytesReclaimed,
		OrphansDeleted: h.orphans,
	}
}
