package datanode

import (
	"context"
	"errors"
	"maps"
	"time"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// heartbeatLoop registers with the coordinator, then heartbeats every
// interval, registering again whenever the coordinator does not know the
// node (it restarted) or no longer knows this registration (NotFound). A
// node the coordinator refuses (FailedPrecondition: another cluster, or
// its node ID alive at another address) or turns away for now
// (ResourceExhausted: too many registrations) keeps retrying with backoff,
// not ready, and logs the refusal now and then. It runs until ctx ends.
func (n *Node) heartbeatLoop(ctx context.Context) {
	backoff := rpc.Backoff{Initial: 200 * time.Millisecond, Max: n.cfg.HeartbeatInterval}
	failures := 0
	readyOnce := false
	for {
		var addr string
		var err error
		registering := !n.isRegistered()
		if registering {
			addr, err = n.register(ctx)
		} else {
			addr, err = n.heartbeat(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		n.mu.Lock()
		n.lastErr = err
		n.mu.Unlock()
		wait := n.cfg.HeartbeatInterval
		switch kind := rpc.KindOf(err); {
		case err == nil && registering:
			wait = 0 // the first heartbeat brings the membership
		case err == nil:
			if failures > 0 {
				n.log.Info().Msg("coordinator reachable again")
			}
			failures = 0
			if !readyOnce {
				readyOnce = true
				close(n.ready)
			}
		case errors.As(err, new(*localError)):
			// This node's disk failed (full, read-only): say so, and keep
			// the coordinator.
			failures++
			if failures == 1 || failures%10 == 0 {
				n.log.Error().Err(err).Int("failures", failures).Msg("cannot register: local disk error")
			}
			wait = backoff.Delay(min(failures, 8))
		case kind == rpc.NotFound:
			failures++
			n.setRegistered(false)
			wait = 0
			if registering {
				wait = backoff.Delay(min(failures, 8))
			}
		default:
			failures++
			_, notServing := rpc.NotServingOf(err)
			logIt := failures == 1 || failures%10 == 0
			switch {
			case kind == rpc.FailedPrecondition && logIt:
				n.log.Error().Err(err).Int("failures", failures).Msg("coordinator refuses this node; retrying")
			case kind == rpc.ResourceExhausted && logIt:
				n.log.Warn().Err(err).Int("failures", failures).Msg("coordinator turns registrations away for now; retrying")
			case !notServing && kind != rpc.FailedPrecondition && kind != rpc.ResourceExhausted && logIt:
				n.log.Warn().Err(err).Int("failures", failures).Msg("coordinator unreachable")
			}
			if kind != rpc.ResourceExhausted {
				n.coord.Move(addr, err)
			}
			wait = backoff.Delay(min(failures, 8))
		}
		if rpc.Sleep(ctx, n.clock, wait) != nil {
			return
		}
	}
}

func (n *Node) isRegistered() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.registered
}

func (n *Node) setRegistered(v bool) {
	n.mu.Lock()
	n.registered = v
	n.mu.Unlock()
}

// register registers the node with the coordinator calls go to, and
// returns that coordinator's address.
func (n *Node) register(ctx context.Context) (string, error) {
	n.mu.Lock()
	cluster := n.cluster
	n.mu.Unlock()
	addr, reg, err := n.callRegister(ctx, n.store.Usage(), cluster)
	if err != nil {
		return addr, err
	}
	if cluster == "" && reg.cluster != "" {
		if err := saveClusterID(n.cfg.DataDir, reg.cluster); err != nil {
			return addr, err
		}
		n.mu.Lock()
		n.cluster = reg.cluster
		n.mu.Unlock()
		n.log.Info().Str("cluster_id", reg.cluster).Msg("joined cluster")
	}
	n.learnKeys(reg.keys)
	n.reports.requestFull()
	n.mu.Lock()
	n.registered = true
	n.incarnation = reg.incarnation
	// Known version 0: the next heartbeat brings the whole membership,
	// which replaces the peers known so far.
	n.version = 0
	n.mu.Unlock()
	n.log.Info().Str("coordinator", addr).Uint64("cluster_version", reg.version).Msg("registered")
	return addr, nil
}

// heartbeat sends one heartbeat to the coordinator calls go to, applies
// the membership changes and the commands of its reply, and returns that
// coordinator's address.
func (n *Node) heartbeat(ctx context.Context) (string, error) {
	n.mu.Lock()
	known, incarnation := n.version, n.incarnation
	n.mu.Unlock()
	addr, reply, err := n.callHeartbeat(ctx, n.store.Usage(), known, incarnation, n.diskError())
	if err != nil {
		return addr, err
	}
	n.learnKeys(reply.keys)
	n.mu.Lock()
	if reply.full {
		clear(n.peers)
	}
	for _, p := range reply.peers {
		if p.forgotten {
			delete(n.peers, p.ID)
		} else {
			n.peers[p.ID] = p.Peer
		}
	}
	n.version = reply.version
	n.peersLearnedLocked()
	n.mu.Unlock()
	// Deletions sent as commands need no chunk token: they come in the
	// reply on this node's own connection to the coordinator, whose
	// certificate it checked.
	for _, del := range reply.deletes {
		ids, err := parseIDs(del)
		if err != nil {
			n.log.Warn().Err(err).Msg("ignoring bad delete command")
			continue
		}
		n.deleteChunks(ids)
	}
	return addr, nil
}

// peersLearnedLocked wakes the calls waiting in checkPeer for the
// membership the coordinator just sent.
func (n *Node) peersLearnedLocked() {
	close(n.peersLearned)
	n.peersLearned = make(chan struct{})
}

// peerRefreshes is how many membership updates checkPeer waits for before
// it refuses a peer it does not know: the first may have left the
// coordinator before the peer registered.
const peerRefreshes = 2

// checkPeer returns nil when datanode id at addr belongs to the cluster as
// the coordinator last described it (a datanode talks only to registered
// peers, and dials no address a request names unless it is one's). A peer
// not known yet (one that has just registered) is waited for over the
// next heartbeats, bounded by ctx and by two heartbeat intervals plus the
// RPC timeout; after that it is refused with FailedPrecondition.
func (n *Node) checkPeer(ctx context.Context, id rpc.NodeID, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, peerRefreshes*n.cfg.HeartbeatInterval+n.cfg.RPCTimeout)
	defer cancel()
	for seen := 0; ; seen++ {
		n.mu.Lock()
		p, known := n.peers[id]
		learned, peers := n.peersLearned, len(n.peers)
		n.mu.Unlock()
		switch {
		case known && p.Addr == addr:
			return nil
		case seen == peerRefreshes:
		default:
			select {
			case <-learned:
				continue
			case <-ctx.Done():
			}
		}
		if known {
			return rpc.Errorf(rpc.FailedPrecondition, "datanode %s is registered at %s, not %s", id.Short(), p.Addr, addr)
		}
		return rpc.Errorf(rpc.FailedPrecondition, "%s is not a registered datanode (not among the %d this node knows); refusing to dial %s", id.Short(), peers, addr)
	}
}

// knownPeer reports whether datanode id is registered at addr as far as
// this node knows now (checkPeer's answer without a wait).
func (n *Node) knownPeer(id rpc.NodeID, addr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.peers[id]
	return ok && p.Addr == addr
}

// peerConn returns the pooled connection to datanode id at addr, once
// checkPeer admits it.
func (n *Node) peerConn(ctx context.Context, id rpc.NodeID, addr string) (*grpc.ClientConn, error) {
	if err := n.checkPeer(ctx, id, addr); err != nil {
		return nil, err
	}
	return n.pool.Get(addr)
}

// PeerConns returns how many connections the node holds to other
// datanodes and the coordinators.
func (n *Node) PeerConns() int { return n.pool.Len() }

// Peer is a datanode of the cluster as the coordinator last described it.
type Peer struct {
	ID   rpc.NodeID
	Addr string
}

// Peers returns the cluster membership the node has learned.
func (n *Node) Peers() map[rpc.NodeID]Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.peers)
}

// The calls to the coordinator. They are the one place where the
// datanode builds the coordinator's requests and reads its replies; what
// they take and return are the node's own types.

// registered is what a registration returns.
type registered struct {
	cluster     string // the cluster the node belongs to
	incarnation string // to present with each heartbeat
	version     uint64 // the cluster version when the node registered
	keys        []chunktoken.Key
}

// callRegister registers the node, with its disk usage and the cluster it
// knows it belongs to (or ""), with the coordinator calls go to; it
// returns that coordinator's address.
func (n *Node) callRegister(ctx context.Context, u chunkstore.Usage, cluster string) (addr string, reg registered, err error) {
	addr, err = n.coord.Once(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.RegisterDataNode(ctx, &dfspb.RegisterDataNodeRequest{
			NodeId: string(n.id), Addr: n.Addr(), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks,
			ClusterId: cluster,
		})
		if err == nil {
			reg = registered{cluster: resp.ClusterId, incarnation: resp.Incarnation, version: resp.ClusterVersion, keys: keysFromPB(resp.ChunkKeys)}
		}
		return err
	})
	return addr, reg, err
}

// peerChange is a datanode the coordinator listed, or one it forgot.
type peerChange struct {
	Peer
	forgotten bool
}

// beat is what a heartbeat's reply says.
type beat struct {
	version uint64
	// full: peers is the whole membership, replacing what the node knows;
	// otherwise it holds the changes since the version the node knew.
	full    bool
	peers   []peerChange
	deletes [][]string // chunk IDs to delete, one list per command
	keys    []chunktoken.Key
}

// callHeartbeat sends one heartbeat with the node's disk usage, the
// cluster version it knows, its registration's incarnation and its disk
// error (or "") to the coordinator calls go to; it returns that
// coordinator's address. A listed node without an ID (a coordinator bug,
// or a newer coordinator's message) is left out of the reply.
func (n *Node) callHeartbeat(ctx context.Context, u chunkstore.Usage, known uint64, incarnation, diskErr string) (addr string, b beat, err error) {
	addr, err = n.coord.Once(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.DataNodeHeartbeat(ctx, &dfspb.HeartbeatRequest{
			NodeId: string(n.id), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks, KnownVersion: known,
			Incarnation: incarnation, DiskError: diskErr,
		})
		if err != nil {
			return err
		}
		b = beat{version: resp.ClusterVersion, full: resp.Full, keys: keysFromPB(resp.ChunkKeys)}
		add := func(p *dfspb.NodeStatus) {
			if p.GetNodeId() != "" {
				b.peers = append(b.peers, peerChange{Peer: Peer{ID: rpc.NodeID(p.NodeId), Addr: p.Addr}, forgotten: p.Forgotten})
			}
		}
		if resp.Full {
			for _, p := range resp.Nodes {
				add(p)
			}
		}
		for _, up := range resp.Updates {
			add(up.GetNode())
		}
		for _, cmd := range resp.Commands {
			if del := cmd.GetDeleteChunks(); del != nil {
				b.deletes = append(b.deletes, del.ChunkIds)
			}
		}
		return nil
	})
	return addr, b, err
}

// callReport sends one report of chunk changes to the coordinator calls
// go to.
func (n *Node) callReport(ctx context.Context, p report) error {
	added := make([]*dfspb.ChunkStat, len(p.added))
	for i, c := range p.added {
		added[i] = &dfspb.ChunkStat{ChunkId: string(c.id), Present: true, Size: c.size, Digest: c.digest, FrameSize: c.frameSize}
	}
	_, err := n.coord.Once(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.ReportChunks(ctx, &dfspb.ReportChunksRequest{NodeId: string(n.id), Added: added, Removed: p.removed, Full: p.full, Corrupt: p.corrupt,
			Page: p.number, Last: p.last})
		return err
	})
	return err
}
