package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/sessions"
	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
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
//
// A session opened for a file of one chunk (a known size up to the chunk
// size) is never recorded (volatile): its commit is its only durable
// write. A coordinator that restarts or takes over before the confirm
// does not know it, so the confirm fails with NotFound, the client puts
// the file again, and the chunk, unknown to any session, is an orphan.
type upload struct {
	id        rpc.SessionID
	path      rpc.Path
	chunkSize int64
	// size is the file's size when the client gave it, else 0: it sizes
	// the last chunk's placement and reservation.
	size        int64
	replication int
	created     time.Time
	// owner is the user who opened the upload ("" without an identity):
	// the owner of the file it creates, and the only user who may
	// confirm it.
	owner string

	// persist serializes the writes of this session to the store.
	persist   sync.Mutex
	persisted bool
	// maybePersisted is set when a txn recording the header failed with
	// its outcome unknown: the store may hold the header.
	maybePersisted bool
	// volatile is set for a session of one chunk: it is never recorded.
	volatile bool

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
	// settled is set when an uncertain upload ended (committed or
	// aborted), and its path's unsettle was undone.
	settled bool
}

// record returns u's ID when the store holds its header, or may, for a
// txn that ends u to delete it (deleting a header the store lacks changes
// nothing); the caller holds u.persist.
func (u *upload) record() []rpc.SessionID {
	if !u.persisted && !u.maybePersisted {
		return nil
	}
	return []rpc.SessionID{u.id}
}

// settle ends the unsettle of u's path, if its commit was uncertain, now
// that u has ended: committed, or aborted with its chunks accounted for.
func (up *uploads) settle(u *upload) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.uncertain && !u.settled {
		u.settled = true
		up.paths.settle(u.path)
	}
}

func newUpload(id rpc.SessionID, p rpc.Path, chunkSize int64, repl int, created time.Time) *upload {
	return &upload{id: id, path: p, chunkSize: chunkSize, replication: repl, created: created,
		byID: map[rpc.ChunkID]int{}, next: map[uint32]uint32{}, receipts: map[uint32]meta.Chunk{}}
}

// chunkBytes is the most chunk index of u can hold: the chunk size, or
// what is left of the file for its last chunk when the size is known. A
// 4 KiB file thus reserves 4 KiB on each node it is placed on, not a whole
// chunk size: reserving 8 MiB a file made a burst of small puts look like
// gigabytes a second going to the nodes until their next heartbeat.
func (u *upload) chunkBytes(index uint32) int64 {
	if u.size > 0 {
		if rest := u.size - int64(index)*u.chunkSize; rest > 0 && rest < u.chunkSize {
			return rest
		}
	}
	return u.chunkSize
}

func uploadFromMeta(m *meta.Upload) *upload {
	u := newUpload(m.ID, m.Path, m.ChunkSize, int(m.Replication), m.Created)
	u.persisted, u.firstAttempt, u.owner = true, maxAttempts/2, m.Owner
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
		Owner: u.owner, Chunks: slices.Clone(u.allocs)}
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

// uploadsConfig is what the uploads part takes of the configuration.
type uploadsConfig struct {
	chunkSize      int64 // the default
	replication    int   // the default
	maxChunks      int   // of one file: --max-file-chunks, or the store's bound
	maxUploads     int
	sessionTimeout time.Duration
	rpcTimeout     time.Duration
	suspectAfter   time.Duration
}

// uploadsDeps are the uploads part's collaborators.
type uploadsDeps struct {
	log     zerolog.Logger
	clock   clockwork.Clock
	store   meta.Namespace // reads the path a commit replaces
	commits meta.Committer
	nodes   *registry
	locs    *locations
	refs    *refIndex
	policy  placement.Policy
	safe    *safeMode
	dels    *collector
	metrics *metrics
	perms   perms
	// started is when the term began; warmup is set when the store held
	// data, so datanodes are still coming back (see placementWarmup).
	started time.Time
	warmup  bool
}

// uploads is the coordinator's part that runs metadata sessions: it opens
// them, places their chunks, takes their receipts, verifies and commits
// them, and aborts or expires them, collecting their chunks.
type uploads struct {
	uploadsConfig
	uploadsDeps
	// ctx is the term's: aborts on expiry run within it.
	ctx      context.Context
	sessions *sessions.Table[rpc.SessionID, *upload]
	// confirming holds the uploads ConfirmUpload took out of sessions
	// until their file is committed (its chunks are then in refs) or the
	// session is put back or aborted, so no scan in between takes their
	// chunks for orphans.
	confirming confirmingSet
	// paths serializes the commits of each path: reading its current
	// version, committing and updating refs are one step to the others.
	paths *pathLocks
}

func newUploads(ctx context.Context, cfg uploadsConfig, deps uploadsDeps) *uploads {
	up := &uploads{uploadsConfig: cfg, uploadsDeps: deps, ctx: ctx, paths: &pathLocks{}}
	up.sessions = sessions.New(cfg.sessionTimeout, deps.clock, func(id rpc.SessionID, u *upload) {
		up.log.Info().Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload session expired; collecting its chunks")
		up.abort(u)
	})
	return up
}

// load opens again a session the store recorded.
func (up *uploads) load(m *meta.Upload) { up.sessions.Put(m.ID, uploadFromMeta(m)) }

// run expires sessions until ctx ends.
func (up *uploads) run(ctx context.Context) { up.sessions.Run(ctx, time.Second) }

// open returns how many sessions are open.
func (up *uploads) open() int { return up.sessions.Len() }

// uploadRequest asks for a new session: a size of -1 is unknown, and a
// chunk size or replication of 0 takes the default.
type uploadRequest struct {
	path        rpc.Path
	size        int64
	chunkSize   int64
	replication int
	cond        precondition
}

// precondition is what a write asks of the file it replaces: nothing
// (the zero value), that there is none (notExist), or that it is at a
// version. S3's If-None-Match: * and If-Match, and no-clobber, map onto it.
type precondition struct {
	notExist bool
	version  uint64
}

// check refuses to replace cur (nil: no file at p) against c: a file that
// exists with rpc.Exists, a version that is not the one asked for with
// rpc.FailedPrecondition.
func (c precondition) check(p rpc.Path, cur *meta.File) error {
	switch {
	case c.notExist && cur != nil:
		return rpc.Errorf(rpc.Exists, "%s already exists (version %d)", p, cur.Version)
	case c.version != 0 && cur == nil:
		return rpc.Errorf(rpc.FailedPrecondition, "%s: no file at version %d (there is none)", p, c.version)
	case c.version != 0 && cur.Version != c.version:
		return rpc.Errorf(rpc.FailedPrecondition, "%s is at version %d, not %d", p, cur.Version, c.version)
	}
	return nil
}

// current returns the file at p, or nil when there is none.
func current(ctx context.Context, ns meta.Namespace, p rpc.Path) (*meta.File, error) {
	f, err := ns.Get(ctx, p)
	if rpc.KindOf(err) == rpc.NotFound {
		return nil, nil
	}
	return f, err
}

// opened is a new session and the plans of its first chunks.
type opened struct {
	session     rpc.SessionID
	chunkSize   int64
	replication int
	maxChunks   int
	timeout     time.Duration
	expires     time.Time
	plans       []plan
}

// plan says where one chunk goes: nodes[0] is the primary, which
// forwards to the others.
type plan struct {
	index uint32
	id    rpc.ChunkID
	nodes []placement.Node
}

// receipt is a client's word that a chunk is stored: acknowledged by
// nodes, with its size, frame size and digest. Its fields are checked by
// record, not when decoded.
type receipt struct {
	index     uint32
	id        string
	size      int64
	digest    []byte
	frameSize int64
	nodes     []rpc.NodeID
}

// begin opens a metadata session for a new version of a path.
func (up *uploads) begin(ctx context.Context, req uploadRequest) (*opened, error) {
	chunkSize := req.chunkSize
	if chunkSize == 0 {
		chunkSize = up.chunkSize
	}
	if err := rpc.CheckChunkSize(chunkSize); err != nil {
		return nil, err
	}
	repl := req.replication
	if repl == 0 {
		repl = up.replication
	}
	if repl < 1 || repl > rpc.MaxReplication {
		return nil, rpc.Errorf(rpc.Invalid, "replication %d out of range (1 to %d)", repl, rpc.MaxReplication)
	}
	if req.size < -1 {
		return nil, rpc.Errorf(rpc.Invalid, "size %d: must be -1 (unknown) or the file's size", req.size)
	}
	limit := up.maxChunks
	if req.size > 0 && (req.size-1)/chunkSize+1 > int64(limit) {
		return nil, rpc.Errorf(rpc.Invalid, "a file of %d bytes in %s chunks needs %d chunks, more than the %d a file may have (--max-file-chunks); use a larger chunk size",
			req.size, rpc.FormatBytes(chunkSize), (req.size-1)/chunkSize+1, limit)
	}
	if err := up.safe.check("place chunks"); err != nil {
		return nil, err
	}
	_, walked, err := up.perms.createResolved(ctx, req.path)
	if err == nil {
		// Refuse an upload that its commit would refuse (meta.Committer): p
		// is a directory (an empty one too), or one of its parents is a
		// file. Checked as the upload opens, so that no byte is sent (three
		// copies of it) for a commit bound to fail; the commit checks
		// again, in its transaction, against what changed meanwhile.
		err = walked.conflict(req.path)
	}
	if err != nil {
		return nil, err
	}
	if req.cond != (precondition{}) {
		cur, err := current(ctx, up.store, req.path)
		if err != nil {
			return nil, err
		}
		if err := req.cond.check(req.path, cur); err != nil {
			return nil, err
		}
	}
	// Checked before the session is placed and recorded; uploads opening
	// at the same moment can pass it together, so the bound is exceeded
	// by at most the UploadFile calls in flight.
	if open := up.sessions.Len(); open >= up.maxUploads {
		return nil, rpc.Errorf(rpc.ResourceExhausted, "%d uploads open, at most %d (--max-uploads); retry once some have committed, been aborted or expired", open, up.maxUploads)
	}
	// Fail fast when the cluster cannot hold even one chunk.
	if _, err := placement.Place(up.policy, up.nodes.candidates(), repl, 0, nil); err != nil {
		return nil, up.placementWarmup(err)
	}
	u := newUpload(rpc.NewSessionID(), req.path, chunkSize, repl, up.clock.Now())
	u.size = max(req.size, 0)
	if id, ok := auth.FromContext(ctx); ok {
		u.owner = id.User
	}
	out := &opened{session: u.id, chunkSize: chunkSize, replication: repl, maxChunks: limit, timeout: up.sessionTimeout}
	if req.size > 0 {
		n := (req.size-1)/chunkSize + 1
		// The whole file placed at once: the commit is the one durable
		// write (see upload).
		u.volatile = n == 1
		for i := int64(0); i < min(n, planAhead); i++ {
			p, err := up.place(u, uint32(i), nil)
			if err != nil {
				return nil, up.placementWarmup(err)
			}
			out.plans = append(out.plans, p)
		}
		if err := up.persist(ctx, u); err != nil {
			return nil, err
		}
	}
	out.expires = up.sessions.Put(u.id, u)
	up.log.Debug().Str("session_id", string(u.id)).Str("path", string(req.path)).Int64("size", req.size).Msg("upload opened")
	return out, nil
}

// persist records u's header in the store, once, unless u is volatile.
func (up *uploads) persist(ctx context.Context, u *upload) error {
	u.persist.Lock()
	defer u.persist.Unlock()
	if u.persisted || u.volatile {
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
	if err := up.commits.Commit(ctx, &meta.Txn{PutUploads: []*meta.Upload{head}}); err != nil {
		u.maybePersisted = u.maybePersisted || outcomeUnknown(err)
		return rpc.Errorf(rpc.Other, "record upload session: %w", err)
	}
	u.persisted = true
	return nil
}

// place chooses nodes for chunk index of u, avoiding excluded nodes, and
// adds the allocation to u (in memory; the caller persists it).
func (up *uploads) place(u *upload, index uint32, exclude map[rpc.NodeID]bool) (plan, error) {
	need := u.chunkBytes(index)
	nodes, err := placement.Place(up.policy, up.nodes.candidates(), u.replication, need, exclude)
	if err != nil {
		return plan{}, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return plan{}, rpc.Errorf(rpc.NotFound, "upload session %s already ended", u.id)
	}
	attempt := max(u.firstAttempt, u.next[index])
	if attempt >= maxAttempts {
		return plan{}, rpc.Errorf(rpc.ResourceExhausted, "chunk %d placed %d times; giving up", index, attempt)
	}
	id := rpc.NewChunkID(u.path, u.id, attempt, index)
	a := meta.Allocation{Index: index, Attempt: attempt, ID: id}
	for _, n := range nodes {
		a.Nodes = append(a.Nodes, n.ID)
		up.nodes.reserve(n.ID, need)
	}
	u.add(a)
	return plan{index: index, id: id, nodes: nodes}, nil
}

// allocate places the next chunk of an upload, or a retry of one away
// from the excluded nodes.
func (up *uploads) allocate(ctx context.Context, id rpc.SessionID, index uint32, excludeIDs []string) (plan, error) {
	u, err := up.session(id)
	if err == nil {
		err = owns(ctx, u)
	}
	if err != nil {
		return plan{}, err
	}
	if limit := up.maxChunks; index >= uint32(limit) {
		return plan{}, rpc.Errorf(rpc.Invalid, "chunk %d: a file may have at most %d chunks (--max-file-chunks); use a larger chunk size", index, limit)
	}
	exclude := make(map[rpc.NodeID]bool, len(excludeIDs))
	for _, s := range excludeIDs {
		n, err := rpc.ParseNodeID(s)
		if err != nil {
			return plan{}, err
		}
		exclude[n] = true
	}
	if err := up.safe.check("place chunks"); err != nil {
		return plan{}, err
	}
	p, err := up.place(u, index, exclude)
	if err != nil {
		return plan{}, up.placementWarmup(err)
	}
	if err := up.persist(ctx, u); err != nil {
		return plan{}, err
	}
	return p, nil
}

// receipts records receipts of completed chunks into an open session and
// returns when the session, kept alive by the call, expires.
func (up *uploads) receipts(ctx context.Context, id rpc.SessionID, rs []receipt) (time.Time, error) {
	u, err := up.session(id)
	if err == nil {
		err = owns(ctx, u)
	}
	if err == nil {
		err = up.record(u, rs)
	}
	if err != nil {
		return time.Time{}, err
	}
	return up.clock.Now().Add(up.sessions.TTL()), nil
}

// record checks a batch of receipts against the session and keeps them,
// all or none. Each must name a chunk this session placed at that index,
// a size within the chunk size, well-formed digests, and at least the
// replication's worth of acknowledging nodes, each one the chunk was
// placed on. A later receipt for an index replaces an earlier one.
func (up *uploads) record(u *upload, rs []receipt) error {
	if len(rs) > maxReceiptBatch {
		return rpc.Errorf(rpc.Invalid, "%d receipts in one call, at most %d", len(rs), maxReceiptBatch)
	}
	limit := uint32(up.maxChunks)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return rpc.Errorf(rpc.NotFound, "upload session %s already ended", u.id)
	}
	checked := make([]meta.Chunk, len(rs))
	for i, r := range rs {
		if r.index >= limit {
			return rpc.Errorf(rpc.Invalid, "chunk %d: a file may have at most %d chunks", r.index, limit)
		}
		cid, err := rpc.ParseChunkID(r.id)
		if err != nil {
			return err
		}
		a, ok := u.find(cid)
		if !ok || a.Index != r.index {
			return rpc.Errorf(rpc.Invalid, "chunk %d: %s was not allocated for this position of this upload", r.index, cid)
		}
		if r.size <= 0 || r.size > u.chunkSize {
			return rpc.Errorf(rpc.Invalid, "chunk %d: size %d out of range (1 to %d)", r.index, r.size, u.chunkSize)
		}
		if len(r.digest) != rpc.DigestSize {
			return rpc.Errorf(rpc.Invalid, "chunk %d: digest must be %d bytes", r.index, rpc.DigestSize)
		}
		if err := rpc.CheckFrameSize(r.frameSize); err != nil {
			return rpc.Errorf(rpc.Other, "chunk %d: %w", r.index, err)
		}
		acked := map[rpc.NodeID]bool{}
		for _, n := range r.nodes {
			if a.Nodes != nil && !slices.Contains(a.Nodes, n) {
				return rpc.Errorf(rpc.Invalid, "chunk %d: node %s was not assigned this chunk", r.index, n)
			}
			acked[n] = true
		}
		if len(acked) < u.replication {
			return rpc.Errorf(rpc.FailedPrecondition, "chunk %d: acknowledged by %d nodes, replication needs %d", r.index, len(acked), u.replication)
		}
		checked[i] = meta.Chunk{ID: cid, Size: r.size, Digest: bytes.Clone(r.digest), FrameSize: r.frameSize}
	}
	for i, r := range rs {
		u.receipts[r.index] = checked[i]
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

func (up *uploads) session(id rpc.SessionID) (*upload, error) {
	u, ok := up.sessions.Get(id)
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	return u, nil
}

// confirmation asks to commit a session: the file's size and SHA-256, its
// chunk count, and the last receipts.
type confirmation struct {
	session  rpc.SessionID
	size     int64
	sha256   []byte
	chunks   uint32
	receipts []receipt
	cond     precondition
	metadata map[string]string
}

// confirmed is the outcome of a confirm: the committed file, or, with
// missing set, the first chunk whose receipt the coordinator lacks.
type confirmed struct {
	file         *meta.File
	missing      bool
	firstMissing uint32
}

// confirm checks every chunk against what the datanodes reported storing
// and commits the new version durably and atomically, with the deletion
// of the version it replaces. On a verification failure the upload is
// aborted and its chunks collected; when the client gives up waiting, the
// session stays open and it may confirm again.
func (up *uploads) confirm(ctx context.Context, req confirmation) (confirmed, error) {
	id := req.session
	if err := up.safe.check("commit files"); err != nil {
		return confirmed{}, err
	}
	// Into the confirming set before out of the sessions: the orphan
	// collector, reading the sessions and then that set, always sees it.
	u, ok := up.sessions.Get(id)
	if !ok {
		return confirmed{}, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	if err := owns(ctx, u); err != nil {
		return confirmed{}, err
	}
	err := up.checkConfirm(u, req)
	if err == nil {
		err = up.record(u, req.receipts)
	}
	if err != nil {
		// A malformed confirm ends the upload, as a failed verification does.
		if taken, ok := up.sessions.Take(id); ok && taken == u {
			up.log.Warn().Err(err).Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload refused at confirm")
			up.abort(u)
		}
		return confirmed{}, rpc.Errorf(rpc.Other, "confirm %s: %w", u.path, err)
	}
	if i, missing := u.firstMissing(req.chunks); missing {
		// A coordinator that took over knows no receipt: the client sends
		// them again and confirms again.
		return confirmed{missing: true, firstMissing: i}, nil
	}
	up.confirming.add(u)
	defer up.confirming.remove(u)
	if taken, ok := up.sessions.Take(id); !ok || taken != u {
		return confirmed{}, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	f, err := up.verify(ctx, u, req)
	if err == nil {
		err = up.commitUpload(ctx, u, f, req.cond)
	}
	if err == nil {
		up.settle(u)
	}
	if err != nil {
		up.failed(ctx, u, err)
		return confirmed{}, rpc.Errorf(rpc.Other, "confirm %s: %w", u.path, err)
	}
	up.log.Info().Str("path", string(f.Path)).Int64("size", f.Size).Int("chunks", len(f.Chunks)).Uint64("version", f.Version).Msg("file committed")
	up.metrics.filesCommitted.Inc()
	up.metrics.committedBytes.Add(float64(f.Size))
	return confirmed{file: f}, nil
}

// failed settles u after its verification or commit failed with err:
// when the client may confirm again (it gave up waiting, the coordinator
// is back, or space is freed for the metadata: ResourceExhausted), the
// session is open again, so that confirm's receipts are taken, and a
// commit whose outcome is unknown is still settled first (checkUncertain,
// finishCommit); otherwise the upload is aborted.
func (up *uploads) failed(ctx context.Context, u *upload, err error) {
	if k := rpc.KindOf(err); ctx.Err() != nil || k == rpc.Unavailable || k == rpc.ResourceExhausted {
		u.mu.Lock()
		u.done = false
		u.mu.Unlock()
		up.sessions.Put(u.id, u)
		return
	}
	up.log.Warn().Err(err).Str("session_id", string(u.id)).Str("path", string(u.path)).Msg("upload refused at confirm")
	up.abort(u)
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
func (up *uploads) commitUpload(ctx context.Context, u *upload, f *meta.File, cond precondition) error {
	defer up.paths.lock(f.Path)()
	u.persist.Lock() // no AllocateChunk records the session meanwhile
	defer u.persist.Unlock()
	kept := make(map[rpc.ChunkID]bool, len(f.Chunks))
	for _, ch := range f.Chunks {
		kept[ch.ID] = true
	}
	u.mu.Lock()
	u.done = true
	unused := up.locs.deletionsFor(u.allocs, kept)
	u.mu.Unlock()
	for try := 0; ; try++ {
		old, err := up.store.Get(ctx, f.Path)
		if err != nil && rpc.KindOf(err) != rpc.NotFound {
			return err
		}
		if old != nil && old.Session == u.id {
			return up.finishCommit(ctx, u, f, old, unused)
		}
		if err := up.checkUncertain(u, f, old); err != nil {
			return err
		}
		if err := cond.check(f.Path, old); err != nil {
			return err
		}
		// The permissions again, as they are now: the file may have
		// been made, or its mode or parent changed, since the upload
		// opened (which checked them then).
		c, err := up.perms.createFor(ctx, u.owner, f.Path)
		if err != nil {
			return err
		}
		txn := &meta.Txn{Path: f.Path, Put: f, DeleteUploads: u.record(), AddDeletions: unused}
		if old == nil {
			f.Attr, txn.Parents = c.file, c.dir
		}
		if old != nil {
			f.Attr = old.Attr // a new version keeps the attributes of the one it replaces
			txn.Expect = old.Version
			txn.AddDeletions = append(slices.Clone(unused), up.locs.deletionsOf(old)...)
		}
		f.Version = txn.Expect + 1
		err = up.commits.Commit(ctx, txn)
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue // another commit of this path won; build on it
		}
		if err != nil && outcomeUnknown(err) {
			u.mu.Lock()
			if !u.uncertain {
				up.paths.unsettle(f.Path) // no move takes the path away until settled
			}
			u.uncertain, u.replacing = true, old
			u.mu.Unlock()
			if cur, gerr := up.store.Get(ctx, f.Path); gerr == nil && cur.Session == u.id {
				up.log.Warn().Err(err).Str("path", string(f.Path)).Msg("commit reported failed but applied; finishing it")
				return up.finishCommit(ctx, u, f, cur, unused)
			}
		}
		if err != nil {
			return err
		}
		up.refs.add(f)
		up.dels.queue.file(f)
		up.dels.enqueue(txn.AddDeletions)
		if old != nil {
			up.dels.unreference(ctx, old, txn.AddDeletions)
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
func (up *uploads) checkUncertain(u *upload, f *meta.File, cur *meta.File) error {
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
			for _, n := range up.locs.nodes(ch.ID) {
				changed = changed || up.dels.queued(n, ch.ID)
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
func (up *uploads) finishCommit(ctx context.Context, u *upload, f, cur *meta.File, unused []meta.Deletion) error {
	u.mu.Lock()
	replacing := u.replacing
	u.mu.Unlock()
	dels := slices.Clone(unused)
	if replacing != nil {
		dels = append(dels, up.locs.deletionsOf(replacing)...)
	}
	if txn := (&meta.Txn{DeleteUploads: u.record(), AddDeletions: dels}); len(txn.DeleteUploads)+len(txn.AddDeletions) > 0 {
		if err := up.commits.Commit(ctx, txn); err != nil {
			return err
		}
	}
	*f = *cur
	up.refs.add(cur)
	up.dels.queue.file(cur)
	up.dels.enqueue(dels)
	if replacing != nil {
		up.dels.unreference(ctx, replacing, dels)
	}
	return nil
}

// checkConfirm checks a confirm request's size, checksum and chunk count
// against the session and the file chunk limit.
func (up *uploads) checkConfirm(u *upload, req confirmation) error {
	if err := meta.CheckMetadata(req.metadata); err != nil {
		return err
	}
	if len(req.sha256) != rpc.DigestSize {
		return rpc.Errorf(rpc.Invalid, "file checksum must be %d bytes of SHA-256, got %d", rpc.DigestSize, len(req.sha256))
	}
	if req.size < 0 {
		return rpc.Errorf(rpc.Invalid, "negative size %d", req.size)
	}
	want := (req.size + u.chunkSize - 1) / u.chunkSize
	if want > int64(up.maxChunks) {
		return rpc.Errorf(rpc.Invalid, "a file of %d bytes in %s chunks needs %d chunks, more than the %d a file may have", req.size, rpc.FormatBytes(u.chunkSize), want, up.maxChunks)
	}
	if int64(req.chunks) != want {
		return rpc.Errorf(rpc.Invalid, "%d chunks confirmed, a file of %d bytes in %s chunks has %d", req.chunks, req.size, rpc.FormatBytes(u.chunkSize), want)
	}
	return nil
}

// verify checks the session's receipts (checkConfirm passed and every
// chunk has one) against the file's size and the datanodes' reports, and
// returns the file to commit.
func (up *uploads) verify(ctx context.Context, u *upload, req confirmation) (*meta.File, error) {
	f, err := u.file(req, up.clock.Now())
	if err != nil {
		return nil, err
	}
	if err := up.awaitReports(ctx, f, u.replication); err != nil {
		return nil, err
	}
	return f, nil
}

// file returns the file u's receipts make, modified at now, checking that
// every chunk has a receipt of the size the file's size gives it.
func (u *upload) file(req confirmation, now time.Time) (*meta.File, error) {
	f := &meta.File{
		Path: u.path, Size: req.size, SHA256: bytes.Clone(req.sha256), ChunkSize: u.chunkSize,
		Replication: uint32(u.replication), Modified: now, Session: u.id, Metadata: req.metadata,
		Chunks: make([]meta.Chunk, 0, req.chunks),
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range req.chunks {
		ch, ok := u.receipts[i]
		if !ok {
			return nil, rpc.Errorf(rpc.FailedPrecondition, "chunk %d has no receipt", i)
		}
		if size := min(u.chunkSize, req.size-int64(i)*u.chunkSize); ch.Size != size {
			return nil, rpc.Errorf(rpc.Invalid, "chunk %d: size %d, expected %d", i, ch.Size, size)
		}
		f.Chunks = append(f.Chunks, ch)
	}
	return f, nil
}

// awaitReports waits for the datanodes to report storing every chunk of
// f. Reports usually arrive before the confirm. A copy that does not
// match the receipt fails the confirm at once: all copies came from one
// stream, so the receipt is wrong. A node that acknowledged a chunk may
// die before its report gets out; after reportWait, a chunk with at least
// one verified copy is enough (every copy was acknowledged as durable),
// and it is logged as under-replicated.
func (up *uploads) awaitReports(ctx context.Context, f *meta.File, repl int) error {
	reportWait := min(up.rpcTimeout, 2*time.Second)
	r := &reportCheck{locs: up.locs, chunks: f.Chunks, short: -1, bad: -1}
	wctx, cancel := context.WithTimeout(ctx, reportWait)
	err := up.locs.wait(wctx, r.complete(repl))
	cancel()
	if err != nil && r.bad < 0 && ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, up.rpcTimeout-reportWait)
		err = up.locs.wait(wctx, r.complete(1))
		cancel()
		if err == nil && r.bad < 0 {
			up.warnUnderReplicated(f, repl)
		}
	}
	switch {
	case r.bad >= 0:
		return rpc.Errorf(rpc.Invalid, "chunk %d (%s): size or digest does not match what node %s stored", r.bad, f.Chunks[r.bad].ID, r.badNode.Short())
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return rpc.Errorf(rpc.Canceled, "client gave up waiting for the datanodes' reports")
	}
	return rpc.Errorf(rpc.FailedPrecondition, "chunk %d (%s): no datanode reported storing it within %s",
		r.short, f.Chunks[r.short].ID, up.rpcTimeout)
}

// warnUnderReplicated logs each chunk of f with fewer reported good
// copies than repl.
func (up *uploads) warnUnderReplicated(f *meta.File, repl int) {
	for i, ch := range f.Chunks {
		if good, _ := up.locs.check(ch); len(good) < repl {
			up.log.Warn().Str("path", string(f.Path)).Int("chunk", i).Str("chunk_id", string(ch.ID)).
				Int("reported", len(good)).Int("replication", repl).Msg("committing an under-replicated chunk: an acknowledging node did not report it")
		}
	}
}

// reportCheck tells whether every chunk has its reported copies: bad is
// the first chunk with a copy that does not match its receipt (on
// badNode), short the last chunk found with too few good copies.
type reportCheck struct {
	locs    *locations
	chunks  []meta.Chunk
	short   int
	bad     int
	badNode rpc.NodeID
}

// complete returns a check that every chunk has need good copies, or one
// that does not match.
func (r *reportCheck) complete(need int) func() bool {
	return func() bool {
		for i, ch := range r.chunks {
			good, others := r.locs.check(ch)
			if len(others) > 0 {
				r.bad, r.badNode = i, others[0]
				return true
			}
			if len(good) < need {
				r.short = i
				return false
			}
		}
		return true
	}
}

// end ends a session without committing; its chunks are collected.
func (up *uploads) end(ctx context.Context, id rpc.SessionID) error {
	u, ok := up.sessions.Get(id)
	if !ok {
		return rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	if err := owns(ctx, u); err != nil {
		return err
	}
	if u, ok = up.sessions.Take(id); !ok {
		return rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	up.abort(u)
	return nil
}

// owns refuses a caller who is not the user who opened u: only they may
// place its chunks, record their receipts, confirm or abort it. Without
// an identity (plain text, in-process calls) it checks nothing.
func owns(ctx context.Context, u *upload) error {
	if caller, ok := auth.FromContext(ctx); ok && u.owner != "" && caller.User != u.owner {
		return rpc.Errorf(rpc.Permission, "permission denied: upload session %s is %s's, not %s's", u.id, u.owner, caller.User)
	}
	return nil
}

// abort ends u and records the deletion of every chunk it placed, in one
// txn, then hands them to GC. If the store is unreachable the session
// stays recorded and the next leader collects it when it expires there
// (a volatile session's chunks are orphans, and collected as such).
func (up *uploads) abort(u *upload) {
	ctx, cancel := context.WithTimeout(up.ctx, up.rpcTimeout)
	defer cancel()
	defer up.paths.lock(u.path)()
	u.persist.Lock()
	defer u.persist.Unlock()
	allocs := up.endAllocs(u)
	// A commit of this upload reported failed may have been applied: its
	// version's chunks are then the file's, not the upload's to delete.
	cur, err := up.store.Get(ctx, u.path)
	if err != nil && rpc.KindOf(err) != rpc.NotFound {
		up.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot read the path of an ending upload session; it expires again later")
		up.sessions.Put(u.id, u)
		return
	}
	if cur != nil && cur.Session == u.id {
		kept := make(map[rpc.ChunkID]bool, len(cur.Chunks))
		for _, ch := range cur.Chunks {
			kept[ch.ID] = true
		}
		if err := up.finishCommit(ctx, u, cur, cur, up.locs.deletionsFor(allocs, kept)); err != nil {
			up.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot record the end of an upload session")
			return
		}
		up.settle(u)
		return
	}
	dels := up.locs.deletionsFor(allocs, nil)
	if txn := (&meta.Txn{DeleteUploads: u.record(), AddDeletions: dels}); len(txn.DeleteUploads)+len(txn.AddDeletions) > 0 {
		if err := up.commits.Commit(ctx, txn); err != nil {
			up.log.Warn().Err(err).Str("session_id", string(u.id)).Msg("cannot record the end of an upload session")
			return
		}
	}
	up.settle(u)
	up.dels.enqueue(dels)
}

// endAllocs marks u done and returns every chunk it placed: in this term,
// and, for a session loaded from the store, the reported chunks its ID
// says are its own.
func (up *uploads) endAllocs(u *upload) []meta.Allocation {
	u.mu.Lock()
	u.done = true
	allocs := slices.Clone(u.allocs)
	loaded := u.firstAttempt > 0
	u.mu.Unlock()
	if loaded {
		// Placed by an earlier term: find its chunks among the reported
		// ones that no file references, by their IDs.
		allocs = append(allocs, up.reportedChunksOf(u)...)
	}
	return allocs
}

// reportedChunksOf returns, as allocations, the reported chunks that no
// file references and whose ID says they belong to u.
func (up *uploads) reportedChunksOf(u *upload) []meta.Allocation {
	var ids []rpc.ChunkID
	up.locs.each(func(id rpc.ChunkID) { ids = append(ids, id) })
	var out []meta.Allocation
	for _, id := range ids {
		if up.refs.has(id) {
			continue
		}
		if a, ok := u.find(id); ok {
			out = append(out, a)
		}
	}
	return out
}

// placementWarmup fails a placement that found too few datanodes with
// NotServing while the term is younger than one suspect-after period, in a
// cluster that held data: its datanodes are still coming back to a
// coordinator that just restarted or took over, so the client should retry
// rather than give up.
func (up *uploads) placementWarmup(err error) error {
	age := up.clock.Now().Sub(up.started)
	if !up.warmup || rpc.KindOf(err) != rpc.FailedPrecondition || age >= up.suspectAfter {
		return err
	}
	return &rpc.Error{Kind: rpc.Unavailable,
		Msg: fmt.Sprintf("coordinator took over %s ago and is still waiting for datanodes to register: %s", age.Round(100*time.Millisecond), err),
		// The not-serving detail, and the placement's error as the cause.
		Err: errors.Join(&rpc.NotServing{RetryAfter: 500 * time.Millisecond}, err)}
}

// openChunks is what the open uploads claim at one moment: the chunks
// they placed in this term, and, through owns, the chunks an upload
// loaded from the store recognizes by their IDs.
type openChunks struct {
	placed map[rpc.ChunkID]bool
	open   []*upload
}

// claims returns what the open uploads claim now. An upload moves from
// the sessions to the confirming set to refs (or back to the sessions
// when its confirm may be retried): reading them in that order sees every
// upload at least once.
func (up *uploads) claims() openChunks {
	var open []*upload
	up.sessions.Range(func(_ rpc.SessionID, u *upload) { open = append(open, u) })
	open = append(open, up.confirming.list()...)
	up.sessions.Range(func(_ rpc.SessionID, u *upload) { open = append(open, u) })
	placed := map[rpc.ChunkID]bool{}
	for _, u := range open {
		u.mu.Lock()
		for _, a := range u.allocs {
			placed[a.ID] = true
		}
		u.mu.Unlock()
	}
	return openChunks{placed: placed, open: open}
}

// owns reports whether an open upload, from before this term, placed id.
func (o openChunks) owns(id rpc.ChunkID) bool {
	return slices.ContainsFunc(o.open, func(u *upload) bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		_, ok := u.find(id)
		return ok
	})
}

// pathLocks holds a mutex per path while some change of it runs, and the
// tree lock: a change of one or two paths (a commit, a removal, a copy, a
// file's rename) holds it shared, a directory's move exclusively, so no
// change of a path runs while a move takes that path elsewhere (a change
// reads its paths, then commits on what it read).
type pathLocks struct {
	tree      sync.RWMutex
	mu        sync.Mutex
	m         map[rpc.Path]*pathLock
	unsettled map[rpc.Path]int
}

type pathLock struct {
	sync.Mutex
	users int
}

// unsettle marks p as the path of an upload whose commit has an unknown
// outcome: it may hold the upload's version, which the term's chunk index
// does not count, and which only a look at p can find. Until settle, no
// move may take p elsewhere (see unsettledBelow).
func (l *pathLocks) unsettle(p rpc.Path) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unsettled == nil {
		l.unsettled = map[rpc.Path]int{}
	}
	l.unsettled[p]++
}

// settle ends an unsettle of p.
func (l *pathLocks) settle(p rpc.Path) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unsettled[p]--; l.unsettled[p] <= 0 {
		delete(l.unsettled, p)
	}
}

// unsettledBelow returns an unsettled path that is dir or lies below it,
// or "".
func (l *pathLocks) unsettledBelow(dir rpc.Path) rpc.Path {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.unsettled {
		if p.IsBelow(dir) {
			return p
		}
	}
	return ""
}

// lock holds the tree lock shared and locks the paths given, in order (a
// path named twice once), and returns the unlock. The tree lock is taken
// once per call: a caller never holds two locks of it at once, which a
// waiting move would deadlock.
func (l *pathLocks) lock(ps ...rpc.Path) (unlock func()) {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	l.tree.RLock()
	unlocks := make([]func(), len(ps))
	for i, p := range ps {
		unlocks[i] = l.lockOne(p)
	}
	return func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
		l.tree.RUnlock()
	}
}

// lockTree holds the tree lock exclusively: no path is being changed, and
// none will be until the unlock.
func (l *pathLocks) lockTree() (unlock func()) {
	l.tree.Lock()
	return l.tree.Unlock
}

// lockOne locks p and returns its unlock.
func (l *pathLocks) lockOne(p rpc.Path) (unlock func()) {
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
	return slices.Collect(maps.Keys(s.m))
}
