package client

import (
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
// placement.OrderForRead does, then those that failed this client lately
// after the others.
func (c *Client) orderForRead(replicas []placement.Replica) []placement.Replica {
	out := placement.OrderForRead(replicas)
	now := c.clock.Now()
	c.mu.Lock()
	failing := func(r placement.Replica) bool { u, ok := c.failing[r.ID]; return ok && now.Before(u) }
	slices.SortStableFunc(out, func(a, b placement.Replica) int {
		switch fa, fb := failing(a), failing(b); {
		case fa == fb:
			return 0
		case fb:
			return -1
		}
		return 1
	})
	c.mu.Unlock()
	return out
}
