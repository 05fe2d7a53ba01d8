package coordinator

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// scanBatch bounds the chunks taken from an index under its lock at once.
const scanBatch = 4096

// heal is the coordinator's part that keeps every chunk's copies right.
// Its loop ticks every --repair-interval and assesses, with
// repair.Assess, the chunks whose health may have changed: those the
// term's parts marked on its queue (copies reported, lost or bad, a
// commit, a repair ended), every chunk on a node whose state changed
// (dead, back, draining), and the chunks still settling (short of copies,
// being repaired, with copies to delete). A paced pass re-assesses every
// other chunk too, a slice per tick, once per --scan-interval: the safety
// net for a change no event announced. It executes what the assessments
// decide (trim surplus copies, delete bad ones and orphans, call off
// deletions a short chunk needs), feeds repair the chunks short of copies,
// and tells which draining nodes can go.
//
// The counts the status page and metrics show (under-replicated,
// missing, corrupt) are kept per chunk as assessments change, never
// recomputed by a pass: each is exact as of its chunk's last assessment,
// which is at most one tick after an event, and at most one
// --scan-interval after a change no event announced.
type heal struct {
	cfg     Config
	log     zerolog.Logger
	clock   clockwork.Clock
	nodes   *registry
	locs    *locations
	refs    *refIndex
	gc      *gc.Collector
	dels    *collector
	queue   *healQueue
	commits meta.Committer
	events  *events
	repair  *repair.Controller
	// uploads tells which reported chunks open uploads claim.
	uploads interface{ claims() openChunks }

	// assessed counts the assessments made, for tests and benchmarks.
	assessed atomic.Int64

	// scanMu makes ticks one at a time; it guards the fields below it.
	scanMu      sync.Mutex
	started     bool                      // the first, full pass ran
	lastNodes   map[rpc.NodeID]nodeInfo   // the registry at the last tick
	refCur      *refCursor                // the paced pass over committed chunks
	repCur      *reportedCursor           // and over reported chunks, for orphans
	watch       map[rpc.ChunkID]struct{}  // assessed every tick until settled
	found       map[rpc.ChunkID]mark      // what the last assessment found, for chunks not healthy
	orphanWatch map[rpc.ChunkID]struct{}  // reported chunks no file references, looked at every tick
	orphanSeen  map[rpc.ChunkID]time.Time // when each of those was first seen

	mu             sync.Mutex
	short          map[rpc.ChunkID]ref // the copyable chunks short of copies
	under          int64
	missing        int64
	corrupt        int64
	corruptOn      map[rpc.NodeID]int64
	stillOn        map[rpc.NodeID]int64 // per draining node, the chunks short of copies that need its copy
	reportedUnder  int64                // under at the last tick, for the events
	decommissioned map[rpc.NodeID]bool
	orphans        int64
}

// mark is what an assessment found wrong with a chunk, as counted.
type mark struct {
	under, missing bool
	corrupt        []rpc.NodeID
	still          []rpc.NodeID // draining nodes it needs
}

func (m mark) zero() bool { return !m.under && !m.missing && len(m.corrupt) == 0 && len(m.still) == 0 }

func newHeal(cfg Config, log zerolog.Logger, clock clockwork.Clock, nodes *registry, locs *locations, refs *refIndex, dels *collector, commits meta.Committer, ev *events) *heal {
	return &heal{cfg: cfg, log: log, clock: clock, nodes: nodes, locs: locs, refs: refs, gc: dels.gc, dels: dels, queue: dels.queue, commits: commits, events: ev,
		refCur: newRefCursor(refs), repCur: newReportedCursor(locs),
		watch: map[rpc.ChunkID]struct{}{}, found: map[rpc.ChunkID]mark{}, orphanWatch: map[rpc.ChunkID]struct{}{}, orphanSeen: map[rpc.ChunkID]time.Time{},
		short: map[rpc.ChunkID]ref{}, decommissioned: map[rpc.NodeID]bool{}, corruptOn: map[rpc.NodeID]int64{}, stillOn: map[rpc.NodeID]int64{}}
}

// run ticks every --repair-interval until ctx ends, once safe mode is off.
func (h *heal) run(ctx context.Context, safe *safeMode) {
	defer h.refCur.close()
	defer h.repCur.close()
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
	h.assessed.Add(1)
	id := r.chunk.ID
	return repair.Assess(h.chunkOf(r, nodes, repairing), candidates, func(n rpc.NodeID) bool { return h.gc.Queued(n, id) })
}

// scan is one tick: it assesses the chunks marked since the last tick,
// those on nodes whose state changed, those still settling, and the
// paced pass's next slice (the first tick: every chunk, unless nothing
// needs repair, see settled), and carries out
// what repair.Assess and gc.Orphans decide.
func (h *heal) scan(ctx context.Context) {
	h.scanMu.Lock()
	defer h.scanMu.Unlock()
	nodes := h.nodes.infos()
	candidates := h.nodes.candidates()
	first := !h.started
	if first {
		// Marks are kept from now on: this pass sees every chunk, and
		// every change after it starts is marked.
		h.started = true
		h.queue.start()
	}
	h.nodesChanged(nodes, first)
	full := first && !h.settled(nodes)

	todo := h.queue.take()
	for id := range h.watch {
		todo[id] = struct{}{}
	}
	p := newScanPlan()
	orphanCands := maps.Clone(h.orphanWatch)
	var batch []ref
	flush := func() {
		if ctx.Err() != nil {
			batch = batch[:0]
			return // the term ended
		}
		for _, r := range batch {
			h.assessOne(ctx, r, nodes, candidates, p)
		}
		batch = batch[:0]
	}
	for id := range todo {
		r, ok := h.refs.get(id)
		if !ok {
			// No file needs it (any more): it counts for nothing, and
			// its copies may be orphans.
			h.unmark(id)
			orphanCands[id] = struct{}{}
			continue
		}
		if batch = append(batch, r); len(batch) == scanBatch {
			flush()
		}
	}
	flush()

	// The paced pass: the next slice of committed chunks, and of reported
	// ones for orphans. The first tick walks them all.
	_, total := h.refs.counts()
	counts := func(n rpc.NodeID) bool { info := nodes[n]; return info.live() && !info.draining }
	var whole []bool
	for budget, restarted := h.slice(total, full), false; budget > 0; {
		if ctx.Err() != nil {
			return // the term ended: a pass over millions of chunks must not hold up its shutdown
		}
		visited := 0
		wrapped := h.refCur.stepWhole(min(budget, scanBatch), counts, func(r ref, ok bool) {
			visited++
			if _, done := todo[r.chunk.ID]; !done {
				batch = append(batch, r)
				whole = append(whole, ok)
			}
		})
		h.paced(ctx, batch, whole, nodes, candidates, p)
		batch, whole = batch[:0], whole[:0]
		budget -= visited
		if wrapped && (visited > 0 || restarted) {
			break // the pass ended: the next starts at the next tick
		}
		restarted = restarted || wrapped
	}
	for budget, restarted := h.slice(h.locs.slotsInUse(), full), false; budget > 0; {
		if ctx.Err() != nil {
			return
		}
		visited, wrapped := h.repCur.stepUnreferenced(min(budget, scanBatch), func(id rpc.ChunkID) { orphanCands[id] = struct{}{} })
		budget -= visited
		if wrapped && (visited > 0 || restarted) {
			break
		}
		restarted = restarted || wrapped
	}

	orphans := h.findOrphans(orphanCands)
	h.dels.delete(ctx, append(p.trims, orphans...), "trim or orphan")
	h.dels.deleteAfter(ctx, p.bad, "bad copy", 0) // no reader can be using it
	h.record(h.drained(nodes), len(orphans))
}

// settled reports whether the chunk index's counters show nothing to
// repair as the first tick begins: every committed chunk has all its good
// copies, and every node is live and not draining. The first tick then
// need not walk every chunk to find those to repair (at 10M chunks, about
// 10 s of CPU after every restart): what else a pass finds, surplus and
// bad copies beside enough good ones and orphans, the paced pass finds
// within --scan-interval, as it would for a copy lost silently.
func (h *heal) settled(nodes map[rpc.NodeID]nodeInfo) bool {
	for _, info := range nodes {
		if !info.live() || info.draining {
			return false
		}
	}
	missing, under, _ := h.locs.counts()
	return missing == 0 && under == 0
}

// slice returns how many of total entries the paced pass looks at in one
// tick: all of them in --scan-interval, at least one a tick; all of them
// on the first tick.
func (h *heal) slice(total int, first bool) int {
	if first || total == 0 {
		return total
	}
	ticks := max(int64(h.cfg.ScanInterval/h.cfg.RepairInterval), 1)
	return int((int64(total) + ticks - 1) / ticks)
}

// nodesChanged marks every chunk on the nodes whose state, as the health
// of their copies depends on it, changed since the last tick: a node dead
// or back, draining or no longer. A node that is new has no copies yet
// (its reports mark them); one gone was forgotten, which marked them.
func (h *heal) nodesChanged(nodes map[rpc.NodeID]nodeInfo, first bool) {
	changed := map[rpc.NodeID]bool{}
	for id, info := range nodes {
		if old, ok := h.lastNodes[id]; ok && !sameHealth(old, info) {
			changed[id] = true
		}
	}
	h.lastNodes = nodes
	if !first {
		h.queue.nodes(changed)
	}
}

// sameHealth reports whether the copies on a node count the same under a
// and b. Whether a live node is healthy or suspect, its address and when
// it registered only order the sources and the surplus copies of a chunk;
// the chunks that have either are assessed every tick anyway.
func sameHealth(a, b nodeInfo) bool {
	return a.live() == b.live() && a.draining == b.draining
}

// assessOne assesses r's chunk, calling off deletions of its copies when
// it is short, adds what is to be done to p, and keeps what it found.
func (h *heal) assessOne(ctx context.Context, r ref, nodes map[rpc.NodeID]nodeInfo, candidates []placement.Node, p *scanPlan) {
	repairing := h.repair.Repairing(r.chunk.ID)
	a := h.assess(r, nodes, candidates, repairing)
	if a.Short() && h.recall(ctx, r, nodes, a.Missing) > 0 {
		// The recall committed to the store: a repair may have
		// started or ended meanwhile.
		repairing = h.repair.Repairing(r.chunk.ID)
		a = h.assess(r, nodes, candidates, repairing)
	}
	p.add(r, a)
	id := r.chunk.ID
	if a.Short() || repairing || len(a.Trim) > 0 || len(a.Bad) > 0 {
		// Not settled: a repair to wait for, copies to see deleted.
		h.watch[id] = struct{}{}
	} else {
		delete(h.watch, id)
	}
	m := mark{under: a.Short(), missing: a.Lost(), corrupt: a.Corrupt, still: a.StillNeeded}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.countLocked(h.found[id], -1)
	h.countLocked(m, 1)
	if m.zero() {
		delete(h.found, id)
	} else {
		h.found[id] = m
	}
	if a.Copyable() {
		h.short[id] = r
	} else {
		delete(h.short, id)
	}
}

// paced looks at the chunks of a slice of the paced pass: a chunk whole
// as far as the locations told when the slice was read (whole[i]), and
// found healthy before, needs no assessment; any other is assessed as by
// assessOne.
func (h *heal) paced(ctx context.Context, batch []ref, whole []bool, nodes map[rpc.NodeID]nodeInfo, candidates []placement.Node, p *scanPlan) {
	if len(batch) == 0 {
		return
	}
	healthy := make([]bool, len(batch))
	h.mu.Lock()
	for i, r := range batch {
		_, marked := h.found[r.chunk.ID]
		healthy[i] = whole[i] && !marked
	}
	h.mu.Unlock()
	for i, r := range batch {
		if healthy[i] {
			h.assessed.Add(1)
			continue
		}
		h.assessOne(ctx, r, nodes, candidates, p)
	}
}

// unmark forgets what was found of a chunk no file references.
func (h *heal) unmark(id rpc.ChunkID) {
	delete(h.watch, id)
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.found[id]; ok {
		h.countLocked(m, -1)
		delete(h.found, id)
	}
	delete(h.short, id)
}

// countLocked adds m, times sign, to the counts.
func (h *heal) countLocked(m mark, sign int64) {
	if m.under {
		h.under += sign
	}
	if m.missing {
		h.missing += sign
	}
	for _, n := range m.corrupt {
		h.corrupt += sign
		if h.corruptOn[n] += sign; h.corruptOn[n] == 0 {
			delete(h.corruptOn, n)
		}
	}
	for _, n := range m.still {
		if h.stillOn[n] += sign; h.stillOn[n] == 0 {
			delete(h.stillOn, n)
		}
	}
}

// scanPlan is what one tick decided to delete.
type scanPlan struct {
	trims []meta.Deletion // surplus good copies: readers may still use them
	bad   []meta.Deletion // corrupt or mismatched copies: never served
}

func newScanPlan() *scanPlan { return &scanPlan{} }

// add takes in the assessment of r's chunk.
func (p *scanPlan) add(r ref, a repair.Assessment) {
	for _, n := range a.Trim {
		p.trims = append(p.trims, meta.Deletion{Node: n, Chunk: r.chunk.ID})
	}
	for _, n := range a.Bad {
		p.bad = append(p.bad, meta.Deletion{Node: n, Chunk: r.chunk.ID})
	}
}

// drained returns the draining nodes that can go: a draining node can go
// once no chunk depends on it, as far as the assessments tell: so only a
// live node whose copies the coordinator knows, all of them (its report
// may still be arriving in pages, or, dead or not registered yet, not
// have been sent at all). Counting a node's known copies walks the
// locations, so it is done only for a node not decommissioned yet.
func (h *heal) drained(nodes map[rpc.NodeID]nodeInfo) map[rpc.NodeID]bool {
	h.mu.Lock()
	stillOn, was := maps.Clone(h.stillOn), maps.Clone(h.decommissioned)
	h.mu.Unlock()
	out := map[rpc.NodeID]bool{}
	var known map[rpc.NodeID]int64
	for id, info := range nodes {
		if !info.draining || stillOn[id] > 0 || !info.live() {
			continue
		}
		if was[id] {
			out[id] = true
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

// record tells of what changed at this tick.
func (h *heal) record(decommissioned map[rpc.NodeID]bool, orphans int) {
	repaired := h.repair.Stats().Done
	h.mu.Lock()
	defer h.mu.Unlock()
	switch prev := h.reportedUnder; {
	case prev == 0 && h.under > 0 && h.missing > 0:
		h.events.add("repair", "%d chunks under-replicated, %d of them without a live good copy", h.under, h.missing)
	case prev == 0 && h.under > 0:
		h.events.add("repair", "%d chunks under-replicated; repairing", h.under)
	case prev > 0 && h.under == 0:
		h.events.add("repair", "repair done: every chunk has its copies again (%d copied since this coordinator took over)", repaired)
	}
	h.reportedUnder = h.under
	for id := range decommissioned {
		if !h.decommissioned[id] {
			h.log.Info().Str("node_id", string(id)).Msg("decommissioned: every chunk it held is replicated elsewhere; safe to remove")
			h.events.add("decommission", "datanode %s decommissioned: every chunk it held is replicated elsewhere; safe to remove", id.Short())
		}
	}
	h.decommissioned = decommissioned
	h.orphans += int64(orphans)
}

// scanStats is the count of committed chunks, of under-replicated and
// missing ones and of corrupt copies as last assessed, and the orphan
// copies deleted so far.
type scanStats struct {
	chunks, under, missing, corrupt, orphans int64
}

// stats returns the counts.
func (h *heal) stats() scanStats {
	_, chunks := h.refs.counts()
	h.mu.Lock()
	defer h.mu.Unlock()
	return scanStats{chunks: int64(chunks), under: h.under, missing: h.missing, corrupt: h.corrupt, orphans: h.orphans}
}

// marks returns whether node is decommissioned (it drains and nothing
// depends on it), and its corrupt copies.
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

// findOrphans returns deletions for the candidate chunks that are
// reported, that no committed file references and no open upload placed
// or claims, first seen more than the orphan grace period ago (gc.Orphans
// decides). A session loaded from the store after a restart or a takeover
// knows only its header, so a chunk it stored before is recognized by its
// ID (openChunks.owns) and kept while the session is open. The candidates
// still waiting out the grace are looked at again every tick.
func (h *heal) findOrphans(cands map[rpc.ChunkID]struct{}) []meta.Deletion {
	if len(cands) == 0 {
		return nil
	}
	// An upload moves from the open ones to refs: reading them in that
	// order sees every upload at least once.
	open := h.uploads.claims()
	reported := map[rpc.ChunkID][]rpc.NodeID{}
	for id := range cands {
		if h.refs.has(id) {
			continue
		}
		if nodes := h.locs.nodes(id); len(nodes) > 0 {
			reported[id] = nodes
		}
	}
	orphans, seen := gc.Orphans(gc.Inventory{
		Reported:  maps.All(reported),
		Placed:    func(id rpc.ChunkID) bool { return open.placed[id] },
		Claimed:   open.owns,
		FirstSeen: h.orphanSeen,
		Grace:     h.cfg.OrphanGrace,
		Now:       h.clock.Now(),
	})
	for id := range cands {
		delete(h.orphanSeen, id)
		delete(h.orphanWatch, id)
	}
	for id, t := range seen {
		h.orphanSeen[id] = t
		h.orphanWatch[id] = struct{}{}
	}
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

// Needs implements repair.Cluster: the chunks the assessments found
// short of copies with a copy to copy from, most endangered first (the
// fewest sources, then the most copies missing), each assessed again
// against the copies reported since, so a copy that finished after the
// tick is not planned a second time, and a chunk whose file is gone is
// not copied at all.
func (h *heal) Needs() []repair.Need {
	h.mu.Lock()
	short := slices.Collect(maps.Values(h.short))
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
	slices.SortFunc(needs, func(a, b repair.Need) int {
		return cmp.Or(cmp.Compare(len(a.Sources), len(b.Sources)), cmp.Compare(b.Missing, a.Missing), cmp.Compare(a.Chunk, b.Chunk))
	})
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
	// Done or failed, the chunk is assessed again at the next tick.
	defer r.dels.queue.chunks(task.Chunk)
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
	r.locs.report(task.Target.ID, inventoryPage{}, []reportedCopy{{
		id: task.Chunk, size: task.Size, digest: task.Digest, frameSize: task.FrameSize,
	}}, nil, nil, r.dels.queuedOn(task.Target.ID))
	if !r.refs.has(task.Chunk) {
		// Its file was removed while the copy ran (see unreference).
		r.dels.delete(ctx, []meta.Deletion{{Node: task.Target.ID, Chunk: task.Chunk}}, "copied after its file was removed")
	}
	return nil
}
