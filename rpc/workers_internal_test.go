package rpc

import (
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
)

// idleCount returns how many kept goroutines wait for work.
func idleCount() int {
	idle.mu.Lock()
	defer idle.mu.Unlock()
	return len(idle.kept)
}

func TestGoLetsLeftoverGoroutinesEnd(t *testing.T) {
	is := is.New(t)
	defer func(d time.Duration) { keepIdle = d }(keepIdle)
	keepIdle = 200 * time.Millisecond
	waitIdle := func(want func(int) bool) int {
		deadline := time.Now().Add(5 * time.Second)
		for n := idleCount(); ; n = idleCount() {
			if want(n) || time.Now().After(deadline) {
				return n
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Goroutines other tests kept wait keepIdle as it was then: they may
	// end during this test, never start.
	base := idleCount()

	// A burst of 20 at once leaves 20 kept goroutines.
	var release, done sync.WaitGroup
	release.Add(1)
	done.Add(20)
	for range 20 {
		Go(func() { release.Wait(); done.Done() })
	}
	release.Done()
	done.Wait()
	is.True(waitIdle(func(n int) bool { return n >= 20 }) >= 20)

	// A steady trickle, one call at a time for longer than keepIdle, is
	// served by the goroutine idle the shortest: the other 19 end.
	for end := time.Now().Add(3 * keepIdle); time.Now().Before(end); {
		ran := make(chan struct{})
		Go(func() { close(ran) })
		<-ran
		time.Sleep(time.Millisecond)
	}
	is.True(idleCount() <= base+5)                                   // the trickle's few, not the burst's 20
	is.True(waitIdle(func(n int) bool { return n <= base }) <= base) // and it ends too once idle
}
