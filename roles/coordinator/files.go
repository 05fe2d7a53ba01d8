package coordinator

import (
	"context"
	"encoding/base64"
	"net"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	defaultPageSize = 1000
	maxPageSize     = 10000
	maxReport       = 10000
)

// fileInfo renders a committed file with the current replicas of each
// chunk; replicas on nodes the registry no longer knows are left out.
func (c *Coordinator) fileInfo(f *File) *dfspb.FileInfo {
	fi := &dfspb.FileInfo{
		Path: string(f.Path), Size: f.Size, Sha256: f.SHA256, ChunkSize: f.ChunkSize,
		Replication: f.Replication, ModifiedUnixMs: f.Modified.UnixMilli(), Version: f.Version,
	}
	for i, ch := range f.Chunks {
		ci := &dfspb.ChunkInfo{
			Index: uint32(i), ChunkId: string(ch.ID), Offset: int64(i) * f.ChunkSize,
			Size: ch.Size, Digest: ch.Digest, FrameSize: ch.FrameSize,
		}
		good, _ := c.locs.check(ch)
		for _, nid := range good {
			addr, state, ok := c.nodes.lookup(nid)
			if !ok {
				continue
			}
			ci.Replicas = append(ci.Replicas, &dfspb.ReplicaInfo{NodeId: string(nid), Addr: addr, State: stateToProto(state)})
		}
		fi.Chunks = append(fi.Chunks, ci)
	}
	return fi
}

// DownloadFile returns a committed file's chunk map for reading.
func (c *Coordinator) DownloadFile(ctx context.Context, req *dfspb.DownloadFileRequest) (*dfspb.DownloadFileResponse, error) {
	f, err := c.lookupFile(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	fi := c.fileInfo(f)
	for _, ch := range fi.Chunks {
		if !anyLive(ch.Replicas) {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "%s: chunk %d (%s) has no live replica", f.Path, ch.Index, ch.ChunkId))
		}
	}
	return &dfspb.DownloadFileResponse{File: fi}, nil
}

func anyLive(rs []*dfspb.ReplicaInfo) bool {
	for _, r := range rs {
		if r.State != dfspb.NodeState_NODE_STATE_DEAD {
			return true
		}
	}
	return false
}

// StatFile returns a committed file's metadata and replica locations.
func (c *Coordinator) StatFile(ctx context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	f, err := c.lookupFile(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.StatFileResponse{File: c.fileInfo(f)}, nil
}

func (c *Coordinator) lookupFile(path string) (*File, error) {
	p, err := rpc.ParsePath(path)
	if err != nil {
		return nil, err
	}
	return c.ns.Get(p)
}

// DeleteFile removes a file; GC deletes its chunks on the datanodes.
func (c *Coordinator) DeleteFile(ctx context.Context, req *dfspb.DeleteFileRequest) (*dfspb.DeleteFileResponse, error) {
	p, err := rpc.ParsePath(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	f, err := c.ns.Delete(p)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	c.collectFile(f)
	c.log.Info().Str("path", string(p)).Int("chunks", len(f.Chunks)).Msg("file deleted")
	return &dfspb.DeleteFileResponse{}, nil
}

// ListFiles lists a directory, one level or recursively, in pages.
func (c *Coordinator) ListFiles(ctx context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	dir, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	limit := int(req.PageSize)
	if limit == 0 {
		limit = defaultPageSize
	}
	if limit > maxPageSize {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "page size %d above the maximum %d", limit, maxPageSize))
	}
	after := ""
	if req.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.PageToken)
		if err != nil || len(b) == 0 || b[0] != '/' || len(b) > rpc.MaxPathLen {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "invalid page token"))
		}
		after = string(b)
	}
	entries, err := c.ns.List(dir, req.Recursive, after, limit+1)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp := &dfspb.ListFilesResponse{}
	if len(entries) > limit {
		entries = entries[:limit]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(entries[limit-1].Path))
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

// RegisterDataNode adds a datanode to the cluster, or refreshes it.
func (c *Coordinator) RegisterDataNode(ctx context.Context, req *dfspb.RegisterDataNodeRequest) (*dfspb.RegisterDataNodeResponse, error) {
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
	version, nodes := c.nodes.register(id, req.Addr, u, c.clock.Now())
	c.log.Info().Str("node_id", string(id)).Str("addr", req.Addr).Int64("chunks", req.ChunkCount).Msg("datanode registered")
	return &dfspb.RegisterDataNodeResponse{ClusterVersion: version, Nodes: nodes}, nil
}

// DataNodeHeartbeat records a heartbeat and returns membership changes.
func (c *Coordinator) DataNodeHeartbeat(ctx context.Context, req *dfspb.HeartbeatRequest) (*dfspb.HeartbeatResponse, error) {
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := checkUsage(req.Capacity, req.Used, req.Free, req.ChunkCount)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp, err := c.nodes.heartbeat(id, u, req.KnownVersion, c.clock.Now())
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return resp, nil
}

// ReportChunks applies a datanode's report of chunks stored and removed.
func (c *Coordinator) ReportChunks(ctx context.Context, req *dfspb.ReportChunksRequest) (*dfspb.ReportChunksResponse, error) {
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if _, _, ok := c.nodes.lookup(id); !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "node %s is not registered", id))
	}
	if n := len(req.Added) + len(req.Removed); n > maxReport {
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
	if req.Full {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "full inventory reports are not supported yet"))
	}
	c.locs.report(id, req.Added, removed)
	return &dfspb.ReportChunksResponse{}, nil
}

// ListNodes returns every datanode's status.
func (c *Coordinator) ListNodes(ctx context.Context, req *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	version, nodes := c.nodes.list()
	return &dfspb.ListNodesResponse{ClusterVersion: version, Nodes: nodes}, nil
}

func checkUsage(capacity, used, free, chunks int64) (usage, error) {
	if capacity < 0 || used < 0 || free < 0 || chunks < 0 {
		return usage{}, rpc.Errorf(rpc.Invalid, "negative capacity, usage or chunk count")
	}
	return usage{capacity: capacity, used: used, free: free, chunks: chunks}, nil
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || port == "0" {
		return rpc.Errorf(rpc.Invalid, "invalid datanode address %q: want host:port", addr)
	}
	return nil
}
