package roles_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/internal/grpctest"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// badPlanner is a coordinator that answers every placement with a plan
// naming no primary, a replica without its node, or another chunk.
type badPlanner struct {
	dfspb.UnimplementedCoordinatorServer
	plan *dfspb.ChunkPlan
}

func (b *badPlanner) UploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	return &dfspb.UploadFileResponse{SessionId: string(rpc.NewSessionID()), ChunkSize: rolestest.ChunkSize, Replication: 3, Chunks: []*dfspb.ChunkPlan{b.plan}}, nil
}

func (b *badPlanner) AllocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	return &dfspb.AllocateChunkResponse{Chunk: b.plan}, nil
}

func (b *badPlanner) AbortUpload(ctx context.Context, req *dfspb.AbortUploadRequest) (*dfspb.AbortUploadResponse, error) {
	return &dfspb.AbortUploadResponse{}, nil
}

// clientOf starts srv as a coordinator on loopback and returns a client
// of it, its config adjusted by tune (nil: none); both stop with the test.
func clientOf(t *testing.T, srv dfspb.CoordinatorServer, tune func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Coordinators = []string{grpctest.Serve(t, func(g *grpc.Server) { dfspb.RegisterCoordinatorServer(g, srv) })}
	if tune != nil {
		tune(&cfg)
	}
	cl, err := client.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestPutRefusesMalformedPlan: a put given a malformed chunk plan fails
// with a readable error instead of crashing the client.
func TestPutRefusesMalformedPlan(t *testing.T) {
	t.Parallel()
	node := &dfspb.NodeRef{NodeId: "11111111-1111-1111-1111-111111111111", Addr: "127.0.0.1:1"}
	for name, plan := range map[string]*dfspb.ChunkPlan{
		"no primary":      {Index: 0, Replicas: []*dfspb.NodeRef{node}},
		"unnamed replica": {Index: 0, Primary: node, Replicas: []*dfspb.NodeRef{{}}},
		"wrong index":     {Index: 7, Primary: node},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			cl := clientOf(t, &badPlanner{plan: plan}, func(cfg *client.Config) { cfg.Attempts = 1 })
			_, err := cl.Put(t.Context(), "/p", bytes.NewReader([]byte("data")), 4, nil)
			is.True(err != nil)                                      // the put fails
			is.True(strings.Contains(err.Error(), "malformed plan")) // saying why
		})
	}
}
