// Package placement chooses where chunks go: the primary and replicas of a
// new chunk, and the order in which a reader tries a chunk's replicas. It
// makes decisions over the node list it is given and never calls a node.
package placement

import (
	"cmp"
	"math/rand/v2"
	"slices"

	"github.com/dfs-project/dfs/rpc"
)

// State is a datanode's health as the coordinator sees it.
type State int

// Node states, from best to worst.
const (
	Healthy State = iota
	Suspect
	Dead
)

func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// Node is what placement knows of a datanode.
type Node struct {
	ID    rpc.NodeID
	Addr  string
	State State
	// Free is the space the node can still accept, in bytes.
	Free int64
	// Failing marks a node others recently saw fail streams: Place uses
	// it only after every other eligible node.
	Failing bool
}

// Policy orders eligible candidates by preference; Place takes the first n.
// Implementations must not keep or modify the slice's nodes other than by
// reordering them.
type Policy interface {
	Order(candidates []Node)
}

// Random spreads chunks uniformly over the eligible nodes.
type Random struct{}

// Order shuffles the candidates.
func (Random) Order(c []Node) { rand.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] }) }

// MostFree prefers the nodes with the most free space, filling the cluster
// evenly. Each node is ranked by how far it is behind the candidate with
// the most free space, in bands of 1/freeBands of that: nodes in the same
// band are equal and come in random order, so they share the load, the
// primaries included. Compared to the byte, free space was a race of
// report times and reservations, not of disks: of three nodes started
// together on one disk, one was the primary of 95% of a burst of small
// puts.
type MostFree struct{}

// freeBands is how finely MostFree tells free spaces apart: a band is
// 1/64 (1.6%) of the most free space of the candidates.
const freeBands = 64

// Order sorts the candidates by band of free space, most first.
func (MostFree) Order(c []Node) {
	Random{}.Order(c)
	var most int64
	for _, n := range c {
		most = max(most, n.Free)
	}
	band := max(most/freeBands, 1)
	behind := func(n Node) int64 { return (most - n.Free) / band }
	slices.SortStableFunc(c, func(a, b Node) int { return cmp.Compare(behind(a), behind(b)) })
}

var (
	_ Policy = Random{}
	_ Policy = MostFree{}
)

// ByName returns the policy called name ("random" or "most-free").
func ByName(name string) (Policy, error) {
	switch name {
	case "random":
		return Random{}, nil
	case "most-free", "mostfree":
		return MostFree{}, nil
	}
	return nil, rpc.Errorf(rpc.Invalid, "unknown placement policy %q (want random or most-free)", name)
}

// Place chooses n distinct nodes for a chunk of size bytes: healthy, with
// at least size bytes free, not excluded. The first is the primary. Nodes
// marked Failing come after every other eligible node, in the policy's
// order among themselves, so they are chosen only when too few others
// qualify: a wrong report never leaves a chunk without a placement. It
// fails with FailedPrecondition when fewer than n nodes qualify.
func Place(p Policy, nodes []Node, n int, size int64, exclude map[rpc.NodeID]bool) ([]Node, error) {
	if n < 0 {
		return nil, rpc.Errorf(rpc.Invalid, "placement asked for %d nodes", n)
	}
	var cand []Node
	var live, full int
	for _, nd := range nodes {
		if nd.State != Healthy {
			continue
		}
		live++
		if nd.Free < size {
			full++
			continue
		}
		if exclude[nd.ID] {
			continue
		}
		cand = append(cand, nd)
	}
	if len(cand) < n {
		return nil, rpc.Errorf(rpc.FailedPrecondition,
			"not enough datanodes: need %d for replication, %d usable (%d healthy of %d registered, %d full, %d excluded after failures)",
			n, len(cand), live, len(nodes), full, len(exclude))
	}
	p.Order(cand)
	slices.SortStableFunc(cand, func(a, b Node) int {
		switch {
		case a.Failing == b.Failing:
			return 0
		case b.Failing:
			return -1
		}
		return 1
	})
	return slices.Clip(cand[:n]), nil
}

// Replica is one copy of a chunk as a reader sees it.
type Replica struct {
	ID    rpc.NodeID
	Addr  string
	State State
}

// OrderForRead returns the replicas in the order a reader should try them:
// healthy ones first, shuffled so reads spread over the copies, then suspect
// ones; dead nodes come last, as a final resort.
func OrderForRead(replicas []Replica) []Replica {
	out := slices.Clone(replicas)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b Replica) int { return cmp.Compare(a.State, b.State) })
	return out
}
