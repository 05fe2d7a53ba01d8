package rpc_test

import (
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

func TestGoRunsAtOnceOnKeptGoroutines(t *testing.T) {
	is := is.New(t)

	// Functions that wait for each other all run at once: none waits for
	// a kept goroutine to be free.
	const n = 20
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	done.Add(n)
	for range n {
		rpc.Go(func() { started.Done(); release.Wait(); done.Done() })
	}
	started.Wait()
	release.Done()
	done.Wait()

	// One after another, they run on the goroutines kept from before,
	// not on a new one each.
	seen := map[string]bool{}
	for range 100 {
		id := make(chan string)
		rpc.Go(func() { id <- goroutineID() })
		seen[<-id] = true
	}
	// The n kept above take turns (a new one is started only when none
	// waits), where a goroutine per call would have made 100.
	is.True(len(seen) <= n+5) // kept goroutines ran them, not one per call
}

// goroutineID returns the ID of the calling goroutine, from its trace.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}
