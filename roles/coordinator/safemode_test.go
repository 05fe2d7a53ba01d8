package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

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
	is.NoErr(f.clock.BlockUntilContext(ctx, 1)) // the safe-mode ticker waits
	for range 10 {                              // 20 s of ticks
		f.clock.Advance(2 * time.Second)
		is.NoErr(f.clock.BlockUntilContext(ctx, 1))
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
