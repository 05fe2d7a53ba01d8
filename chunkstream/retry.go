package chunkstream

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// Backoff describes retries with exponential backoff and jitter.
type Backoff struct {
	Attempts int
	Initial  time.Duration
	Max      time.Duration
}

// DefaultBackoff retries a few times within a few seconds.
var DefaultBackoff = Backoff{Attempts: 4, Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// Delay returns the pause before retry number attempt (1-based).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial << (attempt - 1)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	return d/2 + rand.N(d/2+1)
}

// Retryable reports whether an error is worth another attempt: transient
// kinds only, never bad input or a missing object.
func Retryable(err error) bool {
	switch rpc.KindOf(err) {
	case rpc.Unavailable, rpc.DeadlineExceeded, rpc.ResourceExhausted, rpc.Internal, rpc.Other:
		return true
	}
	return false
}

// Retry calls fn until it succeeds, returns a non-retryable error, the
// attempts run out or ctx ends. fn gets the attempt number, from 0.
func Retry(ctx context.Context, b Backoff, fn func(attempt int) error) error {
	var err error
	for attempt := 0; attempt < max(b.Attempts, 1); attempt++ {
		if attempt > 0 {
			t := time.NewTimer(b.Delay(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		if err = fn(attempt); err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}
