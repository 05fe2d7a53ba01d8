// Package datanode is the datanode role: it stores chunks on local disk,
// serves them over gRPC streams, forwards each chunk it receives as primary
// to its replicas, copies chunks from other nodes for repairs, scrubs what
// it stores for bit rot, and reports to the coordinator by heartbeat.
package datanode

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
	"github.com/dfs-project/dfs/sessions"
)

// Config is a datanode's configuration.
type Config struct {
	// Listen is the gRPC address to listen on.
	Listen string
	// Advertise is the address other parties dial; defaults to Listen with
	// the bound port (and the host name when Listen has no host).
	Advertise string
	// DataDir holds the node ID and the chunks.
	DataDir string
	// Coordinators are the coordinator addresses.
	Coordinators []string
	// Capacity caps the bytes stored; 0 uses the whole filesystem.
	Capacity int64
	// PackThreshold is the largest chunk stored as a record in a pack
	// file (many fsynced together) rather than a file of its own; 0 stores
	// every chunk as a file.
	PackThreshold int64
	// HeartbeatInterval is the pause between heartbeats.
	HeartbeatInterval time.Duration
	// SessionTimeout ends a prepared stream that does not start, and a
	// stream that sends nothing for that long; its partial file is removed.
	SessionTimeout time.Duration
	// MaxSessions bounds the upload streams prepared or running (prepared
	// inline on their first frame included), and the download streams
	// prepared and not yet started: a prepared download holds an open
	// chunk file, an upload reserved space and memory. Beyond it, Prepare
	// calls and inline-prepared streams are refused with
	// ResourceExhausted, and the client tries another node.
	MaxSessions int
	// FrameBudget bounds the bytes of frames held in memory by all upload
	// and repair streams at once (see budget).
	FrameBudget int64
	// MaxConnStreams bounds the concurrent calls on one incoming
	// connection (HTTP/2 max concurrent streams); a client's calls beyond
	// it wait in the client.
	MaxConnStreams int
	// InventoryInterval is the pause between full inventory reports, each
	// preceded by a check of the chunk directories for files gone from
	// disk (see Store.FindLost); a report is also sent after every
	// registration.
	InventoryInterval time.Duration
	// RPCTimeout bounds unary calls to peers and the coordinator.
	RPCTimeout time.Duration
	// Window is the unacknowledged bytes allowed when forwarding a chunk.
	Window int64
	// ProgressTimeout fails a stream to a peer (forwarding to a replica, a
	// repair copy's download) that makes no progress for this long, so a
	// paused or cut-off peer costs one timeout; while this node waits on
	// its replicas or its disk commit it repeats its last ack at a quarter
	// of it, so its own sender does not blame it.
	ProgressTimeout time.Duration
	// MaxPeerConns bounds the connections the node keeps to other
	// datanodes and the coordinators; beyond it the one unused the
	// longest is closed.
	MaxPeerConns int
	// PeerIdleTimeout closes a connection to a peer or coordinator that
	// carried no call for this long.
	PeerIdleTimeout time.Duration
	// ShutdownGrace bounds the graceful stop.
	ShutdownGrace time.Duration
	// ScrubInterval is the pause between the end of one scrub pass over
	// every stored chunk and the start of the next; 0 scrubs continuously
	// (passes start at least a second apart).
	ScrubInterval time.Duration
	// ScrubRate caps the bytes per second the scrubber reads; 0 disables
	// scrubbing.
	ScrubRate int64
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:7001",
		DataDir:           "./dfs-data/datanode",
		Coordinators:      []string{"127.0.0.1:7000"},
		HeartbeatInterval: 3 * time.Second,
		SessionTimeout:    time.Minute,
		MaxSessions:       4096,
		FrameBudget:       256 << 20,
		MaxConnStreams:    64,
		InventoryInterval: 10 * time.Minute,
		RPCTimeout:        10 * time.Second,
		Window:            4 << 20,
		ProgressTimeout:   chunkstream.DefaultProgressTimeout,
		MaxPeerConns:      256,
		PeerIdleTimeout:   5 * time.Minute,
		ShutdownGrace:     10 * time.Second,
		ScrubInterval:     6 * time.Hour,
		ScrubRate:         32 << 20,
		PackThreshold:     chunkstore.DefaultPackThreshold,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return fmt.Errorf("datanode: --listen is required")
	case c.DataDir == "":
		return fmt.Errorf("datanode: --data-dir is required")
	case len(c.Coordinators) == 0 || c.Coordinators[0] == "":
		return fmt.Errorf("datanode: --coordinator is required")
	case c.Capacity < 0:
		return fmt.Errorf("datanode: --capacity must not be negative")
	case c.PackThreshold < 0 || c.PackThreshold > rpc.MaxChunkSize:
		return fmt.Errorf("datanode: --pack-threshold must be between 0 and %s", rpc.FormatBytes(rpc.MaxChunkSize))
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("datanode: --heartbeat-interval must be positive")
	case c.SessionTimeout <= 0:
		return fmt.Errorf("datanode: --session-timeout must be positive")
	case c.MaxSessions <= 0:
		return fmt.Errorf("datanode: --max-sessions must be positive")
	case c.FrameBudget < 2*rpc.MaxFrameSize:
		return fmt.Errorf("datanode: --frame-budget must be at least %s (two of the largest frames)", rpc.FormatBytes(2*rpc.MaxFrameSize))
	case c.MaxConnStreams <= 0:
		return fmt.Errorf("datanode: --max-conn-streams must be positive")
	case c.InventoryInterval <= 0:
		return fmt.Errorf("datanode: --inventory-interval must be positive")
	case c.RPCTimeout <= 0:
		return fmt.Errorf("datanode: --rpc-timeout must be positive")
	case c.ProgressTimeout <= 0:
		return fmt.Errorf("datanode: --stream-progress-timeout must be positive")
	case c.MaxPeerConns <= 0:
		return fmt.Errorf("datanode: --max-peer-conns must be positive")
	case c.PeerIdleTimeout <= 0:
		return fmt.Errorf("datanode: --peer-idle-timeout must be positive")
	case c.ScrubInterval < 0:
		return fmt.Errorf("datanode: --scrub-interval must not be negative")
	case c.ScrubRate < 0:
		return fmt.Errorf("datanode: --scrub-rate must not be negative")
	case c.Window < rpc.MinFrameSize:
		return fmt.Errorf("datanode: window must be at least %d bytes", rpc.MinFrameSize)
	}
	return nil
}

// Deps are a datanode's collaborators.
type Deps struct {
	Log zerolog.Logger
	// Clock tells the time and makes the timers; nil is the real clock.
	Clock clockwork.Clock
	// Listener, when set, is used instead of listening on Config.Listen
	// (tests pass 127.0.0.1:0 listeners).
	Listener net.Listener
	// Metrics is where New registers the node's metrics (names start with
	// dfs_datanode_); nil keeps them unregistered.
	Metrics prometheus.Registerer
	// FS is the file system the chunk store lives on; nil is the
	// operating system's (tests pass one that fails or crashes).
	FS vfs.FS
	// TLS, when set, secures every connection the node serves and dials
	// and turns on access checks; nil runs in plain text (--insecure).
	TLS *pki.TLS
	// Tokens verifies the bearer tokens callers present; nil takes none.
	Tokens auth.TokenVerifier
}

// Node is one datanode.
type Node struct {
	dfspb.UnimplementedDataNodeServer

	cfg    Config
	log    zerolog.Logger
	tls    *pki.TLS
	tokens auth.TokenVerifier
	// keys check the chunk tokens of chunk calls; nil without TLS, when
	// no call needs one.
	keys  *chunktoken.Keyring
	clock clockwork.Clock
	lis   net.Listener
	fs    vfs.FS

	id      rpc.NodeID
	store   *chunkstore.Store
	opened  atomic.Pointer[chunkstore.Store] // the store, once Run has opened it
	pool    *rpc.Pool
	coord   *rpc.Leader // where calls to the coordinator go
	metrics *metrics

	reports   *reporter
	uploads   *sessions.Table[rpc.SessionID, *uploadSession]
	downloads *sessions.Table[rpc.SessionID, *chunkstore.Chunk]
	slowRead  atomic.Int64  // nanoseconds; see ReadChunks
	verifies  chan struct{} // slots for VerifyChunk calls
	frames    *budget       // frame bytes held by upload and repair streams
	// running counts the upload streams under way, each from the moment
	// its session is found or prepared inline; with the prepared
	// sessions they are at most MaxSessions.
	running atomic.Int64

	mu      sync.Mutex
	addr    string
	version uint64
	peers   map[rpc.NodeID]Peer
	// peersLearned is closed (and replaced) whenever a reply from the
	// coordinator updated peers.
	peersLearned chan struct{}
	registered   bool
	// incarnation is what the latest registration returned; heartbeats
	// present it.
	incarnation string
	lastErr     error  // of the last register or heartbeat; nil when it got through
	cluster     string // the cluster this node belongs to, once known
	diskErr     error  // why the data dir takes no writes, from the last probe; nil when it does

	ready chan struct{}
	probe chan struct{} // asks the writability probe to run now
	// serving is closed once the node serves gRPC.
	serving chan struct{}
}

// New builds a datanode. It validates cfg and has no side effects; Run
// opens the store and starts serving.
func New(cfg Config, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Clock == nil {
		deps.Clock = clockwork.NewRealClock()
	}
	if deps.FS == nil {
		deps.FS = vfs.Default
	}
	n := &Node{
		cfg:   cfg,
		log:   deps.Log.With().Str("role", "datanode").Logger(),
		clock: deps.Clock,
		lis:   deps.Listener,
		fs:    deps.FS,
		pool: rpc.NewBoundedPool(rpc.PoolConfig{Max: cfg.MaxPeerConns, Idle: cfg.PeerIdleTimeout, Clock: deps.Clock,
			Options: deps.TLS.DialOptions(deps.TLS.ClientCredentialsFor(pki.CoordinatorsOnly(cfg.Coordinators)))}),
		tls:    deps.TLS,
		tokens: deps.Tokens,

		peers:        make(map[rpc.NodeID]Peer),
		peersLearned: make(chan struct{}),
		ready:        make(chan struct{}),
		serving:      make(chan struct{}),
		probe:        make(chan struct{}, 1),
		verifies:     make(chan struct{}, maxVerifies),
		frames:       newBudget(cfg.FrameBudget, deps.Clock),
	}
	if deps.TLS != nil {
		n.keys = &chunktoken.Keyring{}
	}
	n.coord = rpc.NewLeader(rpc.LeaderConfig{Addrs: cfg.Coordinators, Timeout: cfg.RPCTimeout}, n.pool, deps.Clock)
	n.uploads = sessions.New(cfg.SessionTimeout, deps.Clock, func(id rpc.SessionID, s *uploadSession) {
		n.log.Debug().Str("session_id", string(id)).Str("chunk_id", string(s.id)).Msg("upload session expired")
		s.release()
	})
	n.downloads = sessions.New(cfg.SessionTimeout, deps.Clock, func(_ rpc.SessionID, c *chunkstore.Chunk) { c.Close() })
	n.slowRead.Store(int64(slowRead))
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	var err error
	if n.metrics, err = newMetrics(deps.Metrics, n); err != nil {
		return nil, fmt.Errorf("datanode: register metrics: %w", err)
	}
	return n, nil
}

// Readiness returns nil while the node is registered with a coordinator
// and its last heartbeat got through; otherwise the error says why.
func (n *Node) Readiness() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case !n.registered && n.lastErr != nil:
		return rpc.Errorf(rpc.Unavailable, "not registered with a coordinator: %w", n.lastErr)
	case !n.registered:
		return rpc.Errorf(rpc.Unavailable, "not registered with a coordinator yet")
	case n.lastErr != nil:
		return rpc.Errorf(rpc.Unavailable, "coordinator unreachable: %w", n.lastErr)
	}
	return nil
}

// logFor returns the logger of the call ctx belongs to, which names the
// request ID and the method, or else the node's logger.
func (n *Node) logFor(ctx context.Context) zerolog.Logger {
	if l := zerolog.Ctx(ctx); l.GetLevel() != zerolog.Disabled {
		return *l
	}
	return n.log
}

// openedStore returns the chunk store once Run has opened it, else nil;
// unlike n.store it is safe to call from any goroutine at any time.
func (n *Node) openedStore() *chunkstore.Store { return n.opened.Load() }

// Ready is closed once the node serves and has registered.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Serving is closed once the node serves gRPC, registered or not.
func (n *Node) Serving() <-chan struct{} { return n.serving }

// ID returns the node's ID; valid once Ready.
func (n *Node) ID() rpc.NodeID { return n.id }

// Addr returns the advertised address; valid once Ready.
func (n *Node) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// Store returns the chunk store; valid once Ready (tests inspect it).
func (n *Node) Store() *chunkstore.Store { return n.store }

// callWorkers is how many goroutines serve calls without starting one per
// call: about the streams a busy node has open at once (a few per chunk in
// flight, 16 small gets from a client); a call beyond them starts its own.
const callWorkers = 64

// Run opens the store, serves gRPC, registers with the coordinator and
// heartbeats until ctx ends; then it stops gracefully and returns nil.
func (n *Node) Run(ctx context.Context) error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("datanode: data dir: %w", err)
	}
	lock, err := lockDataDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	id, err := LoadOrCreateNodeID(n.cfg.DataDir)
	if err != nil {
		return err
	}
	n.id = id
	n.log = n.log.With().Str("node_id", id.Short()).Logger()
	n.store, err = chunkstore.OpenWith(n.fs, n.cfg.DataDir, chunkstore.Options{
		Capacity: n.cfg.Capacity, PackThreshold: n.cfg.PackThreshold, Log: n.log})
	if err != nil {
		return err
	}
	n.opened.Store(n.store)
	for _, id := range n.store.Corrupt() {
		n.log.Error().Str("chunk_id", string(id)).Msg("corrupt chunk (damaged, or found so before) awaits deletion; not served")
	}
	n.reports = newReporter(n.store, n.clock)
	if n.cluster, err = loadClusterID(n.cfg.DataDir); err != nil {
		return err
	}
	if n.lis == nil {
		if n.lis, err = rpc.Listen(n.cfg.Listen); err != nil {
			return fmt.Errorf("datanode: %w", err)
		}
	}
	n.mu.Lock()
	n.addr = advertise(n.cfg.Advertise, n.lis.Addr())
	n.mu.Unlock()
	defer n.pool.Close()

	opts := append(rpc.ServerOptionsWithClock(n.clock, n.log, n.metrics.observe), grpc.MaxConcurrentStreams(uint32(n.cfg.MaxConnStreams)))
	// Calls run on goroutines kept from call to call, whose stacks have
	// grown already (a call that finds them all busy gets its own): a new
	// goroutine per call grew its stack through gRPC's deep calls, ~6 %
	// of a datanode's CPU during small puts (docs/benchmarks.md).
	opts = append(opts, grpc.NumStreamWorkers(callWorkers))
	srv := grpc.NewServer(append(opts, auth.ServerOptions(n.tls, n.tokens, n.access())...)...)
	dfspb.RegisterDataNodeServer(srv, n)
	// The standard health service: SERVING while registered.
	health := rpc.NewHealth(srv, func() bool { return n.Readiness() == nil }, dfspb.DataNode_ServiceDesc.ServiceName)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { n.probeLoop(ctx) })
	wg.Go(func() { health.Run(ctx) })
	wg.Go(func() { n.reportLoop(ctx) })
	wg.Go(func() { n.inventoryLoop(ctx) })
	wg.Go(func() { n.uploads.Run(ctx, time.Second) })
	wg.Go(func() { n.downloads.Run(ctx, time.Second) })
	wg.Go(func() { n.heartbeatLoop(ctx) })
	wg.Go(func() { n.scrubLoop(ctx) })
	u := n.store.Usage()
	n.log.Info().Str("addr", n.Addr()).Str("data_dir", n.cfg.DataDir).Int64("chunks", u.Chunks).
		Str("used", rpc.FormatBytes(u.Used)).Str("free", rpc.FormatBytes(u.Free)).Msg("datanode serving")
	close(n.serving)
	err = rpc.Serve(ctx, srv, n.lis, n.cfg.ShutdownGrace)
	cancel()
	wg.Wait()
	n.uploads.Range(func(_ rpc.SessionID, s *uploadSession) { s.release() })
	n.downloads.Range(func(_ rpc.SessionID, c *chunkstore.Chunk) { c.Close() })
	n.store.Close()
	n.log.Info().Msg("datanode stopped")
	return err
}

// advertise derives the address peers dial from the configured advertise
// address or the bound listener.
func advertise(cfg string, bound net.Addr) string {
	if cfg != "" {
		return cfg
	}
	host, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return bound.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}
