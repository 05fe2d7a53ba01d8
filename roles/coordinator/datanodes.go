package coordinator

import (
	"context"

	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Datanodes is what the coordinator asks of datanodes. Every call names
// the node by the address it registered at; the caller's ctx bounds it.
// Errors are rpc errors (kinds, and the failed nodes where a datanode
// names them).
type Datanodes interface {
	// Delete removes ids from node at addr. A chunk the node does not hold
	// counts as deleted. It returns the IDs it could not delete, how many
	// chunks it removed and the bytes that freed; an error means the node
	// could not be asked at all.
	Delete(ctx context.Context, node rpc.NodeID, addr string, ids []rpc.ChunkID) (failed []rpc.ChunkID, deleted, freed int64, err error)
	// Replicate has t.Target copy t.Chunk from t.Source and returns once
	// the target holds it durably.
	Replicate(ctx context.Context, t repair.Task) error
	// Verify has the node at addr check its copy of id: present reports
	// whether it holds one, corrupt whether that copy failed its check.
	Verify(ctx context.Context, addr string, id rpc.ChunkID) (present, corrupt bool, err error)
	// Identify returns the ID of the node answering at addr.
	Identify(ctx context.Context, addr string) (rpc.NodeID, error)
}

// grpcDatanodes is Datanodes over gRPC, through a connection pool. With
// keys (TLS), deletions and repairs carry chunk tokens.
type grpcDatanodes struct {
	pool *rpc.Pool
	keys *chunkKeys
}

var _ Datanodes = grpcDatanodes{}

func (d grpcDatanodes) client(addr string) (dfspb.DataNodeClient, error) {
	cc, err := d.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	return dfspb.NewDataNodeClient(cc), nil
}

func (d grpcDatanodes) Delete(ctx context.Context, node rpc.NodeID, addr string, ids []rpc.ChunkID) ([]rpc.ChunkID, int64, int64, error) {
	dn, err := d.client(addr)
	if err != nil {
		return nil, 0, 0, err
	}
	req := &dfspb.BulkDeleteChunkRequest{ChunkIds: make([]string, len(ids)), NodeId: string(node)}
	for i, id := range ids {
		req.ChunkIds[i] = string(id)
		if tok := d.keys.mint(id, chunktoken.Delete, node); tok != nil {
			req.Tokens = append(req.Tokens, tok)
		}
	}
	resp, err := dn.BulkDeleteChunk(ctx, req)
	if err != nil {
		return nil, 0, 0, rpc.FromStatus(err)
	}
	failed := make([]rpc.ChunkID, len(resp.Failed))
	for i, s := range resp.Failed {
		failed[i] = rpc.ChunkID(s)
	}
	return failed, int64(resp.Deleted), resp.BytesFreed, nil
}

func (d grpcDatanodes) Replicate(ctx context.Context, t repair.Task) error {
	dn, err := d.client(t.Target.Addr)
	if err != nil {
		return err
	}
	_, err = dn.ReplicateChunk(ctx, &dfspb.ReplicateChunkRequest{
		ChunkId: string(t.Chunk), Size: t.Size, FrameSize: t.FrameSize, Digest: t.Digest,
		Source:      &dfspb.NodeRef{NodeId: string(t.Source.ID), Addr: t.Source.Addr},
		Token:       d.keys.mint(t.Chunk, chunktoken.Replicate, t.Target.ID),
		SourceToken: d.keys.mint(t.Chunk, chunktoken.Read, t.Source.ID),
	})
	if err != nil {
		return rpc.FromStatus(err)
	}
	return nil
}

func (d grpcDatanodes) Verify(ctx context.Context, addr string, id rpc.ChunkID) (bool, bool, error) {
	dn, err := d.client(addr)
	if err != nil {
		return false, false, err
	}
	resp, err := dn.VerifyChunk(ctx, &dfspb.VerifyChunkRequest{ChunkId: string(id)})
	if err != nil {
		return false, false, rpc.FromStatus(err)
	}
	return resp.Present, resp.Corrupt, nil
}

func (d grpcDatanodes) Identify(ctx context.Context, addr string) (rpc.NodeID, error) {
	dn, err := d.client(addr)
	if err != nil {
		return "", err
	}
	resp, err := dn.HealthCheck(ctx, &dfspb.HealthCheckRequest{})
	if err != nil {
		return "", err
	}
	return rpc.NodeID(resp.NodeId), nil
}
