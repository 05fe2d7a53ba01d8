package datanodesim

import (
	"context"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// The DataNode calls the coordinator makes, answered from memory. The
// data path (uploads, downloads) is refused as Unimplemented.

var _ dfspb.DataNodeServer = (*node)(nil)

// HealthCheck answers with the node's ID and usage (the coordinator asks
// it of a node registering again at another address).
func (n *node) HealthCheck(context.Context, *dfspb.HealthCheckRequest) (*dfspb.HealthCheckResponse, error) {
	chunks, used := n.usage()
	return &dfspb.HealthCheckResponse{NodeId: string(n.id), Capacity: n.f.cfg.Capacity, Used: used,
		Free: n.f.cfg.Capacity - used, ChunkCount: chunks}, nil
}

// StatChunks says which of the named chunks the node holds.
func (n *node) StatChunks(_ context.Context, req *dfspb.StatChunksRequest) (*dfspb.StatChunksResponse, error) {
	resp := &dfspb.StatChunksResponse{Chunks: make([]*dfspb.ChunkStat, len(req.ChunkIds))}
	for i, s := range req.ChunkIds {
		st := &dfspb.ChunkStat{ChunkId: s}
		if c, ok := n.lookup(rpc.ChunkID(s)); ok {
			st.Present, st.Size, st.Digest, st.FrameSize = true, c.Size, c.Digest, c.FrameSize
		}
		resp.Chunks[i] = st
	}
	return resp, nil
}

// VerifyChunk says whether the node holds the chunk; a held copy is never
// corrupt.
func (n *node) VerifyChunk(_ context.Context, req *dfspb.VerifyChunkRequest) (*dfspb.VerifyChunkResponse, error) {
	_, ok := n.lookup(rpc.ChunkID(req.ChunkId))
	return &dfspb.VerifyChunkResponse{Present: ok}, nil
}

// BulkDeleteChunk drops the named chunks and reports them removed.
func (n *node) BulkDeleteChunk(_ context.Context, req *dfspb.BulkDeleteChunkRequest) (*dfspb.BulkDeleteChunkResponse, error) {
	if req.NodeId != "" && req.NodeId != string(n.id) {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "deletions for %s sent to %s", req.NodeId, n.id))
	}
	deleted, freed := n.delete(req.ChunkIds)
	return &dfspb.BulkDeleteChunkResponse{Deleted: uint32(deleted), BytesFreed: freed}, nil
}

// DeleteChunk drops one chunk.
func (n *node) DeleteChunk(_ context.Context, req *dfspb.DeleteChunkRequest) (*dfspb.DeleteChunkResponse, error) {
	n.delete([]string{req.ChunkId})
	return &dfspb.DeleteChunkResponse{}, nil
}

// ReplicateChunk takes the copy at once (no bytes move) and reports it.
// A request naming the digest by a prefix (as the coordinator's index
// keeps it) takes the whole digest from the source, which must hold the
// chunk with a digest that starts with it, as a datanode does.
func (n *node) ReplicateChunk(_ context.Context, req *dfspb.ReplicateChunkRequest) (*dfspb.ReplicateChunkResponse, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	digest := req.Digest
	if len(digest) != rpc.DigestSize {
		src := rpc.NodeID(req.GetSource().GetNodeId())
		c, ok := n.f.lookup(src, id)
		if !ok || !rpc.DigestsMatch(c.Digest, digest) {
			return nil, rpc.ToStatus(rpc.NodeError(rpc.NotFound, []string{string(src)}, "chunk %s: source %s holds no copy with digest %x...", id, src.Short(), digest))
		}
		digest = c.Digest
	}
	n.stored(Chunk{ID: id, Size: req.Size, FrameSize: req.FrameSize, Digest: digest})
	return &dfspb.ReplicateChunkResponse{Bytes: req.Size}, nil
}
