package datanode

import (
	"context"
	"errors"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
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
// node (it restarted). It runs until ctx ends.
func (n *Node) heartbeatLoop(ctx context.Context) {
	backoff := chunkstream.Backoff{Initial: 200 * time.Millisecond, Max: n.cfg.HeartbeatInterval}
	failures := 0
	readyOnce := false
	for {
		var err error
		if !n.isRegistered() {
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
		if err != nil {
			failures++
			var local *localError
			switch {
			case errors.As(err, &local):
				// This node's disk failed (full, read-only): say so, and
				// keep the coordinator.
				if failures == 1 || failures%10 == 0 {
					n.log.Error().Err(err).Int("failures", failures).Msg("cannot register: local disk error")
				}
				wait = backoff.Delay(min(failures, 8))
			case rpc.KindOf(err) == rpc.NotFound:
				n.setRegistered(false)
				wait = 0
			default:
				_, notServing := rpc.NotServingOf(err)
				refused := rpc.KindOf(err) == rpc.FailedPrecondition // logged where it happens
				if !notServing && !refused && (failures == 1 || failures%10 == 0) {
					n.log.Warn().Err(err).Int("failures", failures).Msg("coordinator unreachable")
				}
				n.nextCoordinator(err)
				wait = backoff.Delay(min(failures, 8))
			}
		} else {
			if failures > 0 {
				n.log.Info().Msg("coordinator reachable again")
			}
			failures = 0
			if !readyOnce {
				readyOnce = true
				close(n.ready)
			}
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
		err = rpc.FromStatus(err)
		if rpc.KindOf(err) == rpc.FailedPrecondition {
			n.log.Error().Err(err).Msg("coordinator refuses this node")
		}
		return err
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
	n.version = resp.ClusterVersion
	clear(n.peers)
	n.addPeersLocked(resp.Nodes...)
	n.mu.Unlock()
	n.log.Info().Str("coordinator", addr).Int("peers", len(resp.Nodes)).Uint64("cluster_version", resp.ClusterVersion).Msg("registered")
	return nil
}

func (n *Node) heartbeat(ctx context.Context) error {
	c, _, err := n.coordinator()
	if err != nil {
		return err
	}
	u := n.store.Usage()
	n.mu.Lock()
	known := n.version
	n.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
	defer cancel()
	resp, err := c.DataNodeHeartbeat(cctx, &dfspb.HeartbeatRequest{
		NodeId: string(n.id), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks, KnownVersion: known,
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

// addPeersLocked records nodes the coordinator listed; an entry without
// a node ID (a coordinator bug, or a newer one's message) is skipped.
func (n *Node) addPeersLocked(nodes ...*dfspb.NodeStatus) {
	for _, p := range nodes {
		if p.GetNodeId() != "" {
			n.peers[rpc.NodeID(p.NodeId)] = p
		}
	}
}

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
