package repair

import (
	"slices"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// Copy is one reported copy of a committed chunk and the state of the node
// that holds it.
type Copy struct {
	Node rpc.NodeID
	Addr string
	// Known is false for a node the coordinator does not know (forgotten,
	// or draining and not registered in this term): its copy is not live.
	Known bool
	State placement.State
	// Draining: the node is being decommissioned. Its good copies serve
	// reads and repairs but do not count toward replication.
	Draining bool
	// Registered is when the node last (re)joined: among surplus copies on
	// nodes in the same state, the newest node's is trimmed first.
	Registered time.Time
	// Good: the copy matches the committed size, frame size and digest,
	// and its node has not reported it corrupt.
	Good bool
	// Corrupt: the node reported the copy failed verification.
	Corrupt bool
}

// Live reports whether the copy's node serves reads: known, and healthy
// or suspect.
func (c Copy) Live() bool { return c.Known && c.State != placement.Dead }

// Counts reports whether the copy counts toward replication: good, on a
// live node that is not draining. A copy whose deletion is queued is worth
// taking back when it would count.
func (c Copy) Counts() bool { return c.Good && c.Live() && !c.Draining }

// Chunk is a committed chunk as Assess sees it.
type Chunk struct {
	ID        rpc.ChunkID
	Size      int64
	FrameSize int64
	Digest    []byte
	// Want is the number of copies its file asks for.
	Want int
	// Copies are every reported copy, in the order their nodes should be
	// preferred when nothing else tells them apart.
	Copies []Copy
	// Repairing: copies of the chunk are under way. A chunk with enough
	// copies keeps its surplus and bad ones until they end.
	Repairing bool
}

// Assessment is where one committed chunk's copies stand, and what to do
// about them.
type Assessment struct {
	// Need is what repair would copy. Missing is how many good copies the
	// chunk lacks (0 when it has enough); Sources hold a good copy on a
	// live node, healthy and non-draining ones first; Holders are every
	// node with any copy.
	Need
	// Counted is how many copies count toward replication.
	Counted int
	// Trim are the surplus good copies to delete, on suspect nodes first
	// and on the node that (re)joined last among equals. Readers may
	// still use them.
	Trim []rpc.NodeID
	// Bad are the live copies that are not good (corrupt, or not what was
	// committed), to delete: no reader uses them. They go once the chunk
	// has enough copies and no repair of it runs, or at once when the
	// chunk is short and only their nodes could take a new copy.
	Bad []rpc.NodeID
	// Corrupt are the copies their nodes reported corrupt, live or not.
	Corrupt []rpc.NodeID
	// StillNeeded are the draining nodes that hold a good copy of a chunk
	// short of copies: they cannot go yet.
	StillNeeded []rpc.NodeID
}

// Short reports whether the chunk has fewer counted copies than it wants.
func (a Assessment) Short() bool { return a.Missing > 0 }

// Copyable reports whether the chunk is short and has a good copy on a
// live node to copy from: repair can restore it.
func (a Assessment) Copyable() bool { return a.Missing > 0 && len(a.Sources) > 0 }

// Lost reports whether the chunk is short with no good copy on a live
// node: nothing can restore it until one comes back.
func (a Assessment) Lost() bool { return a.Missing > 0 && len(a.Sources) == 0 }

// Assess classifies ch's copies. candidates are the nodes a new copy may
// go to; queued reports whether the deletion of ch's copy on a node is
// queued (such a node takes no new copy); nil means none is. Both are
// consulted only for a chunk that is short and copyable, to see whether a
// new copy could go anywhere but to the nodes holding a bad one.
func Assess(ch Chunk, candidates []placement.Node, queued func(rpc.NodeID) bool) Assessment {
	a := Assessment{Need: Need{Chunk: ch.ID, Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest}}
	draining := map[rpc.NodeID]bool{}
	for _, c := range ch.Copies {
		a.Holders = append(a.Holders, c.Node)
		if c.Corrupt {
			a.Corrupt = append(a.Corrupt, c.Node)
		}
		if c.Counts() {
			a.Counted++
		}
		if c.Good && c.Live() {
			a.Sources = append(a.Sources, placement.Node{ID: c.Node, Addr: c.Addr, State: c.State})
			draining[c.Node] = c.Draining
		}
	}
	// Prefer healthy, non-draining sources.
	slices.SortStableFunc(a.Sources, func(x, y placement.Node) int {
		dx, dy := draining[x.ID], draining[y.ID]
		switch {
		case x.State != y.State:
			return int(x.State) - int(y.State)
		case dx != dy && dx:
			return 1
		case dx != dy:
			return -1
		}
		return 0
	})

	if a.Counted < ch.Want {
		a.Missing = ch.Want - a.Counted
		if a.Copyable() && !hasRoom(candidates, a.Holders, ch, queued) {
			// No node could take a new copy but those holding a bad one
			// (a cluster of as many nodes as copies, or the others full
			// or unhealthy): delete the bad copies first to make room
			// for good ones.
			a.Bad = bad(ch.Copies)
		}
		for _, c := range ch.Copies {
			if c.Good && c.Live() && c.Draining {
				a.StillNeeded = append(a.StillNeeded, c.Node)
			}
		}
		return a
	}
	if ch.Repairing {
		return a
	}
	// Enough copies: the extra ones and the bad ones can go.
	a.Bad = bad(ch.Copies)
	if extra := a.Counted - ch.Want; extra > 0 {
		var counted []Copy
		for _, c := range ch.Copies {
			if c.Counts() {
				counted = append(counted, c)
			}
		}
		slices.SortStableFunc(counted, trimFirst)
		for _, c := range counted[:extra] {
			a.Trim = append(a.Trim, c.Node)
		}
	}
	return a
}

// bad returns the nodes with a live copy that is not good.
func bad(copies []Copy) []rpc.NodeID {
	var out []rpc.NodeID
	for _, c := range copies {
		if !c.Good && c.Live() {
			out = append(out, c.Node)
		}
	}
	return out
}

// hasRoom reports whether a new copy of ch could go anywhere: to a
// healthy candidate with room for it that holds no copy and has no
// deletion of it queued (the nodes repair's placement would take).
func hasRoom(candidates []placement.Node, holders []rpc.NodeID, ch Chunk, queued func(rpc.NodeID) bool) bool {
	return slices.ContainsFunc(candidates, func(c placement.Node) bool {
		return c.State == placement.Healthy && c.Free >= ch.Size &&
			!slices.Contains(holders, c.ID) && (queued == nil || !queued(c.ID))
	})
}

// trimFirst orders a chunk's surplus copies for trimming: copies on
// suspect nodes go first, the ones a healthy node holds are kept; among
// equals, the copies on the node that (re)joined last go first.
func trimFirst(a, b Copy) int {
	if sa, sb := a.State != placement.Healthy, b.State != placement.Healthy; sa != sb {
		if sa {
			return -1
		}
		return 1
	}
	return b.Registered.Compare(a.Registered)
}
