package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfs-project/dfs/rpc"
)

// healthServer serves the standard health service on 127.0.0.1 until the
// test ends and returns its address.
func healthServer(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(ctx, srv, lis, time.Second) }()
	t.Cleanup(func() { cancel(); <-served })
	return lis.Addr().String()
}

// waitUntil polls cond for up to a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolBounded(t *testing.T) {
	is := is.New(t)
	base := runtime.NumGoroutine()
	p := rpc.NewBoundedPool(rpc.PoolConfig{Max: 2})
	busy := []string{healthServer(t), healthServer(t)}

	// 500 addresses nobody serves: idle connections make room for the next.
	for i := range 500 {
		_, err := p.Get(fmt.Sprintf("127.0.0.1:%d", 40000+i))
		is.NoErr(err)         // an idle connection is replaced
		is.True(p.Len() <= 2) // never more than Max
	}

	// Two connections with a call in flight are never replaced.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, addr := range busy {
		cc, err := p.Get(addr)
		is.NoErr(err) // a live server
		w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
		is.NoErr(err) // a watch stays open
		_, err = w.Recv()
		is.NoErr(err) // the watch is running
	}
	_, err := p.Get("127.0.0.1:39999")
	is.True(errors.Is(err, rpc.ResourceExhausted)) // full of busy connections: refused
	is.Equal(p.Len(), 2)                           // still at Max

	cancel()
	is.NoErr(p.Close())
	waitUntil(t, "the closed connections' goroutines to end", func() bool {
		return runtime.NumGoroutine() <= base+20 // the two servers' own
	})
}

func TestPoolClosesIdle(t *testing.T) {
	is := is.New(t)
	const idle = 50 * time.Millisecond
	p := rpc.NewBoundedPool(rpc.PoolConfig{Idle: idle})
	defer p.Close()
	addr := healthServer(t)

	cc, err := p.Get(addr)
	is.NoErr(err) // dial
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	is.NoErr(err) // a long call
	_, err = w.Recv()
	is.NoErr(err) // it runs
	time.Sleep(5 * idle)
	is.Equal(p.Len(), 1) // a connection with a call in flight stays open

	cancel()
	waitUntil(t, "the idle connection to close", func() bool { return p.Len() == 0 })
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	is.True(err != nil) // the connection was closed

	cc, err = p.Get(addr)
	is.NoErr(err) // a new one is dialed on the next use
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	is.NoErr(err) // and works
}

// TestPoolIdleOnTheClock: the sweep of idle connections runs on the
// pool's clock: a connection is closed once it has been idle for Idle by
// that clock, not before.
func TestPoolIdleOnTheClock(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	p := rpc.NewBoundedPool(rpc.PoolConfig{Idle: time.Minute, Clock: clk})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := healthServer(t)
	_, err := p.Get(addr)
	is.NoErr(err)                           // dial
	is.NoErr(clk.BlockUntilContext(ctx, 1)) // the sweep is armed on the clock
	clk.Advance(30 * time.Second)
	_, err = p.Get(addr)
	is.NoErr(err)        // used again at 30 s
	is.Equal(p.Len(), 1) // still open
	clk.Advance(30 * time.Second)
	is.NoErr(clk.BlockUntilContext(ctx, 1)) // the sweep ran and was armed again
	is.Equal(p.Len(), 1)                    // idle for 30 s only: kept
	clk.Advance(30 * time.Second)
	waitUntil(t, "the idle connection to close", func() bool { return p.Len() == 0 })
}

// TestServeStopsTheServerItCannotRun: when Serve cannot serve (its
// listener is closed), it returns the error and stops the server, its
// stream workers included, rather than leaving it half started.
func TestServeStopsTheServerItCannotRun(t *testing.T) {
	is := is.New(t)
	srv := grpc.NewServer(grpc.NumStreamWorkers(4))
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	lis.Close()
	is.True(rpc.Serve(context.Background(), srv, lis, time.Second) != nil) // the closed listener's error
	again, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	defer again.Close()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(again) }()
	select {
	case err := <-served:
		is.Equal(err, grpc.ErrServerStopped) // stopped: it serves no more
	case <-time.After(5 * time.Second):
		srv.Stop()
		t.Fatal("Serve failed but left its server serving")
	}
}
