package client

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	// failingFor is how long this client reads from a datanode that failed
	// one of its streams only after its other replicas.
	failingFor = time.Minute
	// reportTimeout bounds a report sent to the coordinator in the
	// background (failed nodes, a bad replica).
	reportTimeout = 5 * time.Second
	// maxReason bounds the reason sent with a report.
	maxReason = 512
)

// nodesFailed records that nodes failed a chunk stream with err: reads by
// this client try them last for a while, and the coordinator is told in
// the background (ReportNodeFailure), so that it places new chunks on them
// last. Failures that say nothing about the node's health (a canceled
// stream, bad input, a missing chunk) are not recorded.
func (c *Client) nodesFailed(ctx context.Context, nodes []string, err error) {
	if len(nodes) == 0 || !rpc.Retryable(err) || ctx.Err() != nil {
		return
	}
	now := c.clock.Now()
	c.mu.Lock()
	if c.failing == nil {
		c.failing = map[rpc.NodeID]time.Time{}
	}
	for id, until := range c.failing {
		if now.After(until) {
			delete(c.failing, id)
		}
	}
	for _, n := range nodes {
		c.failing[rpc.NodeID(n)] = now.Add(failingFor)
	}
	c.mu.Unlock()

	req := &dfspb.ReportNodeFailureRequest{NodeIds: nodes[:min(len(nodes), rpc.MaxReplication)], Reason: reason(err)}
	c.report(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.ReportNodeFailure(ctx, req)
		return err
	}, func(err error) {
		if err != nil {
			c.log.Debug().Err(err).Strs("node_ids", req.NodeIds).Msg("could not report failed datanodes")
		}
	})
}

// report makes call to the coordinator in the background, best effort:
// bounded by reportTimeout, it never fails or delays the operation that
// sends it, and done learns its outcome. It keeps ctx's values (the
// request ID), not its cancellation: the operation may end first.
func (c *Client) report(ctx context.Context, call func(context.Context, dfspb.CoordinatorClient) error, done func(error)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	c.background.Go(func() {
		defer cancel()
		done(c.coordinator(ctx, call))
	})
}

// reason is err's text as a report carries it: at most maxReason bytes,
// valid UTF-8 (as a proto string must be).
func reason(err error) string {
	s := err.Error()
	return strings.ToValidUTF8(s[:min(len(s), maxReason)], "")
}

// orderForRead orders a chunk's replicas for reading: as
// placement.OrderForRead does (healthy first, shuffled, then suspect,
// then dead), then those that failed this client lately last, and among
// replicas alike in both, those this client is reading the fewest chunks
// from first, so that the chunks a get has in flight spread over the
// copies instead of queueing on one node. The read from the first one is
// counted as begun (see reading): the caller ends it with
// reading(order[0].ID, -1).
func (c *Client) orderForRead(replicas []placement.Replica) []placement.Replica {
	out := placement.OrderForRead(replicas)
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	failing := func(r placement.Replica) int {
		if u, ok := c.failing[r.ID]; ok && now.Before(u) {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(out, func(a, b placement.Replica) int {
		return cmp.Or(cmp.Compare(failing(a), failing(b)), cmp.Compare(a.State, b.State), cmp.Compare(c.inflight[a.ID], c.inflight[b.ID]))
	})
	if len(out) > 0 {
		c.readingLocked(out[0].ID, 1)
	}
	return out
}

// reading counts a read of a chunk from node as begun (delta 1) or ended
// (-1), for orderForRead.
func (c *Client) reading(node rpc.NodeID, delta int) {
	c.mu.Lock()
	c.readingLocked(node, delta)
	c.mu.Unlock()
}

func (c *Client) readingLocked(node rpc.NodeID, delta int) {
	if c.inflight == nil {
		c.inflight = map[rpc.NodeID]int{}
	}
	if n := c.inflight[node] + delta; n > 0 {
		c.inflight[node] = n
	} else {
		delete(c.inflight, node)
	}
}
