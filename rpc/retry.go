package rpc

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jonboulle/clockwork"
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
	switch KindOf(err) {
	case Unavailable, DeadlineExceeded, ResourceExhausted, Internal, Other:
		return true
	}
	return false
}

// Retry calls fn until it succeeds, returns a non-retryable error, the
// attempts run out or ctx ends; it pauses on clk between attempts. fn gets
// the attempt number, from 0. The result is fn's last error.
func Retry(ctx context.Context, clk clockwork.Clock, b Backoff, fn func(attempt int) error) error {
	var err error
	for attempt := 0; attempt < max(b.Attempts, 1); attempt++ {
		if attempt > 0 && Sleep(ctx, clk, b.Delay(attempt)) != nil {
			return err
		}
		if err = fn(attempt); err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// Sleep pauses for d on clk, or until ctx ends: then it returns ctx's
// error. A nil clk is the real clock.
func Sleep(ctx context.Context, clk clockwork.Clock, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// Every calls fn once per interval on clk until ctx ends, and returns
// then. The first call comes one interval after Every starts; a call that
// overruns the interval delays the next rather than stacking them.
func Every(ctx context.Context, clk clockwork.Clock, interval time.Duration, fn func(ctx context.Context)) {
	EveryOr(ctx, clk, interval, nil, fn)
}

// EveryOr is Every that also calls fn, at once, whenever wake receives
// (a loop that has work to do sooner); a nil wake never does.
func EveryOr(ctx context.Context, clk clockwork.Clock, interval time.Duration, wake <-chan struct{}, fn func(ctx context.Context)) {
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	t := clk.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-wake:
		}
		fn(ctx)
	}
}
