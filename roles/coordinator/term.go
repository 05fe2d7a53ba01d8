package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
	"github.com/dfs-project/dfs/sessions"
)

// term is one leadership term: everything a leading coordinator knows
// beyond the store. It is built from the store when leadership starts and
// thrown away when it ends, so a standby that takes over starts from the
// durable state, never from stale memory.
type term struct {
	c     *Coordinator
	log   zerolog.Logger
	store meta.Store
	ctx   context.Context

	nodes   *registry
	locs    *locations
	refs    *refIndex
	files   *fileCache
	uploads *sessions.Table[rpc.SessionID, *upload]
	// confirming holds the uploads ConfirmUpload took out of uploads
	// until their file is committed (its chunks are then in refs) or the
	// session is put back or aborted, so no scan in between takes their
	// chunks for orphans.
	confirming confirmingSet
	// paths serializes the commits of each path: reading its current
	// version, committing and updating refs are one step to the others.
	paths   pathLocks
	gc      *gc.Collector
	safe    *safeMode
	health  *health
	repair  *repair.Controller
	started time.Time
	// warmup is set when the store already held data: the cluster had
	// datanodes, which are still coming back when the term starts.
	warmup bool

	wg sync.WaitGroup
}

// startTerm loads the store's uploads, deletions and chunk references and
// starts the term's background loops. The term ends when ctx does.
func (c *Coordinator) startTerm(ctx context.Context) (*term, error) {
	start := time.Now()
	t := &term{
		c:       c,
		log:     c.log,
		store:   c.store,
		ctx:     ctx,
		nodes:   newRegistry(c.cfg.SuspectAfter, c.cfg.DeadAfter, c.cfg.ForgetDeadAfter, c.events, c.log),
		locs:    newLocations(),
		refs:    newRefIndex(),
		files:   newFileCache(),
		health:  newHealth(),
		started: start,
	}
	t.nodes.penalties = newPenalties(c.cfg.FailurePenalty, c.clock)
	t.repair = repair.New(repair.Config{
		Interval: c.cfg.RepairInterval, PerNode: c.cfg.RepairPerNode, Total: c.cfg.RepairTotal, Bandwidth: c.cfg.RepairBandwidth,
	}, repair.Deps{Cluster: t, Copier: replicator{t}, Policy: c.policy, Clock: c.clock, Log: c.log})
	gcfg := gc.DefaultConfig()
	gcfg.Delay = c.cfg.GCDelay
	t.gc = gc.New(gcfg, gc.Deps{Deleter: &chunkDeleter{t}, Clock: c.clock, Log: c.log})
	t.uploads = sessions.New(c.cfg.SessionTimeout, c.clock, func(id rpc.SessionID, u *upload) {
		t.log.Info().Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload session expired; collecting its chunks")
		t.abortUpload(u)
	})

	files, chunks := 0, 0
	err := c.store.Files(ctx, func(f *meta.File) error {
		files++
		chunks += len(f.Chunks)
		t.refs.add(f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load files: %w", err)
	}
	ups, err := c.store.Uploads(ctx)
	if err != nil {
		return nil, fmt.Errorf("load uploads: %w", err)
	}
	for _, mu := range ups {
		t.uploads.Put(mu.ID, uploadFromMeta(mu))
	}
	dels, err := c.store.Deletions(ctx)
	if err != nil {
		return nil, fmt.Errorf("load deletions: %w", err)
	}
	for _, d := range dels {
		t.gc.Enqueue(d.Node, d.Chunk)
	}
	t.safe = newSafeMode(t, c.cfg.SafeModeTimeout, chunks)
	t.warmup = files > 0 || len(ups) > 0
	t.log.Info().Int("files", files).Int("chunks", chunks).Int("uploads", len(ups)).Int("pending_deletions", len(dels)).
		Dur("took", time.Since(start)).Msg("leading: metadata loaded")

	drains, err := c.store.Drains(ctx)
	if err != nil {
		return nil, fmt.Errorf("load drains: %w", err)
	}
	for _, id := range drains {
		t.nodes.setDraining(id, true)
	}
	t.wg.Add(6)
	go func() { defer t.wg.Done(); t.healthLoop(ctx) }()
	go func() { defer t.wg.Done(); t.repair.Run(ctx) }()
	go func() { defer t.wg.Done(); t.uploads.Run(ctx, time.Second) }()
	go func() { defer t.wg.Done(); t.gc.Run(ctx) }()
	go func() { defer t.wg.Done(); t.watchNodes(ctx) }()
	go func() { defer t.wg.Done(); t.safe.run(ctx) }()
	return t, nil
}

// wait blocks until the term's loops have stopped.
func (t *term) wait() { t.wg.Wait() }

// watchNodes ages heartbeats into suspect and dead states, and forgets
// nodes dead for --forget-dead-after.
func (t *term) watchNodes(ctx context.Context) {
	interval := min(t.c.cfg.SuspectAfter/4, time.Second)
	tick := time.NewTicker(max(interval, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			now := t.c.clock.Now()
			for _, id := range t.nodes.tick(now) {
				t.log.Warn().Str("node_id", string(id)).Msg("datanode dead: missed heartbeats")
			}
			t.forgetNodes(ctx, now)
		}
	}
}

// forgetNodes removes the nodes dead for --forget-dead-after from the
// registry, and drops their copies from the locations and their pending
// deletions from GC and, durably, from the store. So are the deletions of
// nodes that have not registered in this term once it is that old (their
// deletions were loaded from the store, or recorded for a node forgotten
// before). A forgotten node that comes back registers as new and reports
// its chunks; those no file needs are collected as orphans.
func (t *term) forgetNodes(ctx context.Context, now time.Time) {
	gone := t.nodes.forget(now)
	forgotten := make(map[rpc.NodeID]bool, len(gone))
	for _, id := range gone {
		forgotten[id] = true
	}
	if now.Sub(t.started) >= t.c.cfg.DeadAfter+t.c.cfg.ForgetDeadAfter {
		for _, id := range t.gc.Nodes() {
			if _, _, ok := t.nodes.lookup(id); !ok && !forgotten[id] {
				gone = append(gone, id)
				forgotten[id] = true
			}
		}
	}
	t.locs.dropNodes(forgotten)
	if len(gone) == 0 {
		return
	}
	var done []meta.Deletion
	for _, id := range gone {
		for _, c := range t.gc.Drop(id) {
			done = append(done, meta.Deletion{Node: id, Chunk: c})
		}
	}
	if len(done) > 0 {
		cctx, cancel := context.WithTimeout(ctx, t.c.cfg.RPCTimeout)
		err := t.commit(cctx, &meta.Txn{DoneDeletions: done})
		cancel()
		if err != nil {
			// Queued again, they are dropped at the next pass.
			for _, d := range done {
				t.gc.Enqueue(d.Node, d.Chunk)
			}
			t.log.Warn().Err(err).Int("nodes", len(gone)).Int("deletions", len(done)).Msg("cannot drop the deletions of forgotten datanodes")
			return
		}
	}
	ev := t.log.Info()
	if len(gone) == 1 {
		ev = ev.Str("node_id", string(gone[0]))
	}
	ev.Int("nodes", len(gone)).Int("deletions_dropped", len(done)).Dur("dead_for", t.c.cfg.ForgetDeadAfter).Msg("forgot datanode")
}

// commit applies txn to the store; the caller's context bounds it. A txn
// that names a path drops it from the file cache, whatever its outcome.
func (t *term) commit(ctx context.Context, txn *meta.Txn) error {
	if txn.Path != "" {
		defer t.files.forget(txn.Path)
	}
	return t.store.Commit(ctx, txn)
}

// chunkDeleter carries out GC deletions with BulkDeleteChunk and records
// them done in the store.
type chunkDeleter struct{ t *term }

var _ gc.Deleter = (*chunkDeleter)(nil)

func (d *chunkDeleter) DeleteChunks(ctx context.Context, node rpc.NodeID, ids []rpc.ChunkID) ([]rpc.ChunkID, error) {
	addr, _, ok := d.t.nodes.lookup(node)
	if !ok {
		// Not registered (yet): after a restart nodes come back one by one.
		return nil, rpc.Errorf(rpc.Unavailable, "node %s has not registered", node)
	}
	cc, err := d.t.c.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	req := &dfspb.BulkDeleteChunkRequest{ChunkIds: make([]string, len(ids)), NodeId: string(node)}
	for i, id := range ids {
		req.ChunkIds[i] = string(id)
	}
	resp, err := dfspb.NewDataNodeClient(cc).BulkDeleteChunk(ctx, req)
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	failed := make([]rpc.ChunkID, len(resp.Failed))
	bad := make(map[rpc.ChunkID]bool, len(resp.Failed))
	for i, s := range resp.Failed {
		failed[i] = rpc.ChunkID(s)
		bad[rpc.ChunkID(s)] = true
	}
	done := make([]meta.Deletion, 0, len(ids))
	for _, id := range ids {
		if !bad[id] {
			done = append(done, meta.Deletion{Node: node, Chunk: id})
		}
	}
	d.t.health.mu.Lock()
	d.t.health.chunksDeleted += int64(resp.Deleted)
	d.t.health.bytesReclaimed += resp.BytesFreed
	d.t.health.mu.Unlock()
	if err := d.t.commit(ctx, &meta.Txn{DoneDeletions: done}); err != nil {
		// The chunks are gone; the records stay and the next attempt
		// deletes nothing and records them again.
		return nil, fmt.Errorf("record deletions done: %w", err)
	}
	return failed, nil
}

// pathLocks holds a mutex per path while some commit of it runs.
type pathLocks struct {
	mu sync.Mutex
	m  map[rpc.Path]*pathLock
}

type pathLock struct {
	sync.Mutex
	users int
}

// lock locks p and returns its unlock.
func (l *pathLocks) lock(p rpc.Path) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[rpc.Path]*pathLock{}
	}
	pl := l.m[p]
	if pl == nil {
		pl = &pathLock{}
		l.m[p] = pl
	}
	pl.users++
	l.mu.Unlock()
	pl.Lock()
	return func() {
		pl.Unlock()
		l.mu.Lock()
		if pl.users--; pl.users == 0 {
			delete(l.m, p)
		}
		l.mu.Unlock()
	}
}

// confirmingSet is the uploads being confirmed, counted: two confirms of
// one upload may overlap (one of them then fails).
type confirmingSet struct {
	mu sync.Mutex
	m  map[*upload]int
}

func (s *confirmingSet) add(u *upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[*upload]int{}
	}
	s.m[u]++
}

func (s *confirmingSet) remove(u *upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[u]--; s.m[u] <= 0 {
		delete(s.m, u)
	}
}

func (s *confirmingSet) list() []*upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*upload, 0, len(s.m))
	for u := range s.m {
		out = append(out, u)
	}
	return out
}

// refIndex knows every chunk a committed file references, with the
// replication its file asks for, and how many files there are.
type refIndex struct {
	mu    sync.Mutex
	refs  map[rpc.ChunkID]ref
	files int
}

// ref is a referenced chunk: its committed metadata and the replication
// its file asks for.
type ref struct {
	chunk meta.Chunk
	repl  uint32
}

func newRefIndex() *refIndex { return &refIndex{refs: map[rpc.ChunkID]ref{}} }

// add records a committed file; a file replacing another is added before
// the old version is removed.
func (r *refIndex) add(f *meta.File) {
	r.mu.Lock()
	r.files++
	for _, c := range f.Chunks {
		r.refs[c.ID] = ref{chunk: c, repl: f.Replication}
	}
	r.mu.Unlock()
}

// snapshot returns every referenced chunk.
func (r *refIndex) snapshot() []ref {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ref, 0, len(r.refs))
	for _, x := range r.refs {
		out = append(out, x)
	}
	return out
}

// counts returns the number of committed files and of the chunks they
// reference.
func (r *refIndex) counts() (files, chunks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files, len(r.refs)
}

// has reports whether a committed file references id.
func (r *refIndex) has(id rpc.ChunkID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.refs[id]
	return ok
}

func (r *refIndex) remove(f *meta.File) {
	r.mu.Lock()
	r.files--
	for _, c := range f.Chunks {
		delete(r.refs, c.ID)
	}
	r.mu.Unlock()
}

// located counts referenced chunks without any reported good copy, and
// those with fewer reported good copies than their replication.
func (r *refIndex) located(l *locations) (missing, under, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.refs {
		good, _ := l.check(x.chunk)
		switch n := len(good); {
		case n == 0:
			missing++
			under++
		case n < int(x.repl):
			under++
		}
	}
	return missing, under, len(r.refs)
}

// placementWarmup fails a placement that found too few datanodes with
// NotServing while the term is younger than one suspect-after period, in a
// cluster that held data: its datanodes are still coming back to a
// coordinator that just restarted or took over, so the client should retry
// rather than give up.
func (t *term) placementWarmup(err error) error {
	if !t.warmup || rpc.KindOf(err) != rpc.FailedPrecondition || time.Since(t.started) >= t.c.cfg.SuspectAfter {
		return err
	}
	return rpc.NotServingError("", 500*time.Millisecond, "coordinator took over %s ago and is still waiting for datanodes to register: %v",
		time.Since(t.started).Round(100*time.Millisecond), err)
}
