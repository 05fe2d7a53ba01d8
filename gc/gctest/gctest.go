// Package gctest provides an in-memory gc.Deleter: a set of datanodes that
// hold chunk IDs, with faults that tests can switch on per node.
package gctest

import (
	"context"
	"slices"
	"sync"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/rpc"
)

// Nodes is an in-memory cluster of datanodes as the collector sees them:
// each node holds a set of chunk IDs and deletes them on request. It is
// safe for concurrent use.
type Nodes struct {
	mu    sync.Mutex
	nodes map[rpc.NodeID]*node
}

type node struct {
	chunks   map[rpc.ChunkID]bool
	stuck    map[rpc.ChunkID]bool // chunks the node fails to delete
	down     error                // returned for every call while set
	failNext int                  // calls still to fail with Unavailable
	hang     bool                 // calls block until their context ends
	calls    int
	maxBatch int
}

var _ gc.Deleter = (*Nodes)(nil)

// New returns an empty cluster.
func New() *Nodes { return &Nodes{nodes: make(map[rpc.NodeID]*node)} }

func (n *Nodes) get(id rpc.NodeID) *node {
	nd := n.nodes[id]
	if nd == nil {
		nd = &node{chunks: make(map[rpc.ChunkID]bool), stuck: make(map[rpc.ChunkID]bool)}
		n.nodes[id] = nd
	}
	return nd
}

// Add makes node a member (if it is not one yet) and stores ids on it.
func (n *Nodes) Add(node rpc.NodeID, ids ...rpc.ChunkID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.get(node)
	for _, id := range ids {
		nd.chunks[id] = true
	}
}

// Remove takes node out of the cluster: DeleteChunks for it then fails
// with NotFound, as the coordinator's registry answers for unknown nodes.
func (n *Nodes) Remove(node rpc.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, node)
}

// Chunks returns the chunks node holds, sorted.
func (n *Nodes) Chunks(node rpc.NodeID) []rpc.ChunkID {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.nodes[node]
	if nd == nil {
		return nil
	}
	var out []rpc.ChunkID
	for id := range nd.chunks {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Has reports whether node holds id.
func (n *Nodes) Has(node rpc.NodeID, id rpc.ChunkID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.nodes[node]
	return nd != nil && nd.chunks[id]
}

// SetDown makes every call to node fail with err until SetDown(node, nil).
func (n *Nodes) SetDown(node rpc.NodeID, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.get(node).down = err
}

// FailNext makes the next k calls to node fail with Unavailable.
func (n *Nodes) FailNext(node rpc.NodeID, k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.get(node).failNext = k
}

// SetStuck makes node fail (stuck) or succeed (!stuck) to delete id; a
// stuck chunk is reported in the failed list of a bulk delete.
func (n *Nodes) SetStuck(node rpc.NodeID, id rpc.ChunkID, stuck bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.get(node)
	if stuck {
		nd.stuck[id] = true
	} else {
		delete(nd.stuck, id)
	}
}

// SetHang makes calls to node block until their context ends, as a node
// that accepted the connection but never answers.
func (n *Nodes) SetHang(node rpc.NodeID, hang bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.get(node).hang = hang
}

// Calls returns how many bulk deletes reached node (failed ones included).
func (n *Nodes) Calls(node rpc.NodeID) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[node]; nd != nil {
		return nd.calls
	}
	return 0
}

// MaxBatch returns the most IDs node received in one bulk delete.
func (n *Nodes) MaxBatch(node rpc.NodeID) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[node]; nd != nil {
		return nd.maxBatch
	}
	return 0
}

// DeleteChunks implements gc.Deleter. A chunk the node does not hold
// counts as deleted; stuck chunks come back as failed. An unknown node is
// NotFound; a node that is down, or told to fail, returns its error
// without deleting anything; a canceled or expired ctx returns its error.
func (n *Nodes) DeleteChunks(ctx context.Context, nodeID rpc.NodeID, ids []rpc.ChunkID) ([]rpc.ChunkID, error) {
	if err := ctx.Err(); err != nil {
		return nil, rpc.Errorf(rpc.Other, "delete on %s: %w", nodeID, err)
	}
	n.mu.Lock()
	nd := n.nodes[nodeID]
	if nd == nil {
		n.mu.Unlock()
		return nil, rpc.Errorf(rpc.NotFound, "node %s not found", nodeID)
	}
	nd.calls++
	nd.maxBatch = max(nd.maxBatch, len(ids))
	if nd.hang {
		n.mu.Unlock()
		<-ctx.Done()
		return nil, rpc.Errorf(rpc.Other, "delete on %s: %w", nodeID, ctx.Err())
	}
	defer n.mu.Unlock()
	if nd.down != nil {
		return nil, nd.down
	}
	if nd.failNext > 0 {
		nd.failNext--
		return nil, rpc.Errorf(rpc.Unavailable, "node %s unavailable", nodeID)
	}
	var failed []rpc.ChunkID
	for _, id := range ids {
		if nd.stuck[id] {
			failed = append(failed, id)
			continue
		}
		delete(nd.chunks, id)
	}
	return failed, nil
}
