package coordinator

import (
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestAdapterChecksInTheOrderCallersRelyOn sends requests with two faults
// each through the gRPC adapter: the fault a caller reacts to comes first.
func TestAdapterChecksInTheOrderCallersRelyOn(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.RegisterRate, c.RegisterBurst = 0.001, 1 })
	f.c.term.Store(f.term)
	srv := f.c.Server()

	_, err := srv.AllocateChunk(f.ctx, &dfspb.AllocateChunkRequest{SessionId: string(rpc.NewSessionID()), ExcludeNodeIds: []string{"not-a-node"}})
	is.Equal(status.Code(err), codes.NotFound) // an unknown session first: the client starts the upload again

	_, err = srv.ReportChunks(f.ctx, &dfspb.ReportChunksRequest{NodeId: "99999999-0000-0000-0000-000000000000", Added: []*dfspb.ChunkStat{{ChunkId: "bad"}}})
	is.Equal(status.Code(err), codes.NotFound) // an unknown node first: the datanode registers again

	_, err = srv.RegisterDataNode(f.ctx, &dfspb.RegisterDataNodeRequest{NodeId: "88888888-0000-0000-0000-000000000000", Addr: "127.0.0.1:7100", Capacity: 1 << 30, Free: 1 << 30})
	is.NoErr(err) // the burst admits one registration
	_, err = srv.RegisterDataNode(f.ctx, &dfspb.RegisterDataNodeRequest{NodeId: "bad", Addr: "127.0.0.1:7101"})
	is.Equal(status.Code(err), codes.ResourceExhausted) // the rate limit before any other check, so floods cost little
}
