package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// planAhead is how many chunk plans UploadFile returns up front; later
// chunks are allocated one by one, which also keeps the session alive.
const planAhead = 4

// maxReceiptBatch bounds the receipts of one UploadReceipts or
// ConfirmUpload call: a batch of the largest receipts (every replica of
// rpc.MaxReplication acknowledging) stays far below rpc.MaxMessageSize.
const maxReceiptBatch = 1000

// maxAttempts bounds the placements of one chunk of an upload.
const maxAttempts = 64

// maxCommitRetries bounds how often a commit is retried after another
// commit of the same path won the race.
const maxCommitRetries = 8

// upload is a metadata session: one upload of a new version of a path.
// Its header (not its placements) is recorded in the store when it places
// its first chunks, so that a restarted or newly elected coordinator can
// still confirm it: a chunk's ID proves which session, index and attempt
// it belongs to, so the placements need not be stored (rewriting them at
// every placement would grow with the square of the chunk count). Chunks
// of a session that dies with its coordinator are collected as orphans.
type upload struct {
	id          rpc.SessionID
	path        rpc.Path
	chunkSize   int64
	replication int
	created     time.Time

	// persist serializes the writes of this session to the store.
	persist   sync.Mutex
	persisted bool

	mu     sync.Mutex
	allocs []meta.Allocation
	// byID indexes allocs by chunk ID; next is the next attempt number of
	// each chunk index: both keep a placement and a receipt O(1) for
	// files of up to a million chunks.
	byID map[rpc.ChunkID]int
	next map[uint32]uint32
	// receipts are the checked receipts of completed chunks, by index.
	receipts map[uint32]meta.Chunk
	done     bool
	// firstAttempt numbers this term's placements: a session loaded from
	// the store may have placed chunks before under low attempt numbers.
	firstAttempt uint32
	// uncertain is set when a commit of this upload failed with its
	// outcome unknown; replacing is the version it meant to replace (nil:
	// the path had no file).
	uncertain bool
	replacing *meta.File
}

func newUpload(id rpc.SessionID, p rpc.Path, chunkSize int64, repl int, created time.Time) *upload {
	return &upload{id: id, path: p, chunkSize: chunkSize, replication: repl, created: created,
		byID: map[rpc.ChunkID]int{}, next: map[uint32]uint32{}, receipts: map[uint32]meta.Chunk{}}
}

func uploadFromMeta(m *meta.Upload) *upload {
	u := newUpload(m.ID, m.Path, m.ChunkSize, int(m.Replication), m.Created)
	u.persisted, u.firstAttempt = true, maxAttempts/2
	for _, a := range m.Chunks {
		u.add(a)
	}
	return u
}

// add records allocation a; the caller holds u.mu (or owns u).
func (u *upload) add(a meta.Allocation) {
	u.byID[a.ID] = len(u.allocs)
	u.allocs = append(u.allocs, a)
	u.next[a.Index] = max(u.next[a.Index], a.Attempt+1)
}

// snapshot returns the session as the store records it.
func (u *upload) snapshot() *meta.Upload {
	u.mu.Lock()
	defer u.mu.Unlock()
	return &meta.Upload{ID: u.id, Path: u.path, ChunkSize: u.chunkSize, Replication: uint32(u.replication), Created: u.created,
		Chunks: slices.Clone(u.allocs)}
}

// find returns the allocation of chunk id. A chunk this coordinator did
// not place (the session was loaded from the store after a restart or a
// takeover) is recognized by its ID, which only this session's path, ID,
// index and attempt produce; its nodes are then unknown.
func (u *upload) find(id rpc.ChunkID) (meta.Allocation, bool) {
	if i, ok := u.byID[id]; ok {
		return u.allocs[i], true
	}
	index := id.Index()
	for attempt := range uint32(maxAttempts) {
		if rpc.NewChunkID(u.path, u.id, attempt, index) == id {
			return meta.Allocation{Index: index, Attempt: attempt, ID: id}, true
		}
	}
	return meta.Allocation{}, false
}

// UploadFile opens a metadata session for a new version of a path.
func (c *Coordinator) UploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.uploadFile(ctx, req)
	return resp, rpc.ToStatus(err)
}

func (t *term) uploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	cfg := t.c.cfg
	p, err := rpc.ParsePath(req.Path)
	if err != nil {
		return nil, err
	}
	chunkSize := req.ChunkSize
	if chunkSize == 0 {
		chunkSize = cfg.ChunkSize
	}
	if err := rpc.CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	repl := int(req.Replication)
	if repl == 0 {
		repl = cfg.Replication
	}
	if repl < 1 || repl > rpc.MaxReplication {
		return nil, rpc.Errorf(rpc.Invalid, "replication %d out of range (1 to %d)", repl, rpc.MaxReplication)
	}
	if req.Size < -1 {
		return nil, rpc.Errorf(rpc.Invalid, "size %d: must be -1 (unknown) or the file's size", req.Size)
	}
	limit := t.c.maxChunks
	if req.Size > 0 && (req.Size-1)/chunkSize+1 > int64(limit) {
		return nil, rpc.Errorf(rpc.Invalid, "a file of %d bytes in %s chunks needs %d chunks, more than the %d a file may have (--max-file-chunks); use a larger chunk size",
			req.Size, rpc.FormatBytes(chunkSize), (req.Size-1)/chunkSize+1, limit)
	}
	if err := t.safe.check("place chunks"); err != nil {
		return nil, err
	}
	// Checked before the session is placed and recorded; uploads opening
	// at the same moment can pass it together, so the bound is exceeded
	// by at most the UploadFile calls in flight.
	if open := t.uploads.Len(); open >= cfg.MaxUploads {
		return nil, rpc.Errorf(rpc.ResourceExhausted, "%d uploads open, at most %d (--max-uploads); retry once some have committed, been aborted or expired", open, cfg.MaxUploads)
	}
	// Fail fast when the cluster cannot hold even one chunk.
	if _, err := placement.Place(t.c.policy, t.nodes.candidates(), repl, 0, nil); err != nil {
		return nil, t.placementWarmup(err)
	}
	u := newUpload(rpc.NewSessionID(), p, chunkSize, repl, t.c.clock.Now())
	resp := &dfspb.UploadFileResponse{SessionId: string(u.id), ChunkSize: chunkSize, Replication: uint32(repl),
		MaxChunks: uint32(limit), SessionTimeoutMs: cfg.SessionTimeout.Milliseconds()}
	if req.Size > 0 {
		n := (req.Size-1)/chunkSize + 1
		for i := int64(0); i < min(n, planAhead); i++ {
			plan, err := t.place(u, uint32(i), nil)
			if err != nil {
				return nil, t.placementWarmup(err)
			}
			resp.Chunks = append(resp.Chunks, plan)
		}
		if err := t.persist(ctx, u); err != nil {
			return nil, err
		}
	}
	resp.ExpiresUnixMs = t.uploads.Put(u.id, u).UnixMilli()
	t.log.Debug().Str("session_id", string(u.id)).Str("path", string(p)).Int64("size", req.Size).Msg("upload opened")
	return resp, nil
}

// persist records u's header in the store, once.
func (t *term) persist(ctx context.Context, u *upload) error {
	u.persist.Lock()
	defer u.persist.Unlock()
	if u.persisted {
		return nil
	}
	u.mu.Lock()
	done := u.done
	u.mu.Unlock()
	if done {
		// Committed or aborted meanwhile: recording it now would bring
		// back the record its end deleted.
		return rpc.Errorf(rpc.NotFound, "upload session %s has ended", u.id)
	}
	head := u.snapshot()
	head.Chunks = nil
	if err := t.commit(ctx, &meta.Txn{PutUploads: []*meta.Upload{head}}); err != nil {
		return fmt.Errorf("record upload session: %w", err)
	}
	u.persisted = true
	return nil
}

// place chooses nodes for chunk index of u, avoiding excluded nodes, and
// adds the allocation to u (in memory; the caller persists it).
func (t *term) place(u *upload, index uint32, exclude map[rpc.NodeID]bool) (*dfspb.ChunkPlan, error) {
	nodes, err := placement.Place(t.c.policy, t.nodes.candidates(), u.replication, u.chunkSize, exclude)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil, rpc.Errorf(rpc.NotFound, "upload session %s already ended", u.id)
	}
	attempt := max(u.firstAttempt, u.next[index])
	if attempt >= maxAttempts {
		return nil, rpc.Errorf(rpc.ResourceExhausted, "chunk %d placed %d times; giving up", index, attempt)
	}
	id := rpc.NewChunkID(u.path, u.id, attempt, index)
	a := meta.Allocation{Index: index, Attempt: attempt, ID: id}
	plan := &dfspb.ChunkPlan{Index: index, ChunkId: string(id)}
	for i, n := range nodes {
		a.Nodes = append(a.Nodes, n.ID)
		t.nodes.reserve(n.ID, u.chunkSize)
		ref := &dfspb.NodeRef{NodeId: string(n.ID), Addr: n.Addr}
		if i == 0 {
			plan.Primary = ref
		} else {
			plan.Replicas = append(plan.Replicas, ref)
		}
	}
	u.add(a)
	return plan, nil
}

// AllocateChunk places the next chunk of an upload, or a retry of one.
func (c *Coordinator) AllocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.allocateChunk(ctx, req)
	return resp, rpc.ToStatus(err)
}

func (t *term) allocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	u, err := t.session(req.SessionId)
	if err != nil {
		return nil, err
	}
	if limit := t.c.maxChunks; req.Index >= uint32(limit) {
		return nil, rpc.Errorf(rpc.Invalid, "chunk %d: a file may have at most %d chunks (--max-file-chunks); use a larger chunk size", req.Index, limit)
	}
	exclude := map[rpc.NodeID]bool{}
	for _, s := range req.ExcludeNodeIds {
		id, err := rpc.ParseNodeID(s)
		if err != nil {
			return nil, err
		}
		exclude[id] = true
	}
	if err := t.safe.check("place chunks"); err != nil {
		return nil, err
	}
	plan, err := t.place(u, req.Index, exclude)
	if err != nil {
		return nil, t.placementWarmup(err)
	}
	if err := t.persist(ctx, u); err != nil {
		return nil, err
	}
	return &dfspb.AllocateChunkResponse{Chunk: plan}, nil
}

// UploadReceipts records receipts of completed chunks into an open
// upload session; every call keeps the session alive.
func (c *Coordinator) UploadReceipts(ctx context.Context, req *dfspb.UploadReceiptsRequest) (*dfspb.UploadReceiptsResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	u, err := t.session(req.SessionId)
	if err == nil {
		err = t.record(u, req.Chunks)
	}
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.UploadReceiptsResponse{ExpiresUnixMs: c.clock.Now().Add(t.uploads.TTL()).UnixMilli()}, nil
}

// record checks a batch of receipts against the session and keeps them,
// all or none. Each must name a chunk this session placed at that index,
// a size within the chunk size, well-formed digests, and at least the
// replication's worth of acknowledging nodes, each one the chunk was
// placed on. A later receipt for an index replaces an earlier one.
func (t *term) record(u *upload, rs []*dfspb.ChunkReceipt) error {
	if len(rs) > maxReceiptBatch {
		return rpc.Errorf(rpc.Invalid, "%d receipts in one call, at most %d", len(rs), maxReceiptBatch)
	}
	limit := uint32(t.c.maxChunks)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return rpc.Errorf(rpc.NotFound, "upload session %s already ended", u.id)
	}
	checked := make([]meta.Chunk, len(rs))
	for i, r := range rs {
		if r.Index >= limit {
			return rpc.Errorf(rpc.Invalid, "chunk %d: a file may have at most %d chunks", r.Index, limit)
		}
		cid, err := rpc.ParseChunkID(r.ChunkId)
		if err != nil {
			return err
		}
		a, ok := u.find(cid)
		if !ok || a.Index != r.Index {
			return rpc.Errorf(rpc.Invalid, "chunk %d: %s was not allocated for this position of this upload", r.Index, cid)
		}
		if r.Size <= 0 || r.Size > u.chunkSize {
			return rpc.Errorf(rpc.Invalid, "chunk %d: size %d out of range (1 to %d)", r.Index, r.Size, u.chunkSize)
		}
		if len(r.Digest) != rpc.DigestSize {
			return rpc.Errorf(rpc.Invalid, "chunk %d: digest must be %d bytes", r.Index, rpc.DigestSize)
		}
		if err := rpc.CheckFrameSize(r.FrameSize); err != nil {
			return fmt.Errorf("chunk %d: %w", r.Index, err)
		}
		acked := map[string]bool{}
		for _, n := range r.NodeIds {
			if a.Nodes != nil && !slices.Contains(a.Nodes, rpc.NodeID(n)) {
				return rpc.Errorf(rpc.Invalid, "chunk %d: node %s was not assigned this chunk", r.Index, n)
			}
			acked[n] = true
		}
		if len(acked) < u.replication {
			return rpc.Errorf(rpc.FailedPrecondition, "chunk %d: acknowledged by %d nodes, replication needs %d", r.Index, len(acked), u.replication)
		}
		checked[i] = meta.Chunk{ID: cid, Size: r.Size, Digest: bytes.Clone(r.Digest), FrameSize: r.FrameSize}
	}
	for i, r := range rs {
		u.receipts[r.Index] = checked[i]
	}
	return nil
}

// firstMissing returns the first of chunks 0 to n-1 that has no receipt.
func (u *upload) firstMissing(n uint32) (uint32, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range n {
		if _, ok := u.receipts[i]; !ok {
			return i, true
		}
	}
	return 0, false
}

func (t *term) session(s string) (*upload, error) {
	id, err := rpc.ParseSessionID(s)
	if err != nil {
		return nil, err
	}
	u, ok := t.uploads.Get(id)
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	return u, nil
}

// ConfirmUpload checks every chunk against what the datanodes reported
// storing and commits the new version durably and atomically, with the
// deletion of the version it replaces. On a verification failure the
// upload is aborted and its chunks collected; when the client gives up
// waiting, the session stays open and it may confirm again.
func (c *Coordinator) ConfirmUpload(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.confirmUpload(ctx, req)
	return resp, rpc.ToStatus(err)
}

func (t *term) confirmUpload(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, err
	}
	if err := t.safe.check("commit files"); err != nil {
		return nil, err
	}
	// Into the confirming set before out of the uploads: the orphan
	// collector, reading the uploads and then that set, always sees it.
	u, ok := t.uploads.Get(id)
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	err = t.checkConfirm(u, req)
	if err == nil {
		err = t.record(u, req.Chunks)
	}
	if err != nil {
		// A malformed confirm ends the upload, as a failed verification does.
		if taken, ok := t.uploads.Take(id); ok && taken == u {
			t.log.Warn().Err(err).Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload refused at confirm")
			t.abortUpload(u)
		}
		return nil, fmt.Errorf("confirm %s: %w", u.path, err)
	}
	if i, missing := u.firstMissing(req.ChunkCount); missing {
		// A coordinator that took over knows no receipt: the client sends
		// them again and confirms again.
		return &dfspb.ConfirmUploadResponse{MissingReceipts: true, FirstMissing: i}, nil
	}
	t.confirming.add(u)
	defer t.confirming.remove(u)
	if taken, ok := t.uploads.Take(id); !ok || taken != u {
		return nil, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	f, err := t.verify(ctx, u, req)
	if err == nil {
		err = t.commitUpload(ctx, u, f)
	}
	if err != nil {
		if k := rpc.KindOf(err); ctx.Err() != nil || k == rpc.Unavailable || k == rpc.ResourceExhausted {
			// The client may confirm again: once the coordinator is back,
			// or space is freed for the metadata (ResourceExhausted). The
			// session is open again, so that confirm's receipts are
			// taken; a commit whose outcome is unknown is still settled
			// first (checkUncertain, finishCommit).
			u.mu.Lock()
			u.done = false
			u.mu.Unlock()
			t.uploads.Put(id, u)
		} else {
			t.log.Warn().Err(err).Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload refused at confirm")
			t.abortUpload(u)
		}
		return nil, fmt.Errorf("confirm %s: %w", u.path, err)
	}
	t.log.Info().Str("path", string(f.Path)).Int64("size", f.Size).Int("chunks", len(f.Chunks)).Uint64("version", f.Version).Msg("file committed")
	t.c.metrics.filesCommitted.Inc()
	t.c.metrics.committedBytes.Add(float64(f.Size))
	return &dfspb.ConfirmUploadResponse{File: t.fileInfo(f, 0, min(len(f.Chunks), maxChunkPage))}, nil
}

// commitUpload makes f the current version of its path in one durable
// txn that also ends the session and records the deletion of every chunk
// that is no longer needed: the replaced version's, and the upload's failed
// attempts.
//
// A commit can fail with its outcome unknown (the store's reply was lost,
// or, with etcd, the deletions that did not fit in the first txn were not
// recorded): the new version may be durable. Then the path is read back;
// when this upload's version is current, the commit is finished rather
// than repeated, since a second commit would replace the first and delete
// its chunks. Until the outcome is known, a retried confirm commits only
// over the version the first attempt meant to replace.
func (t *term) commitUpload(ctx context.Context, u *upload, f *meta.File) error {
	defer t.paths.lock(f.Path)()
	u.persist.Lock() // no AllocateChunk records the session meanwhile
	defer u.persist.Unlock()
	kept := make(map[rpc.ChunkID]bool, len(f.Chunks))
	for _, ch := range f.Chunks {
		kept[ch.ID] = true
	}
	u.mu.Lock()
	u.done = true
	unused := t.deletionsFor(u.allocs, kept)
	u.mu.Unlock()
	for try := 0; ; try++ {
		old, err := t.store.Get(ctx, f.Path)
		if err != nil && rpc.KindOf(err) != rpc.NotFound {
			return err
		}
		if old != nil && old.Session == u.id {
			return t.finishCommit(ctx, u, f, old, unused)
		}
		if err := t.checkUncertain(u, f, old); err != nil {
			return err
		}
		txn := &meta.Txn{Path: f.Path, Put: f, DeleteUploads: []rpc.SessionID{u.id}, AddDeletions: unused}
		if old != nil {
			txn.Expect = old.Version
			txn.AddDeletions = append(slices.Clone(unused), t.chunkDeletions(old)...)
		}
		f.Version = txn.Expect + 1
		err = t.commit(ctx, txn)
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue // another commit of this path won; build on it
		}
		if err != nil && !errors.Is(err, meta.ErrConflict) {
			u.mu.Lock()
			u.uncertain, u.replacing = true, old
			u.mu.Unlock()
			if cur, gerr := t.store.Get(ctx, f.Path); gerr == nil && cur.Session == u.id {
				t.log.Warn().Err(err).Str("path", string(f.Path)).Msg("commit reported failed but applied; finishing it")
				return t.finishCommit(ctx, u, f, cur, unused)
			}
		}
		if err != nil {
			return err
		}
		t.refs.add(f)
		t.enqueue(txn.AddDeletions)
		if old != nil {
			t.unreference(ctx, old, txn.AddDeletions)
		}
		return nil
	}
}

// checkUncertain refuses to commit u over cur when an earlier commit of
// u had an unknown outcome and the path no longer holds the version that
// commit meant to replace, or has no file while u's chunks are queued for
// deletion: the earlier commit was then applied and its version replaced
// or deleted since, and committing again would bring back chunks that are
// being deleted.
func (t *term) checkUncertain(u *upload, f *meta.File, cur *meta.File) error {
	u.mu.Lock()
	uncertain, replacing := u.uncertain, u.replacing
	u.mu.Unlock()
	if !uncertain {
		return nil
	}
	changed := (cur == nil) != (replacing == nil) ||
		(cur != nil && (cur.Version != replacing.Version || cur.Session != replacing.Session))
	if !changed && cur == nil {
		for _, ch := range f.Chunks {
			for _, n := range t.locs.nodes(ch.ID) {
				changed = changed || t.gc.Queued(n, ch.ID)
			}
		}
	}
	if changed {
		return rpc.Errorf(rpc.FailedPrecondition, "%s changed after an earlier confirm of this upload failed with an unknown outcome; put the file again", f.Path)
	}
	return nil
}

// finishCommit completes the commit of u, found applied as cur though it
// was reported failed: it records again the deletions that commit
// carried (recording one twice changes nothing) and the end of the
// session, then updates refs and GC as a commit that succeeded does.
func (t *term) finishCommit(ctx context.Context, u *upload, f, cur *meta.File, unused []meta.Deletion) error {
	u.mu.Lock()
	replacing := u.replacing
	u.mu.Unlock()
	dels := slices.Clone(unused)
	if replacing != nil {
		dels = append(dels, t.chunkDeletions(replacing)...)
	}
	if err := t.commit(ctx, &meta.Txn{DeleteUploads: []rpc.SessionID{u.id}, AddDeletions: dels}); err != nil {
		return err
	}
	*f = *cur
	t.refs.add(cur)
	t.enqueue(dels)
	if replacing != nil {
		t.unreference(ctx, replacing, dels)
	}
	return nil
}

// reportedChunksOf returns, as allocations, the reported chunks that no
// file references and whose ID says they belong to u.
func (t *term) reportedChunksOf(u *upload) []meta.Allocation {
	var ids []rpc.ChunkID
	t.locs.each(func(id rpc.ChunkID, _ map[rpc.NodeID]replicaMeta) { ids = append(ids, id) })
	var out []meta.Allocation
	for _, id := range ids {
		if t.refs.has(id) {
			continue
		}
		if a, ok := u.find(id); ok {
			out = append(out, a)
		}
	}
	return out
}

// deletionsFor lists, for every allocation not kept, a deletion on each
// node it was placed on or reported by.
func (t *term) deletionsFor(allocs []meta.Allocation, kept map[rpc.ChunkID]bool) []meta.Deletion {
	var out []meta.Deletion
	for _, a := range allocs {
		if kept[a.ID] {
			continue
		}
		seen := map[rpc.NodeID]bool{}
		for _, n := range append(slices.Clone(a.Nodes), t.locs.nodes(a.ID)...) {
			if !seen[n] {
				seen[n] = true
				out = append(out, meta.Deletion{Node: n, Chunk: a.ID})
			}
		}
	}
	return out
}

// chunkDeletions lists a deletion for every reported copy of f's chunks.
func (t *term) chunkDeletions(f *meta.File) []meta.Deletion {
	var out []meta.Deletion
	for _, ch := range f.Chunks {
		for _, n := range t.locs.nodes(ch.ID) {
			out = append(out, meta.Deletion{Node: n, Chunk: ch.ID})
		}
	}
	return out
}

// unreference drops the chunks of old, which a commit just removed or
// replaced, from refs, then deletes any copy of them that is not among the
// recorded deletions: a repair copy that landed after those were listed.
// No file needs it, and it must not wait out the orphan grace period.
// replicator.Copy checks refs after it counts a copy, so of the two, one
// always sees the other.
func (t *term) unreference(ctx context.Context, old *meta.File, recorded []meta.Deletion) {
	t.refs.remove(old)
	listed := make(map[meta.Deletion]bool, len(recorded))
	for _, d := range recorded {
		listed[d] = true
	}
	var late []meta.Deletion
	for _, d := range t.chunkDeletions(old) {
		if !listed[d] {
			late = append(late, d)
		}
	}
	t.delete(ctx, late, "copied while its file was removed")
}

// enqueue hands recorded deletions to GC, to carry out after --gc-delay.
func (t *term) enqueue(dels []meta.Deletion) { t.enqueueAfter(t.c.cfg.GCDelay, dels) }

// enqueueAfter hands recorded deletions to GC, to carry out after delay.
func (t *term) enqueueAfter(delay time.Duration, dels []meta.Deletion) {
	for _, d := range dels {
		t.gc.EnqueueAfter(delay, d.Node, d.Chunk)
	}
}

// checkConfirm checks a confirm request's size, checksum and chunk count
// against the session and the file chunk limit.
func (t *term) checkConfirm(u *upload, req *dfspb.ConfirmUploadRequest) error {
	if len(req.Sha256) != rpc.DigestSize {
		return rpc.Errorf(rpc.Invalid, "file checksum must be %d bytes of SHA-256, got %d", rpc.DigestSize, len(req.Sha256))
	}
	if req.Size < 0 {
		return rpc.Errorf(rpc.Invalid, "negative size %d", req.Size)
	}
	want := (req.Size + u.chunkSize - 1) / u.chunkSize
	if want > int64(t.c.maxChunks) {
		return rpc.Errorf(rpc.Invalid, "a file of %d bytes in %s chunks needs %d chunks, more than the %d a file may have", req.Size, rpc.FormatBytes(u.chunkSize), want, t.c.maxChunks)
	}
	if int64(req.ChunkCount) != want {
		return rpc.Errorf(rpc.Invalid, "%d chunks confirmed, a file of %d bytes in %s chunks has %d", req.ChunkCount, req.Size, rpc.FormatBytes(u.chunkSize), want)
	}
	return nil
}

// verify checks the session's receipts (checkConfirm passed and every
// chunk has one) against the file's size and the datanodes' reports, and
// returns the file to commit.
func (t *term) verify(ctx context.Context, u *upload, req *dfspb.ConfirmUploadRequest) (*meta.File, error) {
	f := &meta.File{
		Path: u.path, Size: req.Size, SHA256: bytes.Clone(req.Sha256), ChunkSize: u.chunkSize,
		Replication: uint32(u.replication), Modified: t.c.clock.Now(), Session: u.id,
		Chunks: make([]meta.Chunk, 0, req.ChunkCount),
	}
	u.mu.Lock()
	for i := range req.ChunkCount {
		ch, ok := u.receipts[i]
		if !ok {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.FailedPrecondition, "chunk %d has no receipt", i)
		}
		if size := min(u.chunkSize, req.Size-int64(i)*u.chunkSize); ch.Size != size {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.Invalid, "chunk %d: size %d, expected %d", i, ch.Size, size)
		}
		f.Chunks = append(f.Chunks, ch)
	}
	u.mu.Unlock()

	// The datanodes report what they stored: wait for every chunk's copies
	// to be reported. Reports usually arrive before the confirm. A copy that
	// does not match the receipt fails the confirm at once: all copies came
	// from one stream, so the receipt is wrong. A node that acknowledged a
	// chunk may die before its report gets out; after reportWait, a chunk
	// with at least one verified copy is enough (every copy was acknowledged
	// as durable), and it is logged as under-replicated.
	rpcTimeout := t.c.cfg.RPCTimeout
	reportWait := min(rpcTimeout, 2*time.Second)
	short, bad := -1, -1
	var badNode rpc.NodeID
	complete := func(need int) func() bool {
		return func() bool {
			for i, ch := range f.Chunks {
				good, others := t.locs.check(ch)
				if len(others) > 0 {
					bad, badNode = i, others[0]
					return true
				}
				if len(good) < need {
					short = i
					return false
				}
			}
			return true
		}
	}
	wctx, cancel := context.WithTimeout(ctx, reportWait)
	err := t.locs.wait(wctx, complete(u.replication))
	cancel()
	if err != nil && bad < 0 && ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, rpcTimeout-reportWait)
		err = t.locs.wait(wctx, complete(1))
		cancel()
		if err == nil && bad < 0 {
			for i, ch := range f.Chunks {
				if good, _ := t.locs.check(ch); len(good) < u.replication {
					t.log.Warn().Str("path", string(f.Path)).Int("chunk", i).Str("chunk_id", string(ch.ID)).
						Int("reported", len(good)).Int("replication", u.replication).Msg("committing an under-replicated chunk: an acknowledging node did not report it")
				}
			}
		}
	}
	switch {
	case bad >= 0:
		return nil, rpc.Errorf(rpc.Invalid, "chunk %d (%s): size or digest does not match what node %s stored", bad, f.Chunks[bad].ID, badNode.Short())
	case err == nil:
		return f, nil
	case ctx.Err() != nil:
		return nil, rpc.Errorf(rpc.Canceled, "client gave up waiting for the datanodes' reports")
	}
	return nil, rpc.Errorf(rpc.FailedPrecondition, "chunk %d (%s): no datanode reported storing it within %s",
		short, f.Chunks[short].ID, rpcTimeout)
}

// AbortUpload ends a session without committing.
func (c *Coordinator) AbortUpload(ctx context.Context, req *dfspb.AbortUploadRequest) (*dfspb.AbortUploadResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, ok := t.uploads.Take(id)
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id))
	}
	t.abortUpload(u)
	return &dfspb.AbortUploadResponse{}, nil
}

// abortUpload ends u and records the deletion of every chunk it placed, in
// one txn, then hands them to GC. If the store is unreachable the session
// stays recorded and the next leader collects it when it expires there.
func (t *term) abortUpload(u *upload) {
	ctx, cancel := context.WithTimeout(t.ctx, t.c.cfg.RPCTimeout)
	defer cancel()
	defer t.paths.lock(u.path)()
	u.persist.Lock()
	defer u.persist.Unlock()
	u.mu.Lock()
	u.done = true
	allocs := slices.Clone(u.allocs)
	loaded := u.firstAttempt > 0
	u.mu.Unlock()
	if loaded {
		// Placed by an earlier term: find its chunks among the reported
		// ones that no file references, by their IDs.
		allocs = append(allocs, t.reportedChunksOf(u)...)
	}
	// A commit of this upload reported failed may have been applied: its
	// version's chunks are then the file's, not the upload's to delete.
	cur, err := t.store.Get(ctx, u.path)
	if err != nil && rpc.KindOf(err) != rpc.NotFound {
		t.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot read the path of an ending upload session; it expires again later")
		t.uploads.Put(u.id, u)
		return
	}
	if cur != nil && cur.Session == u.id {
		kept := make(map[rpc.ChunkID]bool, len(cur.Chunks))
		for _, ch := range cur.Chunks {
			kept[ch.ID] = true
		}
		if err := t.finishCommit(ctx, u, cur, cur, t.deletionsFor(allocs, kept)); err != nil {
			t.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot record the end of an upload session")
		}
		return
	}
	dels := t.deletionsFor(allocs, nil)
	if err := t.commit(ctx, &meta.Txn{DeleteUploads: []rpc.SessionID{u.id}, AddDeletions: dels}); err != nil {
		t.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot record the end of an upload session")
		return
	}
	t.enqueue(dels)
}
