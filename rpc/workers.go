package rpc

import (
	"sync"
	"time"
)

// Go runs f on a goroutine kept from an earlier call, or on a new one
// that is then kept for later calls. A new goroutine starts with a small
// stack and, as gRPC's deep calls deepen it, grows it by copying it whole
// several times; the goroutines each chunk stream needs for a moment (its
// frame receiver, its disk writer, its sends to and acks from replicas)
// did that for every chunk, ~5 % of a datanode's CPU during small puts
// (docs/benchmarks.md). A kept goroutine's stack has grown already.
//
// The goroutine idle the shortest takes the next function, so after a
// burst the ones left over stay idle and end after keepIdle.
func Go(f func()) {
	idle.mu.Lock()
	if n := len(idle.kept); n > 0 {
		k := idle.kept[n-1]
		idle.kept[n-1] = nil
		idle.kept = idle.kept[:n-1]
		idle.mu.Unlock()
		k.work <- f // never blocks: k waits for it, with room for one
		return
	}
	idle.mu.Unlock()
	go keep(f)
}

// keepIdle is how long a kept goroutine waits for work before it ends (a
// variable for the tests).
var keepIdle = 10 * time.Second

// kept is a goroutine waiting for work.
type kept struct{ work chan func() }

// idle holds the goroutines waiting for work, the one idle the shortest
// last.
var idle struct {
	mu   sync.Mutex
	kept []*kept
}

func keep(f func()) {
	k := &kept{work: make(chan func(), 1)}
	wait := keepIdle
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		f()
		f = nil // f's captures are not kept alive while waiting
		idle.mu.Lock()
		idle.kept = append(idle.kept, k)
		idle.mu.Unlock()
		t.Reset(wait)
		select {
		case f = <-k.work:
		case <-t.C:
			if !leave(k) {
				f = <-k.work // taken just now: its function is on the way
				continue
			}
			return
		}
	}
}

// leave takes k out of the idle goroutines, and reports false when a
// caller of Go took it first.
func leave(k *kept) bool {
	idle.mu.Lock()
	defer idle.mu.Unlock()
	for i, o := range idle.kept {
		if o == k {
			idle.kept = append(idle.kept[:i], idle.kept[i+1:]...)
			return true
		}
	}
	return false
}
