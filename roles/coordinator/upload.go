package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// planAhead is how many chunk plans UploadFile returns up front; later
// chunks are allocated one by one, which also keeps the session alive.
const planAhead = 4

// maxChunks bounds the chunks of one file (64 MiB x 2^20 = 64 TiB).
const maxChunks = 1 << 20

// upload is a metadata session: one upload of a new version of a path.
type upload struct {
	id          rpc.SessionID
	path        rpc.Path
	chunkSize   int64
	replication int

	mu     sync.Mutex
	chunks map[rpc.ChunkID]*allocation // every chunk placed, retries included
	tries  map[uint32]uint32           // attempts per index
	done   bool
}

// allocation is one placement of one chunk index.
type allocation struct {
	index uint32
	nodes []rpc.NodeID // primary first
}

// UploadFile opens a metadata session for a new version of a path.
func (c *Coordinator) UploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	p, err := rpc.ParsePath(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	chunkSize := req.ChunkSize
	if chunkSize == 0 {
		chunkSize = c.cfg.ChunkSize
	}
	if err := rpc.CheckChunkSize(chunkSize); err != nil {
		return nil, rpc.ToStatus(err)
	}
	repl := int(req.Replication)
	if repl == 0 {
		repl = c.cfg.Replication
	}
	if repl < 1 || repl > rpc.MaxReplication {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "replication %d out of range (1 to %d)", repl, rpc.MaxReplication))
	}
	if req.Size < -1 {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "size %d: must be -1 (unknown) or the file's size", req.Size))
	}
	if req.Size > 0 && (req.Size-1)/chunkSize+1 > maxChunks {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "file of %d bytes needs more than %d chunks; use a larger chunk size", req.Size, maxChunks))
	}
	if _, err := c.ns.Get(p); err == nil {
		// Overwrite: fine, the old version stays until commit.
	} else if rpc.KindOf(err) != rpc.NotFound {
		return nil, rpc.ToStatus(err)
	}
	// Fail fast when the cluster cannot hold even one chunk.
	if _, err := placement.Place(c.policy, c.nodes.candidates(), repl, 0, nil); err != nil {
		return nil, rpc.ToStatus(err)
	}
	u := &upload{
		id: rpc.NewSessionID(), path: p, chunkSize: chunkSize, replication: repl,
		chunks: make(map[rpc.ChunkID]*allocation), tries: make(map[uint32]uint32),
	}
	resp := &dfspb.UploadFileResponse{SessionId: string(u.id), ChunkSize: chunkSize, Replication: uint32(repl)}
	if req.Size > 0 {
		n := (req.Size-1)/chunkSize + 1
		for i := int64(0); i < min(n, planAhead); i++ {
			plan, err := c.allocate(u, uint32(i), nil)
			if err != nil {
				c.collectUpload(u, nil)
				return nil, rpc.ToStatus(err)
			}
			resp.Chunks = append(resp.Chunks, plan)
		}
	}
	resp.ExpiresUnixMs = c.uploads.Put(u.id, u).UnixMilli()
	c.log.Debug().Str("session_id", string(u.id)).Str("path", string(p)).Int64("size", req.Size).Msg("upload opened")
	return resp, nil
}

// allocate places chunk index of u, avoiding excluded nodes.
func (c *Coordinator) allocate(u *upload, index uint32, exclude map[rpc.NodeID]bool) (*dfspb.ChunkPlan, error) {
	nodes, err := placement.Place(c.policy, c.nodes.candidates(), u.replication, u.chunkSize, exclude)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil, rpc.Errorf(rpc.NotFound, "upload session %s already ended", u.id)
	}
	attempt := u.tries[index]
	u.tries[index] = attempt + 1
	id := rpc.NewChunkID(u.path, u.id, attempt, index)
	a := &allocation{index: index}
	plan := &dfspb.ChunkPlan{Index: index, ChunkId: string(id)}
	for i, n := range nodes {
		a.nodes = append(a.nodes, n.ID)
		c.nodes.reserve(n.ID, u.chunkSize)
		ref := &dfspb.NodeRef{NodeId: string(n.ID), Addr: n.Addr}
		if i == 0 {
			plan.Primary = ref
		} else {
			plan.Replicas = append(plan.Replicas, ref)
		}
	}
	u.chunks[id] = a
	return plan, nil
}

// AllocateChunk places the next chunk of an upload, or a retry of one.
func (c *Coordinator) AllocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	u, err := c.session(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if req.Index >= maxChunks {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "chunk index %d: a file has at most %d chunks", req.Index, maxChunks))
	}
	exclude := map[rpc.NodeID]bool{}
	for _, s := range req.ExcludeNodeIds {
		id, err := rpc.ParseNodeID(s)
		if err != nil {
			return nil, rpc.ToStatus(err)
		}
		exclude[id] = true
	}
	u.mu.Lock()
	tries := u.tries[req.Index]
	u.mu.Unlock()
	if tries >= 64 {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.ResourceExhausted, "chunk %d placed %d times; giving up", req.Index, tries))
	}
	plan, err := c.allocate(u, req.Index, exclude)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.AllocateChunkResponse{Chunk: plan}, nil
}

func (c *Coordinator) session(s string) (*upload, error) {
	id, err := rpc.ParseSessionID(s)
	if err != nil {
		return nil, err
	}
	u, ok := c.uploads.Get(id)
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id)
	}
	return u, nil
}

// ConfirmUpload checks every chunk against what the datanodes reported
// storing and swaps the new version in. On a verification failure the
// upload is aborted and its chunks collected; when the client gives up
// waiting, the session stays open and it may confirm again.
func (c *Coordinator) ConfirmUpload(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, ok := c.uploads.Take(id)
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id))
	}
	f, err := c.verify(ctx, u, req)
	if err != nil {
		if ctx.Err() != nil {
			c.uploads.Put(id, u)
		} else {
			c.log.Warn().Err(err).Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload refused at confirm")
			c.collectUpload(u, nil)
		}
		return nil, rpc.ToStatus(fmt.Errorf("confirm %s: %w", u.path, err))
	}
	old, err := c.ns.Put(f)
	if err != nil {
		c.collectUpload(u, nil)
		return nil, rpc.ToStatus(fmt.Errorf("confirm %s: %w", u.path, err))
	}
	kept := make(map[rpc.ChunkID]bool, len(f.Chunks))
	for _, ch := range f.Chunks {
		kept[ch.ID] = true
	}
	c.collectUpload(u, kept)
	if old != nil {
		c.collectFile(old)
	}
	c.log.Info().Str("path", string(f.Path)).Int64("size", f.Size).Int("chunks", len(f.Chunks)).Uint64("version", f.Version).Msg("file committed")
	return &dfspb.ConfirmUploadResponse{File: c.fileInfo(f)}, nil
}

// verify checks a confirm request against the session and the datanodes
// and returns the file to commit.
func (c *Coordinator) verify(ctx context.Context, u *upload, req *dfspb.ConfirmUploadRequest) (*File, error) {
	if len(req.Sha256) != rpc.DigestSize {
		return nil, rpc.Errorf(rpc.Invalid, "file checksum must be %d bytes of SHA-256, got %d", rpc.DigestSize, len(req.Sha256))
	}
	if req.Size < 0 {
		return nil, rpc.Errorf(rpc.Invalid, "negative size %d", req.Size)
	}
	want := int((req.Size + u.chunkSize - 1) / u.chunkSize)
	if len(req.Chunks) != want {
		return nil, rpc.Errorf(rpc.Invalid, "%d chunks confirmed, a file of %d bytes in %s chunks has %d", len(req.Chunks), req.Size, rpc.FormatBytes(u.chunkSize), want)
	}
	f := &File{
		Path: u.path, Size: req.Size, SHA256: bytes.Clone(req.Sha256), ChunkSize: u.chunkSize,
		Replication: uint32(u.replication), Modified: c.clock.Now(),
	}
	u.mu.Lock()
	for i, r := range req.Chunks {
		cid, err := rpc.ParseChunkID(r.ChunkId)
		if err != nil {
			u.mu.Unlock()
			return nil, err
		}
		a, ok := u.chunks[cid]
		if !ok || a.index != uint32(i) || r.Index != uint32(i) {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.Invalid, "chunk %d: %s was not allocated for this position of this upload", i, cid)
		}
		size := min(u.chunkSize, req.Size-int64(i)*u.chunkSize)
		if r.Size != size {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.Invalid, "chunk %d: size %d, expected %d", i, r.Size, size)
		}
		if len(r.Digest) != rpc.DigestSize {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.Invalid, "chunk %d: digest must be %d bytes", i, rpc.DigestSize)
		}
		if err := rpc.CheckFrameSize(r.FrameSize); err != nil {
			u.mu.Unlock()
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		acked := map[string]bool{}
		for _, n := range r.NodeIds {
			if !slices.Contains(a.nodes, rpc.NodeID(n)) {
				u.mu.Unlock()
				return nil, rpc.Errorf(rpc.Invalid, "chunk %d: node %s was not assigned this chunk", i, n)
			}
			acked[n] = true
		}
		if len(acked) < u.replication {
			u.mu.Unlock()
			return nil, rpc.Errorf(rpc.FailedPrecondition, "chunk %d: acknowledged by %d nodes, replication needs %d", i, len(acked), u.replication)
		}
		f.Chunks = append(f.Chunks, Chunk{ID: cid, Size: r.Size, Digest: bytes.Clone(r.Digest), FrameSize: r.FrameSize})
	}
	u.mu.Unlock()

	// The datanodes report what they stored: wait for every chunk's copies
	// to be reported. Reports usually arrive before the confirm. A copy that
	// does not match the receipt fails the confirm at once: all copies came
	// from one stream, so the receipt is wrong. A node that acknowledged a
	// chunk may die before its report gets out; after reportWait, a chunk
	// with at least one verified copy is enough (every copy was acknowledged
	// as durable), and it is logged as under-replicated.
	reportWait := min(c.cfg.RPCTimeout, 2*time.Second)
	short, bad := -1, -1
	var badNode rpc.NodeID
	complete := func(need int) func() bool {
		return func() bool {
			for i, ch := range f.Chunks {
				good, others := c.locs.check(ch)
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
	err := c.locs.wait(wctx, complete(u.replication))
	cancel()
	if err != nil && bad < 0 && ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout-reportWait)
		err = c.locs.wait(wctx, complete(1))
		cancel()
		if err == nil && bad < 0 {
			for i, ch := range f.Chunks {
				if good, _ := c.locs.check(ch); len(good) < u.replication {
					c.log.Warn().Str("path", string(f.Path)).Int("chunk", i).Str("chunk_id", string(ch.ID)).
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
		short, f.Chunks[short].ID, c.cfg.RPCTimeout)
}

// AbortUpload ends a session without committing.
func (c *Coordinator) AbortUpload(ctx context.Context, req *dfspb.AbortUploadRequest) (*dfspb.AbortUploadResponse, error) {
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, ok := c.uploads.Take(id)
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", id))
	}
	c.collectUpload(u, nil)
	return &dfspb.AbortUploadResponse{}, nil
}

// collectUpload ends u and hands every chunk it placed, except kept ones,
// to GC on every node it was placed on.
func (c *Coordinator) collectUpload(u *upload, kept map[rpc.ChunkID]bool) {
	u.mu.Lock()
	u.done = true
	chunks := u.chunks
	u.mu.Unlock()
	for id, a := range chunks {
		if kept[id] {
			continue
		}
		// Where it was placed, and wherever a copy was reported.
		for _, n := range a.nodes {
			c.gc.Enqueue(n, id)
		}
		for _, n := range c.locs.nodes(id) {
			c.gc.Enqueue(n, id)
		}
	}
}

// collectFile hands the chunks of a replaced or deleted version to GC.
func (c *Coordinator) collectFile(f *File) {
	for _, ch := range f.Chunks {
		for _, n := range c.locs.nodes(ch.ID) {
			c.gc.Enqueue(n, ch.ID)
		}
	}
}
