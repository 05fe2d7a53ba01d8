package coordinator

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"time"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	defaultPageSize = 1000
	maxPageSize     = 10000
	maxReport       = 10000
)

// maxChunkPage is the most chunks one page of a chunk map carries, and
// the default page size: a page of the largest chunk entries (every
// replica of rpc.MaxReplication, each with an address of rpc.MaxAddrLen)
// stays well below rpc.MaxMessageSize, so a file of any allowed size is
// described in pages (TestChunkPageFits).
const maxChunkPage = 500

// fileInfo renders a committed file with chunks first to end-1 of its
// chunk map, each with its current replicas: the nodes that reported a
// copy matching the commit.
func (t *term) fileInfo(f *meta.File, first, end int) *dfspb.FileInfo {
	fi := &dfspb.FileInfo{
		Path: string(f.Path), Size: f.Size, Sha256: f.SHA256, ChunkSize: f.ChunkSize,
		Replication: f.Replication, ModifiedUnixMs: f.Modified.UnixMilli(), Version: f.Version,
		SessionId: string(f.Session), ChunkCount: uint32(len(f.Chunks)),
		Chunks: make([]*dfspb.ChunkInfo, 0, end-first),
	}
	for i := first; i < end; i++ {
		ch := f.Chunks[i]
		ci := &dfspb.ChunkInfo{
			Index: uint32(i), ChunkId: string(ch.ID), Offset: int64(i) * f.ChunkSize,
			Size: ch.Size, Digest: ch.Digest, FrameSize: ch.FrameSize,
		}
		good, _ := t.locs.check(ch)
		for _, nid := range good {
			addr, state, ok := t.nodes.lookup(nid)
			if !ok {
				continue
			}
			ci.Replicas = append(ci.Replicas, &dfspb.ReplicaInfo{NodeId: string(nid), Addr: addr, State: stateToProto(state)})
		}
		fi.Chunks = append(fi.Chunks, ci)
	}
	return fi
}

// chunkPage returns the page of path's chunk map that a DownloadFile or
// StatFile request asks for, and the index the next page starts at. A
// request for a page after the first names the version it reads: when
// the path no longer holds it, the file was replaced or deleted since the
// first page, and the reader is told so (FailedPrecondition).
func (t *term) chunkPage(ctx context.Context, path string, first, size uint32, version uint64, session string) (*meta.File, *dfspb.FileInfo, uint32, error) {
	p, err := rpc.ParsePath(path)
	if err != nil {
		return nil, nil, 0, err
	}
	// A page after the first of a large file comes from the cache when it
	// holds the version being read.
	f := t.files.get(p)
	cached, gen := true, uint64(0)
	if version == 0 || f == nil || f.Version != version || string(f.Session) != session {
		cached, gen = false, t.files.generation()
		f, err = t.store.Get(ctx, p)
		if version != 0 && (rpc.KindOf(err) == rpc.NotFound || (err == nil && (f.Version != version || string(f.Session) != session))) {
			return nil, nil, 0, changedError(path)
		}
		if err != nil {
			return nil, nil, 0, err
		}
	}
	n := uint32(len(f.Chunks))
	if first > n {
		return nil, nil, 0, rpc.Errorf(rpc.Invalid, "first chunk %d is beyond the %d chunks of %s", first, n, f.Path)
	}
	if size == 0 || size > maxChunkPage {
		size = maxChunkPage
	}
	end := first + min(size, n-first)
	if end < n && !cached {
		t.files.put(f, gen) // more pages follow
	}
	return f, t.fileInfo(f, int(first), int(end)), end, nil
}

// changedError says a file changed between two pages of its chunk map.
func changedError(path string) error {
	return rpc.Errorf(rpc.FailedPrecondition, "%s changed while it was being read; read it again", path)
}

// DownloadFile returns a page of a committed file's chunk map for reading.
// A chunk of the page without a live replica fails it.
func (c *Coordinator) DownloadFile(ctx context.Context, req *dfspb.DownloadFileRequest) (*dfspb.DownloadFileResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	f, fi, next, err := t.chunkPage(ctx, req.Path, req.FirstChunk, req.PageSize, req.Version, req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	for _, ch := range fi.Chunks {
		if anyLive(ch.Replicas) {
			continue
		}
		if on, status := t.safe.Status(); on {
			return nil, rpc.ToStatus(rpc.NotServingError("", 500*time.Millisecond, "coordinator in safe mode (%s): chunk %d of %s not located yet", status, ch.Index, f.Path))
		}
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "%s: chunk %d (%s) has no live replica", f.Path, ch.Index, ch.ChunkId))
	}
	if req.FirstChunk == 0 {
		c.metrics.readBytes.Add(float64(f.Size))
	}
	return &dfspb.DownloadFileResponse{File: fi, NextChunk: next}, nil
}

func anyLive(rs []*dfspb.ReplicaInfo) bool {
	for _, r := range rs {
		if r.State != dfspb.NodeState_NODE_STATE_DEAD {
			return true
		}
	}
	return false
}

// StatFile returns a committed file's metadata and a page of its chunk
// map with the replica locations.
func (c *Coordinator) StatFile(ctx context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	_, fi, next, err := t.chunkPage(ctx, req.Path, req.FirstChunk, req.PageSize, req.Version, req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.StatFileResponse{File: fi, NextChunk: next}, nil
}

// DeleteFile removes a file durably; GC deletes its chunks on the
// datanodes.
func (c *Coordinator) DeleteFile(ctx context.Context, req *dfspb.DeleteFileRequest) (*dfspb.DeleteFileResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	return &dfspb.DeleteFileResponse{}, rpc.ToStatus(t.deleteFile(ctx, req.Path))
}

// deleted reports whether the path of f, just deleted by a commit
// reported failed, no longer holds f.
func (t *term) deleted(ctx context.Context, f *meta.File) bool {
	cur, err := t.store.Get(ctx, f.Path)
	return rpc.KindOf(err) == rpc.NotFound || (err == nil && (cur.Version != f.Version || cur.Session != f.Session))
}

func (t *term) deleteFile(ctx context.Context, path string) error {
	p, err := rpc.ParsePath(path)
	if err != nil {
		return err
	}
	if err := t.safe.check("delete files"); err != nil {
		return err
	}
	defer t.paths.lock(p)()
	for try := 0; ; try++ {
		f, err := t.store.Get(ctx, p)
		if err != nil {
			return err
		}
		txn := &meta.Txn{Path: p, Expect: f.Version, Delete: true, AddDeletions: t.chunkDeletions(f)}
		err = t.commit(ctx, txn)
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue
		}
		if err != nil && !errors.Is(err, meta.ErrConflict) && t.deleted(ctx, f) {
			// Reported failed, but applied: no other commit of the
			// path can have run meanwhile. Its deletions are recorded
			// again (with etcd, some may not have been).
			t.log.Warn().Err(err).Str("path", string(p)).Msg("delete reported failed but applied; finishing it")
			txn = &meta.Txn{AddDeletions: txn.AddDeletions}
			err = t.commit(ctx, txn)
		}
		if err != nil {
			return err
		}
		t.enqueue(txn.AddDeletions)
		t.unreference(ctx, f, txn.AddDeletions)
		t.log.Info().Str("path", string(p)).Int("chunks", len(f.Chunks)).Msg("file deleted")
		t.c.metrics.filesDeleted.Inc()
		return nil
	}
}

// ListFiles lists a directory, one level or recursively, in pages.
func (c *Coordinator) ListFiles(ctx context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.listFiles(ctx, req)
	return resp, rpc.ToStatus(err)
}

func (t *term) listFiles(ctx context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	dir, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, err
	}
	limit := int(req.PageSize)
	if limit == 0 {
		limit = defaultPageSize
	}
	if limit > maxPageSize {
		return nil, rpc.Errorf(rpc.Invalid, "page size %d above the maximum %d", limit, maxPageSize)
	}
	after := ""
	if req.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.PageToken)
		if err != nil || len(b) == 0 || b[0] != '/' || len(b) > rpc.MaxPathLen {
			return nil, rpc.Errorf(rpc.Invalid, "invalid page token")
		}
		after = string(b)
	}
	entries, err := t.store.List(ctx, dir, req.Recursive, after, limit+1)
	if err != nil {
		return nil, err
	}
	resp := &dfspb.ListFilesResponse{}
	if len(entries) > limit {
		entries = entries[:limit]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(meta.ListKey(entries[limit-1])))
	}
	for _, e := range entries {
		le := &dfspb.ListEntry{Path: string(e.Path), IsDir: e.IsDir}
		if e.File != nil {
			le.Size, le.ModifiedUnixMs = e.File.Size, e.File.Modified.UnixMilli()
			le.Chunks, le.Replication = uint32(len(e.File.Chunks)), e.File.Replication
		}
		resp.Entries = append(resp.Entries, le)
	}
	return resp, nil
}

// RegisterDataNode adds a datanode to the cluster, or refreshes it, and
// returns its incarnation. A node that belongs to another cluster is
// refused, and so is a node ID registered at another address where the
// node is alive and still answers as itself (see registry.register).
// Registrations beyond --register-rate are refused with ResourceExhausted.
func (c *Coordinator) RegisterDataNode(ctx context.Context, req *dfspb.RegisterDataNodeRequest) (*dfspb.RegisterDataNodeResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.admitRegistration(); err != nil {
		return nil, rpc.ToStatus(err)
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := checkAddr(req.Addr); err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := checkUsage(req.Capacity, req.Used, req.Free, req.ChunkCount)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	cluster := c.store.ClusterID()
	if req.ClusterId != "" && req.ClusterId != cluster {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition,
			"datanode %s belongs to cluster %s, this coordinator serves cluster %s", id, req.ClusterId, cluster))
	}
	gone := ""
	if old, alive := t.nodes.claimed(id, req.Addr, c.clock.Now()); alive && !t.answersAs(ctx, id, old) {
		gone = old // the node left it: it restarted at req.Addr
	}
	version, incarnation, err := t.nodes.register(id, req.Addr, gone, u, c.clock.Now())
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	// The logger already has "addr" (this coordinator's): the node's is node_addr.
	t.log.Info().Str("node_id", string(id)).Str("node_addr", req.Addr).Int64("chunks", req.ChunkCount).Msg("datanode registered")
	return &dfspb.RegisterDataNodeResponse{ClusterVersion: version, ClusterId: cluster, Incarnation: incarnation}, nil
}

// admitRegistration takes a registration from the --register-rate budget,
// or refuses it with ResourceExhausted and when to retry.
func (c *Coordinator) admitRegistration() error {
	now := time.Now()
	res := c.registrations.ReserveN(now, 1)
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return rpc.Errorf(rpc.ResourceExhausted, "too many datanode registrations (--register-rate %g/s, --register-burst %d); retry in %s",
			c.cfg.RegisterRate, c.cfg.RegisterBurst, wait.Round(time.Millisecond))
	}
	return nil
}

// DataNodeHeartbeat records a heartbeat and returns membership changes.
func (c *Coordinator) DataNodeHeartbeat(ctx context.Context, req *dfspb.HeartbeatRequest) (*dfspb.HeartbeatResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := checkUsage(req.Capacity, req.Used, req.Free, req.ChunkCount)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u.diskErr = boundReason(req.DiskError)
	resp, err := t.nodes.heartbeat(id, req.Incarnation, u, req.KnownVersion, c.clock.Now())
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return resp, nil
}

// ReportChunks applies a datanode's report of chunks stored and removed.
func (c *Coordinator) ReportChunks(ctx context.Context, req *dfspb.ReportChunksRequest) (*dfspb.ReportChunksResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if _, _, ok := t.nodes.lookup(id); !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "node %s is not registered", id))
	}
	if n := len(req.Added) + len(req.Removed) + len(req.Corrupt); n > maxReport {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d chunks in one report, at most %d", n, maxReport))
	}
	for _, a := range req.Added {
		if _, err := rpc.ParseChunkID(a.ChunkId); err != nil {
			return nil, rpc.ToStatus(err)
		}
		if a.Size <= 0 || a.Size > rpc.MaxChunkSize || len(a.Digest) != rpc.DigestSize || rpc.CheckFrameSize(a.FrameSize) != nil {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "chunk %s: bad size, frame size or digest in report", a.ChunkId))
		}
	}
	removed := make([]rpc.ChunkID, len(req.Removed))
	for i, s := range req.Removed {
		cid, err := rpc.ParseChunkID(s)
		if err != nil {
			return nil, rpc.ToStatus(err)
		}
		removed[i] = cid
	}
	corrupt := make([]rpc.ChunkID, len(req.Corrupt))
	for i, s := range req.Corrupt {
		cid, err := rpc.ParseChunkID(s)
		if err != nil {
			return nil, rpc.ToStatus(err)
		}
		corrupt[i] = cid
	}
	if len(corrupt) > 0 {
		t.log.Warn().Str("node_id", string(id)).Int("chunks", len(corrupt)).Msg("datanode reports corrupt copies")
		c.events.add("corrupt", "datanode %s reports %d corrupt chunk copies", id.Short(), len(corrupt))
	}
	t.locs.report(id, req.Full, req.Added, removed, corrupt, t.queuedOn(id))
	return &dfspb.ReportChunksResponse{}, nil
}

// ListNodes returns every datanode's status and the coordinator's state.
func (c *Coordinator) ListNodes(ctx context.Context, req *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	version, nodes := t.nodes.list()
	for _, n := range nodes {
		t.decorate(n)
	}
	on, status := t.safe.Status()
	return &dfspb.ListNodesResponse{ClusterVersion: version, Nodes: nodes, SafeMode: on, SafeModeStatus: status,
		ClusterId: c.store.ClusterID(), Leader: c.addr, Health: t.clusterHealth(), Readiness: t.readiness()}, nil
}

// Backup streams a consistent snapshot of the metadata.
func (c *Coordinator) Backup(req *dfspb.BackupRequest, stream dfspb.Coordinator_BackupServer) error {
	if _, err := c.leader(stream.Context()); err != nil {
		return err
	}
	w := &streamWriter{stream: stream}
	n, err := meta.Backup(stream.Context(), c.store, w, c.name)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return rpc.ToStatus(rpc.Errorf(rpc.Internal, "backup: %v", err))
	}
	c.log.Info().Uint64("records", n).Msg("backup streamed")
	return nil
}

// streamWriter cuts a byte stream into BackupChunk messages.
type streamWriter struct {
	stream dfspb.Coordinator_BackupServer
	buf    []byte
}

var _ io.Writer = (*streamWriter)(nil)

func (w *streamWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= 1<<20 {
		if err := w.stream.Send(&dfspb.BackupChunk{Data: w.buf[:1<<20]}); err != nil {
			return 0, err
		}
		w.buf = append([]byte(nil), w.buf[1<<20:]...)
	}
	return len(p), nil
}

func (w *streamWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	return w.stream.Send(&dfspb.BackupChunk{Data: w.buf})
}

func checkUsage(capacity, used, free, chunks int64) (usage, error) {
	if capacity < 0 || used < 0 || free < 0 || chunks < 0 {
		return usage{}, rpc.Errorf(rpc.Invalid, "negative capacity, usage or chunk count")
	}
	return usage{capacity: capacity, used: used, free: free, chunks: chunks}, nil
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || port == "0" || len(addr) > rpc.MaxAddrLen {
		return rpc.Errorf(rpc.Invalid, "invalid datanode address %q: want host:port of at most %d bytes", addr, rpc.MaxAddrLen)
	}
	return nil
}
