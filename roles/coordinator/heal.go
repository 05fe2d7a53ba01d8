package coordinator

import (
	"context"
	"slices"
	"sync"
	"time"

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

func newHeal(cfg Config, log zerolog.Logger, nodes *registry, locs *locations, refs *refIndex, dels *collector, commits meta.Committer, ev *events) *heal {
	return &heal{cfg: cfg, log: log, nodes: nodes, locs: locs, refs: refs, gc: dels.gc, dels: dels, commits: commits, events: ev,
		orphanSeen: map[rpc.ChunkID]time.Time{}, decommissioned: map[rpc.NodeID]bool{}, corruptOn: map[rpc.NodeID]int64{}}
}

// run scans every --repair-interval until ctx ends, once safe mode is off.
func (h *heal) run(ctx context.Context, safe *safeMode) {
	tick := time.NewTicker(h.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if on, _ := safe.Status(); on {
			continue // locations are still arriving
		}
		h.scan(ctx)
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
func (h *heal) assess(r ref, nodes map[rpc.NodeID]nodeInfo) assessment {
	ch := r.chunk
	a := assessment{want: int(r.repl)}
	for n, m := range h.locs.copies(ch.ID) {
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
func (h *heal) hasRoom(candidates []placement.Node, holders []rpc.NodeID, ch meta.Chunk) bool {
	return slices.ContainsFunc(candidates, func(c placement.Node) bool {
		return c.State == placement.Healthy && c.Free >= ch.Size &&
			!slices.Contains(holders, c.ID) && !h.gc.Queued(c.ID, ch.ID)
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

// scan looks at every committed chunk and every reported copy, and
// carries out what it finds.
func (h *heal) scan(ctx context.Context) {
	nodes := h.nodes.infos()
	candidates := h.nodes.candidates()
	refs := h.refs.snapshot()
	p := newScanPlan()
	for _, r := range refs {
		a := h.assess(r, nodes)
		p.countCorrupt(a)
		if a.counted < a.want && h.recall(ctx, r, nodes, a.want-a.counted) > 0 {
			a = h.assess(r, nodes)
		}
		p.add(r, a, func() bool { return h.hasRoom(candidates, a.holders, r.chunk) }, func() bool { return h.repair.Repairing(r.chunk.ID) })
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
func (p *scanPlan) countCorrupt(a assessment) {
	for _, cs := range a.states {
		if cs.corrupt {
			p.corrupt++
			p.corruptOn[cs.node]++
		}
	}
}

// add decides for one chunk, assessed as a. room tells whether a new copy
// could go anywhere, repairing whether copies of it are under way.
func (p *scanPlan) add(r ref, a assessment, room, repairing func() bool) {
	ch := r.chunk
	if a.counted < a.want {
		p.addShort(r, a, room)
		return
	}
	if repairing() {
		return
	}
	// Fully replicated: the extra copies and the corrupt ones can go.
	p.bad = append(p.bad, a.badCopies(ch)...)
	if extra := a.counted - a.want; extra > 0 {
		var counts []copyState
		for _, cs := range a.states {
			if cs.counted {
				counts = append(counts, cs)
			}
		}
		slices.SortFunc(counts, trimFirst)
		for _, cs := range counts[:extra] {
			p.trims = append(p.trims, meta.Deletion{Node: cs.node, Chunk: ch.ID})
		}
	}
}

// addShort decides for a chunk short of copies.
func (p *scanPlan) addShort(r ref, a assessment, room func() bool) {
	p.under++
	if _, ok := a.need(r.chunk); ok {
		p.short = append(p.short, r)
		if !room() {
			// No node could take a new copy but those holding a bad one
			// (a cluster of as many nodes as copies, or the others full
			// or unhealthy): delete the bad copies first to make room for
			// good ones.
			p.bad = append(p.bad, a.badCopies(r.chunk)...)
		}
	} else {
		p.missing++
	}
	for _, cs := range a.states {
		if cs.good && cs.live && cs.info.draining {
			p.stillNeeded[cs.node] = true
		}
	}
}

// badCopies lists the deletions of the chunk's bad copies on live nodes.
func (a assessment) badCopies(ch meta.Chunk) []meta.Deletion {
	var out []meta.Deletion
	for _, cs := range a.states {
		if !cs.good && cs.live {
			out = append(out, meta.Deletion{Node: cs.node, Chunk: ch.ID})
		}
	}
	return out
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

// findOrphans returns deletions for reported chunks that no committed file
// references and no open upload placed, first seen more than the orphan
// grace period ago. A session loaded from the store after a restart or a
// takeover knows only its header, so a chunk it stored before is
// recognized by its ID (openChunks.owns) and kept while the session is
// open.
func (h *heal) findOrphans() []meta.Deletion {
	open := h.uploads.claims()
	allocated := open.placed
	for _, r := range h.refs.snapshot() {
		allocated[r.chunk.ID] = true // referenced: not an orphan either
	}
	now := time.Now()
	grace := h.cfg.OrphanGrace
	seen := map[rpc.ChunkID]bool{}
	expired := map[rpc.ChunkID][]rpc.NodeID{}
	h.mu.Lock()
	h.locs.each(func(id rpc.ChunkID, copies map[rpc.NodeID]replicaMeta) {
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
		if open.owns(id) {
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
		n, ok := h.assess(r, nodes).need(r.chunk)
		if !ok {
			continue
		}
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
