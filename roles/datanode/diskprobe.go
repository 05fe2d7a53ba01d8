package datanode

import (
	"context"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// probeInterval is the least pause between writability probes: each is
// an fsync, so even a node heartbeating many times a second probes once.
const probeInterval = time.Second

// probeLoop checks every heartbeat interval (at least probeInterval),
// and at once when a chunk write fails, that the data dir takes writes.
// While it does not, the
// node refuses new chunks (uploads and repair copies) and its heartbeats
// say why, so the coordinator places nothing on it; it goes on serving
// the chunks it has.
func (n *Node) probeLoop(ctx context.Context) {
	n.probeDisk()
	rpc.EveryOr(ctx, n.clock, max(n.cfg.HeartbeatInterval, probeInterval), n.probe, func(context.Context) { n.probeDisk() })
}

// probeDisk checks that the data dir takes writes, records the outcome
// and logs a change.
func (n *Node) probeDisk() {
	err := n.store.ProbeWrite()
	n.mu.Lock()
	was := n.diskErr
	n.diskErr = err
	n.mu.Unlock()
	switch {
	case err != nil && was == nil:
		n.log.Warn().Err(err).Msg("disk not writable: taking no new chunks, serving reads")
	case err == nil && was != nil:
		n.log.Info().Msg("disk writable again: taking new chunks")
	}
}

// probeNow asks the probe to run at once (a chunk write just failed).
func (n *Node) probeNow() {
	select {
	case n.probe <- struct{}{}:
	default:
	}
}

// writable returns nil while the last probe found the data dir writable,
// and otherwise an error attributed to this node, for refusing a chunk.
func (n *Node) writable() error {
	n.mu.Lock()
	err := n.diskErr
	n.mu.Unlock()
	if err == nil {
		return nil
	}
	return rpc.NodeError(rpc.Unavailable, []string{string(n.id)}, "datanode %s takes no new chunks: %w", n.id.Short(), err)
}

// diskError is what heartbeats report: why the node takes no new chunks,
// or "".
func (n *Node) diskError() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.diskErr == nil {
		return ""
	}
	return n.diskErr.Error()
}
