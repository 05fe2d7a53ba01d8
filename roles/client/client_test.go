package client

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/internal/grpctest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// nodesCoordinator answers ListNodes with answer's error, or one node,
// and counts the calls.
type nodesCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	answer func() error
	calls  atomic.Int32
}

func (c *nodesCoordinator) ListNodes(context.Context, *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	c.calls.Add(1)
	if err := c.answer(); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ListNodesResponse{Nodes: []*dfspb.NodeStatus{{NodeId: "n1"}}}, nil
}

func startNodesCoordinator(t *testing.T, answer func() error) (string, *nodesCoordinator) {
	t.Helper()
	c := &nodesCoordinator{answer: answer}
	return serveCoordinator(t, c), c
}

// serveCoordinator serves a fake coordinator on 127.0.0.1 until the test
// ends and returns its address.
func serveCoordinator(t *testing.T, c dfspb.CoordinatorServer) string {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) { dfspb.RegisterCoordinatorServer(srv, c) })
}

// serveDatanode serves a fake datanode on 127.0.0.1 until the test ends
// and returns its address.
func serveDatanode(t *testing.T, dn dfspb.DataNodeServer) string {
	t.Helper()
	return grpctest.Serve(t, func(srv *grpc.Server) { dfspb.RegisterDataNodeServer(srv, dn) })
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t))
	cfg.Logger = &log
	c, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientFollowsLeader: the client's calls go through its coordinator
// addresses as rpc.Leader says: past one that cannot be reached, from a
// standby to the leader it names, without a pause, and then straight to
// the leader.
func TestClientFollowsLeader(t *testing.T) {
	is := is.New(t)
	lead, leader := startNodesCoordinator(t, func() error { return nil })
	sb, standby := startNodesCoordinator(t, func() error {
		return rpc.NotServingError(lead, time.Hour, "coordinator is a standby")
	})
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // a free port
	dead := lis.Addr().String()
	lis.Close()
	cfg := DefaultConfig()
	cfg.Coordinators = []string{dead, sb}
	cfg.Clock = clockwork.NewFakeClock() // nobody advances it: a pause would hang
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	for range 2 {
		resp, err := c.Nodes(ctx)
		is.NoErr(err)                // answered
		is.Equal(len(resp.Nodes), 1) // by the leader
	}
	is.Equal(standby.calls.Load(), int32(1)) // the standby was asked once
	is.Equal(leader.calls.Load(), int32(2))  // the leader answered both calls
}

// TestClientGivesUp: a client whose coordinators cannot be reached fails
// at once with Unavailable; one whose coordinator never serves fails after
// the failover timeout of its clock, keeping the not-serving cause.
func TestClientGivesUp(t *testing.T) {
	is := is.New(t)
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // a free port
	dead := lis.Addr().String()
	lis.Close()
	cfg := DefaultConfig()
	cfg.Coordinators = []string{dead}
	cfg.FailoverTimeout = time.Hour
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = newClient(t, cfg).Nodes(ctx)
	is.True(errors.Is(err, rpc.Unavailable)) // unreachable
	is.True(ctx.Err() == nil)                // at once, not after the failover timeout

	sb, standby := startNodesCoordinator(t, func() error {
		return rpc.NotServingError("", time.Second, "coordinator in safe mode")
	})
	clk := clockwork.NewFakeClock()
	cfg.Coordinators, cfg.FailoverTimeout, cfg.Clock = []string{sb}, 2*time.Second, clk
	c := newClient(t, cfg)
	done := make(chan error, 1)
	go func() { _, err := c.Nodes(ctx); done <- err }()
	for range 2 {
		is.NoErr(clk.BlockUntilContext(ctx, 1)) // pausing on the client's clock
		clk.Advance(time.Second)
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the call did not give up")
	}
	is.True(errors.Is(err, rpc.Unavailable))                   // gave up
	is.True(strings.Contains(err.Error(), "gave up after 2s")) // after the failover timeout
	_, notServing := rpc.NotServingOf(err)
	is.True(notServing)                      // the cause is kept
	is.Equal(standby.calls.Load(), int32(3)) // at 0, 1 and 2 s
}
