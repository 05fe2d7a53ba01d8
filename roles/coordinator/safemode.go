package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// safeMode holds a newly leading coordinator back until the datanodes have
// reported where the committed chunks are: until then it places no chunks
// and changes no files (their old chunks' locations are unknown), and it
// answers reads only for files whose every chunk has a reported copy. It
// ends when every chunk has all its copies reported; or when every chunk
// has a copy and one suspect-after period has passed (a live datanode has
// heartbeated by then: the missing copies are on nodes that are gone); or
// after the timeout. An empty namespace has nothing to wait for.
type safeMode struct {
	refs         *refIndex
	locs         *locations
	events       *events
	log          zerolog.Logger
	clock        clockwork.Clock
	started      time.Time // when the term began
	suspectAfter time.Duration
	deadline     time.Time

	mu     sync.Mutex
	on     bool
	status string
}

// newSafeMode starts safe mode for a term that began at started with
// chunks committed chunks, if there are any.
func newSafeMode(timeout, suspectAfter time.Duration, chunks int, started time.Time, clock clockwork.Clock,
	refs *refIndex, locs *locations, ev *events, log zerolog.Logger) *safeMode {
	s := &safeMode{refs: refs, locs: locs, events: ev, log: log, clock: clock, started: started, suspectAfter: suspectAfter,
		deadline: clock.Now().Add(timeout), on: chunks > 0 && timeout > 0}
	if s.on {
		s.status = fmt.Sprintf("waiting for datanodes to report %d chunks", chunks)
		log.Warn().Int("chunks", chunks).Dur("timeout", timeout).Msg("safe mode: waiting for datanodes to report where the chunks are")
		ev.add("safe-mode", "safe mode on: waiting for datanodes to report %d chunks (at most %s)", chunks, timeout)
	}
	return s
}

// run checks every 100 ms until safe mode ends or ctx does.
func (s *safeMode) run(ctx context.Context) {
	if !s.active() {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rpc.Every(ctx, s.clock, 100*time.Millisecond, func(context.Context) {
		if s.step(); !s.active() {
			cancel()
		}
	})
}

// step ends safe mode if it can, or updates what it waits for.
func (s *safeMode) step() {
	missing, under, total := s.refs.located(s.locs)
	now := s.clock.Now()
	s.mu.Lock()
	switch {
	case under == 0:
		s.on = false
		s.log.Info().Int("chunks", total).Msg("safe mode off: every copy of every chunk located")
		s.events.add("safe-mode", "safe mode off: every copy of all %d chunks located", total)
	case missing == 0 && now.Sub(s.started) >= s.suspectAfter:
		s.on = false
		s.log.Info().Int("chunks", total).Int("under_replicated", under).Msg("safe mode off: every chunk located")
		s.events.add("safe-mode", "safe mode off: all %d chunks located, %d under-replicated", total, under)
	case !now.Before(s.deadline):
		s.on = false
		s.log.Warn().Int("unlocated", missing).Int("chunks", total).Msg("safe mode off after its timeout: some chunks have no reported copy")
		s.events.add("safe-mode", "safe mode off after its timeout: %d of %d chunks have no reported copy", missing, total)
	default:
		s.status = fmt.Sprintf("%d of %d chunks located, %d with every copy; serving at the latest in %s",
			total-missing, total, total-under, s.deadline.Sub(now).Round(time.Second))
	}
	s.mu.Unlock()
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
	return s.on, s.status
}

// check fails with Unavailable while safe mode is on.
func (s *safeMode) check(op string) error {
	if on, status := s.Status(); on {
		return rpc.NotServingError("", 500*time.Millisecond, "coordinator in safe mode (%s): cannot %s yet", status, op)
	}
	return nil
}
