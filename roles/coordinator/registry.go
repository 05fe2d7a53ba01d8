package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// probeTimeout bounds the check that a node registering from a new address
// is no longer at its old one.
const probeTimeout = 2 * time.Second

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
	// incarnation names the node's latest registration; its heartbeats
	// must present it.
	incarnation string
	// conflict is the address of the latest registration of this ID that
	// was refused because the node was alive at addr, and conflictAt when.
	conflict   string
	conflictAt time.Time
	diskErr    string // why the node takes no new chunks, from its heartbeats
}

func (e *nodeEntry) status() nodeStatus {
	return nodeStatus{
		id: e.id, addr: e.addr, state: e.state,
		capacity: e.capacity, used: e.used, free: e.free, chunks: e.chunks,
		lastHeartbeat: e.lastHeartbeat, conflictAddr: e.conflict, diskErr: e.diskErr,
	}
}

// nodeStatus is one datanode as ListNodes, heartbeats and the status page
// show it.
type nodeStatus struct {
	id                           rpc.NodeID
	addr                         string
	state                        placement.State
	capacity, used, free, chunks int64
	lastHeartbeat                time.Time
	// conflictAddr is the address of a refused registration of this ID
	// (see registry.register); diskErr why the node takes no new chunks.
	conflictAddr, diskErr string
	draining              bool
	// decommissioned and corruptChunks are the health scan's marks (see
	// admin.decorate); failingUntil ends a penalty (see penalties).
	decommissioned bool
	corruptChunks  int64
	failingUntil   time.Time
	// forgotten marks, in an update, a node the registry forgot.
	forgotten bool
}

// nodeUpdate is one membership change: version is the cluster version it
// made.
type nodeUpdate struct {
	version uint64
	node    nodeStatus
}

// changes is what a heartbeat reply tells a node of the membership: the
// updates since the version it knows, or, with full, every node.
type changes struct {
	version uint64
	full    bool
	updates []nodeUpdate
	nodes   []nodeStatus
}

// registry is the coordinator's view of datanode membership. Every change
// of a node's address or state bumps the cluster version and is logged so
// heartbeats can return just the changes a node has not seen.
type registry struct {
	suspectAfter time.Duration
	deadAfter    time.Duration
	// forgetAfter: a node dead this long (silent for deadAfter plus
	// forgetAfter) leaves the registry.
	forgetAfter time.Duration
	events      *events // joins, returns and state changes go here
	log         zerolog.Logger
	penalties   *penalties // nodes reported failing streams; nil: none

	mu       sync.Mutex
	nodes    map[rpc.NodeID]*nodeEntry
	draining map[rpc.NodeID]bool // being decommissioned
	version  uint64
	updates  []nodeUpdate // the latest changes, oldest first
}

func newRegistry(suspectAfter, deadAfter, forgetAfter time.Duration, ev *events, log zerolog.Logger) *registry {
	return &registry{suspectAfter: suspectAfter, deadAfter: deadAfter, forgetAfter: forgetAfter, events: ev, log: log,
		nodes: make(map[rpc.NodeID]*nodeEntry), draining: map[rpc.NodeID]bool{}}
}

// changedLocked records a change of e.
func (r *registry) changedLocked(e *nodeEntry) {
	r.updateLocked(e.status())
}

// updateLocked records a change of a node's status.
func (r *registry) updateLocked(st nodeStatus) {
	r.version++
	r.updates = append(r.updates, nodeUpdate{version: r.version, node: st})
	if len(r.updates) > maxUpdates {
		r.updates = slices.Clone(r.updates[len(r.updates)-maxUpdates:])
	}
}

type usage struct {
	capacity, used, free, chunks int64
	diskErr                      string // heartbeats only: why the node takes no new chunks
}

// claimed returns the address id is registered at, when that is not addr
// and the node there is alive: its last heartbeat within suspectAfter.
// Whether the node still answers there decides whether a registration
// from addr may move it (see register).
func (r *registry) claimed(id rpc.NodeID, addr string, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok || e.addr == addr || now.Sub(e.lastHeartbeat) >= r.suspectAfter {
		return "", false
	}
	return e.addr, true
}

// register adds or refreshes a node and returns the cluster version and
// the node's new incarnation, which its heartbeats must present from now
// on. A known ID registering from another address is refused with
// FailedPrecondition while the node registered at the old address is
// alive (its last heartbeat within suspectAfter), unless the caller found
// the old address gone (gone names it: nothing answers there, or another
// node does): a copied data directory or a forged registration must not
// move a live node, a node restarted elsewhere moves at once. The same
// address may always register again: a node restarted in place.
func (r *registry) register(id rpc.NodeID, addr, gone string, u usage, now time.Time) (version uint64, incarnation string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if ok && e.addr != addr && e.addr != gone {
		if silent := now.Sub(e.lastHeartbeat); silent < r.suspectAfter {
			err := rpc.Errorf(rpc.FailedPrecondition,
				"datanode %s is registered at %s and answers there (last heartbeat %s ago); refusing the same node ID from %s "+
					"(a copied data directory, or a forged registration?); a node that really moved is accepted once %s stops answering as it or has been silent for --suspect-after (%s)",
				id, e.addr, silent.Round(time.Millisecond), addr, e.addr, r.suspectAfter)
			lvl := zerolog.DebugLevel // the same one retrying
			if e.conflict != addr {
				lvl = zerolog.WarnLevel
				r.events.add("node", "refused datanode %s from %s: it is alive at %s", id.Short(), addr, e.addr)
			}
			r.log.WithLevel(lvl).Err(err).Str("node_id", string(id)).Str("addr", addr).Msg("datanode registration refused")
			e.conflict, e.conflictAt = addr, now
			return 0, "", err
		}
	}
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
	case e.addr != addr:
		r.events.add("node", "datanode %s moved from %s to %s", id.Short(), e.addr, addr)
		e.conflict = ""
	case e.state != placement.Healthy:
		r.events.add("node", "datanode %s (%s) is back after being %s", id.Short(), addr, e.state)
	}
	r.penalties.forgive(id) // a fresh process: reports were of the old one
	e.addr, e.state, e.lastHeartbeat = addr, placement.Healthy, now
	e.capacity, e.used, e.free, e.chunks = u.capacity, u.used, u.free, u.chunks
	e.incarnation = uuid.NewString()
	if changed {
		r.changedLocked(e)
	}
	return r.version, e.incarnation, nil
}

// heartbeat records a heartbeat and returns the changes since known, or
// the full list when known is 0 or too old. It fails with NotFound for a
// node that must register (again) first: one the registry does not know,
// or a heartbeat from another incarnation than the latest registration's
// (the process that registered before, when the node restarted or moved).
func (r *registry) heartbeat(id rpc.NodeID, incarnation string, u usage, known uint64, now time.Time) (changes, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok {
		return changes{}, rpc.Errorf(rpc.NotFound, "node %s is not registered", id)
	}
	if incarnation != e.incarnation {
		return changes{}, rpc.Errorf(rpc.NotFound, "node %s: heartbeat from an earlier registration (the node registered again since, at %s); register again", id, e.addr)
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
	resp := changes{version: r.version}
	switch {
	case known == r.version:
	case known == 0 || known > r.version || len(r.updates) == 0 || known+1 < r.updates[0].version:
		resp.full = true
		resp.nodes = r.allLocked()
	default:
		i, _ := slices.BinarySearchFunc(r.updates, known+1, func(u nodeUpdate, v uint64) int {
			return cmp.Compare(u.version, v)
		})
		resp.updates = slices.Clone(r.updates[i:])
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
		if e.conflict != "" && now.Sub(e.conflictAt) >= r.deadAfter {
			e.conflict = "" // no refused registration for a while
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

// forget removes the nodes dead for forgetAfter (silent for deadAfter plus
// forgetAfter) and returns them. Heartbeats tell the other nodes with an
// update marked forgotten. A forgotten node that comes back registers as a
// new one.
func (r *registry) forget(now time.Time) []rpc.NodeID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []rpc.NodeID
	for id, e := range r.nodes {
		if now.Sub(e.lastHeartbeat) < r.deadAfter+r.forgetAfter {
			continue
		}
		delete(r.nodes, id)
		st := e.status()
		st.state, st.forgotten = placement.Dead, true
		r.updateLocked(st)
		gone = append(gone, id)
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		names := make([]string, 0, 3)
		for _, id := range gone[:min(len(gone), 3)] {
			names = append(names, id.Short())
		}
		more := ""
		if len(gone) > 3 {
			more = fmt.Sprintf(" and %d more", len(gone)-3)
		}
		r.events.add("node", "forgot datanode %s%s: dead for over %s", strings.Join(names, ", "), more, r.forgetAfter)
	}
	return gone
}

func (r *registry) allLocked() []nodeStatus {
	out := make([]nodeStatus, 0, len(r.nodes))
	for _, e := range r.nodes {
		st := e.status()
		st.draining = r.draining[e.id]
		st.failingUntil = r.penalties.failingUntil(e.id)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b nodeStatus) int { return strings.Compare(a.addr, b.addr) })
	return out
}

// list returns the cluster version and every node's status.
func (r *registry) list() (uint64, []nodeStatus) {
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
