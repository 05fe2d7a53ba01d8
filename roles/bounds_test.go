package roles_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// putVia stores data as a new chunk on primary, which forwards it to
// replicas, and returns the nodes the final ack names.
func putVia(ctx context.Context, primary dfspb.DataNodeClient, replicas []*roles.ClusterNode, data []byte) ([]string, error) {
	id := rpc.NewChunkID("/restart", rpc.NewSessionID(), 0, 0)
	prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: int64(len(data)), FrameSize: rolestest.FrameSize}
	for _, r := range replicas {
		prep.Replicas = append(prep.Replicas, &dfspb.NodeRef{NodeId: string(r.Node.ID()), Addr: r.Node.Addr()})
	}
	st, err := primary.UploadChunkStream(ctx)
	if err != nil {
		return nil, err
	}
	ack, _, err := chunkstream.SendChunk(ctx, st, "", prep, id, data, rolestest.FrameSize, chunkstream.DefaultWindow)
	if err != nil {
		return nil, err
	}
	return ack.Replicas, nil
}

// TestReplicaRestartedInPlace: a datanode restarted at its address is
// taken as a replica at once, although the primary's connection to it was
// backing off from the failed attempts while it was down.
func TestReplicaRestartedInPlace(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 3)
	primary := nodeClient(t, c, 0)
	data := randomBytes(3 * rolestest.FrameSize)
	_, err := putVia(t.Context(), primary, c.Nodes()[1:], data)
	is.NoErr(err) // the primary forwards to both replicas

	// While node 2 is down, the primary tries it again and again: its
	// connection's reconnect backoff grows.
	is.NoErr(c.StopNode(2)) // node 2 stops
	for range 10 {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		_, err := putVia(ctx, primary, c.Nodes()[1:], data)
		cancel()
		is.True(err != nil) // a stopped replica fails the chunk
	}

	n2, err := c.RestartNodeInPlace(2)
	is.NoErr(err) // node 2 is back at its address
	for i := range 5 {
		nodes, err := putVia(t.Context(), primary, c.Nodes()[1:], data)
		if err != nil {
			t.Fatalf("put %d right after the restart: %v", i, err)
		}
		is.True(slices.Contains(nodes, string(n2.Node.ID()))) // the restarted node stored it
	}
}
