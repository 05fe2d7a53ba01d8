package datanode

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// coordinator returns a client for the current coordinator address: the
// leader a standby named, or one of the configured addresses.
func (n *Node) coordinator() (dfspb.CoordinatorClient, string, error) {
	n.mu.Lock()
	addr := n.cfg.Coordinators[n.coordIdx%len(n.cfg.Coordinators)]
	if n.leader != "" {
		addr = n.leader
	}
	n.mu.Unlock()
	cc, err := n.pool.Get(addr)
	if err != nil {
		return nil, addr, err
	}
	return dfspb.NewCoordinatorClient(cc), addr, nil
}

// nextCoordinator moves on: to the leader err names, or to the next
// configured coordinator address.
func (n *Node) nextCoordinator(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ns, ok := rpc.NotServingOf(err); ok && ns.Leader != "" {
		n.leader = ns.Leader
		return
	}
	if n.leader != "" {
		n.leader = ""
		return
	}
	n.coordIdx++
}

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
		var err error
		registering := !n.isRegistered()
		if registering {
			err = n.register(ctx)
		} else {
			err = n.heartbeat(ctx)
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
				n.nextCoordinator(err)
			}
			wait = backoff.Delay(min(failures, 8))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
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

func (n *Node) register(ctx context.Context) error {
	c, addr, err := n.coordinator()
	if err != nil {
		return err
	}
	u := n.store.Usage()
	cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	n.mu.Lock()
	cluster := n.cluster
	n.mu.Unlock()
	resp, err := c.RegisterDataNode(cctx, &dfspb.RegisterDataNodeRequest{
		NodeId: string(n.id), Addr: n.Addr(), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks,
		ClusterId: cluster,
	})
	if err != nil {
		return rpc.FromStatus(err)
	}
	if cluster == "" && resp.ClusterId != "" {
		if err := saveClusterID(n.cfg.DataDir, resp.ClusterId); err != nil {
			return err
		}
		n.mu.Lock()
		n.cluster = resp.ClusterId
		n.mu.Unlock()
		n.log.Info().Str("cluster_id", resp.ClusterId).Msg("joined cluster")
	}
	n.reports.requestFull()
	n.mu.Lock()
	n.registered = true
	n.incarnation = resp.Incarnation
	// Known version 0: the next heartbeat brings the whole membership,
	// which replaces the peers known so far.
	n.version = 0
	n.mu.Unlock()
	n.log.Info().Str("coordinator", addr).Uint64("cluster_version", resp.ClusterVersion).Msg("registered")
	return nil
}

func (n *Node) heartbeat(ctx context.Context) error {
	c, _, err := n.coordinator()
	if err != nil {
		return err
	}
	u := n.store.Usage()
	n.mu.Lock()
	known, incarnation := n.version, n.incarnation
	n.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	resp, err := c.DataNodeHeartbeat(cctx, &dfspb.HeartbeatRequest{
		NodeId: string(n.id), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks, KnownVersion: known,
		Incarnation: incarnation, DiskError: n.diskError(),
	})
	if err != nil {
		return rpc.FromStatus(err)
	}
	n.mu.Lock()
	if resp.Full {
		clear(n.peers)
		n.addPeersLocked(resp.Nodes...)
	}
	for _, up := range resp.Updates {
		n.addPeersLocked(up.GetNode())
	}
	n.version = resp.ClusterVersion
	n.peersLearnedLocked()
	n.mu.Unlock()
	for _, cmd := range resp.Commands {
		if del := cmd.GetDeleteChunks(); del != nil {
			ids, err := parseIDs(del.ChunkIds)
			if err != nil {
				n.log.Warn().Err(err).Msg("ignoring bad delete command")
				continue
			}
			n.deleteChunks(ids, &dfspb.BulkDeleteChunkResponse{})
		}
	}
	return nil
}

// addPeersLocked records nodes the coordinator listed, and drops those
// it forgot; an entry without a node ID (a coordinator bug, or a newer
// one's message) is skipped.
func (n *Node) addPeersLocked(nodes ...*dfspb.NodeStatus) {
	for _, p := range nodes {
		switch {
		case p.GetNodeId() == "":
		case p.Forgotten:
			delete(n.peers, rpc.NodeID(p.NodeId))
		default:
			n.peers[rpc.NodeID(p.NodeId)] = p
		}
	}
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

// Peers returns the cluster membership the node has learned.
func (n *Node) Peers() map[rpc.NodeID]*dfspb.NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[rpc.NodeID]*dfspb.NodeStatus, len(n.peers))
	for k, v := range n.peers {
		out[k] = v
	}
	return out
}
