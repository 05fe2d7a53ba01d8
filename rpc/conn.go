package rpc

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Transport tuning. One gRPC hop with protobuf bytes frames costs about one
// CPU-second per GiB with 16 MiB windows and 1 MiB buffers; gRPC's defaults
// are 20-30% slower (DESIGN.md, "What the machine costs"). Buffers come
// from a pool that does not zero them (codec.go). The write buffer, which
// batches a plain-text connection's socket writes, is 256 KiB: as fast as
// 1 MiB, and a datanode holds one per connection (3.7 MiB less peak RSS
// in a put, docs/benchmarks.md, eleventh round). TLS connections use
// 64 KiB (internal/pki).
const (
	streamWindow    = 4 << 20
	connWindow      = 16 << 20
	readBuffer      = 1 << 20
	writeBuffer     = 256 << 10
	MaxMessageSize  = MaxFrameSize + 64<<10
	requestIDHeader = "x-request-id"
)

// CallObserver is told of every call a server finished: the full method
// name ("/dfs.Coordinator/UploadFile"), the gRPC code it ended with and how
// long it took (for a stream, from its start to its end). It must be quick
// and safe for concurrent use; roles feed their metrics from it.
type CallObserver func(method string, code codes.Code, took time.Duration)

// ShortMethod names a call for metrics and logs: a dfs method by its own
// name ("/dfs.v1.Coordinator/UploadFile" -> "UploadFile"), another
// service's method with its service ("grpc.health.v1.Health/Check").
func ShortMethod(full string) string {
	full = strings.TrimPrefix(full, "/")
	if svc, name, ok := strings.Cut(full, "/"); ok && strings.HasPrefix(svc, "dfs.") {
		return name
	}
	return full
}

// ServerOptions returns the options every dfs gRPC server uses, with the
// request-ID interceptors logging through log and telling each observer
// of every finished call.
func ServerOptions(log zerolog.Logger, observers ...CallObserver) []grpc.ServerOption {
	return ServerOptionsWithClock(nil, log, observers...)
}

// ServerOptionsWithClock is ServerOptions timing the calls on clk (nil is
// the real clock).
func ServerOptionsWithClock(clk clockwork.Clock, log zerolog.Logger, observers ...CallObserver) []grpc.ServerOption {
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(readBuffer),
		grpc.WriteBufferSize(writeBuffer),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.ForceServerCodecV2(codec{}),
		experimental.BufferPool(buffers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(unaryServerInterceptor(clk, log, observers)),
		grpc.ChainStreamInterceptor(streamServerInterceptor(clk, log, observers)),
	}
}

// DialOptions returns the options every dfs gRPC client uses: plain text,
// unless a grpc.WithTransportCredentials option after them says otherwise.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(readBuffer),
		grpc.WithWriteBufferSize(writeBuffer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize), grpc.ForceCodecV2(codec{})),
		experimental.WithBufferPool(buffers),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second,
		}, MinConnectTimeout: 5 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(unaryClientInterceptor),
		grpc.WithChainStreamInterceptor(streamClientInterceptor),
	}
}

// WaitReady waits until cc is connected, or ctx ends. A connection
// waiting out its reconnect backoff (the peer restarted) tries again at
// once. A call made next may still wait for a free stream on the
// connection (the server's most concurrent streams): that is the peer's
// back-pressure, which WaitReady does not bound.
func WaitReady(ctx context.Context, cc *grpc.ClientConn) error {
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			cc.ResetConnectBackoff()
		case connectivity.Shutdown:
			return Errorf(Unavailable, "connection to %s closed", cc.Target())
		}
		if !cc.WaitForStateChange(ctx, s) {
			return Errorf(Other, "connect to %s: %w", cc.Target(), ctx.Err())
		}
	}
}

// Dial returns a lazily connecting client connection to addr, with
// DialOptions and then opts (the transport credentials, for TLS).
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, append(DialOptions(), opts...)...)
	if err != nil {
		return nil, Errorf(Invalid, "dial %s: %w", addr, err)
	}
	return cc, nil
}

// Listen opens a TCP listener on addr ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, Errorf(Unavailable, "listen on %s: %w", addr, err)
	}
	return lis, nil
}

// Pool keeps one shared client connection per address. Connections are
// created on first use and reconnect by themselves; Close closes them all.
// A pool built with NewBoundedPool also closes connections that carried no
// call for a while and keeps at most a given number of them.
type Pool struct {
	cfg PoolConfig

	mu     sync.Mutex
	conns  map[string]*pooled
	sweep  clockwork.Timer // armed while Idle is set and connections are open
	closed bool
}

// PoolConfig bounds a Pool; the zero value bounds nothing.
type PoolConfig struct {
	// Max is the most connections kept at once; 0 means no limit. A new
	// address beyond it replaces the connection unused the longest among
	// those without a call in flight; with every one busy, Get fails with
	// ResourceExhausted.
	Max int
	// Idle closes a connection that has had no call in flight for this
	// long; 0 keeps connections until Close.
	Idle time.Duration
	// Clock tells the time of a connection's use and runs the sweep of
	// idle connections; nil is the real clock.
	Clock clockwork.Clock
	// Options are added to DialOptions for every connection: the
	// transport credentials (TLS), per-call credentials (a bearer token).
	Options []grpc.DialOption
}

// pooled is one connection of a Pool with its use: calls in flight (its
// stats handler counts them) and when it was last handed out or last
// finished a call.
type pooled struct {
	cc       *grpc.ClientConn
	inflight int
	last     time.Time
	// heard is when (unix nanoseconds) a message or header last arrived
	// from the peer on this connection, or a message left for it, for any
	// call.
	heard atomic.Int64
}

// NewPool returns an empty pool without bounds.
func NewPool() *Pool { return NewBoundedPool(PoolConfig{}) }

// NewBoundedPool returns an empty pool bounded by cfg.
func NewBoundedPool(cfg PoolConfig) *Pool {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Pool{cfg: cfg, conns: make(map[string]*pooled)}
}

// Get returns the connection to addr, dialing it if needed. It fails with
// ResourceExhausted when the pool is full of busy connections and with
// Unavailable once the pool is closed.
func (p *Pool) Get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, Errorf(Unavailable, "connection pool closed")
	}
	now := p.cfg.Clock.Now()
	if pc, ok := p.conns[addr]; ok {
		pc.last = now
		return pc.cc, nil
	}
	if p.cfg.Max > 0 && len(p.conns) >= p.cfg.Max && !p.evictLocked() {
		return nil, Errorf(ResourceExhausted, "dial %s: all %d pooled connections are busy", addr, p.cfg.Max)
	}
	pc := &pooled{last: now}
	cc, err := grpc.NewClient("passthrough:///"+addr, append(append(DialOptions(), p.cfg.Options...), grpc.WithStatsHandler(&useCounter{p: p, pc: pc}))...)
	if err != nil {
		return nil, Errorf(Invalid, "dial %s: %w", addr, err)
	}
	pc.cc = cc
	p.conns[addr] = pc
	if p.cfg.Idle > 0 && p.sweep == nil {
		p.sweep = p.cfg.Clock.AfterFunc(p.cfg.Idle, p.closeIdle)
	}
	return cc, nil
}

// evictLocked closes the connection without a call in flight that was
// used the longest ago; it reports whether there was one.
func (p *Pool) evictLocked() bool {
	var victim string
	var oldest time.Time
	for addr, pc := range p.conns {
		if pc.inflight == 0 && (victim == "" || pc.last.Before(oldest)) {
			victim, oldest = addr, pc.last
		}
	}
	if victim == "" {
		return false
	}
	go p.conns[victim].cc.Close() // it may block briefly; not under the lock
	delete(p.conns, victim)
	return true
}

// closeIdle closes the connections idle for cfg.Idle and rearms itself
// while connections remain.
func (p *Pool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	now := p.cfg.Clock.Now()
	next := p.cfg.Idle
	var idle []*grpc.ClientConn
	for addr, pc := range p.conns {
		switch age := now.Sub(pc.last); {
		case pc.inflight > 0:
		case age >= p.cfg.Idle:
			idle = append(idle, pc.cc)
			delete(p.conns, addr)
		default:
			next = min(next, p.cfg.Idle-age)
		}
	}
	go func() {
		for _, cc := range idle {
			cc.Close()
		}
	}()
	if len(p.conns) == 0 {
		p.sweep = nil
		return
	}
	p.sweep = p.cfg.Clock.AfterFunc(next, p.closeIdle)
}

// Heard returns when the pool's connection to addr last moved, read on
// the pool's clock: a message or header (of any call) arrived from the
// peer, or a message was taken by the transport for it, which its
// flow-control windows allow only while it reads; the zero time if
// never. A stream waiting on a peer whose connection moves is slow (its
// frames wait behind other streams'), not cut off: progress deadlines
// (on the same clock) use it to tell a busy connection from a paused or
// unreachable peer, on which everything stops within a window.
func (p *Pool) Heard(addr string) time.Time {
	p.mu.Lock()
	pc, ok := p.conns[addr]
	p.mu.Unlock()
	if !ok {
		return time.Time{}
	}
	if ns := pc.heard.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Len returns how many connections the pool holds.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close closes every connection; it is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	for addr, pc := range p.conns {
		pc.cc.Close()
		delete(p.conns, addr)
	}
	return nil
}

// useCounter is a pooled connection's stats handler: it counts the calls
// in flight (each attempt begins and ends once), stamps their end, and
// when the peer was last heard from.
type useCounter struct {
	p  *Pool
	pc *pooled
}

var _ stats.Handler = (*useCounter)(nil)

func (u *useCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (u *useCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (u *useCounter) HandleConn(context.Context, stats.ConnStats)                       {}

func (u *useCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch s.(type) {
	case *stats.InPayload, *stats.InHeader, *stats.InTrailer, *stats.OutPayload:
		u.pc.heard.Store(u.p.cfg.Clock.Now().UnixNano())
	case *stats.Begin:
		u.p.mu.Lock()
		u.pc.inflight++
		u.pc.last = u.p.cfg.Clock.Now()
		u.p.mu.Unlock()
	case *stats.End:
		u.p.mu.Lock()
		u.pc.inflight = max(0, u.pc.inflight-1)
		u.pc.last = u.p.cfg.Clock.Now()
		u.p.mu.Unlock()
	}
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying id; outgoing calls propagate it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request ID carried by ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// EnsureRequestID returns ctx with a request ID, adding a new one if absent.
func EnsureRequestID(ctx context.Context) context.Context {
	if RequestID(ctx) != "" {
		return ctx
	}
	return WithRequestID(ctx, uuid.NewString())
}

func outgoing(ctx context.Context) context.Context {
	if id := RequestID(ctx); id != "" {
		return metadata.AppendToOutgoingContext(ctx, requestIDHeader, id)
	}
	return ctx
}

func incoming(ctx context.Context) context.Context {
	// ValueFromIncomingContext, not FromIncomingContext: the latter copies
	// every header into a new map on each call.
	if v := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(v) > 0 && len(v[0]) <= 64 {
		return WithRequestID(ctx, v[0])
	}
	return EnsureRequestID(ctx)
}

func unaryClientInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(outgoing(ctx), method, req, reply, cc, opts...)
}

func streamClientInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(outgoing(ctx), desc, cc, method, opts...)
}

func observe(observers []CallObserver, method string, err error, took time.Duration) {
	if len(observers) == 0 {
		return
	}
	code := status.Code(err)
	for _, o := range observers {
		o(method, code, took)
	}
}

func unaryServerInterceptor(clk clockwork.Clock, log zerolog.Logger, observers []CallObserver) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx = incoming(ctx)
		l := log.With().Str("request_id", RequestID(ctx)).Str("op", info.FullMethod).Logger()
		ctx = l.WithContext(ctx)
		start := clk.Now()
		resp, err := handler(ctx, req)
		took := clk.Since(start)
		observe(observers, info.FullMethod, err, took)
		ev := l.Debug()
		if err != nil && KindOf(FromStatus(err)) == Internal {
			ev = l.Warn().Err(err)
		}
		ev.Dur("took", took).Msg("rpc")
		return resp, err
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

func streamServerInterceptor(clk clockwork.Clock, log zerolog.Logger, observers []CallObserver) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := incoming(ss.Context())
		l := log.With().Str("request_id", RequestID(ctx)).Str("op", info.FullMethod).Logger()
		ctx = l.WithContext(ctx)
		start := clk.Now()
		err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		took := clk.Since(start)
		observe(observers, info.FullMethod, err, took)
		l.Debug().Err(err).Dur("took", took).Msg("stream")
		return err
	}
}

// Serve runs srv on lis until ctx ends, then stops it gracefully, and
// returns within grace: three quarters of it for the graceful stop, then a
// forced one, which cancels the contexts of the calls still running and
// waits for them the last quarter at most (a handler that does not heed
// its context is left behind rather than holding the stop up). It
// returns nil on a clean stop; when Serve fails, it stops srv and returns
// the error.
func Serve(ctx context.Context, srv *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		srv.Stop() // its connections and stream workers, if any
		return err
	case <-ctx.Done():
	}
	// The grace period ends early once the graceful stop is done.
	stopping, stopped := context.WithCancel(context.WithoutCancel(ctx))
	go func() { srv.GracefulStop(); stopped() }()
	if Sleep(stopping, nil, grace-grace/4) == nil {
		srv.Stop()
		Sleep(stopping, nil, grace/4)
	}
	<-errc
	return nil
}
