package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// term is one leadership term: everything a leading coordinator knows
// beyond the store, as parts by behaviour (namespace, uploads, membership,
// heal, admin) over shared indexes that each guard their own state. It is
// built from the store when leadership starts and thrown away when it
// ends, so a standby that takes over starts from the durable state, never
// from stale memory.
type term struct {
	log zerolog.Logger

	nodes  *registry
	locs   *locations // the chunk index (chunkindex.go)
	refs   *refIndex  // the same index, seen from the reference side
	gc     *gc.Collector
	repair *repair.Controller
	safe   *safeMode

	namespace  *namespace
	uploads    *uploads
	membership *membership
	heal       *heal
	admin      *admin

	// loader is the store the committed files are loaded from (load);
	// began is when the term began and st what it read before it served.
	loader meta.Loader
	clock  clockwork.Clock
	began  time.Time
	st     stored
	// failed receives the error of a load that failed; lead ends the
	// term with it.
	failed chan error

	wg sync.WaitGroup
}

// newTerm builds a term from the store, its loops not started and its
// files not loaded (load); ctx is the term's (the uploads' aborts run
// within it).
func (c *Coordinator) newTerm(ctx context.Context) (*term, error) {
	start := c.clock.Now()
	cfg := c.cfg
	files := newFileCache()
	commits := cacheCommitter{store: c.store, files: files}
	ix := newChunkIndex()
	t := &term{
		log:    c.log,
		nodes:  newRegistry(cfg.SuspectAfter, cfg.DeadAfter, cfg.ForgetDeadAfter, c.events, c.log),
		locs:   ix,
		refs:   ix.refs(),
		loader: c.store,
		clock:  c.clock,
		began:  start,
		failed: make(chan error, 1),
	}
	t.safe = newSafeMode(cfg.SafeModeTimeout, cfg.SuspectAfter, start, c.clock, t.locs.counts, c.events, c.log)
	inventories := newInventories(cfg.MaxInventories, cfg.InventoryWait, cfg.RPCTimeout, c.clock)
	inventories.loaded, inventories.ended = t.safe.ready, ctx.Done()
	t.nodes.penalties = newPenalties(cfg.FailurePenalty, c.clock)
	deleter := &chunkDeleter{nodes: t.nodes, datanodes: c.datanodes, commits: commits}
	gcfg := gc.DefaultConfig()
	gcfg.Delay = cfg.GCDelay
	t.gc = gc.New(gcfg, gc.Deps{Deleter: deleter, Clock: c.clock, Log: c.log})
	dels := &collector{commits: commits, gc: t.gc, locs: t.locs, refs: t.refs, queue: newHealQueue(t.locs), delay: cfg.GCDelay, timeout: cfg.RPCTimeout, log: c.log}
	t.membership = &membership{
		cfg: cfg, log: c.log, clock: c.clock, cluster: c.store.ClusterID, nodes: t.nodes, locs: t.locs, refs: t.refs,
		dels: dels, commits: commits, datanodes: c.datanodes, events: c.events, registrations: c.registrations, started: start,
		inventories: inventories, beforeApply: c.beforeReport,
	}
	t.safe.awaiting = t.membership.awaitingInventories
	t.heal = newHeal(cfg, c.log, c.clock, t.nodes, t.locs, t.refs, dels, commits, c.events)
	t.repair = repair.New(repair.Config{
		Interval: cfg.RepairInterval, PerNode: cfg.RepairPerNode, Total: cfg.RepairTotal, Bandwidth: cfg.RepairBandwidth,
	}, repair.Deps{
		Cluster: t.heal, Policy: c.policy, Clock: c.clock, Log: c.log,
		Copier: &replicator{datanodes: c.datanodes, locs: t.locs, refs: t.refs, dels: dels, checker: t.membership, log: c.log},
	})
	t.heal.repair = t.repair

	st, err := loadRest(ctx, c.store)
	if err != nil {
		return nil, err
	}
	t.st = st
	for _, d := range st.deletions {
		t.gc.Enqueue(d.Node, d.Chunk)
	}
	t.uploads = newUploads(ctx, uploadsConfig{
		chunkSize: cfg.ChunkSize, replication: cfg.Replication, maxChunks: c.maxChunks, maxUploads: cfg.MaxUploads,
		sessionTimeout: cfg.SessionTimeout, rpcTimeout: cfg.RPCTimeout, suspectAfter: cfg.SuspectAfter,
	}, uploadsDeps{
		log: c.log, clock: c.clock, store: c.store, commits: commits, nodes: t.nodes, locs: t.locs, refs: t.refs,
		policy: c.policy, safe: t.safe, dels: dels, metrics: c.metrics, perms: c.perms(), started: start,
		warmup: len(st.uploads) > 0, // the cluster had datanodes, still coming back (files: see load)
	})
	for _, mu := range st.uploads {
		t.uploads.load(mu)
	}
	t.heal.uploads = t.uploads
	t.namespace = &namespace{
		log: c.log, store: c.store, commits: commits, files: files, paths: t.uploads.paths, locs: t.locs, nodes: t.nodes,
		safe: t.safe, dels: dels, metrics: c.metrics, refs: t.refs, clock: c.clock, perms: c.perms(), maxChunks: c.maxChunks,
	}
	t.admin = &admin{
		log: c.log, store: c.store, loader: c.store, commits: commits, nodes: t.nodes, locs: t.locs, heal: t.heal, repair: t.repair,
		gc: t.gc, deleter: deleter, safe: t.safe, checker: t.membership, events: c.events, policy: c.policy, cfg: cfg,
	}
	for _, id := range st.drains {
		t.nodes.setDraining(id, true)
	}
	t.log.Info().Int("uploads", len(st.uploads)).Int("pending_deletions", len(st.deletions)).Dur("took", c.clock.Now().Sub(start)).
		Msg("leading: serving; loading the committed files (safe mode until they are loaded)")
	return t, nil
}

// load adds the store's committed files to the chunk index, then ends
// safe mode's loading (safeMode.loaded): from then on safe mode waits for
// the datanodes' reports of the chunks, and their full inventories are
// applied. Until then the term serves what the store answers alone (stat,
// list, heartbeats), refuses writes (safe mode), and holds inventories
// back (inventories.admit). After the walk it has the store release the
// pages the walk mapped in (meta.PageReleaser). It returns ctx's error
// soon after ctx ends and the store's when the walk fails.
func (t *term) load(ctx context.Context) error {
	if c, ok := t.loader.(meta.FileCounter); ok {
		if n, err := c.CountFiles(ctx); err == nil {
			t.safe.expect(n)
		} else {
			t.log.Debug().Err(err).Msg("cannot count the committed files; loading them all the same")
		}
	}
	files, chunks, err := loadFiles(ctx, t.loader, t.refs, t.safe.progress)
	if err != nil {
		return rpc.Errorf(rpc.Other, "load files: %w", err)
	}
	if r, ok := t.loader.(meta.PageReleaser); ok {
		// The walk mapped the whole store file in; few of its pages are
		// read again.
		if err := r.ReleasePages(); err != nil {
			t.log.Warn().Err(err).Msg("cannot release the metadata store's pages after the load; they stay in the coordinator's resident set")
		}
	}
	if files > 0 {
		// The cluster had datanodes, still coming back. No placement
		// reads it before safe mode lets it, after loaded.
		t.uploads.warmup = true
	}
	t.safe.loaded(chunks)
	t.log.Info().Int("files", files).Int("chunks", chunks).Int("uploads", len(t.st.uploads)).Int("pending_deletions", len(t.st.deletions)).
		Dur("took", t.clock.Since(t.began)).Msg("leading: metadata loaded")
	return nil
}

// stored is the durable state a term reads before it serves: everything
// but the committed files, which it loads while it serves (load).
type stored struct {
	uploads   []*meta.Upload
	deletions []meta.Deletion
	drains    []rpc.NodeID
}

// loadRest reads the open uploads, the pending deletions and the
// draining nodes.
func loadRest(ctx context.Context, l meta.Loader) (stored, error) {
	var st stored
	var err error
	if st.uploads, err = l.Uploads(ctx); err != nil {
		return stored{}, rpc.Errorf(rpc.Other, "load uploads: %w", err)
	}
	if st.deletions, err = l.Deletions(ctx); err != nil {
		return stored{}, rpc.Errorf(rpc.Other, "load deletions: %w", err)
	}
	if st.drains, err = l.Drains(ctx); err != nil {
		return stored{}, rpc.Errorf(rpc.Other, "load drains: %w", err)
	}
	return st, nil
}

// start starts the term's background loops, the load of the committed
// files among them, which stop when ctx ends. A load that fails sends its
// error on t.failed.
func (t *term) start(ctx context.Context) {
	t.wg.Go(func() {
		if err := t.load(ctx); err != nil && ctx.Err() == nil {
			t.failed <- err // the only send: never blocks
		}
	})
	t.wg.Go(func() { t.heal.run(ctx, t.safe) })
	t.wg.Go(func() { t.repair.Run(ctx) })
	t.wg.Go(func() { t.uploads.run(ctx) })
	t.wg.Go(func() { t.gc.Run(ctx) })
	t.wg.Go(func() { t.membership.watch(ctx, t.gc) })
	t.wg.Go(func() { t.safe.run(ctx) })
}

// wait blocks until the term's loops have stopped.
func (t *term) wait() { t.wg.Wait() }

// cacheCommitter is the store's Committer for the term's parts: a txn
// that names a path drops it from the file cache, whatever its outcome.
type cacheCommitter struct {
	store meta.Committer
	files *fileCache
}

var _ meta.Committer = cacheCommitter{}

func (c cacheCommitter) Commit(ctx context.Context, txn *meta.Txn) error {
	if txn.Path != "" {
		defer c.files.forget(txn.Path)
	}
	if txn.Move != nil {
		defer c.files.forgetBelow(txn.Path) // a directory's files move too
		defer c.files.forget(txn.Move.To)
	}
	return c.store.Commit(ctx, txn)
}

// collector records chunk deletions durably and hands them to GC.
type collector struct {
	commits meta.Committer
	gc      *gc.Collector
	locs    *locations
	refs    *refIndex
	queue   *healQueue    // marks the chunks whose health may have changed
	delay   time.Duration // --gc-delay
	timeout time.Duration // --rpc-timeout
	log     zerolog.Logger
}

// enqueue hands recorded deletions to GC, to carry out after --gc-delay.
func (c *collector) enqueue(dels []meta.Deletion) { c.enqueueAfter(c.delay, dels) }

// enqueueAfter hands recorded deletions to GC, to carry out after delay.
func (c *collector) enqueueAfter(delay time.Duration, dels []meta.Deletion) {
	for _, d := range dels {
		c.gc.EnqueueAfter(delay, d.Node, d.Chunk)
	}
}

// queued reports whether the deletion of node's copy of id is queued.
func (c *collector) queued(node rpc.NodeID, id rpc.ChunkID) bool { return c.gc.Queued(node, id) }

// queuedOn reports, for node, whether the deletion of a chunk's copy there
// is queued.
func (c *collector) queuedOn(node rpc.NodeID) func(rpc.ChunkID) bool {
	return func(id rpc.ChunkID) bool { return c.gc.Queued(node, id) }
}

// delete records deletions durably, forgets the copies and hands them to
// GC, which carries them out after --gc-delay.
func (c *collector) delete(ctx context.Context, dels []meta.Deletion, why string) {
	c.deleteAfter(ctx, dels, why, c.delay)
}

// deleteAfter is delete with GC carrying the deletions out after delay.
func (c *collector) deleteAfter(ctx context.Context, dels []meta.Deletion, why string, delay time.Duration) {
	if len(dels) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.commits.Commit(cctx, &meta.Txn{AddDeletions: dels}); err != nil {
		c.log.Warn().Err(err).Int("copies", len(dels)).Msg("cannot record deletions")
		return
	}
	c.enqueueAfter(delay, dels) // before forget: repair never sees the node free of the copy and not queued
	c.locs.forget(dels)
	c.log.Info().Int("copies", len(dels)).Str("why", why).Msg("deleting copies")
}

// unreference drops the chunks of old, which a commit just removed or
// replaced, from refs, then deletes any copy of them that is not among the
// recorded deletions: a repair copy that landed after those were listed.
// No file needs it, and it must not wait out the orphan grace period.
// replicator.Copy checks refs after it counts a copy, so of the two, one
// always sees the other.
func (c *collector) unreference(ctx context.Context, old *meta.File, recorded []meta.Deletion) {
	c.refs.remove(old)
	c.queue.file(old)
	listed := make(map[meta.Deletion]bool, len(recorded))
	for _, d := range recorded {
		listed[d] = true
	}
	var late []meta.Deletion
	for _, d := range c.locs.unusedCopiesOf(old) {
		if !listed[d] {
			late = append(late, d)
		}
	}
	c.delete(ctx, late, "copied while its file was removed")
}

// chunkDeleter carries out GC deletions through the datanodes and records
// them done in the store. It counts what the datanodes deleted.
type chunkDeleter struct {
	nodes     *registry
	datanodes Datanodes
	commits   meta.Committer

	mu      sync.Mutex
	deleted int64 // chunk copies the datanodes deleted
	freed   int64 // the bytes that freed
}

var _ gc.Deleter = (*chunkDeleter)(nil)

func (d *chunkDeleter) DeleteChunks(ctx context.Context, node rpc.NodeID, ids []rpc.ChunkID) ([]rpc.ChunkID, error) {
	addr, _, ok := d.nodes.lookup(node)
	if !ok {
		// Not registered (yet): after a restart nodes come back one by one.
		return nil, rpc.Errorf(rpc.Unavailable, "node %s has not registered", node)
	}
	failed, deleted, freed, err := d.datanodes.Delete(ctx, node, addr, ids)
	if err != nil {
		return nil, err
	}
	bad := make(map[rpc.ChunkID]bool, len(failed))
	for _, id := range failed {
		bad[id] = true
	}
	done := make([]meta.Deletion, 0, len(ids))
	for _, id := range ids {
		if !bad[id] {
			done = append(done, meta.Deletion{Node: node, Chunk: id})
		}
	}
	d.mu.Lock()
	d.deleted += deleted
	d.freed += freed
	d.mu.Unlock()
	if err := d.commits.Commit(ctx, &meta.Txn{DoneDeletions: done}); err != nil {
		// The chunks are gone; the records stay and the next attempt
		// deletes nothing and records them again.
		return nil, rpc.Errorf(rpc.Other, "record deletions done: %w", err)
	}
	return failed, nil
}

// stats returns the chunk copies deleted and the bytes freed so far.
func (d *chunkDeleter) stats() (deleted, freed int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deleted, d.freed
}
