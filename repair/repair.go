// Package repair restores replication: given the chunks that have fewer
// good copies than they should, most endangered first, it chooses a source
// and a target for each copy and runs the copies through a Copier, within
// per-node and cluster-wide concurrency limits and a bandwidth cap. It
// decides and paces; the copying itself is the Copier's. Assess decides
// where one chunk's copies stand: short, surplus, bad.
package repair

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// Need is a chunk short of copies.
type Need struct {
	Chunk     rpc.ChunkID
	Size      int64
	FrameSize int64
	// Digest is the committed chunk digest, or its first
	// rpc.DigestPrefixSize bytes or more (the coordinator's index keeps no
	// more): the target checks the copy against it.
	Digest []byte
	// Missing is how many more good copies the chunk wants.
	Missing int
	// Sources hold a good copy on a live node; the first is preferred.
	Sources []placement.Node
	// Holders are every node with any copy (good, corrupt, dead or
	// draining): a new copy never goes there.
	Holders []rpc.NodeID
}

// Task is one copy: Target pulls Chunk from Source.
type Task struct {
	Need
	Source placement.Node
	Target placement.Node
}

// Copier makes one copy and returns once the target holds it durably. An
// error attributed (rpc.FailedNodesOf) to the source makes the next
// attempt prefer another source.
type Copier interface {
	Copy(ctx context.Context, t Task) error
}

// Cluster tells the controller what needs repair and where copies can go.
// The controller calls it with its own lock held: it must not call back.
type Cluster interface {
	// Needs returns the chunks short of copies, most endangered (fewest
	// good copies) first. A copy whose Copy returned nil must count
	// from then on (so Missing no longer includes it).
	Needs() []Need
	// Candidates returns the nodes new copies may go to.
	Candidates() []placement.Node
}

// Config tunes a Controller.
type Config struct {
	// Interval between looks at what needs repair.
	Interval time.Duration
	// PerNode bounds the copies a node takes part in (as source or target).
	PerNode int
	// Total bounds the copies running in the whole cluster.
	Total int
	// Bandwidth caps the bytes copied per second cluster-wide; 0 is no cap.
	Bandwidth int64
	// Timeout bounds one copy.
	Timeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Interval: time.Second, PerNode: 2, Total: 8, Bandwidth: 100 << 20, Timeout: 5 * time.Minute}
}

// Stats is what the controller did.
type Stats struct {
	InProgress  int
	Done        int64
	Failed      int64
	BytesCopied int64
}

// Deps are what a Controller works with.
type Deps struct {
	// Cluster tells what needs repair and where copies can go.
	Cluster Cluster
	// Copier makes the copies.
	Copier Copier
	// Policy orders the targets for a copy.
	Policy placement.Policy
	// Clock paces the looks at what needs repair and the bandwidth cap;
	// nil: the real clock.
	Clock clockwork.Clock
	Log   zerolog.Logger
}

// Controller runs repairs.
type Controller struct {
	cfg     Config
	cluster Cluster
	copier  Copier
	policy  placement.Policy
	clock   clockwork.Clock
	log     zerolog.Logger

	mu       sync.Mutex
	running  map[rpc.ChunkID][]rpc.NodeID // chunk -> targets being copied to
	busy     map[rpc.NodeID]int           // node -> copies it takes part in
	badSrc   map[rpc.ChunkID][]rpc.NodeID // sources that failed a chunk
	tokens   float64
	lastFill time.Time
	stats    Stats
	wg       sync.WaitGroup
	// kick wakes Run when a copy ends, so the next one starts at once
	// rather than at the next Interval.
	kick chan struct{}
}

// New returns a controller.
func New(cfg Config, deps Deps) *Controller {
	d := DefaultConfig()
	if cfg.Interval <= 0 {
		cfg.Interval = d.Interval
	}
	if cfg.PerNode <= 0 {
		cfg.PerNode = d.PerNode
	}
	if cfg.Total <= 0 {
		cfg.Total = d.Total
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if deps.Clock == nil {
		deps.Clock = clockwork.NewRealClock()
	}
	return &Controller{cfg: cfg, cluster: deps.Cluster, copier: deps.Copier, policy: deps.Policy, clock: deps.Clock, log: deps.Log,
		running: map[rpc.ChunkID][]rpc.NodeID{}, busy: map[rpc.NodeID]int{}, badSrc: map[rpc.ChunkID][]rpc.NodeID{},
		kick: make(chan struct{}, 1)}
}

// Stats returns what the controller did so far.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.InProgress = 0
	for _, ts := range c.running {
		s.InProgress += len(ts)
	}
	return s
}

// Repairing reports whether copies of chunk are under way.
func (c *Controller) Repairing(chunk rpc.ChunkID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.running[chunk]) > 0
}

// Run repairs until ctx ends, then waits for running copies to stop. It
// looks at what needs repair every Interval of its clock and whenever a
// copy ends.
func (c *Controller) Run(ctx context.Context) {
	defer c.wg.Wait()
	c.Step(ctx)
	rpc.EveryOr(ctx, c.clock, c.cfg.Interval, c.kick, c.Step)
}

// Step starts the copies that the limits allow now. Exported so tests can
// drive the controller.
func (c *Controller) Step(ctx context.Context) {
	// Needs is read under the lock: a copy the Copier finished is in the
	// needs it returns, or still in c.running, never in neither, so it is
	// never planned twice.
	c.mu.Lock()
	defer c.mu.Unlock()
	needs := c.cluster.Needs()
	if len(needs) == 0 {
		return
	}
	candidates := c.cluster.Candidates()
	c.refill()
	total := 0
	for _, ts := range c.running {
		total += len(ts)
	}
	for _, n := range needs {
		for started := len(c.running[n.Chunk]); started < n.Missing; started++ {
			if total >= c.cfg.Total || (c.cfg.Bandwidth > 0 && c.tokens < 0) {
				return
			}
			task, ok := c.plan(n, candidates)
			if !ok {
				break
			}
			total++
			c.start(ctx, task)
		}
	}
}

// refill adds the bandwidth tokens earned since the last refill; a copy
// spends its size when it starts, so the debt paces the next ones.
func (c *Controller) refill() {
	now := c.clock.Now()
	if c.lastFill.IsZero() {
		c.lastFill = now
		return
	}
	c.tokens = min(c.tokens+now.Sub(c.lastFill).Seconds()*float64(c.cfg.Bandwidth), float64(c.cfg.Bandwidth))
	c.lastFill = now
}

// plan chooses a source and a target for one more copy of n, within the
// per-node limit.
func (c *Controller) plan(n Need, candidates []placement.Node) (Task, bool) {
	var src placement.Node
	found := false
	for _, s := range n.Sources {
		if c.busy[s.ID] < c.cfg.PerNode && !slices.Contains(c.badSrc[n.Chunk], s.ID) {
			src, found = s, true
			break
		}
	}
	if !found {
		// Every source failed before: try them again rather than never.
		for _, s := range n.Sources {
			if c.busy[s.ID] < c.cfg.PerNode {
				src, found = s, true
				delete(c.badSrc, n.Chunk)
				break
			}
		}
	}
	if !found {
		return Task{}, false
	}
	exclude := map[rpc.NodeID]bool{}
	for _, h := range n.Holders {
		exclude[h] = true
	}
	for _, t := range c.running[n.Chunk] {
		exclude[t] = true
	}
	var free []placement.Node
	for _, cand := range candidates {
		if !exclude[cand.ID] && c.busy[cand.ID] < c.cfg.PerNode {
			free = append(free, cand)
		}
	}
	targets, err := placement.Place(c.policy, free, 1, n.Size, nil)
	if err != nil {
		return Task{}, false
	}
	return Task{Need: n, Source: src, Target: targets[0]}, true
}

func (c *Controller) start(ctx context.Context, t Task) {
	c.running[t.Chunk] = append(c.running[t.Chunk], t.Target.ID)
	c.busy[t.Source.ID]++
	c.busy[t.Target.ID]++
	c.tokens -= float64(t.Size)
	c.wg.Go(func() {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := c.copier.Copy(cctx, t)
		cancel()
		c.finish(t, err)
	})
}

func (c *Controller) finish(t Task, err error) {
	if err == nil {
		// A failed copy waits for the next Interval: no hot retry loop.
		defer func() {
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running[t.Chunk] = slices.DeleteFunc(c.running[t.Chunk], func(n rpc.NodeID) bool { return n == t.Target.ID })
	if len(c.running[t.Chunk]) == 0 {
		delete(c.running, t.Chunk)
	}
	c.busy[t.Source.ID]--
	c.busy[t.Target.ID]--
	if err != nil {
		c.stats.Failed++
		if slices.Contains(rpc.FailedNodesOf(err), string(t.Source.ID)) {
			c.badSrc[t.Chunk] = append(c.badSrc[t.Chunk], t.Source.ID)
		}
		c.log.Warn().Err(err).Str("chunk_id", string(t.Chunk)).Str("source", t.Source.ID.Short()).Str("target", t.Target.ID.Short()).Msg("repair copy failed")
		return
	}
	delete(c.badSrc, t.Chunk)
	c.stats.Done++
	c.stats.BytesCopied += t.Size
	c.log.Debug().Str("chunk_id", string(t.Chunk)).Str("source", t.Source.ID.Short()).Str("target", t.Target.ID.Short()).Msg("chunk copied")
}
