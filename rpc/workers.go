package rpc

import "time"

// Go runs f on a goroutine kept from an earlier call, or on a new one
// that is then kept for later calls. A new goroutine starts with a small
// stack and, as gRPC's deep calls deepen it, grows it by copying it whole
// several times; the goroutines each chunk stream needs for a moment (its
// frame receiver, its disk writer, its sends to and acks from replicas)
// did that for every chunk, ~5 % of a datanode's CPU during small puts
// (docs/benchmarks.md). A kept goroutine's stack has grown already. One
// that finds no work for keepIdle ends.
func Go(f func()) {
	select {
	case work <- f:
	default:
		go keep(f)
	}
}

// work hands a function to a kept goroutine waiting for one.
var work = make(chan func())

// keepIdle is how long a kept goroutine waits for work before it ends.
const keepIdle = 10 * time.Second

func keep(f func()) {
	t := time.NewTimer(keepIdle)
	defer t.Stop()
	for {
		f()
		f = nil // f's captures are not kept alive while waiting
		t.Reset(keepIdle)
		select {
		case f = <-work:
		case <-t.C:
			return
		}
	}
}
