package rpc

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthInterval is how often Health.Run re-checks readiness for watchers.
const healthInterval = 250 * time.Millisecond

// Health serves the standard gRPC health service (grpc.health.v1.Health)
// on a dfs server, so load balancers, container health checks and
// `dfs health` can ask a role whether it is ready. The whole server ("")
// and each named service report SERVING while ready returns true and
// NOT_SERVING otherwise. Check asks ready on every call, so it is never
// behind; Watch streams follow the changes Run finds.
type Health struct {
	*health.Server
	services []string
	ready    func() bool

	mu       sync.Mutex
	last     bool
	shutdown bool
}

var _ healthpb.HealthServer = (*Health)(nil)

// NewHealth registers the health service on srv, reporting NOT_SERVING
// until ready returns true. Call it before srv serves.
func NewHealth(srv *grpc.Server, ready func() bool, services ...string) *Health {
	h := &Health{Server: health.NewServer(), services: append([]string{""}, services...), ready: ready}
	h.set(false)
	healthpb.RegisterHealthServer(srv, h)
	return h
}

func (h *Health) set(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, s := range h.services {
		h.SetServingStatus(s, st)
	}
}

// refresh brings the reported status in step with ready, unless the
// server is shutting down.
func (h *Health) refresh() {
	ok := h.ready()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shutdown || ok == h.last {
		return
	}
	h.set(ok)
	h.last = ok
}

// Check answers with the status ready gives now.
func (h *Health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.refresh()
	return h.Server.Check(ctx, req)
}

// Run keeps the reported status in step with ready until ctx ends, then
// reports NOT_SERVING for good (the server is stopping).
func (h *Health) Run(ctx context.Context) {
	h.refresh()
	Every(ctx, nil, healthInterval, func(context.Context) { h.refresh() })
	h.mu.Lock()
	h.shutdown = true
	h.Server.Shutdown()
	h.mu.Unlock()
}
