package rpc

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Transport tuning. One gRPC hop with protobuf bytes frames costs about one
// CPU-second per GiB with 16 MiB windows and 1 MiB buffers; gRPC's defaults
// are 20-30% slower (DESIGN.md, "What the machine costs").
const (
	streamWindow    = 4 << 20
	connWindow      = 16 << 20
	ioBuffer        = 1 << 20
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
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(unaryServerInterceptor(log, observers)),
		grpc.ChainStreamInterceptor(streamServerInterceptor(log, observers)),
	}
}

// DialOptions returns the options every dfs gRPC client uses.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second,
		}, MinConnectTimeout: 5 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(unaryClientInterceptor),
		grpc.WithChainStreamInterceptor(streamClientInterceptor),
	}
}

// Dial returns a lazily connecting client connection to addr.
func Dial(addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, DialOptions()...)
	if err != nil {
		return nil, Errorf(Invalid, "dial %s: %v", addr, err)
	}
	return cc, nil
}

// Listen opens a TCP listener on addr ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, Errorf(Unavailable, "listen on %s: %v", addr, err)
	}
	return lis, nil
}

// Pool keeps one shared client connection per address. Connections are
// created on first use and reconnect by themselves; Close closes them all.
type Pool struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{conns: make(map[string]*grpc.ClientConn)} }

// Get returns the connection to addr, dialing it if needed.
func (p *Pool) Get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, Errorf(Unavailable, "connection pool closed")
	}
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	cc, err := Dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

// Close closes every connection; it is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, cc := range p.conns {
		cc.Close()
		delete(p.conns, addr)
	}
	return nil
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
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(requestIDHeader); len(v) > 0 && len(v[0]) <= 64 {
			return WithRequestID(ctx, v[0])
		}
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

func unaryServerInterceptor(log zerolog.Logger, observers []CallObserver) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx = incoming(ctx)
		l := log.With().Str("request_id", RequestID(ctx)).Str("op", info.FullMethod).Logger()
		ctx = l.WithContext(ctx)
		start := time.Now()
		resp, err := handler(ctx, req)
		took := time.Since(start)
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

func streamServerInterceptor(log zerolog.Logger, observers []CallObserver) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := incoming(ss.Context())
		l := log.With().Str("request_id", RequestID(ctx)).Str("op", info.FullMethod).Logger()
		ctx = l.WithContext(ctx)
		start := time.Now()
		err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		took := time.Since(start)
		observe(observers, info.FullMethod, err, took)
		l.Debug().Err(err).Dur("took", took).Msg("stream")
		return err
	}
}

// Serve runs srv on lis until ctx ends, then stops it gracefully, forcing
// the stop after grace. It returns nil on a clean stop.
func Serve(ctx context.Context, srv *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
	<-errc
	return nil
}
