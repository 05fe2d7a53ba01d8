package coordinator

import (
	"sync"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/jonboulle/clockwork"
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
	clock  clockwork.Clock

	mu    sync.Mutex
	until map[rpc.NodeID]time.Time
}

func newPenalties(window time.Duration, clock clockwork.Clock) *penalties {
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
