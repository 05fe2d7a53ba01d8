package datanode

import (
	"context"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// coordinator returns a client for the current coordinator address.
func (n *Node) coordinator() (dfspb.CoordinatorClient, string, error) {
	n.mu.Lock()
	addr := n.cfg.Coordinators[n.coordIdx%len(n.cfg.Coordinators)]
	n.mu.Unlock()
	cc, err := n.pool.Get(addr)
	if err != nil {
		return nil, addr, err
	}
	return dfspb.NewCoordinatorClient(cc), addr, nil
}

// nextCoordinator moves on to the next configured coordinator address.
func (n *Node) nextCoordinator() {
	n.mu.Lock()
	n.coordIdx++
	n.mu.Unlock()
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
		wait := n.cfg.HeartbeatInterval
		if err != nil {
			failures++
			if rpc.KindOf(err) == rpc.NotFound {
				n.setRegistered(false)
				wait = 0
			} else {
				if failures == 1 || failures%10 == 0 {
					n.log.Warn().Err(err).Int("failures", failures).Msg("coordinator unreachable")
				}
				n.nextCoordinator()
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
	resp, err := c.RegisterDataNode(cctx, &dfspb.RegisterDataNodeRequest{
		NodeId: string(n.id), Addr: n.Addr(), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks,
	})
	if err != nil {
		return rpc.FromStatus(err)
	}
	n.mu.Lock()
	n.registered = true
	n.version = resp.ClusterVersion
	clear(n.peers)
	for _, p := range resp.Nodes {
		n.peers[rpc.NodeID(p.NodeId)] = p
	}
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
		for _, p := range resp.Nodes {
			n.peers[rpc.NodeID(p.NodeId)] = p
		}
	}
	for _, up := range resp.Updates {
		n.peers[rpc.NodeID(up.Node.NodeId)] = up.Node
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
