// Package coordinator is the coordinator role: it owns the namespace
// (path -> chunk list, kept in a durable meta.Store), datanode membership by
// heartbeats, chunk placement, and the metadata sessions that make an
// upload and its commit atomic. With an Elector, several coordinators share
// one store and only the elected one serves; the others stand by.
package coordinator

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Config is a coordinator's configuration.
type Config struct {
	// Listen is the gRPC address to listen on.
	Listen string
	// Advertise is the address clients and datanodes reach this
	// coordinator at; standbys name the leader by it. Defaults to the bound
	// listen address.
	Advertise string
	// Replication is the default replication factor.
	Replication int
	// ChunkSize is the default chunk size in bytes.
	ChunkSize int64
	// SuspectAfter and DeadAfter: a node silent this long is suspect
	// (no new chunks), then dead.
	SuspectAfter time.Duration
	DeadAfter    time.Duration
	// ForgetDeadAfter: a node dead this long (silent for DeadAfter plus
	// ForgetDeadAfter) is removed from the membership and its pending
	// deletions are dropped; if it comes back it joins as a new node.
	ForgetDeadAfter time.Duration
	// RegisterRate and RegisterBurst limit datanode registrations: on
	// average RegisterRate a second (0: no limit), RegisterBurst at once.
	// One beyond is refused with ResourceExhausted and retried.
	RegisterRate  float64
	RegisterBurst int
	// SessionTimeout ends an upload that makes no progress for that long;
	// its chunks are collected.
	SessionTimeout time.Duration
	// MaxUploads bounds the uploads open at once (sessions started and not
	// yet committed, aborted or expired); UploadFile beyond it is refused
	// with ResourceExhausted.
	MaxUploads int
	// MaxFileChunks bounds the chunks of one file, at most 2^20 (1 Mi
	// chunks: 8 TiB at 8 MiB chunks). A metadata store that cannot hold a
	// file of that many lowers it to what it can (see meta stores'
	// MaxFileChunks). An upload that would need more is refused before any
	// chunk is placed.
	MaxFileChunks int
	// GCDelay holds back deleting the chunks of a removed or replaced file
	// (and of an aborted upload) so running readers can finish.
	GCDelay time.Duration
	// SafeModeTimeout bounds how long a newly leading coordinator waits for
	// the datanodes to report every chunk before it serves anyway.
	SafeModeTimeout time.Duration
	// RepairInterval is the pause between health ticks: each assesses the
	// chunks events marked (a node dead, a copy lost or reported bad, a
	// commit) and a slice of the paced pass.
	RepairInterval time.Duration
	// ScanInterval is how long the paced safety-net pass takes to
	// re-assess every chunk (and to look at every reported chunk for
	// orphans): it bounds the CPU of an idle coordinator, and how late a
	// change no event announced is noticed.
	ScanInterval time.Duration
	// RepairBandwidth caps the bytes re-replicated per second cluster-wide
	// (0: no cap); RepairTotal and RepairPerNode bound the copies running
	// in the cluster and per node.
	RepairBandwidth int64
	RepairTotal     int
	RepairPerNode   int
	// OrphanGrace is how long a chunk no file or upload needs stays on a
	// datanode before it is deleted.
	OrphanGrace time.Duration
	// Placement names the placement policy: random or most-free.
	Placement string
	// RPCTimeout bounds calls to datanodes and waits for their reports.
	RPCTimeout time.Duration
	// FailurePenalty is how long a datanode reported failing a chunk
	// stream (ReportNodeFailure) is placed after
	// every other node; 0 ignores such reports.
	FailurePenalty time.Duration
	// ShutdownGrace bounds the graceful stop.
	ShutdownGrace time.Duration
	// MaxInventories is how many datanodes' full inventories are applied
	// at once; the others wait for their turn, first come, first served.
	MaxInventories int
	// InventoryWait is how long a full inventory waits for its turn before
	// its datanode is told to send it again later (after as long again).
	// Keep it well below the datanodes' --rpc-timeout.
	InventoryWait time.Duration
	// Superusers are the users who may do anything (--superusers): every
	// permission check passes for them, and only they may decommission,
	// back up, run a cluster-wide fsck or create tokens. Checked only with
	// TLS (Deps.TLS).
	Superusers []string
	// TokenMaxLifetime is the longest a bearer token this coordinator
	// signs may live (--token-max-lifetime): a token cannot be revoked
	// by itself, only by its expiry or by revoking this coordinator's
	// certificate.
	TokenMaxLifetime time.Duration
	// ChunkTokenLifetime is how long a chunk access token lives, and
	// ChunkKeyRotation how long each key signs them (with TLS only; see
	// chunkKeys). A client that holds a token longer asks again.
	ChunkTokenLifetime time.Duration
	ChunkKeyRotation   time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:7000",
		Replication:     3,
		ChunkSize:       8 << 20,
		SuspectAfter:    10 * time.Second,
		DeadAfter:       30 * time.Second,
		ForgetDeadAfter: 15 * time.Minute,
		RegisterRate:    50,
		RegisterBurst:   500,
		SessionTimeout:  5 * time.Minute,
		MaxUploads:      10000,
		MaxFileChunks:   rpc.MaxFileChunks,
		GCDelay:         time.Minute,
		SafeModeTimeout: 30 * time.Second,
		RepairInterval:  time.Second,
		ScanInterval:    20 * time.Minute,
		RepairBandwidth: 100 << 20,
		RepairTotal:     8,
		RepairPerNode:   2,
		OrphanGrace:     time.Hour,
		Placement:       "most-free",
		RPCTimeout:      10 * time.Second,
		FailurePenalty:  time.Minute,
		ShutdownGrace:   10 * time.Second,
		MaxInventories:  4,
		InventoryWait:   2 * time.Second,
		Superusers:      []string{auth.DefaultSuperuser},

		TokenMaxLifetime:   7 * 24 * time.Hour,
		ChunkTokenLifetime: 10 * time.Minute,
		ChunkKeyRotation:   time.Hour,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Listen == "" {
		return fmt.Errorf("coordinator: --listen is required")
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
		{"--session-timeout", c.SessionTimeout}, {"--rpc-timeout", c.RPCTimeout}, {"--forget-dead-after", c.ForgetDeadAfter}} {
		if d.v <= 0 {
			return fmt.Errorf("coordinator: %s must be positive", d.name)
		}
	}
	if c.GCDelay < 0 || c.SafeModeTimeout < 0 || c.OrphanGrace < 0 || c.RepairBandwidth < 0 {
		return fmt.Errorf("coordinator: --gc-delay, --safe-mode-timeout, --orphan-grace and --repair-bandwidth must not be negative")
	}
	if c.FailurePenalty < 0 {
		return fmt.Errorf("coordinator: --failure-penalty must not be negative")
	}
	if c.RepairInterval <= 0 || c.ScanInterval <= 0 || c.RepairTotal < 1 || c.RepairPerNode < 1 {
		return fmt.Errorf("coordinator: the repair interval and concurrency must be positive")
	}
	if c.RegisterRate < 0 || c.RegisterBurst < 1 {
		return fmt.Errorf("coordinator: --register-rate must not be negative and --register-burst must be positive")
	}
	if c.MaxFileChunks < 1 || c.MaxFileChunks > rpc.MaxFileChunks {
		return fmt.Errorf("coordinator: --max-file-chunks must be between 1 and %d", rpc.MaxFileChunks)
	}
	if c.MaxInventories < 1 || c.InventoryWait < 0 {
		return fmt.Errorf("coordinator: --max-inventories must be positive and --inventory-wait must not be negative")
	}
	if c.TokenMaxLifetime < time.Minute {
		return fmt.Errorf("coordinator: --token-max-lifetime must be at least a minute")
	}
	if c.MaxUploads < 1 {
		return fmt.Errorf("coordinator: --max-uploads must be positive")
	}
	if c.ChunkTokenLifetime <= 0 || c.ChunkKeyRotation <= 0 {
		return fmt.Errorf("coordinator: the chunk token lifetime and key rotation must be positive")
	}
	if c.DeadAfter < c.SuspectAfter {
		return fmt.Errorf("coordinator: --dead-after (%s) must not be shorter than --suspect-after (%s)", c.DeadAfter, c.SuspectAfter)
	}
	if _, err := placement.ByName(c.Placement); err != nil {
		return fmt.Errorf("coordinator: --placement: %w", err)
	}
	return nil
}

// fileChunkLimiter is a metadata store that cannot hold a file of any
// number of chunks.
type fileChunkLimiter interface {
	// MaxFileChunks returns the most chunks one file may have.
	MaxFileChunks() int
}

// Elector decides which of several coordinators sharing a store leads.
type Elector interface {
	// Campaign blocks until this coordinator, known to others by addr,
	// leads or ctx ends. The returned channel is closed when the
	// leadership is lost; ending ctx afterwards hands it over at once.
	Campaign(ctx context.Context, addr string) (lost <-chan struct{}, err error)
	// Leader returns the leading coordinator's address, or "" if none.
	Leader(ctx context.Context) (string, error)
}

// Deps are a coordinator's collaborators.
type Deps struct {
	Log zerolog.Logger
	// Clock tells the time and runs the coordinator's timers and tickers;
	// nil is the real clock.
	Clock clockwork.Clock
	// Store holds the metadata; the coordinator initializes an empty one
	// and does not close it.
	Store meta.Store
	// StoreName names the backend in logs and backups ("bolt", "etcd").
	StoreName string
	// Elector, when set, makes this coordinator one of several: it serves
	// only while elected. Without it the coordinator always leads.
	Elector Elector
	// Listener, when set, replaces listening on Config.Listen.
	Listener net.Listener
	// Metrics is where New registers the coordinator's metrics (names
	// start with dfs_coordinator_); nil keeps them unregistered.
	Metrics prometheus.Registerer
	// Datanodes, when set, replaces calling the datanodes over gRPC.
	Datanodes Datanodes
	// TLS, when set, secures every connection the coordinator serves and
	// dials, and turns on authentication and access checks; nil runs in
	// plain text and checks nothing (--insecure).
	TLS *pki.TLS
	// Tokens verifies the bearer tokens callers present; nil takes none.
	Tokens auth.TokenVerifier
}

// Coordinator is the coordinator role.
type Coordinator struct {
	cfg     Config
	log     zerolog.Logger
	clock   clockwork.Clock
	store   meta.Store
	name    string
	elector Elector
	policy  placement.Policy
	lis     net.Listener
	pool    *rpc.Pool
	tls     *pki.TLS
	tokens  auth.TokenVerifier
	// chunkKeys sign chunk access tokens; nil without TLS.
	chunkKeys *chunkKeys
	// datanodes is how the coordinator calls datanodes (through pool
	// unless Deps set it).
	datanodes Datanodes
	metrics   *metrics
	events    *events
	// registrations limits RegisterDataNode calls (--register-rate).
	registrations *rate.Limiter

	// maxChunks is the most chunks a file may have: MaxFileChunks, or
	// less when the store cannot hold that many.
	maxChunks int

	addr  string
	ready chan struct{}
	term  atomic.Pointer[term] // set while leading

	// beforeReport, when set (by tests) before Run, is called before a
	// datanode's report is applied, with the report's context.
	beforeReport func(ctx context.Context, node rpc.NodeID)
}

// New builds a coordinator from cfg and deps without side effects.
func New(cfg Config, deps Deps) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, fmt.Errorf("coordinator: no metadata store")
	}
	policy, _ := placement.ByName(cfg.Placement)
	if deps.Clock == nil {
		deps.Clock = clockwork.NewRealClock()
	}
	c := &Coordinator{
		cfg:     cfg,
		log:     deps.Log.With().Str("role", "coordinator").Logger(),
		clock:   deps.Clock,
		store:   deps.Store,
		name:    deps.StoreName,
		elector: deps.Elector,
		policy:  policy,
		lis:     deps.Listener,
		pool:    rpc.NewBoundedPool(rpc.PoolConfig{Options: deps.TLS.DialOptions(deps.TLS.ClientCredentials(pki.Datanode))}),
		tls:     deps.TLS,
		tokens:  deps.Tokens,
		events:  newEvents(deps.Clock),
		ready:   make(chan struct{}),
	}
	if deps.TLS != nil {
		// A new key is handed to the datanodes for a while before it
		// signs: they heartbeat more often than --suspect-after.
		handover := min(cfg.SuspectAfter, cfg.ChunkKeyRotation/4)
		var err error
		if c.chunkKeys, err = newChunkKeys(deps.Clock, cfg.ChunkKeyRotation, handover, cfg.ChunkTokenLifetime); err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
	}
	c.datanodes = deps.Datanodes
	if c.datanodes == nil {
		c.datanodes = grpcDatanodes{pool: c.pool, keys: c.chunkKeys}
	}
	limit := rate.Limit(cfg.RegisterRate)
	if cfg.RegisterRate == 0 {
		limit = rate.Inf
	}
	c.registrations = rate.NewLimiter(limit, cfg.RegisterBurst)
	c.maxChunks = cfg.MaxFileChunks
	if l, ok := deps.Store.(fileChunkLimiter); ok && l.MaxFileChunks() < c.maxChunks {
		c.maxChunks = max(l.MaxFileChunks(), 1)
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	var err error
	if c.metrics, err = newMetrics(deps.Metrics, c); err != nil {
		return nil, fmt.Errorf("coordinator: register metrics: %w", err)
	}
	return c, nil
}

// Ready is closed once the coordinator serves gRPC (as leader or standby).
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Addr returns the address the coordinator advertises; valid once Ready.
func (c *Coordinator) Addr() string { return c.addr }

// Leading reports whether this coordinator currently leads.
func (c *Coordinator) Leading() bool { return c.term.Load() != nil }

// PendingDeletes returns how many chunk deletions GC still has to do.
func (c *Coordinator) PendingDeletes() int {
	if t := c.term.Load(); t != nil {
		return t.gc.Pending()
	}
	return 0
}

// callWorkers is how many goroutines serve calls without starting one per
// call: about the calls that run at once under a busy load of small puts
// (clients' calls and the datanodes' reports).
const callWorkers = 64

// Run initializes the store if it is new, serves gRPC, and leads (at once,
// or whenever elected) until ctx ends; then it stops gracefully and
// returns nil.
func (c *Coordinator) Run(ctx context.Context) error {
	if c.store.ClusterID() == "" {
		switch err := c.store.Init(ctx, uuid.NewString(), nil); {
		case err == nil:
			c.log.Info().Str("cluster_id", c.store.ClusterID()).Msg("new cluster")
		case rpc.KindOf(err) != rpc.Exists:
			return fmt.Errorf("coordinator: initialize metadata store: %w", err)
		}
	}
	if c.lis == nil {
		lis, err := rpc.Listen(c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		c.lis = lis
	}
	c.addr = c.cfg.Advertise
	if c.addr == "" {
		c.addr = c.lis.Addr().String()
	}
	c.log = c.log.With().Str("addr", c.addr).Logger()
	defer c.pool.Close()

	opts := append(rpc.ServerOptions(c.log, c.observers()...), auth.ServerOptions(c.tls, c.tokens, c.access())...)
	// Calls run on a fixed set of goroutines whose stacks have grown
	// already (a new goroutine per call spent ~6% of a small put's
	// coordinator CPU growing its stack); a call that finds them all
	// busy gets a goroutine of its own.
	opts = append(opts, grpc.NumStreamWorkers(callWorkers))
	srv := grpc.NewServer(opts...)
	dfspb.RegisterCoordinatorServer(srv, &server{c: c})
	// The standard health service: SERVING while this coordinator leads
	// (in safe mode too), NOT_SERVING while it starts or stands by.
	health := rpc.NewHealth(srv, c.Leading, dfspb.Coordinator_ServiceDesc.ServiceName)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var fatal error // of lead, read after wg.Wait
	wg.Go(func() {
		if fatal = c.lead(ctx); fatal != nil {
			cancel()
		}
	})
	wg.Go(func() { health.Run(ctx) })
	if c.maxChunks < c.cfg.MaxFileChunks {
		c.log.Warn().Int("max_file_chunks", c.maxChunks).Int("configured", c.cfg.MaxFileChunks).Str("metadata", c.name).
			Msg("the metadata store cannot hold files of --max-file-chunks chunks: larger uploads are refused")
	}
	c.log.Info().Str("cluster_id", c.store.ClusterID()).Str("metadata", c.name).Int("replication", c.cfg.Replication).
		Str("chunk_size", rpc.FormatBytes(c.cfg.ChunkSize)).Str("placement", c.cfg.Placement).Int("max_file_chunks", c.maxChunks).Msg("coordinator serving")
	close(c.ready)
	var stopBy atomic.Int64 // when the stop must be over: the end of ctx plus the grace
	stopWatch := context.AfterFunc(ctx, func() { stopBy.Store(c.clock.Now().Add(c.cfg.ShutdownGrace).UnixNano()) })
	defer stopWatch()
	err := rpc.Serve(ctx, srv, c.lis, c.cfg.ShutdownGrace)
	cancel()
	if !c.waitStopped(&wg, &stopBy) {
		c.log.Error().Dur("grace", c.cfg.ShutdownGrace).Msg("coordinator stopped without its loops: they did not stop within the shutdown grace")
		return err
	}
	if fatal != nil {
		c.log.Error().Err(fatal).Msg("coordinator stopped: cannot lead")
		return fmt.Errorf("coordinator: %w", fatal)
	}
	c.log.Info().Msg("coordinator stopped")
	return err
}

// waitStopped waits for wg (lead and the health service, whose context
// has ended) until the time in stopBy, set when Run's context ended (or,
// when it did not, as Serve failed, the grace from now), and at least a
// little: it reports whether they stopped. A loop that does not heed its
// context is left behind rather than holding up the stop.
func (c *Coordinator) waitStopped(wg *sync.WaitGroup, stopBy *atomic.Int64) bool {
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	by := c.clock.Now().Add(c.cfg.ShutdownGrace)
	if ns := stopBy.Load(); ns != 0 {
		by = time.Unix(0, ns)
	}
	timer := c.clock.NewTimer(max(by.Sub(c.clock.Now()), 100*time.Millisecond))
	defer timer.Stop()
	select {
	case <-stopped:
		return true
	case <-timer.Chan():
		return false
	}
}

// lead runs leadership terms until ctx ends: at once without an elector,
// otherwise each time the elector makes this coordinator the leader. A
// term serves as soon as it has read the store's uploads, deletions and
// draining nodes, and loads the committed files while it serves. A term
// that cannot start or whose load fails for a passing reason (the store
// unreachable) ends and is tried again; one that fails because the
// metadata is damaged (an error of kind rpc.Internal naming the record)
// ends lead with that error, since trying again reads the same damage.
func (c *Coordinator) lead(ctx context.Context) error {
	for ctx.Err() == nil {
		lost := make(<-chan struct{})
		if c.elector != nil {
			c.log.Info().Msg("standing by: campaigning for leadership")
			c.events.add("leader", "standing by: campaigning for leadership")
			var err error
			if lost, err = c.elector.Campaign(ctx, c.addr); err != nil {
				if ctx.Err() == nil {
					c.log.Warn().Err(err).Msg("campaign failed; retrying")
					rpc.Sleep(ctx, c.clock, time.Second)
				}
				continue
			}
		}
		tctx, cancel := context.WithCancel(ctx)
		t, err := c.newTerm(tctx)
		if err == nil {
			err = c.serveTerm(ctx, tctx, t, lost)
		}
		cancel()
		if t != nil {
			t.wait()
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		if rpc.KindOf(err) == rpc.Internal {
			c.events.add("leader", "cannot lead: the metadata is damaged: %v", err)
			return fmt.Errorf("loading metadata: %w", err)
		}
		c.log.Error().Err(err).Msg("cannot lead: loading metadata failed; retrying")
		c.events.add("leader", "cannot lead: loading metadata failed; retrying: %v", err)
		rpc.Sleep(ctx, c.clock, time.Second)
	}
	return nil
}

// serveTerm makes t the current term, then starts its loops (under tctx,
// the term's context), until ctx ends, the leadership is lost, or t's
// load fails, whose error it returns; t is no longer the current term
// when it returns. The term is current before its load begins, so the
// coordinator is seen leading whenever its load is under way.
func (c *Coordinator) serveTerm(ctx, tctx context.Context, t *term, lost <-chan struct{}) error {
	c.term.Store(t)
	defer c.term.Store(nil)
	t.start(tctx)
	if c.elector != nil {
		c.events.add("leader", "elected leader: this coordinator (%s) leads", c.addr)
	} else {
		c.events.add("leader", "leading: this coordinator (%s) is the only one", c.addr)
	}
	select {
	case <-ctx.Done():
	case <-lost:
		c.log.Warn().Msg("leadership lost: standing by")
		c.events.add("leader", "leadership lost: standing by")
	case err := <-t.failed:
		return err
	}
	return nil
}

// leader returns the current term, or a not-serving error (kind
// Unavailable) naming the leader when this coordinator stands by.
func (c *Coordinator) leader(ctx context.Context) (*term, error) {
	if t := c.term.Load(); t != nil {
		return t, nil
	}
	if c.elector == nil {
		return nil, rpc.NotServingError("", 100*time.Millisecond, "coordinator %s is starting", c.addr)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if l, err := c.elector.Leader(cctx); err == nil && l != "" && l != c.addr {
		return nil, rpc.NotServingError(l, 0, "coordinator %s is a standby; the leader is %s", c.addr, l)
	}
	return nil, rpc.NotServingError("", 500*time.Millisecond, "coordinator %s is a standby; no leader elected yet", c.addr)
}
