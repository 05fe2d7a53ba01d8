package coordinator

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// TestSafeModeTimeout drives safe mode with the fake clock: a term over a
// store with files waits for the datanodes' reports and refuses to place
// chunks; with a chunk no node reports, it serves anyway once
// --safe-mode-timeout has passed, not before.
func TestSafeModeTimeout(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.SafeModeTimeout = 30 * time.Second })
	f.put("/a", testChunk, 3)
	f.restart() // the datanodes registered again, but have not reported
	on, status := f.term.safe.Status()
	is.True(on)                                          // waiting for reports
	is.True(strings.Contains(status, "report 1 chunks")) // of the one chunk
	_, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/b", size: testChunk})
	_, notServing := rpc.NotServingOf(err)
	is.True(notServing) // no placements meanwhile

	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.term.safe.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	is.NoErr(f.clock.BlockUntilContext(ctx, 2)) // the safe-mode ticker and timeout timer wait
	for range 10 {                              // 20 s of ticks
		f.clock.Advance(2 * time.Second)
		is.NoErr(f.clock.BlockUntilContext(ctx, 2))
	}
	// The ticks' checks run on the loop's goroutine: wait for one.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, status = f.term.safe.Status(); strings.Contains(status, "located") {
			break
		}
	}
	on, status = f.term.safe.Status()
	is.True(on)                                                // before the timeout: still on
	is.True(strings.Contains(status, "0 of 1 chunks located")) // and says why
	f.clock.Advance(10 * time.Second)
	select {
	case <-done: // safe mode ended, and its loop with it
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode still on after its timeout")
	}
	on, _ = f.term.safe.Status()
	is.True(!on) // off after the timeout
	_, err = f.term.uploads.begin(f.ctx, uploadRequest{path: "/b", size: testChunk})
	is.NoErr(err) // and placing chunks again
}

// runSafeMode runs s's loop until the test ends; the returned channel is
// closed when the loop returns.
func runSafeMode(t *testing.T, ctx context.Context, s *safeMode) <-chan struct{} {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// TestSafeModeTimeoutWhileInventoriesArrive: counts show progress (the
// inventories arrive slowly, one chunk never located), then one count
// never returns; the timeout, counted from the last progress, ends safe
// mode at its time all the same.
func TestSafeModeTimeoutWhileInventoriesArrive(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	var calls atomic.Int64
	counts := func() (int, int, int) {
		n := int(calls.Add(1))
		if n == 5 {
			<-stuck // a count that takes forever
		}
		return 1 + max(0, 100-n*10), 100, 100 // more located each time, one never
	}
	start := clock.Now()
	s := loadedSafeMode(30*time.Second, 10*time.Second, 100, start, clock, counts, newEvents(clock), zerolog.Nop())
	done := runSafeMode(t, t.Context(), s)
	for range 4 { // four counts, one a tick
		is.NoErr(clock.BlockUntilContext(t.Context(), 2))
		before := countsTaken(s)
		clock.Advance(safeModeCheck)
		waitCounted(t, s, before)
	}
	is.NoErr(clock.BlockUntilContext(t.Context(), 2))
	clock.Advance(safeModeCheck) // the fifth count starts, and hangs
	for deadline := time.Now().Add(10 * time.Second); calls.Load() < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	lastProgress := start.Add(4 * safeModeCheck) // the fourth count located more
	for clock.Since(lastProgress) < 29*time.Second {
		is.NoErr(clock.BlockUntilContext(t.Context(), 2))
		clock.Advance(time.Second)
	}
	on, status := s.Status()
	is.True(on)                                                   // before the timeout: on
	is.True(strings.Contains(status, "39 of 100 chunks located")) // saying what the fourth count found
	is.Equal(calls.Load(), int64(5))                              // one count at a time: the stuck one holds the next back
	clock.Advance(30*time.Second - clock.Since(lastProgress))
	select {
	case <-done: // the timeout ended safe mode, the count still stuck
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode did not end at its timeout while a count was stuck")
	}
	on, _ = s.Status()
	is.True(!on) // off
}

// TestSafeModeStopsWhileCounting: ending the context returns the loop at
// once, even while a count has not returned.
func TestSafeModeStopsWhileCounting(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	stuck := make(chan struct{})
	defer close(stuck)
	counting := make(chan struct{}, 1)
	counts := func() (int, int, int) {
		counting <- struct{}{}
		<-stuck
		return 1, 1, 1
	}
	s := loadedSafeMode(time.Hour, time.Second, 1, clock.Now(), clock, counts, newEvents(clock), zerolog.Nop())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	is.NoErr(clock.BlockUntilContext(ctx, 2))
	clock.Advance(safeModeCheck)
	<-counting // a count is running and will not return
	cancel()
	select {
	case <-done: // returned
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode loop did not return on cancel while counting")
	}
}

// TestSafeModeEndsByCounts: every copy located ends safe mode at the next
// count; every chunk located but some copies missing, only after
// suspect-after.
func TestSafeModeEndsByCounts(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		missing, under, total int
		after                 time.Duration // when it ends
	}{
		{"every copy", 0, 0, 5, safeModeCheck},
		{"every chunk, some copies short", 0, 2, 5, 10 * time.Second},
		{"a chunk unlocated: the timeout after the first count's progress", 1, 2, 5, 30*time.Second + safeModeCheck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			clock := clockwork.NewFakeClock()
			counts := func() (int, int, int) { return tc.missing, tc.under, tc.total }
			s := loadedSafeMode(30*time.Second, 10*time.Second, tc.total, clock.Now(), clock, counts, newEvents(clock), zerolog.Nop())
			done := runSafeMode(t, t.Context(), s)
			for elapsed := time.Duration(0); elapsed < tc.after; elapsed += safeModeCheck {
				on, _ := s.Status()
				is.True(on) // not before its time
				is.NoErr(clock.BlockUntilContext(t.Context(), 2))
				before := countsTaken(s)
				clock.Advance(safeModeCheck)
				waitCounted(t, s, before)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("safe mode still on")
			}
		})
	}
}

// countsTaken returns how many counts s's loop has taken in.
func countsTaken(s *safeMode) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checked
}

// waitCounted waits until s's loop has taken in more than before counts,
// or safe mode ended.
func waitCounted(t *testing.T, s *safeMode, before int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if on, _ := s.Status(); countsTaken(s) > before || !on {
			return
		}
	}
	t.Fatal("no count taken in")
}

// TestSafeModePacesSlowCounts: a count that took a second (a pass over
// the chunks) is followed by the next no sooner than four seconds later.
func TestSafeModePacesSlowCounts(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	var calls atomic.Int64
	counts := func() (int, int, int) {
		calls.Add(1)
		clock.Advance(time.Second) // this count takes a second
		return 1, 1, 1
	}
	s := loadedSafeMode(time.Hour, time.Hour, 1, clock.Now(), clock, counts, newEvents(clock), zerolog.Nop())
	runSafeMode(t, t.Context(), s)
	is.NoErr(clock.BlockUntilContext(t.Context(), 2))
	before := countsTaken(s)
	clock.Advance(safeModeCheck)
	waitCounted(t, s, before)
	is.Equal(calls.Load(), int64(1)) // the first count
	// 3.9 s of ticks:
	for range 39 {
		is.NoErr(clock.BlockUntilContext(t.Context(), 2))
		clock.Advance(safeModeCheck)
	}
	is.Equal(calls.Load(), int64(1)) // none within four times its length
	is.NoErr(clock.BlockUntilContext(t.Context(), 2))
	before = countsTaken(s)
	clock.Advance(safeModeCheck)
	waitCounted(t, s, before)
	is.Equal(calls.Load(), int64(2)) // then the next
}

// TestSafeModeWaitsWhileReportsProgress: counts that keep finding more
// chunks located keep safe mode on past the timeout (a large cluster's
// inventories take longer than it); once they stop, it ends one timeout
// after the last progress.
func TestSafeModeWaitsWhileReportsProgress(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	const total = 1000
	var located atomic.Int64
	counts := func() (int, int, int) {
		n := int(located.Load())
		return total - n, total, total // one chunk is never located
	}
	s := loadedSafeMode(30*time.Second, 10*time.Second, total, clock.Now(), clock, counts, newEvents(clock), zerolog.Nop())
	done := runSafeMode(t, t.Context(), s)
	step := func() {
		is.NoErr(clock.BlockUntilContext(t.Context(), 2))
		before := countsTaken(s)
		clock.Advance(safeModeCheck)
		waitCounted(t, s, before)
	}
	for range 600 { // 60 s of counts, each locating one more chunk
		located.Add(1)
		step()
	}
	on, _ := s.Status()
	is.True(on) // twice the timeout, still on: the reports are still coming
	lastProgress := clock.Now()
	for clock.Since(lastProgress) < 30*time.Second-safeModeCheck {
		step()
		on, _ = s.Status()
		is.True(on) // no progress, but not for the timeout yet
	}
	step()
	select {
	case <-done: // 30 s after the last progress
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode still on a timeout after the reports stopped")
	}
	on, _ = s.Status()
	is.True(!on)
}

// TestSafeModeWaitsForInventories: every chunk located but some copies
// short does not end safe mode, even after suspect-after, while a live
// datanode's full inventory is still to come (the short copies may be on
// it); it ends at the first count after the last one is in.
func TestSafeModeWaitsForInventories(t *testing.T) {
	is := is.New(t)
	clock := clockwork.NewFakeClock()
	var awaiting atomic.Int64
	awaiting.Store(1)
	counts := func() (int, int, int) { return 0, 2, 5 }
	s := loadedSafeMode(time.Hour, 10*time.Second, 5, clock.Now(), clock, counts, newEvents(clock), zerolog.Nop())
	s.awaiting = func() int { return int(awaiting.Load()) }
	done := runSafeMode(t, t.Context(), s)
	step := func() {
		is.NoErr(clock.BlockUntilContext(t.Context(), 2))
		before := countsTaken(s)
		clock.Advance(safeModeCheck)
		waitCounted(t, s, before)
	}
	for range 200 { // 20 s: twice suspect-after
		step()
	}
	on, status := s.Status()
	is.True(on) // an inventory is still to come
	is.True(strings.Contains(status, "1 datanodes' inventories to come"))
	awaiting.Store(0)
	step()
	select {
	case <-done: // ended once it came
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode still on with every inventory in")
	}
}
