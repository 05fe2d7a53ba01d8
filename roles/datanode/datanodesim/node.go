package datanodesim

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// node is one simulated datanode.
type node struct {
	dfspb.UnimplementedDataNodeServer
	f     *Fleet
	k     int // its place in the fleet
	id    rpc.NodeID
	addr  string
	coord dfspb.CoordinatorClient

	mu          sync.Mutex
	registered  bool
	incarnation string
	cluster     string
	version     uint64
	full        bool                  // a full inventory is due
	inFull      bool                  // one is being sent
	sent        bool                  // the last full inventory went whole
	deleted     map[rpc.ChunkID]bool  // placed chunks deleted since
	extra       map[rpc.ChunkID]Chunk // chunks copied here (repairs)
	added       map[rpc.ChunkID]Chunk // changes not reported yet
	removed     map[rpc.ChunkID]bool
	kick        chan struct{}
}

func newNode(f *Fleet, k int, id rpc.NodeID) *node {
	return &node{f: f, k: k, id: id, deleted: map[rpc.ChunkID]bool{}, extra: map[rpc.ChunkID]Chunk{},
		added: map[rpc.ChunkID]Chunk{}, removed: map[rpc.ChunkID]bool{}, kick: make(chan struct{}, 1)}
}

func (n *node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *node) current() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.registered && n.sent && !n.full && !n.inFull
}

// placed reports whether chunk i was placed on this node.
func (n *node) placed(i int) bool {
	d := (i - n.k) % n.f.cfg.Nodes
	if d < 0 {
		d += n.f.cfg.Nodes
	}
	// Copy j of chunk i is on node (i+j) mod Nodes: this node holds
	// chunk i when k-i mod Nodes < Copies.
	return (n.f.cfg.Nodes-d)%n.f.cfg.Nodes < n.f.cfg.Copies
}

// lookup returns the chunk id if the node holds it.
func (n *node) lookup(id rpc.ChunkID) (Chunk, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lookupLocked(id)
}

func (n *node) lookupLocked(id rpc.ChunkID) (Chunk, bool) {
	if c, ok := n.extra[id]; ok {
		return c, true
	}
	if n.deleted[id] {
		return Chunk{}, false
	}
	k, ok := keyOf(id)
	if !ok {
		return Chunk{}, false
	}
	i, ok := n.f.index[k]
	if !ok || !n.placed(int(i)) {
		return Chunk{}, false
	}
	return n.f.chunks[i], true
}

// share calls fn with each placed chunk index, in order, until fn says
// stop. The node holds chunks i with i = k-j mod Nodes, j < Copies.
func (n *node) share(fn func(i int) bool) {
	N := n.f.cfg.Nodes
	for j := range n.f.cfg.Copies {
		r := ((n.k-j)%N + N) % N
		for i := r; i < n.f.cfg.Chunks; i += N {
			if !fn(i) {
				return
			}
		}
	}
}

func (n *node) usage() (chunks, used int64) {
	N, C := n.f.cfg.Nodes, n.f.cfg.Chunks
	for j := range n.f.cfg.Copies {
		r := ((n.k-j)%N + N) % N
		if r < C {
			chunks += int64((C-r-1)/N + 1)
		}
	}
	n.mu.Lock()
	chunks += int64(len(n.extra) - len(n.deleted))
	n.mu.Unlock()
	if n.f.cfg.Chunks > 0 {
		used = chunks * n.f.chunks[0].Size
	}
	return chunks, used
}

// call bounds one call to the coordinator by the RPC timeout.
func (n *node) call(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.f.cfg.RPCTimeout)
	defer cancel()
	return rpc.FromStatus(fn(ctx))
}

// heartbeatLoop registers, then heartbeats every interval, registering
// again when the coordinator does not know the node, until ctx ends.
func (n *node) heartbeatLoop(ctx context.Context) {
	cfg := n.f.cfg
	backoff := rpc.Backoff{Initial: 200 * time.Millisecond, Max: cfg.HeartbeatInterval}
	failures := 0
	for ctx.Err() == nil {
		n.mu.Lock()
		registering, known, incarnation, cluster := !n.registered, n.version, n.incarnation, n.cluster
		n.mu.Unlock()
		chunks, used := n.usage()
		start := n.f.clock.Now()
		var err error
		if registering {
			var resp *dfspb.RegisterDataNodeResponse
			err = n.call(ctx, func(ctx context.Context) error {
				resp, err = n.coord.RegisterDataNode(ctx, &dfspb.RegisterDataNodeRequest{NodeId: string(n.id), Addr: n.addr,
					Capacity: cfg.Capacity, Used: used, Free: cfg.Capacity - used, ChunkCount: chunks, ClusterId: cluster})
				return err
			})
			n.f.record(new([]time.Duration), -1, func(s *Stats) {
				if err == nil {
					s.Registrations++
				} else {
					s.RegisterErrors++
				}
			})
			if err == nil {
				n.mu.Lock()
				n.registered, n.incarnation, n.cluster, n.version = true, resp.Incarnation, resp.ClusterId, 0
				n.full, n.sent = true, false
				n.mu.Unlock()
				n.wake()
			}
		} else {
			var resp *dfspb.HeartbeatResponse
			err = n.call(ctx, func(ctx context.Context) error {
				resp, err = n.coord.DataNodeHeartbeat(ctx, &dfspb.HeartbeatRequest{NodeId: string(n.id), Capacity: cfg.Capacity,
					Used: used, Free: cfg.Capacity - used, ChunkCount: chunks, KnownVersion: known, Incarnation: incarnation})
				return err
			})
			took := n.f.clock.Since(start)
			if ctx.Err() != nil {
				return
			}
			n.f.record(&n.f.beats, took, func(s *Stats) {
				if err == nil {
					s.Heartbeats++
				} else {
					s.HeartbeatErrors++
				}
			})
			if err == nil {
				n.mu.Lock()
				n.version = resp.ClusterVersion
				n.mu.Unlock()
				for _, cmd := range resp.Commands {
					if del := cmd.GetDeleteChunks(); del != nil {
						n.delete(del.ChunkIds)
					}
				}
			}
		}
		wait := cfg.HeartbeatInterval
		switch {
		case err == nil && registering:
			wait = 0 // the first heartbeat brings the membership
			failures = 0
		case err == nil:
			failures = 0
		case rpc.KindOf(err) == rpc.NotFound:
			failures++
			n.mu.Lock()
			n.registered = false
			n.mu.Unlock()
			wait = 0
			if registering {
				wait = backoff.Delay(min(failures, 8))
			}
		default:
			failures++
			wait = backoff.Delay(min(failures, 8))
		}
		if rpc.Sleep(ctx, n.f.clock, wait) != nil {
			return
		}
	}
}

// delete removes chunks and queues their removal reports.
func (n *node) delete(ids []string) (deleted int, freed int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range ids {
		id := rpc.ChunkID(s)
		c, ok := n.lookupLocked(id)
		if !ok {
			continue
		}
		if _, ok := n.extra[id]; ok {
			delete(n.extra, id)
		} else {
			n.deleted[id] = true
		}
		delete(n.added, id)
		n.removed[id] = true
		deleted++
		freed += c.Size
	}
	n.wake()
	return deleted, freed
}

// stored adds a copied chunk and queues its report.
func (n *node) stored(c Chunk) {
	n.mu.Lock()
	delete(n.deleted, c.ID)
	delete(n.removed, c.ID)
	if _, held := n.lookupLocked(c.ID); !held {
		n.extra[c.ID] = c
	}
	n.added[c.ID] = c
	n.mu.Unlock()
	n.wake()
}

// reportLoop sends the full inventory when one is due, and queued changes
// otherwise, at least every heartbeat interval, until ctx ends.
func (n *node) reportLoop(ctx context.Context) {
	cfg := n.f.cfg
	backoff := rpc.Backoff{Initial: 100 * time.Millisecond, Max: cfg.HeartbeatInterval}
	failures := 0
	rpc.EveryOr(ctx, n.f.clock, cfg.HeartbeatInterval, n.kick, func(ctx context.Context) {
		var err error
		n.mu.Lock()
		full, registered := n.full, n.registered
		n.mu.Unlock()
		switch {
		case !registered:
			return
		case full:
			err = n.sendInventory(ctx)
		default:
			err = n.sendChanges(ctx)
		}
		if err == nil || ctx.Err() != nil {
			failures = 0
			return
		}
		failures++
		if rpc.KindOf(err) == rpc.NotFound {
			n.mu.Lock()
			n.registered = false
			n.mu.Unlock()
		}
		rpc.Sleep(ctx, n.f.clock, backoff.Delay(min(failures, 8)))
	})
}

// sendInventory sends every held chunk in numbered pages, as a datanode
// does (roles/datanode/report.go): an empty first page that asks for a
// turn, sent again as often as the coordinator answers that it has none
// (after the retry-after it names: not a failure), then pages of
// maxReport chunks, the last one marked. Any other failed page starts the
// inventory over (the next call sends it all).
func (n *node) sendInventory(ctx context.Context) error {
	n.mu.Lock()
	n.full, n.inFull = false, true
	clear(n.added)
	clear(n.removed)
	extra := slices.Collect(maps.Values(n.extra))
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.inFull = false
		n.mu.Unlock()
	}()
	held, _ := n.usage()
	err := n.awaitTurn(ctx, held == 0)
	page := make([]*dfspb.ChunkStat, 0, maxReport)
	number := uint32(1)
	send := func(last bool) error {
		number++
		req := &dfspb.ReportChunksRequest{NodeId: string(n.id), Added: page, Page: number, Last: last}
		err := n.report(ctx, req)
		page = page[:0]
		return err
	}
	add := func(c Chunk) bool {
		if len(page) == maxReport {
			err = send(false)
		}
		page = append(page, &dfspb.ChunkStat{ChunkId: string(c.ID), Present: true, Size: c.Size, FrameSize: c.FrameSize, Digest: c.Digest})
		return err == nil
	}
	if err == nil && held > 0 {
		n.share(func(i int) bool {
			c := n.f.chunks[i]
			n.mu.Lock()
			gone := n.deleted[c.ID]
			n.mu.Unlock()
			return gone || add(c)
		})
		for _, c := range extra {
			if err != nil || !add(c) {
				break
			}
		}
		if err == nil {
			err = send(true)
		}
	}
	n.f.record(new([]time.Duration), -1, func(s *Stats) {
		if err == nil {
			s.Inventories++
		} else {
			s.InventoryRestarts++
		}
	})
	n.mu.Lock()
	if err != nil {
		n.full = true
	} else {
		n.sent = true
	}
	n.mu.Unlock()
	return err
}

// awaitTurn sends a full inventory's first page (empty; last when the
// node holds nothing) until the coordinator gives the node a turn,
// waiting as long as it asks between tries.
func (n *node) awaitTurn(ctx context.Context, last bool) error {
	for {
		err := n.report(ctx, &dfspb.ReportChunksRequest{NodeId: string(n.id), Full: true, Page: 1, Last: last})
		ns, ok := rpc.NotServingOf(err)
		if !ok || rpc.KindOf(err) != rpc.ResourceExhausted {
			return err
		}
		n.f.record(new([]time.Duration), -1, func(s *Stats) { s.TurnsRefused++ })
		if err := rpc.Sleep(ctx, n.f.clock, max(ns.RetryAfter, 10*time.Millisecond)); err != nil {
			return err
		}
	}
}

// sendChanges reports queued changes, up to maxReport; failed ones are
// queued again unless newer ones replaced them.
func (n *node) sendChanges(ctx context.Context) error {
	n.mu.Lock()
	req := &dfspb.ReportChunksRequest{NodeId: string(n.id)}
	for id, c := range n.added {
		if len(req.Added) == maxReport {
			break
		}
		req.Added = append(req.Added, &dfspb.ChunkStat{ChunkId: string(id), Present: true, Size: c.Size, FrameSize: c.FrameSize, Digest: c.Digest})
		delete(n.added, id)
	}
	for id := range n.removed {
		if len(req.Added)+len(req.Removed) == maxReport {
			break
		}
		req.Removed = append(req.Removed, string(id))
		delete(n.removed, id)
	}
	n.mu.Unlock()
	if len(req.Added)+len(req.Removed) == 0 {
		return nil
	}
	err := n.report(ctx, req)
	if err != nil {
		n.mu.Lock()
		for _, a := range req.Added {
			id := rpc.ChunkID(a.ChunkId)
			if _, ok := n.added[id]; !ok && !n.removed[id] {
				if c, held := n.lookupLocked(id); held {
					n.added[id] = c
				}
			}
		}
		for _, s := range req.Removed {
			id := rpc.ChunkID(s)
			if _, ok := n.added[id]; !ok {
				n.removed[id] = true
			}
		}
		n.mu.Unlock()
	}
	n.mu.Lock()
	more := len(n.added)+len(n.removed) > 0
	n.mu.Unlock()
	if more && err == nil {
		n.wake()
	}
	return err
}

func (n *node) report(ctx context.Context, req *dfspb.ReportChunksRequest) error {
	start := n.f.clock.Now()
	err := n.call(ctx, func(ctx context.Context) error {
		_, err := n.coord.ReportChunks(ctx, req)
		return err
	})
	n.f.record(&n.f.reports, n.f.clock.Since(start), func(s *Stats) {
		if err != nil {
			s.ReportErrors++
		}
	})
	return err
}
