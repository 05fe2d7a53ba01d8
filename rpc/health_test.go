package rpc_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfs-project/dfs/rpc"
)

func TestShortMethod(t *testing.T) {
	is := is.New(t)
	is.Equal(rpc.ShortMethod("/dfs.v1.Coordinator/UploadFile"), "UploadFile")                // a dfs method by its name
	is.Equal(rpc.ShortMethod("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check") // another service's with its service
}

// call is one observed call.
type call struct {
	method string
	code   codes.Code
}

func TestHealthAndObserver(t *testing.T) {
	is := is.New(t)
	var mu sync.Mutex
	var calls []call
	observe := func(method string, code codes.Code, took time.Duration) {
		mu.Lock()
		calls = append(calls, call{method, code})
		mu.Unlock()
	}
	var ready atomic.Bool
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop(), observe)...)
	h := rpc.NewHealth(srv, ready.Load, "dfs.v1.Test")
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // listen
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(ctx, srv, lis, time.Second) }()
	healthDone := make(chan struct{})
	go func() { h.Run(ctx); close(healthDone) }()
	defer func() { cancel(); <-served; <-healthDone }()

	cc, err := rpc.Dial(lis.Addr().String())
	is.NoErr(err) // dial
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("check %q: %v", service, err)
		}
		return resp.Status
	}
	is.Equal(check(""), healthpb.HealthCheckResponse_NOT_SERVING)            // not ready: NOT_SERVING
	is.Equal(check("dfs.v1.Test"), healthpb.HealthCheckResponse_NOT_SERVING) // for the named service too

	ready.Store(true)
	is.Equal(check(""), healthpb.HealthCheckResponse_SERVING)            // ready: SERVING at once, not on the next tick
	is.Equal(check("dfs.v1.Test"), healthpb.HealthCheckResponse_SERVING) // ready: the named service serves too
	ready.Store(false)
	is.Equal(check(""), healthpb.HealthCheckResponse_NOT_SERVING) // no longer ready: NOT_SERVING at once

	mu.Lock()
	defer mu.Unlock()
	is.True(len(calls) >= 3)                                           // every call was observed
	is.Equal(calls[0], call{"/grpc.health.v1.Health/Check", codes.OK}) // with its full method and code
}
