// Package testlog gives tests a log that writes into the test's output
// until the test is over, and drops what comes after: a gRPC handler or
// a goroutine that outlives its server must not log into a finished test
// (the testing package reports that as a data race, or panics).
package testlog

import (
	"io"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// Writer returns a writer into t's output that drops everything written
// once t's cleanups have begun (it is registered first, so it closes
// after every cleanup registered later, such as a server's shutdown).
func Writer(t testing.TB) io.Writer {
	t.Helper()
	g := &gated{w: zerolog.NewTestWriter(t)}
	t.Cleanup(g.close)
	return g
}

// New returns a logger into Writer(t).
func New(t testing.TB) zerolog.Logger {
	t.Helper()
	return zerolog.New(Writer(t))
}

type gated struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (g *gated) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return len(p), nil
	}
	return g.w.Write(p)
}

func (g *gated) close() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
}
