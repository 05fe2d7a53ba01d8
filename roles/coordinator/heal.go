package coordinator

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// heal is the coordinator's part that keeps every chunk's copies right:
// its loop scans every committed chunk's reported copies and executes
// what the scan decides (trim surplus copies, delete bad ones and
// orphans, call off deletions a short chunk needs), feeds repair the
// chunks short of copies, and tells which draining nodes can go. It
// keeps the last scan's result.
type heal struct {
	cfg     Config
	log     zerolog.Logger
	clock   clockwork.Clock
	nodes   *registry
	locs    *locations
	refs    *refIndex
	gc      *gc.Collector
	dels    *collector
	commits meta.Committer
	events  *events
	repair  *repair.Controller
	// uploads tells which reported chunks open uploads claim.
	uploads interface{ claims() openChunks }

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
}

func newHeal(cfg Config, log zerolog.Logger, clock clockwork.Clock, nodes *registry, locs *locations, refs *refIndex, dels *collector, commits meta.Committer, ev *events) *heal {
	return &heal{cfg: cfg, log: log, clock: clock, nodes: nodes, locs: locs, refs: refs, gc: dels.gc, dels: dels, commits: commits, events: ev,
		orphanSeen: map[rpc.ChunkID]time.Time{}, decommissioned: map[rpc.NodeID]bool{}, corruptOn: map[rpc.NodeID]int64{}}
}

// run scans every --repair-interval until ctx ends, once safe mode is off.
func (h *heal) run(ctx context.Context, safe *safeMode) {
	rpc.Every(ctx, h.clock, h.cfg.RepairInterval, func(ctx context.Context) {
		if on, _ := safe.Status(); on {
			return // locations are still arriving
		}
		h.scan(ctx)
	})
}

// chunkOf returns r's chunk with its reported copies as repair.Assess
// takes it, the copies in node order.
func (h *heal) chunkOf(r ref, nodes map[rpc.NodeID]nodeInfo, repairing bool) repair.Chunk {
	ch := r.chunk
	c := repair.Chunk{ID: ch.ID, Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest, Want: int(r.repl), Repairing: repairing}
	for n, m := range h.locs.copies(ch.ID) {
		info := nodes[n]
		c.Copies = append(c.Copies, repair.Copy{Node: n, Addr: info.addr, Known: info.known, State: info.state,
			Draining: info.draining, Registered: info.registered, Good: m.matches(ch), Corrupt: m.corrupt})
	}
	slices.SortFunc(c.Copies, func(a, b repair.Copy) int { return cmp.Compare(a.Node, b.Node) })
	return c
}

// assess classifies the reported copies of r's chunk as they are now;
// candidates are where a new copy may go (see repair.Assess).
func (h *heal) assess(r ref, nodes map[rpc.NodeID]nodeInfo, candidates []placement.Node, repairing bool) repair.Assessment {
	id := r.chunk.ID
	return repair.Assess(h.chunkOf(r, nodes, repairing), candidates, func(n rpc.NodeID) bool { return h.gc.Queued(n, id) })
}

// scan looks at every committed chunk and every reported copy, and
// carries out what repair.Assess and gc.Orphans decide.
func (h *heal) scan(ctx context.Context) {
	nodes := h.nodes.infos()
	candidates := h.nodes.candidates()
	refs := h.refs.snapshot()
	p := newScanPlan()
	for _, r := range refs {
		repairing := h.repair.Repairing(r.chunk.ID)
		a := h.assess(r, nodes, candidates, repairing)
		p.countCorrupt(a)
		if a.Short() && h.recall(ctx, r, nodes, a.Missing) > 0 {
			// The recall committed to the store: a repair may have
			// started or ended meanwhile.
			a = h.assess(r, nodes, candidates, h.repair.Repairing(r.chunk.ID))
		}
		p.add(r, a)
	}
	orphans := h.findOrphans()
	h.dels.delete(ctx, append(p.trims, orphans...), "trim or orphan")
	h.dels.deleteAfter(ctx, p.bad, "bad copy", 0) // no reader can be using it
	h.record(len(refs), p, h.drained(nodes, p.stillNeeded), len(orphans))
}

// scanPlan is what one scan decided.
type scanPlan struct {
	short                   []ref
	trims                   []meta.Deletion // surplus good copies: readers may still use them
	bad                     []meta.Deletion // corrupt or mismatched copies: never served
	under, missing, corrupt int64
	corruptOn               map[rpc.NodeID]int64
	stillNeeded             map[rpc.NodeID]bool // draining nodes some chunk still depends on
}

func newScanPlan() *scanPlan {
	return &scanPlan{corruptOn: map[rpc.NodeID]int64{}, stillNeeded: map[rpc.NodeID]bool{}}
}

// countCorrupt counts the corrupt copies of an assessed chunk.
func (p *scanPlan) countCorrupt(a repair.Assessment) {
	for _, n := range a.Corrupt {
		p.corrupt++
		p.corruptOn[n]++
	}
}

// add takes in the assessment of r's chunk.
func (p *scanPlan) add(r ref, a repair.Assessment) {
	for _, n := range a.Trim {
		p.trims = append(p.trims, meta.Deletion{Node: n, Chunk: r.chunk.ID})
	}
	for _, n := range a.Bad {
		p.bad = append(p.bad, meta.Deletion{Node: n, Chunk: r.chunk.ID})
	}
	for _, n := range a.StillNeeded {
		p.stillNeeded[n] = true
	}
	switch {
	case a.Copyable():
		p.under++
		p.short = append(p.short, r)
	case a.Lost():
		p.under++
		p.missing++
	}
}

// drained returns the draining nodes that can go: a draining node can go
// once no chunk depends on it, as far as the scan can tell: so only a live
// node whose copies the coordinator knows, all of them (its report may
// still be arriving in pages, or, dead or not registered yet, not have
// been sent at all).
func (h *heal) drained(nodes map[rpc.NodeID]nodeInfo, stillNeeded map[rpc.NodeID]bool) map[rpc.NodeID]bool {
	out := map[rpc.NodeID]bool{}
	var known map[rpc.NodeID]int64
	for id, info := range nodes {
		if !info.draining || stillNeeded[id] || !info.live() {
			continue
		}
		if known == nil {
			known = h.locs.perNode()
		}
		if known[id] >= info.chunks {
			out[id] = true
		}
	}
	return out
}

// record keeps a scan's result and tells of what changed.
func (h *heal) record(chunks int, p *scanPlan, decommissioned map[rpc.NodeID]bool, orphans int) {
	repaired := h.repair.Stats().Done
	h.mu.Lock()
	defer h.mu.Unlock()
	switch prev := h.under; {
	case prev == 0 && p.under > 0 && p.missing > 0:
		h.events.add("repair", "%d chunks under-replicated, %d of them without a live good copy", p.under, p.missing)
	case prev == 0 && p.under > 0:
		h.events.add("repair", "%d chunks under-replicated; repairing", p.under)
	case prev > 0 && p.under == 0:
		h.events.add("repair", "repair done: every chunk has its copies again (%d copied since this coordinator took over)", repaired)
	}
	h.short, h.chunks, h.under, h.missing, h.corrupt, h.corruptOn = p.short, int64(chunks), p.under, p.missing, p.corrupt, p.corruptOn
	for id := range decommissioned {
		if !h.decommissioned[id] {
			h.log.Info().Str("node_id", string(id)).Msg("decommissioned: every chunk it held is replicated elsewhere; safe to remove")
			h.events.add("decommission", "datanode %s decommissioned: every chunk it held is replicated elsewhere; safe to remove", id.Short())
		}
	}
	h.decommissioned = decommissioned
	h.orphans += int64(orphans)
}

// scanStats is the last scan's count of chunks, under-replicated and
// missing ones, corrupt copies, and the orphan copies deleted so far.
type scanStats struct {
	chunks, under, missing, corrupt, orphans int64
}

// stats returns the last scan's counts.
func (h *heal) stats() scanStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return scanStats{chunks: h.chunks, under: h.under, missing: h.missing, corrupt: h.corrupt, orphans: h.orphans}
}

// marks returns whether the last scan found node decommissioned (it
// drains and nothing depends on it), and its corrupt copies.
func (h *heal) marks(node rpc.NodeID) (decommissioned bool, corrupt int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.decommissioned[node], h.corruptOn[node]
}

// undrained forgets that node was decommissioned: its draining stopped.
func (h *heal) undrained(node rpc.NodeID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.decommissioned, node)
}

// findOrphans returns deletions for reported chunks that no committed
// file references and no open upload placed or claims, first
// seen more than the orphan grace period ago (gc.Orphans decides). A
// session loaded from the store after a restart or a takeover knows only
// its header, so a chunk it stored before is recognized by its ID
// (openChunks.owns) and kept while the session is open.
func (h *heal) findOrphans() []meta.Deletion {
	// An upload moves from the open ones to refs: reading them in that
	// order sees every upload at least once.
	open := h.uploads.claims()
	referenced := map[rpc.ChunkID]bool{}
	for _, r := range h.refs.snapshot() {
		referenced[r.chunk.ID] = true
	}
	h.mu.Lock()
	seen := h.orphanSeen
	h.mu.Unlock()
	orphans, seen := gc.Orphans(gc.Inventory{
		Reported:   maps.All(h.locs.reported()),
		Referenced: func(id rpc.ChunkID) bool { return referenced[id] },
		Placed:     func(id rpc.ChunkID) bool { return open.placed[id] },
		Claimed:    open.owns,
		FirstSeen:  seen,
		Grace:      h.cfg.OrphanGrace,
		Now:        h.clock.Now(),
	})
	h.mu.Lock()
	h.orphanSeen = seen
	h.mu.Unlock()
	out := make([]meta.Deletion, len(orphans))
	for i, o := range orphans {
		out[i] = meta.Deletion{Node: o.Node, Chunk: o.Chunk}
	}
	return out
}

// recall calls off the queued deletion of up to n good copies of a chunk
// that is short of copies and counts them again: a trimmed copy still on
// a live node's disk is worth more than a new one, and when it is the
// last copy, deleting it would lose the chunk. It returns how many copies
// it took back.
func (h *heal) recall(ctx context.Context, r ref, nodes map[rpc.NodeID]nodeInfo, n int) int {
	id, took := r.chunk.ID, 0
	for node, m := range h.locs.heldCopies(id) {
		if took == n {
			break
		}
		info := nodes[node]
		if !m.matches(r.chunk) || !info.live() || info.draining || !h.gc.Cancel(node, id) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, h.cfg.RPCTimeout)
		err := h.commits.Commit(cctx, &meta.Txn{DoneDeletions: []meta.Deletion{{Node: node, Chunk: id}}})
		cancel()
		if err != nil {
			// Still recorded, so still to do; the next scan tries again.
			h.gc.Enqueue(node, id)
			h.log.Warn().Err(err).Str("chunk_id", string(id)).Str("node_id", string(node)).Msg("cannot call off a deletion")
			continue
		}
		h.locs.restore(node, id)
		took++
		h.log.Info().Str("chunk_id", string(id)).Str("node_id", string(node)).Msg("deletion called off: the chunk needs this copy")
	}
	return took
}

// Needs implements repair.Cluster: the chunks the last scan found short
// of copies, each assessed again against the copies reported since, so a
// copy that finished after the scan is not planned a second time, and a
// chunk whose file is gone is not copied at all.
func (h *heal) Needs() []repair.Need {
	h.mu.Lock()
	short := h.short
	h.mu.Unlock()
	if len(short) == 0 {
		return nil
	}
	nodes := h.nodes.infos()
	candidates := h.nodes.candidates()
	var needs []repair.Need
	for _, r := range short {
		if !h.refs.has(r.chunk.ID) {
			continue
		}
		// Called with repair's lock held: it must not ask repair whether
		// the chunk is being repaired (only surplus copies care).
		a := h.assess(r, nodes, nil, false)
		if !a.Copyable() {
			continue
		}
		n := a.Need
		// A node whose (bad) copy is still to be deleted takes no new
		// one: the deletion, by chunk ID, would take it too.
		for _, c := range candidates {
			if h.gc.Queued(c.ID, n.Chunk) {
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
func (h *heal) Candidates() []placement.Node { return h.nodes.candidates() }

var _ repair.Cluster = (*heal)(nil)

// replicator copies chunks through the datanodes and counts each copy
// once its target confirms it.
type replicator struct {
	datanodes Datanodes
	locs      *locations
	refs      *refIndex
	dels      *collector
	// checker verifies a source that says it lacks the chunk.
	checker interface {
		checkCopy(ctx context.Context, node rpc.NodeID, cid rpc.ChunkID, who string) (corrupt, missing bool, err error)
	}
	log zerolog.Logger
}

var _ repair.Copier = (*replicator)(nil)

func (r *replicator) Copy(ctx context.Context, task repair.Task) error {
	// One request ID for the copy: the target's logs and the source's
	// (the target reads from it) then tell the same story.
	ctx = rpc.EnsureRequestID(ctx)
	if err := r.datanodes.Replicate(ctx, task); err != nil {
		if rpc.KindOf(err) == rpc.NotFound && slices.Contains(rpc.FailedNodesOf(err), string(task.Source.ID)) {
			// The source does not have it: once it confirms, its copy
			// no longer counts, and the next attempt takes another.
			if _, _, cerr := r.checker.checkCopy(ctx, task.Source.ID, task.Chunk, "a repair"); cerr != nil {
				r.log.Debug().Err(cerr).Str("chunk_id", string(task.Chunk)).Str("node_id", string(task.Source.ID)).Msg("cannot verify a repair source's copy")
			}
		}
		return err
	}
	// The target confirmed: count the copy now rather than at its report.
	r.locs.report(task.Target.ID, false, []reportedCopy{{
		id: task.Chunk, size: task.Size, digest: task.Digest, frameSize: task.FrameSize,
	}}, nil, nil, r.dels.queuedOn(task.Target.ID))
	if !r.refs.has(task.Chunk) {
		// Its file was removed while the copy ran (see unreference).
		r.dels.delete(ctx, []meta.Deletion{{Node: task.Target.ID, Chunk: task.Chunk}}, "copied after its file was removed")
	}
	return nil
}
