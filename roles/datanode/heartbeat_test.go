package datanode

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestMalformedHeartbeatReply: a heartbeat reply with an update or a node
// entry that names no node (a coordinator bug, or a newer coordinator's
// message) is skipped; the datanode keeps heartbeating and serving.
func TestMalformedHeartbeatReply(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord)
	coord.ReplyToHeartbeats(&dfspb.HeartbeatResponse{
		ClusterVersion: 2, Full: true,
		Nodes:   []*dfspb.NodeStatus{nil, {}},
		Updates: []*dfspb.NodeUpdate{{Version: 2}, {Version: 2, Node: &dfspb.NodeStatus{}}},
	})
	seen := coord.Heartbeats()
	eventually(t, "five more heartbeats", func() bool { return coord.Heartbeats() >= seen+5 })
	_, err := client(t, n).HealthCheck(t.Context(), &dfspb.HealthCheckRequest{})
	is.NoErr(err)               // still serving
	is.Equal(len(n.Peers()), 0) // nothing recorded for the nameless entries
}

// standbyCoordinator answers every call a datanode makes as a standby
// coordinator naming the leader, and counts the calls.
type standbyCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	leader string
	calls  atomic.Int32
}

func (s *standbyCoordinator) notServing() error {
	s.calls.Add(1)
	return rpc.ToStatus(rpc.NotServingError(s.leader, time.Second, "coordinator is a standby"))
}

func (s *standbyCoordinator) RegisterDataNode(context.Context, *dfspb.RegisterDataNodeRequest) (*dfspb.RegisterDataNodeResponse, error) {
	return nil, s.notServing()
}

func (s *standbyCoordinator) DataNodeHeartbeat(context.Context, *dfspb.HeartbeatRequest) (*dfspb.HeartbeatResponse, error) {
	return nil, s.notServing()
}

func (s *standbyCoordinator) ReportChunks(context.Context, *dfspb.ReportChunksRequest) (*dfspb.ReportChunksResponse, error) {
	return nil, s.notServing()
}

// TestHeartbeatFindsLeader: a datanode whose first coordinator address is
// unreachable moves on to the next, a standby, which names the leader;
// the node registers there and stays with it.
func TestHeartbeatFindsLeader(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	sb := &standbyCoordinator{leader: coord.Addr()}
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	dfspb.RegisterCoordinatorServer(srv, sb)
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // the standby's listener
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	dead, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // a free port
	dead.Close()

	n := startNode(t, coord, func(c *Config) {
		c.Coordinators = []string{dead.Addr().String(), lis.Addr().String()}
	})
	is.NoErr(n.Readiness()) // registered, with the leader
	seen := coord.Heartbeats()
	eventually(t, "five heartbeats at the leader", func() bool { return coord.Heartbeats() >= seen+5 })
	is.Equal(sb.calls.Load(), int32(1)) // the standby was asked once, then left for the leader
}
