// Package gc collects chunks that no committed file needs: it keeps the
// set of (node, chunk) deletions still to do and drives them as bulk deletes
// through a Deleter until each is done, retrying failures with backoff.
// Orphans decides which reported chunks nothing needs.
package gc

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// Deleter removes chunks from one datanode. A chunk the node does not have
// counts as deleted. It returns the IDs it could not delete; an error means
// the node could not be asked at all. NotFound for the node itself means it
// is gone from the cluster and its deletions are dropped.
type Deleter interface {
	DeleteChunks(ctx context.Context, node rpc.NodeID, ids []rpc.ChunkID) (failed []rpc.ChunkID, err error)
}

// Config tunes a Collector.
type Config struct {
	// Interval between sweeps over the pending deletions.
	Interval time.Duration
	// Batch is the most chunk IDs sent in one bulk delete.
	Batch int
	// MaxBackoff bounds the pause before retrying a node that failed.
	MaxBackoff time.Duration
	// Timeout bounds one bulk delete call.
	Timeout time.Duration
	// Delay holds each deletion back this long after it is queued, so a
	// reader that fetched a file's chunk map just before the file was
	// replaced or removed can still finish.
	Delay time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Interval: time.Second, Batch: 1000, MaxBackoff: time.Minute, Timeout: 30 * time.Second}
}

type nodeQueue struct {
	ids      map[rpc.ChunkID]time.Time // when each deletion is due
	sending  map[rpc.ChunkID]bool      // in a bulk delete now: past calling off
	failures int
	nextTry  time.Time
}

// Deps are what a Collector works with.
type Deps struct {
	// Deleter carries out the deletions.
	Deleter Deleter
	// Clock tells the time deletions are due and paces the sweeps; nil:
	// the real clock.
	Clock clockwork.Clock
	Log   zerolog.Logger
}

// Collector queues deletions per node and carries them out.
type Collector struct {
	cfg     Config
	deleter Deleter
	clock   clockwork.Clock
	log     zerolog.Logger

	mu      sync.Mutex
	queues  map[rpc.NodeID]*nodeQueue
	deleted int64
	kick    chan struct{}
}

// New returns a collector that deletes through deps.Deleter.
func New(cfg Config, deps Deps) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultConfig().Interval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultConfig().Batch
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultConfig().MaxBackoff
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultConfig().Timeout
	}
	if deps.Clock == nil {
		deps.Clock = clockwork.NewRealClock()
	}
	return &Collector{cfg: cfg, deleter: deps.Deleter, clock: deps.Clock, log: deps.Log,
		queues: make(map[rpc.NodeID]*nodeQueue), kick: make(chan struct{}, 1)}
}

// Enqueue schedules ids for deletion on node, Config.Delay from now.
func (c *Collector) Enqueue(node rpc.NodeID, ids ...rpc.ChunkID) {
	c.EnqueueAfter(c.cfg.Delay, node, ids...)
}

// EnqueueAfter schedules ids for deletion on node, delay from now (or
// sooner, if they were queued with an earlier time).
func (c *Collector) EnqueueAfter(delay time.Duration, node rpc.NodeID, ids ...rpc.ChunkID) {
	if len(ids) == 0 {
		return
	}
	due := c.clock.Now().Add(delay)
	c.mu.Lock()
	q := c.queues[node]
	if q == nil {
		q = &nodeQueue{ids: make(map[rpc.ChunkID]time.Time), sending: make(map[rpc.ChunkID]bool)}
		c.queues[node] = q
	}
	for _, id := range ids {
		if at, queued := q.ids[id]; !queued || due.Before(at) {
			q.ids[id] = due
		}
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Queued reports whether a deletion of id on node is still to do.
func (c *Collector) Queued(node rpc.NodeID, id rpc.ChunkID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[node]
	if q == nil {
		return false
	}
	_, ok := q.ids[id]
	return ok
}

// Cancel calls off the deletion of id on node, unless it is being sent to
// the node right now; it reports whether a queued deletion was called off.
func (c *Collector) Cancel(node rpc.NodeID, id rpc.ChunkID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[node]
	if q == nil || q.sending[id] {
		return false
	}
	if _, ok := q.ids[id]; !ok {
		return false
	}
	delete(q.ids, id)
	return true
}

// Nodes returns the nodes with deletions queued.
func (c *Collector) Nodes() []rpc.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]rpc.NodeID, 0, len(c.queues))
	for n := range c.queues {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Drop forgets every deletion queued for node, the ones being sent
// included, and returns them sorted: the node is gone for good. A bulk
// delete still running for it records nothing when it ends.
func (c *Collector) Drop(node rpc.NodeID) []rpc.ChunkID {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[node]
	if q == nil {
		return nil
	}
	delete(c.queues, node)
	out := make([]rpc.ChunkID, 0, len(q.ids))
	for id := range q.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Pending returns how many deletions are still to do.
func (c *Collector) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, q := range c.queues {
		n += len(q.ids)
	}
	return n
}

// Deleted returns how many chunk deletions completed.
func (c *Collector) Deleted() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deleted
}

// Run carries out deletions until ctx ends: it sweeps every Interval of
// its clock and whenever deletions are queued.
func (c *Collector) Run(ctx context.Context) {
	rpc.EveryOr(ctx, c.clock, c.cfg.Interval, c.kick, func(ctx context.Context) { c.Sweep(ctx, c.clock.Now()) })
}

// Sweep sends one batch to every node whose retry time has come. It is
// exported so tests can drive the collector step by step.
func (c *Collector) Sweep(ctx context.Context, now time.Time) {
	type job struct {
		node rpc.NodeID
		ids  []rpc.ChunkID
	}
	var jobs []job
	c.mu.Lock()
	for node, q := range c.queues {
		if len(q.ids) == 0 {
			delete(c.queues, node)
			continue
		}
		if now.Before(q.nextTry) {
			continue
		}
		ids := make([]rpc.ChunkID, 0, min(len(q.ids), c.cfg.Batch))
		for id, due := range q.ids {
			if len(ids) == c.cfg.Batch {
				break
			}
			if !now.Before(due) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		slices.Sort(ids)
		for _, id := range ids {
			q.sending[id] = true
		}
		jobs = append(jobs, job{node, ids})
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			failed, err := c.deleter.DeleteChunks(cctx, j.node, j.ids)
			cancel()
			if ctx.Err() != nil {
				c.unmark(j.node, j.ids) // shutting down; the deletions stay queued
				return
			}
			c.finish(j.node, j.ids, failed, err, now)
		})
	}
	wg.Wait()
}

// unmark ends the sending of ids to node.
func (c *Collector) unmark(node rpc.NodeID, ids []rpc.ChunkID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.queues[node]; q != nil {
		for _, id := range ids {
			delete(q.sending, id)
		}
	}
}

func (c *Collector) finish(node rpc.NodeID, ids, failed []rpc.ChunkID, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[node]
	if q == nil {
		return
	}
	for _, id := range ids {
		delete(q.sending, id)
	}
	if err != nil && rpc.KindOf(err) == rpc.NotFound {
		c.log.Info().Str("node_id", string(node)).Int("chunks", len(q.ids)).Msg("gc: node left the cluster, dropping its deletions")
		delete(c.queues, node)
		return
	}
	if err != nil {
		q.failures++
		backoff := min(c.cfg.Interval<<min(q.failures, 16), c.cfg.MaxBackoff)
		q.nextTry = now.Add(backoff)
		c.log.Warn().Err(err).Str("node_id", string(node)).Int("chunks", len(ids)).Dur("retry_in", backoff).Msg("gc: bulk delete failed")
		return
	}
	bad := make(map[rpc.ChunkID]bool, len(failed))
	for _, id := range failed {
		bad[id] = true
	}
	for _, id := range ids {
		if !bad[id] {
			delete(q.ids, id)
			c.deleted++
		}
	}
	if len(failed) > 0 {
		q.failures++
		q.nextTry = now.Add(min(c.cfg.Interval<<min(q.failures, 16), c.cfg.MaxBackoff))
	} else {
		q.failures = 0
		q.nextTry = time.Time{}
	}
	if len(q.ids) == 0 {
		delete(c.queues, node)
	}
	c.log.Debug().Str("node_id", string(node)).Int("deleted", len(ids)-len(failed)).Int("failed", len(failed)).Msg("gc: bulk delete")
}
