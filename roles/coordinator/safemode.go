package coordinator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// safeMode holds a newly leading coordinator back until it has loaded
// the committed files from the store (the chunk index's references) and
// the datanodes have reported where the committed chunks are: until then
// it places no chunks and changes no files (their old chunks' locations
// are unknown), and it answers reads only for files whose every chunk has
// a reported copy. Once the files are loaded (loaded), it ends when every
// chunk has all its copies reported; or when every chunk has a copy, one
// suspect-after period has passed since the term began (a live datanode
// has heartbeated by then) and every live datanode's full inventory has
// been applied (awaiting): the missing copies are on nodes that are gone,
// not on nodes whose inventory waits its turn, which at 1,000 datanodes
// may be millions of copies that would all look short and be repaired;
// or once the timeout has passed without progress: counted
// from the end of the load (a load longer than the timeout must not end
// safe mode before any report could come in: the health scan would see
// every chunk missing), and again from every count that finds more
// chunks located or whole than the one before (the inventories of a
// large cluster may take longer than the timeout, and must not be cut
// short while they arrive: their chunks would all be repaired at once).
// So the timeout ends safe mode when the reports stop, the chunks left
// being on datanodes that are not coming back. An empty namespace has
// nothing to wait for once loaded.
//
// Its loop never waits on a pass over the cluster: the exit conditions
// are read from counts (counters the chunk index keeps as reports arrive),
// called on a goroutine of their own, and the timeout is a timer of its
// own that ends safe mode even while a counts call has not returned. The
// loop returns as soon as its context ends.
type safeMode struct {
	counts func() (missing, under, total int)
	// awaiting, when set, returns how many live datanodes have not had a
	// full inventory applied whole yet (see rule 2 in the type's doc).
	awaiting     func() int
	events       *events
	log          zerolog.Logger
	clock        clockwork.Clock
	started      time.Time // when the term began
	suspectAfter time.Duration
	timeout      time.Duration

	// ready is closed once the files are loaded; files and expected say
	// how far the load is (expected is -1 while unknown).
	ready           chan struct{}
	files, expected atomic.Int64

	mu       sync.Mutex
	on       bool
	loading  bool
	status   string
	deadline time.Time // set when the files are loaded, moved on by progress
	// last is the last count, for the message when the timeout ends
	// safe mode; counted says whether there is one.
	last    located
	counted bool
	checked int // counts taken in, for tests
}

// located is one count of the committed chunks: without any reported
// good copy, with fewer than their replication, and all of them; and of
// the live datanodes whose full inventory is still to come.
type located struct{ missing, under, total, awaiting int }

// safeModeCheck is how often safe mode counts the located chunks.
const safeModeCheck = 100 * time.Millisecond

// newSafeMode starts safe mode for a term that began at started and is
// loading the store's files (see loaded). counts returns the committed
// chunks without a reported good copy, those with fewer good copies than
// their replication, and all of them; it must be safe to call from any
// goroutine.
func newSafeMode(timeout, suspectAfter time.Duration, started time.Time, clock clockwork.Clock,
	counts func() (missing, under, total int), ev *events, log zerolog.Logger) *safeMode {
	s := &safeMode{counts: counts, events: ev, log: log, clock: clock, started: started, suspectAfter: suspectAfter,
		timeout: timeout, ready: make(chan struct{}), on: true, loading: true}
	s.expected.Store(-1)
	return s
}

// expect records how many files the load will add, when the store can
// tell (meta.FileCounter).
func (s *safeMode) expect(files int) { s.expected.Store(int64(files)) }

// progress records how many files the load has added so far.
func (s *safeMode) progress(files int) { s.files.Store(int64(files)) }

// loaded ends the load of the store's files, which reference chunks
// committed chunks: safe mode then waits for the datanodes' reports of
// them, at most the timeout from now, or ends at once when there are
// none to wait for or the timeout is 0.
func (s *safeMode) loaded(chunks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loading {
		return
	}
	s.loading = false
	s.deadline = s.clock.Now().Add(s.timeout)
	s.on = chunks > 0 && s.timeout > 0
	if s.on {
		s.status = fmt.Sprintf("waiting for datanodes to report %d chunks", chunks)
		s.last = located{missing: chunks, under: chunks, total: chunks}
		s.log.Warn().Int("chunks", chunks).Dur("timeout", s.timeout).Msg("safe mode: waiting for datanodes to report where the chunks are")
		s.events.add("safe-mode", "safe mode on: waiting for datanodes to report %d chunks (at most %s)", chunks, s.timeout)
	}
	close(s.ready)
}

// isLoading reports whether the store's files are still being loaded.
func (s *safeMode) isLoading() bool {
	select {
	case <-s.ready:
		return false
	default:
		return true
	}
}

// loadStatus says how far the load is.
func (s *safeMode) loadStatus() string {
	if n := s.expected.Load(); n >= 0 {
		return fmt.Sprintf("loading metadata: %d of %d files", s.files.Load(), n)
	}
	return fmt.Sprintf("loading metadata: %d files so far", s.files.Load())
}

// run waits for the files to be loaded, then counts every safeModeCheck
// until safe mode ends, its timeout fires or ctx ends, whichever comes
// first. One count runs at a time, on its own
// goroutine: a slow one delays the next count, never the timeout or the
// return on ctx's end (a count still running then finishes on its own and
// its result is dropped). A count that took d is followed by the next no
// sooner than 4d later, so that counts that are passes over the chunks
// (rather than counters) take at most a fifth of a core.
func (s *safeMode) run(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	if !s.active() {
		return
	}
	s.mu.Lock()
	deadline := s.deadline
	s.mu.Unlock()
	timeout := s.clock.NewTimer(deadline.Sub(s.clock.Now()))
	defer timeout.Stop()
	tick := s.clock.NewTicker(safeModeCheck)
	defer tick.Stop()
	var counting sync.WaitGroup // not waited for: see above
	results := make(chan located, 1)
	busy := false
	var began, next time.Time // of the last count; the earliest for the next
	for {
		select {
		case <-ctx.Done():
			return
		case <-timeout.Chan():
			if left := s.expire(); left > 0 {
				timeout.Reset(left) // progress moved the deadline
				continue
			}
			return
		case <-tick.Chan():
			if busy || s.clock.Now().Before(next) {
				continue
			}
			busy, began = true, s.clock.Now()
			counting.Go(func() {
				var c located
				c.missing, c.under, c.total = s.counts()
				if s.awaiting != nil {
					c.awaiting = s.awaiting()
				}
				results <- c // one count at a time: never blocks
			})
		case c := <-results:
			busy = false
			next = s.clock.Now().Add(4 * s.clock.Since(began))
			if !s.step(c) {
				return
			}
		}
	}
}

// step ends safe mode if count c allows it, or updates what it waits for;
// it reports whether safe mode is still on. The timeout is the loop's
// timer's (expire), but a count that comes after it ends safe mode too.
func (s *safeMode) step(c located) bool {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return false
	}
	if c.missing < s.last.missing || c.under < s.last.under {
		s.deadline = now.Add(s.timeout) // progress: the reports are still coming
	}
	s.last, s.counted = c, true
	s.checked++
	switch {
	case c.under == 0:
		s.on = false
		s.log.Info().Int("chunks", c.total).Msg("safe mode off: every copy of every chunk located")
		s.events.add("safe-mode", "safe mode off: every copy of all %d chunks located", c.total)
	case c.missing == 0 && c.awaiting == 0 && now.Sub(s.started) >= s.suspectAfter:
		s.on = false
		s.log.Info().Int("chunks", c.total).Int("under_replicated", c.under).Msg("safe mode off: every chunk located")
		s.events.add("safe-mode", "safe mode off: all %d chunks located, %d under-replicated", c.total, c.under)
	case !now.Before(s.deadline):
		s.expireLocked()
	default:
		s.status = fmt.Sprintf("%d of %d chunks located, %d with every copy, %d datanodes' inventories to come; serving in %s unless more are located",
			c.total-c.missing, c.total, c.total-c.under, c.awaiting, s.deadline.Sub(now).Round(time.Second))
	}
	return s.on
}

// expire ends safe mode if its deadline has passed, and otherwise
// returns the time left to it (progress moved it).
func (s *safeMode) expire() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if left := s.deadline.Sub(s.clock.Now()); s.on && left > 0 {
		return left
	}
	if s.on {
		s.expireLocked()
	}
	return 0
}

func (s *safeMode) expireLocked() {
	s.on = false
	c := s.last
	if !s.counted {
		s.log.Warn().Msg("safe mode off after its timeout: the chunks were not counted yet")
		s.events.add("safe-mode", "safe mode off after its timeout, before the located chunks were counted")
		return
	}
	s.log.Warn().Int("unlocated", c.missing).Int("chunks", c.total).Dur("timeout", s.timeout).
		Msg("safe mode off after its timeout without progress: some chunks have no reported copy")
	s.events.add("safe-mode", "safe mode off after %s without progress: %d of %d chunks had no reported copy at the last count", s.timeout, c.missing, c.total)
}

func (s *safeMode) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// Status returns whether safe mode is on and what it waits for.
func (s *safeMode) Status() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loading {
		return true, s.loadStatus()
	}
	return s.on, s.status
}

// check fails with Unavailable while safe mode is on.
func (s *safeMode) check(op string) error {
	if on, status := s.Status(); on {
		return rpc.NotServingError("", 500*time.Millisecond, "coordinator in safe mode (%s): cannot %s yet", status, op)
	}
	return nil
}
