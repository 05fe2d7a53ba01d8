// Package coordinator is the coordinator role: it owns the namespace
// (path -> chunk list), datanode membership by heartbeats, chunk placement,
// and the metadata sessions that make an upload and its commit atomic.
package coordinator

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
	"github.com/dfs-project/dfs/sessions"
)

// Config is a coordinator's configuration.
type Config struct {
	// Listen is the gRPC address to listen on.
	Listen string
	// DataDir holds the coordinator's state.
	DataDir string
	// Replication is the default replication factor.
	Replication int
	// ChunkSize is the default chunk size in bytes.
	ChunkSize int64
	// SuspectAfter and DeadAfter: a node silent this long is suspect
	// (no new chunks), then dead.
	SuspectAfter time.Duration
	DeadAfter    time.Duration
	// SessionTimeout ends an upload that makes no progress for that long;
	// its chunks are collected.
	SessionTimeout time.Duration
	// GCDelay holds back deleting the chunks of a removed or replaced file
	// (and of an aborted upload) so running readers can finish.
	GCDelay time.Duration
	// Placement names the placement policy: random or most-free.
	Placement string
	// RPCTimeout bounds calls to datanodes.
	RPCTimeout time.Duration
	// ShutdownGrace bounds the graceful stop.
	ShutdownGrace time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:7000",
		DataDir:        "./dfs-data/coordinator",
		Replication:    3,
		ChunkSize:      8 << 20,
		SuspectAfter:   10 * time.Second,
		DeadAfter:      30 * time.Second,
		SessionTimeout: 5 * time.Minute,
		GCDelay:        time.Minute,
		Placement:      "most-free",
		RPCTimeout:     10 * time.Second,
		ShutdownGrace:  10 * time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Listen == "" {
		return fmt.Errorf("coordinator: --listen is required")
	}
	if c.DataDir == "" {
		return fmt.Errorf("coordinator: --data-dir is required")
	}
	if c.Replication < 1 || c.Replication > rpc.MaxReplication {
		return fmt.Errorf("coordinator: --replication must be between 1 and %d", rpc.MaxReplication)
	}
	if err := rpc.CheckChunkSize(c.ChunkSize); err != nil {
		return fmt.Errorf("coordinator: --chunk-size: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--suspect-after", c.SuspectAfter}, {"--dead-after", c.DeadAfter},
		{"--session-timeout", c.SessionTimeout}, {"--rpc-timeout", c.RPCTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("coordinator: %s must be positive", d.name)
		}
	}
	if c.GCDelay < 0 {
		return fmt.Errorf("coordinator: --gc-delay must not be negative")
	}
	if c.DeadAfter < c.SuspectAfter {
		return fmt.Errorf("coordinator: --dead-after (%s) must not be shorter than --suspect-after (%s)", c.DeadAfter, c.SuspectAfter)
	}
	if _, err := placement.ByName(c.Placement); err != nil {
		return fmt.Errorf("coordinator: --placement: %w", err)
	}
	return nil
}

// Deps are a coordinator's collaborators.
type Deps struct {
	Log       zerolog.Logger
	Clock     sessions.Clock
	Namespace Namespace
	// Listener, when set, replaces listening on Config.Listen.
	Listener net.Listener
}

// Coordinator is the coordinator role.
type Coordinator struct {
	dfspb.UnimplementedCoordinatorServer

	cfg    Config
	log    zerolog.Logger
	clock  sessions.Clock
	lis    net.Listener
	ns     Namespace
	policy placement.Policy
	nodes  *registry
	locs   *locations
	pool   *rpc.Pool
	gc     *gc.Collector

	uploads *sessions.Table[rpc.SessionID, *upload]

	ready chan struct{}
	addr  string
}

// New builds a coordinator from cfg and deps without side effects.
func New(cfg Config, deps Deps) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, _ := placement.ByName(cfg.Placement)
	if deps.Clock == nil {
		deps.Clock = sessions.SystemClock{}
	}
	if deps.Namespace == nil {
		deps.Namespace = NewMemNamespace()
	}
	c := &Coordinator{
		cfg:    cfg,
		log:    deps.Log.With().Str("role", "coordinator").Logger(),
		clock:  deps.Clock,
		lis:    deps.Listener,
		ns:     deps.Namespace,
		policy: policy,
		nodes:  newRegistry(cfg.SuspectAfter, cfg.DeadAfter),
		locs:   newLocations(),
		pool:   rpc.NewPool(),
		ready:  make(chan struct{}),
	}
	gcfg := gc.DefaultConfig()
	gcfg.Delay = cfg.GCDelay
	c.gc = gc.New(gcfg, &chunkDeleter{c}, c.log)
	c.uploads = sessions.New(cfg.SessionTimeout, deps.Clock, func(id rpc.SessionID, u *upload) {
		c.log.Info().Str("session_id", string(id)).Str("path", string(u.path)).Msg("upload session expired; collecting its chunks")
		c.collectUpload(u, nil)
	})
	return c, nil
}

// Ready is closed once the coordinator serves.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Addr returns the address the coordinator listens on; valid once Ready.
func (c *Coordinator) Addr() string { return c.addr }

// PendingDeletes returns how many chunk deletions GC still has to do.
func (c *Coordinator) PendingDeletes() int { return c.gc.Pending() }

// Run serves until ctx ends, then stops gracefully and returns nil.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := os.MkdirAll(c.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("coordinator: data dir: %w", err)
	}
	if c.lis == nil {
		lis, err := rpc.Listen(c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		c.lis = lis
	}
	c.addr = c.lis.Addr().String()
	defer c.pool.Close()

	srv := grpc.NewServer(rpc.ServerOptions(c.log)...)
	dfspb.RegisterCoordinatorServer(srv, c)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); c.uploads.Run(ctx, time.Second) }()
	go func() { defer wg.Done(); c.gc.Run(ctx) }()
	go func() { defer wg.Done(); c.watchNodes(ctx) }()
	c.log.Info().Str("addr", c.addr).Int("replication", c.cfg.Replication).
		Str("chunk_size", rpc.FormatBytes(c.cfg.ChunkSize)).Str("placement", c.cfg.Placement).Msg("coordinator serving")
	close(c.ready)
	err := rpc.Serve(ctx, srv, c.lis, c.cfg.ShutdownGrace)
	cancel()
	wg.Wait()
	c.log.Info().Msg("coordinator stopped")
	return err
}

// watchNodes ages heartbeats into suspect and dead states.
func (c *Coordinator) watchNodes(ctx context.Context) {
	interval := min(c.cfg.SuspectAfter/4, time.Second)
	t := time.NewTicker(max(interval, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, id := range c.nodes.tick(c.clock.Now()) {
				c.log.Warn().Str("node_id", string(id)).Msg("datanode dead: missed heartbeats")
			}
		}
	}
}

// chunkDeleter carries out GC deletions with BulkDeleteChunk.
type chunkDeleter struct{ c *Coordinator }

var _ gc.Deleter = (*chunkDeleter)(nil)

func (d *chunkDeleter) DeleteChunks(ctx context.Context, node rpc.NodeID, ids []rpc.ChunkID) ([]rpc.ChunkID, error) {
	addr, _, ok := d.c.nodes.lookup(node)
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "node %s unknown", node)
	}
	cc, err := d.c.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	req := &dfspb.BulkDeleteChunkRequest{ChunkIds: make([]string, len(ids))}
	for i, id := range ids {
		req.ChunkIds[i] = string(id)
	}
	resp, err := dfspb.NewDataNodeClient(cc).BulkDeleteChunk(ctx, req)
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	failed := make([]rpc.ChunkID, len(resp.Failed))
	for i, s := range resp.Failed {
		failed[i] = rpc.ChunkID(s)
	}
	return failed, nil
}
