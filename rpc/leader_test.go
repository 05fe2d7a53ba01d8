package rpc_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// fakeCoordinator answers ListNodes with what answer returns for each
// call (numbered from 0), and counts the calls.
type fakeCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	answer func(ctx context.Context, call int) error
	calls  atomic.Int32
}

func (f *fakeCoordinator) ListNodes(ctx context.Context, _ *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	call := int(f.calls.Add(1)) - 1
	if err := f.answer(ctx, call); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ListNodesResponse{}, nil
}

// startCoordinator serves a fakeCoordinator on 127.0.0.1:0 until the test
// ends.
func startCoordinator(t *testing.T, answer func(ctx context.Context, call int) error) (string, *fakeCoordinator) {
	t.Helper()
	f := &fakeCoordinator{answer: answer}
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	dfspb.RegisterCoordinatorServer(srv, f)
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), f
}

// serving answers every call.
func serving(context.Context, int) error { return nil }

// standby answers every call as a standby naming leader.
func standby(leader string, retryAfter time.Duration) func(context.Context, int) error {
	return func(context.Context, int) error {
		return rpc.NotServingError(leader, retryAfter, "coordinator is a standby")
	}
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// pausedAddr returns the address of a paused process: connections are
// accepted (by the kernel) and never answered, so no call there ends
// before its deadline.
func pausedAddr(t *testing.T) string {
	t.Helper()
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

func newLeader(t *testing.T, clk clockwork.Clock, failover time.Duration, addrs ...string) *rpc.Leader {
	t.Helper()
	pool := rpc.NewPool()
	t.Cleanup(func() { pool.Close() })
	return rpc.NewLeader(rpc.LeaderConfig{Addrs: addrs, Timeout: 5 * time.Second, Failover: failover}, pool, clk)
}

func listNodes(ctx context.Context, cc dfspb.CoordinatorClient) error {
	_, err := cc.ListNodes(ctx, &dfspb.ListNodesRequest{})
	return err
}

// TestLeaderFollowsNamedLeader: a standby that names the leader sends the
// call there at once, without a pause, and later calls go straight to it.
func TestLeaderFollowsNamedLeader(t *testing.T) {
	is := is.New(t)
	lead, leader := startCoordinator(t, serving)
	sb, standbyC := startCoordinator(t, standby(lead, time.Hour))
	other, otherC := startCoordinator(t, serving)
	// A fake clock that nobody advances: any pause would hang the call.
	l := newLeader(t, clockwork.NewFakeClock(), time.Minute, sb, other)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	is.NoErr(l.Call(ctx, listNodes))          // answered by the named leader
	is.Equal(standbyC.calls.Load(), int32(1)) // the standby was asked once
	is.Equal(leader.calls.Load(), int32(1))   // then the leader, without a pause
	is.Equal(otherC.calls.Load(), int32(0))   // the next configured address was skipped
	is.Equal(l.Addr(), lead)                  // calls now go to the leader

	is.NoErr(l.Call(ctx, listNodes))          // the next call
	is.Equal(standbyC.calls.Load(), int32(1)) // does not ask the standby again
	is.Equal(leader.calls.Load(), int32(2))   // goes straight to the leader
}

// TestLeaderRetriesNotServing: a coordinator that is not serving and
// names no leader is asked again after the pause it asks for, on the
// clock, until it serves.
func TestLeaderRetriesNotServing(t *testing.T) {
	is := is.New(t)
	addr, coord := startCoordinator(t, func(_ context.Context, call int) error {
		if call < 2 {
			return rpc.NotServingError("", time.Second, "coordinator in safe mode")
		}
		return nil
	})
	clk := clockwork.NewFakeClock()
	l := newLeader(t, clk, time.Minute, addr)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Call(ctx, listNodes) }()
	for want := int32(1); want <= 2; want++ {
		is.NoErr(clk.BlockUntilContext(ctx, 1)) // the call pauses on the clock
		is.Equal(coord.calls.Load(), want)      // after asking once more
		clk.Advance(999 * time.Millisecond)
		is.Equal(coord.calls.Load(), want) // not before the pause asked for
		clk.Advance(time.Millisecond)
		is.NoErr(clk.BlockUntilContext(ctx, 0)) // the pause is over
	}
	select {
	case err := <-done:
		is.NoErr(err) // served on the third try
	case <-ctx.Done():
		t.Fatal("Call did not return")
	}
	is.Equal(coord.calls.Load(), int32(3)) // three tries in all
}

// TestLeaderGivesUpAfterFailover: coordinators that never serve fail the
// call with Unavailable once the failover time would pass; the error
// keeps the not-serving cause.
func TestLeaderGivesUpAfterFailover(t *testing.T) {
	is := is.New(t)
	a, ca := startCoordinator(t, standby("", time.Second))
	b, cb := startCoordinator(t, standby("", time.Second))
	clk := clockwork.NewFakeClock()
	l := newLeader(t, clk, 3*time.Second, a, b)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Call(ctx, listNodes) }()
	for range 3 {
		is.NoErr(clk.BlockUntilContext(ctx, 1)) // pausing before the next try
		clk.Advance(time.Second)
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("Call did not give up")
	}
	is.True(errors.Is(err, rpc.Unavailable))                   // gave up: unavailable
	is.True(strings.Contains(err.Error(), "gave up after 3s")) // says why
	_, notServing := rpc.NotServingOf(err)
	is.True(notServing)                                   // the not-serving cause is kept
	is.Equal(ca.calls.Load()+cb.calls.Load(), int32(4))   // one try a second, from 0 to 3 s
	is.True(ca.calls.Load() >= 1 && cb.calls.Load() >= 1) // moving between the addresses
}

// TestLeaderMovesOnWhenUnreachable: an address that cannot be reached
// moves the call to the next one at once.
func TestLeaderMovesOnWhenUnreachable(t *testing.T) {
	is := is.New(t)
	live, coord := startCoordinator(t, serving)
	l := newLeader(t, clockwork.NewFakeClock(), time.Minute, deadAddr(t), live)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is.NoErr(l.Call(ctx, listNodes))       // answered by the second address
	is.Equal(coord.calls.Load(), int32(1)) // once
	is.Equal(l.Addr(), live)               // calls now go there
}

// TestLeaderFailsWhenNoneReachable: when no address can be reached the
// call fails at once with Unavailable, not after the failover time.
func TestLeaderFailsWhenNoneReachable(t *testing.T) {
	is := is.New(t)
	dead := []string{deadAddr(t), deadAddr(t)}
	l := newLeader(t, clockwork.NewFakeClock(), time.Hour, dead...)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := l.Call(ctx, listNodes)
	is.True(errors.Is(err, rpc.Unavailable))                                                  // unavailable
	is.True(strings.Contains(err.Error(), "unreachable"))                                     // says so
	is.True(ctx.Err() == nil)                                                                 // well before the test's deadline
	is.True(strings.Contains(err.Error(), dead[0]) || strings.Contains(err.Error(), dead[1])) // names an address
}

// TestLeaderTimeout: a coordinator that does not answer within the
// timeout counts as unreachable: the call moves on, and fails with
// Unavailable when it was the only one.
func TestLeaderTimeout(t *testing.T) {
	is := is.New(t)
	hang := pausedAddr(t)
	live, coord := startCoordinator(t, serving)
	pool := rpc.NewPool()
	defer pool.Close()
	cfg := rpc.LeaderConfig{Addrs: []string{hang, live}, Timeout: 100 * time.Millisecond, Failover: time.Minute}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	is.NoErr(rpc.NewLeader(cfg, pool, nil).Call(ctx, listNodes)) // answered by the second address
	is.Equal(coord.calls.Load(), int32(1))                       // once

	cfg.Addrs = []string{hang}
	err := rpc.NewLeader(cfg, pool, nil).Call(ctx, listNodes)
	is.True(errors.Is(err, rpc.Unavailable))                              // a silent coordinator is unavailable
	is.True(strings.Contains(err.Error(), "did not answer within 100ms")) // and the error says so
}

// TestLeaderOtherErrors: an error that is the coordinator's answer ends
// the call at once, with its kind, and does not move calls elsewhere.
func TestLeaderOtherErrors(t *testing.T) {
	is := is.New(t)
	a, ca := startCoordinator(t, func(context.Context, int) error { return rpc.Errorf(rpc.NotFound, "no such file") })
	b, cb := startCoordinator(t, serving)
	l := newLeader(t, clockwork.NewFakeClock(), time.Minute, a, b)
	err := l.Call(t.Context(), listNodes)
	is.True(errors.Is(err, rpc.NotFound)) // the answer's kind
	is.Equal(ca.calls.Load(), int32(1))   // asked once
	is.Equal(cb.calls.Load(), int32(0))   // not moved on
	is.Equal(l.Addr(), a)                 // calls still go to the first address
}

// TestLeaderCallEndsWithContext: a call pausing for a coordinator that is
// not serving ends when its context does, with the context's kind.
func TestLeaderCallEndsWithContext(t *testing.T) {
	is := is.New(t)
	addr, _ := startCoordinator(t, standby("", time.Hour))
	clk := clockwork.NewFakeClock()
	l := newLeader(t, clk, 2*time.Hour, addr)
	ctx, cancel := context.WithCancel(t.Context())
	wait, stop := context.WithTimeout(t.Context(), 30*time.Second)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- l.Call(ctx, listNodes) }()
	is.NoErr(clk.BlockUntilContext(wait, 1)) // pausing
	cancel()
	select {
	case err := <-done:
		is.True(errors.Is(err, rpc.Canceled)) // the context's kind
	case <-wait.Done():
		t.Fatal("Call did not end with its context")
	}
}

// TestLeaderOnce: Once makes one call where calls go now and leaves the
// moving on to its caller.
func TestLeaderOnce(t *testing.T) {
	is := is.New(t)
	sb, _ := startCoordinator(t, standby("", time.Second))
	live, _ := startCoordinator(t, serving)
	l := newLeader(t, nil, time.Minute, sb, live)
	addr, err := l.Once(t.Context(), listNodes)
	is.Equal(addr, sb) // the first address
	_, notServing := rpc.NotServingOf(err)
	is.True(notServing)    // its answer, converted from the status
	is.Equal(l.Addr(), sb) // no move by itself
	l.Move(addr, err)
	addr, err = l.Once(t.Context(), listNodes)
	is.NoErr(err)        // the next address serves
	is.Equal(addr, live) // after the caller moved on
}

// TestLeaderMove: a named leader is followed; otherwise calls move to the
// next address only from the address that failed, so that failures of
// calls made at once move on once.
func TestLeaderMove(t *testing.T) {
	is := is.New(t)
	l := rpc.NewLeader(rpc.LeaderConfig{Addrs: []string{"a:1", "b:1", "c:1"}}, rpc.NewPool(), nil)
	down := rpc.Errorf(rpc.Unavailable, "down")
	is.Equal(l.Addr(), "a:1") // the first address to begin with
	l.Move("a:1", down)
	l.Move("a:1", down)
	is.Equal(l.Addr(), "b:1") // two failures at a: one move
	l.Move("b:1", rpc.NotServingError("x:1", 0, "standby"))
	is.Equal(l.Addr(), "x:1") // the named leader
	l.Move("a:1", down)
	is.Equal(l.Addr(), "x:1") // a late failure elsewhere keeps the leader
	l.Move("x:1", down)
	is.Equal(l.Addr(), "b:1") // a failed leader: back to the configured addresses
	l.Move("b:1", down)
	l.Move("c:1", down)
	is.Equal(l.Addr(), "a:1") // round and round
	empty := rpc.NewLeader(rpc.LeaderConfig{}, rpc.NewPool(), nil)
	_, err := empty.Once(t.Context(), listNodes)
	is.True(errors.Is(err, rpc.Invalid)) // no address: an error, not a panic
}
