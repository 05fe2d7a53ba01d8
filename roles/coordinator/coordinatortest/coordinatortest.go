// Package coordinatortest provides an in-memory set of datanodes as the
// coordinator asks things of them (coordinator.Datanodes): each node,
// known by its address, holds chunk copies, deletes them, copies them
// from another node and verifies them, with faults tests switch on per
// node.
package coordinatortest

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/rpc"
)

// Copy is one stored copy of a chunk.
type Copy struct {
	Size      int64
	FrameSize int64
	Digest    []byte
	// Corrupt marks a copy that fails verification.
	Corrupt bool
}

// Nodes is an in-memory cluster of datanodes. It is safe for concurrent
// use.
type Nodes struct {
	mu    sync.Mutex
	nodes map[string]*node // by address
}

type node struct {
	id     rpc.NodeID
	chunks map[rpc.ChunkID]Copy
	down   error // returned for every call while set
	calls  int
}

// New returns an empty cluster.
func New() *Nodes { return &Nodes{nodes: map[string]*node{}} }

// Add starts node id at addr (replacing whatever answered there), holding
// nothing.
func (n *Nodes) Add(id rpc.NodeID, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[addr] = &node{id: id, chunks: map[rpc.ChunkID]Copy{}}
}

// Remove stops the node at addr: calls to it then fail with Unavailable,
// as to an address nothing listens at.
func (n *Nodes) Remove(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, addr)
}

// Put stores a copy of id on the node at addr.
func (n *Nodes) Put(addr string, id rpc.ChunkID, c Copy) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[addr]; nd != nil {
		c.Digest = bytes.Clone(c.Digest)
		nd.chunks[id] = c
	}
}

// Corrupt marks the copy of id on the node at addr corrupt.
func (n *Nodes) Corrupt(addr string, id rpc.ChunkID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[addr]; nd != nil {
		if c, ok := nd.chunks[id]; ok {
			c.Corrupt = true
			nd.chunks[id] = c
		}
	}
}

// Lose removes the copy of id from the node at addr without telling
// anyone, as a disk that lost it.
func (n *Nodes) Lose(addr string, id rpc.ChunkID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[addr]; nd != nil {
		delete(nd.chunks, id)
	}
}

// Has reports whether the node at addr holds a copy of id.
func (n *Nodes) Has(addr string, id rpc.ChunkID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.nodes[addr]
	if nd == nil {
		return false
	}
	_, ok := nd.chunks[id]
	return ok
}

// Chunks returns the chunks the node at addr holds, sorted.
func (n *Nodes) Chunks(addr string) []rpc.ChunkID {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd := n.nodes[addr]
	if nd == nil {
		return nil
	}
	out := make([]rpc.ChunkID, 0, len(nd.chunks))
	for id := range nd.chunks {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// SetDown makes every call to the node at addr fail with err until
// SetDown(addr, nil).
func (n *Nodes) SetDown(addr string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[addr]; nd != nil {
		nd.down = err
	}
}

// Calls returns how many calls reached the node at addr.
func (n *Nodes) Calls(addr string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd := n.nodes[addr]; nd != nil {
		return nd.calls
	}
	return 0
}

// reach returns the node at addr for a call, or the error the call gets;
// the caller holds n.mu.
func (n *Nodes) reach(ctx context.Context, addr string) (*node, error) {
	if err := ctx.Err(); err != nil {
		return nil, rpc.Errorf(rpc.Other, "call %s: %w", addr, err)
	}
	nd := n.nodes[addr]
	if nd == nil {
		return nil, rpc.Errorf(rpc.Unavailable, "nothing answers at %s", addr)
	}
	nd.calls++
	if nd.down != nil {
		return nil, nd.down
	}
	return nd, nil
}

// Delete removes ids from the node at addr; a chunk it does not hold
// counts as deleted. A node that is not node answers NotFound, as a
// datanode refuses a bulk delete meant for another.
func (n *Nodes) Delete(ctx context.Context, id rpc.NodeID, addr string, ids []rpc.ChunkID) ([]rpc.ChunkID, int64, int64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd, err := n.reach(ctx, addr)
	if err != nil {
		return nil, 0, 0, err
	}
	if nd.id != id {
		return nil, 0, 0, rpc.Errorf(rpc.NotFound, "node %s answers at %s, not %s", nd.id, addr, id)
	}
	var deleted, freed int64
	for _, c := range ids {
		if cp, ok := nd.chunks[c]; ok {
			deleted++
			freed += cp.Size
			delete(nd.chunks, c)
		}
	}
	return nil, deleted, freed, nil
}

// Replicate copies t.Chunk from t.Source to t.Target. A source that does
// not hold a good copy fails it with NotFound attributed to the source,
// and one whose copy's size, frame size or digest differ from the task's
// (whose digest may be a prefix, see rpc.DigestsMatch) with Internal, as
// a datanode does.
func (n *Nodes) Replicate(ctx context.Context, t repair.Task) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	dst, err := n.reach(ctx, t.Target.Addr)
	if err != nil {
		return err
	}
	src, err := n.reach(ctx, t.Source.Addr)
	if err != nil {
		return err
	}
	c, ok := src.chunks[t.Chunk]
	if !ok || c.Corrupt {
		return rpc.NodeError(rpc.NotFound, []string{string(t.Source.ID)}, "node %s has no good copy of %s", t.Source.ID, t.Chunk)
	}
	if c.Size != t.Size || c.FrameSize != t.FrameSize || !rpc.DigestsMatch(c.Digest, t.Digest) {
		return rpc.NodeError(rpc.Internal, []string{string(t.Source.ID)}, "node %s holds a different chunk than was committed as %s", t.Source.ID, t.Chunk)
	}
	dst.chunks[t.Chunk] = c
	return nil
}

// Verify reports whether the node at addr holds id and whether its copy
// is corrupt.
func (n *Nodes) Verify(ctx context.Context, addr string, id rpc.ChunkID) (present, corrupt bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd, err := n.reach(ctx, addr)
	if err != nil {
		return false, false, err
	}
	c, ok := nd.chunks[id]
	return ok, ok && c.Corrupt, nil
}

// Identify returns the ID of the node at addr.
func (n *Nodes) Identify(ctx context.Context, addr string) (rpc.NodeID, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd, err := n.reach(ctx, addr)
	if err != nil {
		return "", err
	}
	return nd.id, nil
}
