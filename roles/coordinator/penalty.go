package coordinator

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	// maxReportedNodes bounds the node IDs of one ReportNodeFailure.
	maxReportedNodes = rpc.MaxReplication
	// maxFailureReason bounds the reason kept from a report.
	maxFailureReason = 512
)

// penalties remembers the datanodes that clients and datanodes saw fail a
// chunk stream (a stall, a refused connection, a failed write), each until
// --failure-penalty after its latest report. Placement puts a penalized
// node after every other eligible one, so a node that heartbeats but
// cannot serve streams (paused, unreachable at its advertised address)
// stops costing each put a timeout, while a wrong report, or a client
// whose own network is broken reporting every node, only reorders
// placement: a penalized node is still chosen when too few others
// qualify. It holds only registered nodes, so it is bounded by the
// registry.
type penalties struct {
	window time.Duration
	clock  interface{ Now() time.Time }

	mu    sync.Mutex
	until map[rpc.NodeID]time.Time
}

func newPenalties(window time.Duration, clock interface{ Now() time.Time }) *penalties {
	return &penalties{window: window, clock: clock, until: map[rpc.NodeID]time.Time{}}
}

// report penalizes id from now; it reports whether id was not penalized
// before (a new penalty, worth an event).
func (p *penalties) report(id rpc.NodeID) bool {
	if p == nil || p.window <= 0 {
		return false
	}
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, u := range p.until {
		if !u.After(now) {
			delete(p.until, n)
		}
	}
	_, was := p.until[id]
	p.until[id] = now.Add(p.window)
	return !was
}

// forgive ends id's penalty: the node registered again, as a new
// process.
func (p *penalties) forgive(id rpc.NodeID) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.until, id)
}

// failingUntil returns when id's penalty ends, or the zero time when it
// is not penalized.
func (p *penalties) failingUntil(id rpc.NodeID) time.Time {
	if p == nil {
		return time.Time{}
	}
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if u, ok := p.until[id]; ok && u.After(now) {
		return u
	}
	return time.Time{}
}

// ReportNodeFailure records that a client or datanode saw the named
// datanodes fail a chunk stream. Each registered node is penalized for
// --failure-penalty (placed after every other node); unknown IDs are
// ignored (the node may be from another term), malformed ones are
// Invalid.
func (c *Coordinator) ReportNodeFailure(ctx context.Context, req *dfspb.ReportNodeFailureRequest) (*dfspb.ReportNodeFailureResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.NodeIds) > maxReportedNodes {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d node ids in one report, at most %d", len(req.NodeIds), maxReportedNodes))
	}
	ids := make([]rpc.NodeID, 0, len(req.NodeIds))
	for _, s := range req.NodeIds {
		id, err := rpc.ParseNodeID(s)
		if err != nil {
			return nil, rpc.ToStatus(err)
		}
		ids = append(ids, id)
	}
	reason := boundReason(req.Reason)
	for _, id := range ids {
		addr, _, ok := t.nodes.lookup(id)
		if !ok {
			continue
		}
		if t.nodes.penalties.report(id) {
			c.events.add("node", "datanode %s (%s) failed a chunk stream; placed last for %s: %s", id.Short(), addr, c.cfg.FailurePenalty, reason)
			t.log.Warn().Str("node_id", id.Short()).Str("addr", addr).Str("reason", reason).Dur("penalty", c.cfg.FailurePenalty).
				Msg("datanode reported failing a chunk stream; placing it last")
		} else {
			t.log.Debug().Str("node_id", id.Short()).Str("reason", reason).Msg("datanode reported failing a chunk stream again")
		}
	}
	return &dfspb.ReportNodeFailureResponse{}, nil
}

// boundReason cuts a reason (a failure, a disk error) a party sent to
// what the coordinator keeps and shows: at most maxFailureReason bytes of
// valid UTF-8.
func boundReason(s string) string {
	return strings.ToValidUTF8(s[:min(len(s), maxFailureReason)], "")
}
