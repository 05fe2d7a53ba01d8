package coordinator

import (
	"context"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// snapshot is the coordinator's state at one moment, as the status page
// and the metrics show it.
type snapshot struct {
	// Started is set once the coordinator serves gRPC; the other fields
	// are filled only then.
	Started   bool
	Addr      string
	ClusterID string
	Store     string
	// Leading is set while this coordinator leads; the fields below it
	// are filled only then.
	Leading        bool
	SafeMode       bool
	SafeModeStatus string
	// Loading is set while the term loads the committed files (in safe
	// mode, whose status says how far it is).
	Loading bool
	// Nodes are every datanode's status with the health scan's marks,
	// ordered by address.
	Nodes []nodeStatus
	// Capacity, Used and Free add up the nodes that are not dead.
	Capacity, Used, Free int64
	Files, Chunks        int
	UploadSessions       int
	Health               clusterHealth
	RepairsFailed        int64
	// Readiness says whether the cluster can take writes.
	Readiness readiness
	// InventoriesApplying and InventoriesWaiting count the datanodes'
	// full inventories holding a turn and waiting for one.
	InventoriesApplying, InventoriesWaiting int
}

// snapshot returns the coordinator's state now.
func (c *Coordinator) snapshot() snapshot {
	if !c.started() {
		return snapshot{}
	}
	s := snapshot{Started: true, Addr: c.addr, ClusterID: c.store.ClusterID(), Store: c.name}
	t := c.term.Load()
	if t == nil {
		return s
	}
	s.Leading = true
	v := t.admin.view()
	s.SafeMode, s.SafeModeStatus = v.safeMode, v.safeModeStatus
	s.Loading = t.safe.isLoading()
	s.Nodes = v.nodes
	for _, n := range s.Nodes {
		if n.state != placement.Dead {
			s.Capacity += n.capacity
			s.Used += n.used
			s.Free += n.free
		}
	}
	s.Files, s.Chunks = t.refs.counts()
	s.UploadSessions = t.uploads.open()
	s.InventoriesApplying, s.InventoriesWaiting = t.membership.inventories.stats()
	s.Health = v.health
	s.RepairsFailed = t.repair.Stats().Failed
	s.Readiness = v.readiness
	return s
}

// Readiness returns nil when the coordinator serves every request: it
// leads, is out of safe mode and the cluster can take writes (see
// admin.readiness). Otherwise the error says why: it is starting, it is a
// standby (naming the leader when one is known, which asks the elector
// within ctx), it waits in safe mode, or too few datanodes can take a
// chunk.
func (c *Coordinator) Readiness(ctx context.Context) error {
	if !c.started() {
		return rpc.Errorf(rpc.Unavailable, "coordinator is starting")
	}
	t, err := c.leader(ctx)
	if err != nil {
		return err
	}
	if r := t.admin.readiness(); !r.Writable {
		return rpc.Errorf(rpc.Unavailable, "%s", r.Reason)
	}
	return nil
}

// leaderAddr returns the address of the leading coordinator: this one's
// while it leads, the elected one's (asking the elector within ctx) while
// it stands by, or "" when none is known.
func (c *Coordinator) leaderAddr(ctx context.Context) string {
	if !c.started() {
		return ""
	}
	if c.Leading() {
		return c.addr
	}
	if c.elector == nil {
		return ""
	}
	l, err := c.elector.Leader(ctx)
	if err != nil {
		return ""
	}
	return l
}

// started reports whether Run has set the coordinator up (its address and
// logger are fixed from then on).
func (c *Coordinator) started() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}
