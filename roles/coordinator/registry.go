package coordinator

import (
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// maxUpdates is how many membership changes the registry remembers for
// incremental heartbeat replies; a node further behind gets the full list.
const maxUpdates = 1024

type nodeEntry struct {
	id            rpc.NodeID
	addr          string
	state         placement.State
	capacity      int64
	used          int64
	free          int64
	chunks        int64
	lastHeartbeat time.Time
	registered    time.Time
	diskErr       string // why the node takes no new chunks, from its heartbeats
}

func (e *nodeEntry) status() *dfspb.NodeStatus {
	return &dfspb.NodeStatus{
		NodeId: string(e.id), Addr: e.addr, State: stateToProto(e.state),
		Capacity: e.capacity, Used: e.used, Free: e.free, ChunkCount: e.chunks,
		LastHeartbeatUnixMs: e.lastHeartbeat.UnixMilli(), DiskError: e.diskErr,
	}
}

func stateToProto(s placement.State) dfspb.NodeState {
	switch s {
	case placement.Healthy:
		return dfspb.NodeState_NODE_STATE_HEALTHY
	case placement.Suspect:
		return dfspb.NodeState_NODE_STATE_SUSPECT
	case placement.Dead:
		return dfspb.NodeState_NODE_STATE_DEAD
	}
	return dfspb.NodeState_NODE_STATE_UNSPECIFIED
}

// registry is the coordinator's view of datanode membership. Every change
// of a node's address or state bumps the cluster version and is logged so
// heartbeats can return just the changes a node has not seen.
type registry struct {
	suspectAfter time.Duration
	deadAfter    time.Duration
	events       *events    // joins, returns and state changes go here
	penalties    *penalties // nodes reported failing streams; nil: none

	mu       sync.Mutex
	nodes    map[rpc.NodeID]*nodeEntry
	draining map[rpc.NodeID]bool // being decommissioned
	version  uint64
	updates  []*dfspb.NodeUpdate // the latest changes, oldest first
}

func newRegistry(suspectAfter, deadAfter time.Duration, ev *events) *registry {
	return &registry{suspectAfter: suspectAfter, deadAfter: deadAfter, events: ev, nodes: make(map[rpc.NodeID]*nodeEntry), draining: map[rpc.NodeID]bool{}}
}

// changedLocked records a change of e.
func (r *registry) changedLocked(e *nodeEntry) {
	r.version++
	r.updates = append(r.updates, &dfspb.NodeUpdate{Version: r.version, Node: e.status()})
	if len(r.updates) > maxUpdates {
		r.updates = slices.Clone(r.updates[len(r.updates)-maxUpdates:])
	}
}

type usage struct {
	capacity, used, free, chunks int64
	diskErr                      string // heartbeats only: why the node takes no new chunks
}

// register adds or refreshes a node; a known ID with a new address moves.
func (r *registry) register(id rpc.NodeID, addr string, u usage, now time.Time) (uint64, []*dfspb.NodeStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok {
		e = &nodeEntry{id: id, registered: now}
		r.nodes[id] = e
	}
	changed := !ok || e.addr != addr || e.state != placement.Healthy
	if changed {
		e.registered = now // (re)joined: its copies are the first to trim
	}
	switch {
	case !ok:
		r.events.add("node", "datanode %s joined at %s", id.Short(), addr)
	case e.state != placement.Healthy:
		r.events.add("node", "datanode %s (%s) is back after being %s", id.Short(), addr, e.state)
	case e.addr != addr:
		r.events.add("node", "datanode %s moved from %s to %s", id.Short(), e.addr, addr)
	}
	r.penalties.forgive(id) // a fresh process: reports were of the old one
	e.addr, e.state, e.lastHeartbeat = addr, placement.Healthy, now
	e.capacity, e.used, e.free, e.chunks = u.capacity, u.used, u.free, u.chunks
	if changed {
		r.changedLocked(e)
	}
	return r.version, r.allLocked()
}

// heartbeat records a heartbeat and returns the changes since known, or
// the full list when known is too old. It fails with NotFound for a node
// that must register first.
func (r *registry) heartbeat(id rpc.NodeID, u usage, known uint64, now time.Time) (*dfspb.HeartbeatResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "node %s is not registered", id)
	}
	e.capacity, e.used, e.free, e.chunks = u.capacity, u.used, u.free, u.chunks
	e.lastHeartbeat = now
	diskChanged := (e.diskErr == "") != (u.diskErr == "")
	e.diskErr = u.diskErr
	if diskChanged {
		if u.diskErr != "" {
			r.events.add("node", "datanode %s (%s) cannot write to its disk; no new chunks: %s", id.Short(), e.addr, u.diskErr)
		} else {
			r.events.add("node", "datanode %s (%s) can write to its disk again", id.Short(), e.addr)
		}
		r.changedLocked(e)
	}
	if e.state != placement.Healthy {
		r.events.add("node", "datanode %s (%s) is healthy again after being %s", id.Short(), e.addr, e.state)
		e.state = placement.Healthy
		r.changedLocked(e)
	}
	resp := &dfspb.HeartbeatResponse{ClusterVersion: r.version}
	switch {
	case known == r.version:
	case known > r.version || len(r.updates) == 0 || known+1 < r.updates[0].Version:
		resp.Full = true
		resp.Nodes = r.allLocked()
	default:
		i, _ := slices.BinarySearchFunc(r.updates, known+1, func(u *dfspb.NodeUpdate, v uint64) int {
			switch {
			case u.Version < v:
				return -1
			case u.Version > v:
				return 1
			}
			return 0
		})
		resp.Updates = slices.Clone(r.updates[i:])
	}
	return resp, nil
}

// tick moves nodes to suspect or dead as their heartbeats age.
func (r *registry) tick(now time.Time) (dead []rpc.NodeID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.nodes {
		age := now.Sub(e.lastHeartbeat)
		want := placement.Healthy
		switch {
		case age >= r.deadAfter:
			want = placement.Dead
		case age >= r.suspectAfter:
			want = placement.Suspect
		}
		if want != e.state && want > e.state {
			e.state = want
			r.changedLocked(e)
			r.events.add("node", "datanode %s (%s) is %s: no heartbeat for %s", e.id.Short(), e.addr, want, age.Round(time.Second))
			if want == placement.Dead {
				dead = append(dead, e.id)
			}
		}
	}
	return dead
}

func (r *registry) allLocked() []*dfspb.NodeStatus {
	out := make([]*dfspb.NodeStatus, 0, len(r.nodes))
	for _, e := range r.nodes {
		st := e.status()
		st.Draining = r.draining[e.id]
		if u := r.penalties.failingUntil(e.id); !u.IsZero() {
			st.FailingUntilUnixMs = u.UnixMilli()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b *dfspb.NodeStatus) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	return out
}

// list returns the cluster version and every node's status.
func (r *registry) list() (uint64, []*dfspb.NodeStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version, r.allLocked()
}

// candidates returns the nodes as placement sees them: neither draining
// nor unable to write to their disk, and marked Failing while penalized.
func (r *registry) candidates() []placement.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]placement.Node, 0, len(r.nodes))
	for _, e := range r.nodes {
		if !r.draining[e.id] && e.diskErr == "" {
			out = append(out, placement.Node{ID: e.id, Addr: e.addr, State: e.state, Free: e.free,
				Failing: !r.penalties.failingUntil(e.id).IsZero()})
		}
	}
	return out
}

// nodeInfo is what the health scan needs of a node.
type nodeInfo struct {
	addr       string
	state      placement.State
	draining   bool
	registered time.Time
	known      bool
	chunks     int64 // the chunks the node said it holds, at its last heartbeat
}

// live reports whether the node serves reads (healthy or suspect).
func (n nodeInfo) live() bool { return n.known && n.state != placement.Dead }

// infos returns every node's info, draining ones not registered included.
func (r *registry) infos() map[rpc.NodeID]nodeInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[rpc.NodeID]nodeInfo, len(r.nodes))
	for id, e := range r.nodes {
		out[id] = nodeInfo{addr: e.addr, state: e.state, draining: r.draining[id], registered: e.registered, known: true, chunks: e.chunks}
	}
	for id := range r.draining {
		if _, ok := out[id]; !ok {
			out[id] = nodeInfo{state: placement.Dead, draining: true}
		}
	}
	return out
}

// setDraining marks or unmarks a node as being decommissioned.
func (r *registry) setDraining(id rpc.NodeID, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.draining[id] = true
	} else {
		delete(r.draining, id)
	}
	if e, ok := r.nodes[id]; ok {
		r.changedLocked(e)
	}
}

// lookup returns a node's address and state.
func (r *registry) lookup(id rpc.NodeID) (addr string, state placement.State, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok {
		return "", placement.Dead, false
	}
	return e.addr, e.state, true
}

// reserve lowers a node's free space by n until its next report, so a burst
// of placements does not overfill it.
func (r *registry) reserve(id rpc.NodeID, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.nodes[id]; ok {
		e.free -= n
	}
}
