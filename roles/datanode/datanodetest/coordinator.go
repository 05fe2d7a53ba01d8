// Package datanodetest provides a fake coordinator for datanode tests.
package datanodetest

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Coordinator is an in-memory coordinator that serves what a datanode
// needs on loopback gRPC: it accepts registrations and heartbeats and keeps,
// per node, the inventory and corrupt list that the node's ReportChunks
// calls describe. A node it does not know (one that never registered) gets
// NotFound, as from a real coordinator, and registers again.
type Coordinator struct {
	dfspb.UnimplementedCoordinatorServer

	addr    string
	cluster string

	mu          sync.Mutex
	nodes       map[string]*node
	failReports bool
	heartbeats  int
	reply       *dfspb.HeartbeatResponse // answers heartbeats, when set
	// refuse first pages of full inventories (no turn), with retryAfter.
	refuse        int
	retryAfter    time.Duration
	refused       []time.Time
	registrations int
	pages         []*dfspb.ReportChunksRequest // pages of full inventories applied, without their chunks
}

type node struct {
	addr    string
	diskErr string // from the last heartbeat
	chunks  map[string]*dfspb.ChunkStat
	corrupt map[string]bool
	full    int // full reports received
}

var _ dfspb.CoordinatorServer = (*Coordinator)(nil)

// Start serves a Coordinator on 127.0.0.1:0 until the test ends.
func Start(t testing.TB) *Coordinator {
	t.Helper()
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Coordinator{addr: lis.Addr().String(), cluster: uuid.NewString(), nodes: map[string]*node{}}
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	dfspb.RegisterCoordinatorServer(srv, c)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return c
}

// Addr is the address the coordinator listens on.
func (c *Coordinator) Addr() string { return c.addr }

// FailReports makes ReportChunks fail with Unavailable (true) or work
// again (false).
func (c *Coordinator) FailReports(fail bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failReports = fail
}

// RefuseInventories makes the next n first pages of full inventories be
// refused as a coordinator with no turn for them does: ResourceExhausted,
// send it again after retryAfter.
func (c *Coordinator) RefuseInventories(n int, retryAfter time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuse, c.retryAfter = n, retryAfter
}

// Refused returns when the first pages refused so far came.
func (c *Coordinator) Refused() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.refused)
}

// Registrations returns how many registrations were answered.
func (c *Coordinator) Registrations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registrations
}

// InventoryPages returns the pages of full inventories applied so far
// (node, full, page and last; without their chunks).
func (c *Coordinator) InventoryPages() []*dfspb.ReportChunksRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pages)
}

// Has reports whether node reported chunk id as stored (and not since as
// removed or corrupt).
func (c *Coordinator) Has(nodeID rpc.NodeID, id rpc.ChunkID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[string(nodeID)]
	return ok && n.chunks[string(id)] != nil
}

// Stat returns what node reported of chunk id, or nil.
func (c *Coordinator) Stat(nodeID rpc.NodeID, id rpc.ChunkID) *dfspb.ChunkStat {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[string(nodeID)]; ok {
		return n.chunks[string(id)]
	}
	return nil
}

// Corrupt returns the chunks node reported corrupt and not since removed,
// sorted.
func (c *Coordinator) Corrupt(nodeID rpc.NodeID) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[string(nodeID)]
	if !ok {
		return nil
	}
	return slices.Sorted(maps.Keys(n.corrupt))
}

// FullReports returns how many full reports node sent whole (counted at
// their last page).
func (c *Coordinator) FullReports(nodeID rpc.NodeID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[string(nodeID)]; ok {
		return n.full
	}
	return 0
}

// RegisterDataNode admits any node into the fake's cluster.
func (c *Coordinator) RegisterDataNode(ctx context.Context, req *dfspb.RegisterDataNodeRequest) (*dfspb.RegisterDataNodeResponse, error) {
	if _, err := rpc.ParseNodeID(req.NodeId); err != nil {
		return nil, rpc.ToStatus(err)
	}
	if req.ClusterId != "" && req.ClusterId != c.cluster {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "node %s belongs to cluster %s", req.NodeId, req.ClusterId))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[req.NodeId]
	if !ok {
		n = &node{chunks: map[string]*dfspb.ChunkStat{}, corrupt: map[string]bool{}}
		c.nodes[req.NodeId] = n
	}
	n.addr = req.Addr
	c.registrations++
	return &dfspb.RegisterDataNodeResponse{ClusterVersion: 1, ClusterId: c.cluster}, nil
}

// DiskError returns the disk error a node's last heartbeat reported.
func (c *Coordinator) DiskError(nodeID rpc.NodeID) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[string(nodeID)]; ok {
		return n.diskErr
	}
	return ""
}

// ReplyToHeartbeats makes every heartbeat from now on get resp.
func (c *Coordinator) ReplyToHeartbeats(resp *dfspb.HeartbeatResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reply = resp
}

// Heartbeats returns how many heartbeats were answered.
func (c *Coordinator) Heartbeats() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heartbeats
}

// DataNodeHeartbeat answers a registered node with the full list of
// registered nodes, or with what ReplyToHeartbeats set.
func (c *Coordinator) DataNodeHeartbeat(ctx context.Context, req *dfspb.HeartbeatRequest) (*dfspb.HeartbeatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[req.NodeId]
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "node %s is not registered", req.NodeId))
	}
	n.diskErr = req.DiskError
	c.heartbeats++
	if c.reply != nil {
		return c.reply, nil
	}
	resp := &dfspb.HeartbeatResponse{ClusterVersion: 1, Full: true}
	for _, id := range slices.Sorted(maps.Keys(c.nodes)) {
		resp.Nodes = append(resp.Nodes, &dfspb.NodeStatus{NodeId: id, Addr: c.nodes[id].addr, State: dfspb.NodeState_NODE_STATE_HEALTHY})
	}
	return resp, nil
}

// AddNode registers a datanode that is not running (or that the test
// serves itself) at addr, so that the nodes accept it as a peer.
func (c *Coordinator) AddNode(id rpc.NodeID, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[string(id)] = &node{addr: addr, chunks: map[string]*dfspb.ChunkStat{}, corrupt: map[string]bool{}}
}

// ReportChunks applies a node's report: a full report replaces what the
// node was thought to hold; corrupt chunks stop counting as stored.
func (c *Coordinator) ReportChunks(ctx context.Context, req *dfspb.ReportChunksRequest) (*dfspb.ReportChunksResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failReports {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Unavailable, "reports are failing"))
	}
	n, ok := c.nodes[req.NodeId]
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "node %s is not registered", req.NodeId))
	}
	if req.Full && c.refuse > 0 {
		c.refuse--
		c.refused = append(c.refused, time.Now())
		return nil, rpc.ToStatus(&rpc.Error{Kind: rpc.ResourceExhausted, Msg: "no turn for the inventory", Err: &rpc.NotServing{RetryAfter: c.retryAfter}})
	}
	if req.Full || req.Page > 0 {
		c.pages = append(c.pages, &dfspb.ReportChunksRequest{NodeId: req.NodeId, Full: req.Full, Page: req.Page, Last: req.Last})
	}
	if req.Full {
		clear(n.chunks)
		clear(n.corrupt)
	}
	if (req.Full || req.Page > 0) && (req.Last || req.Page == 0) {
		defer func() { n.full++ }()
	}
	for _, a := range req.Added {
		n.chunks[a.ChunkId] = a
		delete(n.corrupt, a.ChunkId)
	}
	for _, id := range req.Corrupt {
		delete(n.chunks, id)
		n.corrupt[id] = true
	}
	for _, id := range req.Removed {
		delete(n.chunks, id)
		delete(n.corrupt, id)
	}
	return &dfspb.ReportChunksResponse{}, nil
}
