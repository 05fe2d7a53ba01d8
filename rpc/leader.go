package rpc

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// minNotServingWait is the least pause before asking again a coordinator
// that is not serving and names no other leader.
const minNotServingWait = 50 * time.Millisecond

// LeaderConfig says where the coordinators are and how long to wait on
// them.
type LeaderConfig struct {
	// Addrs are the coordinator addresses, tried in order.
	Addrs []string
	// Timeout bounds each call to one coordinator.
	Timeout time.Duration
	// Failover bounds how long Call keeps retrying coordinators that are
	// alive but cannot serve yet (electing a leader, safe mode).
	Failover time.Duration
}

// Leader calls the leading coordinator among several addresses. It
// remembers where calls go: the leader a coordinator named, else one of
// the configured addresses, moving on when that one fails. Clients and
// datanodes share it; it is safe for concurrent use.
type Leader struct {
	cfg   LeaderConfig
	pool  *Pool
	clock clockwork.Clock

	mu     sync.Mutex
	idx    int    // the configured address calls go to, unless leader is set
	leader string // the leader a coordinator named, if any
}

// NewLeader returns a Leader that dials through pool and waits on clk (nil
// is the real clock). It makes no call.
func NewLeader(cfg LeaderConfig, pool *Pool, clk clockwork.Clock) *Leader {
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	return &Leader{cfg: cfg, pool: pool, clock: clk}
}

// Addr returns the address calls go to now: the leader a coordinator
// named, else the current configured address ("" if none is configured).
func (l *Leader) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leader != "" {
		return l.leader
	}
	if len(l.cfg.Addrs) == 0 {
		return ""
	}
	return l.cfg.Addrs[l.idx%len(l.cfg.Addrs)]
}

// Move moves calls away from addr after a call there failed with err: to
// the leader err names (a standby's answer), else to the next configured
// address. Without a named leader, a failure forgets the leader only if
// it is addr, and moves past a configured address only if it is addr, so
// that calls failing at one address at once move on once.
func (l *Leader) Move(addr string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ns, ok := NotServingOf(err); ok && ns.Leader != "" {
		l.leader = ns.Leader
		return
	}
	if l.leader == addr {
		l.leader = ""
	}
	if len(l.cfg.Addrs) > 0 && l.cfg.Addrs[l.idx%len(l.cfg.Addrs)] == addr {
		l.idx++
	}
}

// Once calls fn once with a client of the coordinator at Addr, its
// context bounded by the configured timeout, and returns that address and
// fn's error as FromStatus converts it. It does not move on after a
// failure: the caller decides, with Move.
func (l *Leader) Once(ctx context.Context, fn func(ctx context.Context, cc dfspb.CoordinatorClient) error) (addr string, err error) {
	addr = l.Addr()
	cc, err := l.client(addr)
	if err != nil {
		return addr, err
	}
	_, err = l.call(ctx, cc, fn)
	return addr, err
}

// client returns a client of the coordinator at addr.
func (l *Leader) client(addr string) (dfspb.CoordinatorClient, error) {
	if addr == "" {
		return nil, Errorf(Invalid, "no coordinator address")
	}
	conn, err := l.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	return dfspb.NewCoordinatorClient(conn), nil
}

// call calls fn with cc, bounded by the configured timeout; timedOut says
// that this timeout, not the end of ctx, ended the call.
func (l *Leader) call(ctx context.Context, cc dfspb.CoordinatorClient, fn func(ctx context.Context, cc dfspb.CoordinatorClient) error) (timedOut bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	err = FromStatus(fn(cctx, cc))
	return cctx.Err() != nil && ctx.Err() == nil, err
}

// Call calls fn with a client of the leading coordinator, each attempt
// bounded by the configured timeout. A coordinator that is alive but not
// serving (a standby, or one in safe mode) says so, and perhaps who
// leads: the call goes there at once, or is retried after the pause it
// asks for (at least 50 ms), for up to the configured failover time; then
// it fails with Unavailable. An address that cannot be reached, or does
// not answer in time, moves the call on to the next address; when no
// address can be reached, one after the other, the call fails at once
// (Unavailable) rather than waiting out the failover time. Any other
// error, a connection that cannot be made (the pool is closed or full) and
// the end of ctx end the call with that error.
func (l *Leader) Call(ctx context.Context, fn func(ctx context.Context, cc dfspb.CoordinatorClient) error) error {
	deadline := l.clock.Now().Add(l.cfg.Failover)
	unreachable := 0
	for {
		addr := l.Addr()
		cc, err := l.client(addr)
		if err != nil {
			return err
		}
		timedOut, err := l.call(ctx, cc, fn)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if ns, ok := NotServingOf(err); ok {
			unreachable = 0
			l.Move(addr, err)
			wait := max(ns.RetryAfter, minNotServingWait)
			if ns.Leader != "" && ns.Leader != addr {
				wait = 0
			}
			if l.clock.Now().Add(wait).After(deadline) {
				return Errorf(Unavailable, "coordinator %s: %w (gave up after %s)", addr, err, l.cfg.Failover)
			}
			if err := Sleep(ctx, l.clock, wait); err != nil {
				return E("", Other, err)
			}
			continue
		}
		switch {
		case timedOut && KindOf(err) == DeadlineExceeded:
			err = Errorf(Unavailable, "coordinator %s did not answer within %s", addr, l.cfg.Timeout)
		case KindOf(err) == Unavailable:
			err = Errorf(Unavailable, "coordinator %s unreachable: %w", addr, err)
		default:
			return err
		}
		unreachable++
		if unreachable >= len(l.cfg.Addrs) || l.clock.Now().After(deadline) {
			return err
		}
		l.Move(addr, nil)
	}
}
