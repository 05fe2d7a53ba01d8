package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

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
	t        *term
	deadline time.Time

	mu     sync.Mutex
	on     bool
	status string
}

func newSafeMode(t *term, timeout time.Duration, chunks int) *safeMode {
	s := &safeMode{t: t, deadline: time.Now().Add(timeout), on: chunks > 0 && timeout > 0}
	if s.on {
		s.status = fmt.Sprintf("waiting for datanodes to report %d chunks", chunks)
		t.log.Warn().Int("chunks", chunks).Dur("timeout", timeout).Msg("safe mode: waiting for datanodes to report where the chunks are")
		t.c.events.add("safe-mode", "safe mode on: waiting for datanodes to report %d chunks (at most %s)", chunks, timeout)
	}
	return s
}

// run checks until safe mode ends.
func (s *safeMode) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for s.active() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		missing, under, total := s.t.refs.located(s.t.locs)
		s.mu.Lock()
		switch {
		case under == 0:
			s.on = false
			s.t.log.Info().Int("chunks", total).Msg("safe mode off: every copy of every chunk located")
			s.t.c.events.add("safe-mode", "safe mode off: every copy of all %d chunks located", total)
		case missing == 0 && time.Since(s.t.started) >= s.t.c.cfg.SuspectAfter:
			s.on = false
			s.t.log.Info().Int("chunks", total).Int("under_replicated", under).Msg("safe mode off: every chunk located")
			s.t.c.events.add("safe-mode", "safe mode off: all %d chunks located, %d under-replicated", total, under)
		case !time.Now().Before(s.deadline):
			s.on = false
			s.t.log.Warn().Int("unlocated", missing).Int("chunks", total).Msg("safe mode off after its timeout: some chunks have no reported copy")
			s.t.c.events.add("safe-mode", "safe mode off after its timeout: %d of %d chunks have no reported copy", missing, total)
		default:
			s.status = fmt.Sprintf("%d of %d chunks located, %d with every copy; serving at the latest in %s",
				total-missing, total, total-under, time.Until(s.deadline).Round(time.Second))
		}
		s.mu.Unlock()
	}
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
