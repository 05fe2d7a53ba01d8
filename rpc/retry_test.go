package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{rpc.Errorf(rpc.Unavailable, "x"), true},
		{rpc.Errorf(rpc.DeadlineExceeded, "x"), true},
		{rpc.Errorf(rpc.ResourceExhausted, "x"), true},
		{rpc.Errorf(rpc.Internal, "x"), true},
		{errors.New("unclassified"), true},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), true},
		{rpc.Errorf(rpc.Invalid, "x"), false},
		{rpc.Errorf(rpc.NotFound, "x"), false},
		{rpc.Errorf(rpc.Exists, "x"), false},
		{rpc.Errorf(rpc.Permission, "x"), false},
		{rpc.Errorf(rpc.FailedPrecondition, "x"), false},
		{context.Canceled, false},
		{fmt.Errorf("put: %w", rpc.Errorf(rpc.Invalid, "bad")), false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			is := is.New(t)
			is.Equal(rpc.Retryable(tt.err), tt.want) // transient kinds only
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	is := is.New(t)
	b := rpc.Backoff{Attempts: 5, Initial: 100 * time.Millisecond, Max: time.Second}
	nominal := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for attempt := 1; attempt <= 200; attempt++ {
		base := b.Max // from attempt 5 on, and whenever the shift overflows
		if attempt <= len(nominal) {
			base = nominal[attempt-1]
		}
		for range 10 {
			d := b.Delay(attempt)
			is.True(d >= base/2) // at least half the nominal delay (no collapse after overflow)
			is.True(d <= base)   // never above it, so never above Max
		}
	}
	zero := rpc.Backoff{Attempts: 3, Max: 10 * time.Millisecond}
	is.True(zero.Delay(1) <= 10*time.Millisecond) // no Initial: Max bounds it
	is.True(zero.Delay(1) >= 5*time.Millisecond)  // jitter stays in the upper half
	none := rpc.Backoff{Attempts: 3}
	is.Equal(none.Delay(3), time.Duration(0)) // no delays configured: none
}

func TestBackoffJitters(t *testing.T) {
	is := is.New(t)
	b := rpc.Backoff{Attempts: 3, Initial: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Delay(1)] = true
	}
	is.True(len(seen) > 1) // delays are jittered so clients do not retry in lockstep
}

var fast = rpc.Backoff{Attempts: 4, Initial: time.Microsecond, Max: time.Microsecond}

func TestRetry(t *testing.T) {
	transient := rpc.Errorf(rpc.Unavailable, "node down")
	bad := rpc.Errorf(rpc.Invalid, "bad input")
	tests := []struct {
		name    string
		b       rpc.Backoff
		results []error // what fn returns on each attempt; nil after the end
		want    error
		calls   int
	}{
		{"first try", fast, []error{nil}, nil, 1},
		{"after transient errors", fast, []error{transient, transient, nil}, nil, 3},
		{"gives up after attempts", fast, []error{transient, transient, transient, io.ErrUnexpectedEOF, nil}, io.ErrUnexpectedEOF, 4},
		{"not retryable", fast, []error{bad, nil}, bad, 1},
		{"transient then bad", fast, []error{transient, bad, nil}, bad, 2},
		{"zero attempts means one", rpc.Backoff{}, []error{transient, nil}, transient, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			calls := 0
			err := rpc.Retry(context.Background(), nil, tt.b, func(attempt int) error {
				is.Equal(attempt, calls) // attempts are numbered from 0
				calls++
				if attempt < len(tt.results) {
					return tt.results[attempt]
				}
				return nil
			})
			is.Equal(err, tt.want)    // result
			is.Equal(calls, tt.calls) // number of attempts
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	t.Run("during the pause", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		slow := rpc.Backoff{Attempts: 5, Initial: time.Hour, Max: time.Hour}
		transient := rpc.Errorf(rpc.Unavailable, "down")
		called := make(chan struct{})
		done := make(chan error, 1)
		calls := 0
		go func() {
			done <- rpc.Retry(ctx, nil, slow, func(int) error {
				calls++
				close(called)
				return transient
			})
		}()
		<-called
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Retry did not return when its context ended")
		}
		is.Equal(err, transient) // the last error is returned
		is.Equal(calls, 1)       // and no further attempt is made
	})
	t.Run("during an attempt", func(t *testing.T) {
		is := is.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := rpc.Retry(ctx, nil, fast, func(int) error {
			calls++
			cancel()
			return rpc.Errorf(rpc.Unavailable, "down")
		})
		is.Equal(rpc.KindOf(err), rpc.Unavailable) // the attempt's error
		is.Equal(calls, 1)                         // no retry after the context ended
	})
}

func TestRetryPausesOnTheClock(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	b := rpc.Backoff{Attempts: 3, Initial: time.Minute, Max: time.Minute}
	attempts := make(chan int, 3)
	done := make(chan error, 1)
	go func() {
		done <- rpc.Retry(context.Background(), clk, b, func(attempt int) error {
			attempts <- attempt
			return rpc.Errorf(rpc.Unavailable, "down")
		})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := range 3 {
		select {
		case got := <-attempts:
			is.Equal(got, want) // attempts come in order, one per pause
		case <-ctx.Done():
			t.Fatalf("attempt %d never came", want)
		}
		if want < 2 {
			is.NoErr(clk.BlockUntilContext(ctx, 1)) // Retry waits on the fake clock, not in real time
			clk.Advance(time.Minute)                // a full delay lets the next attempt run
		}
	}
	select {
	case err := <-done:
		is.Equal(rpc.KindOf(err), rpc.Unavailable) // the last attempt's error
	case <-ctx.Done():
		t.Fatal("Retry did not return after its last attempt")
	}
}

func TestSleep(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rpc.Sleep(ctx, clk, time.Hour) }()
	is.NoErr(clk.BlockUntilContext(ctx, 1))
	clk.Advance(59 * time.Minute)
	select {
	case <-done:
		t.Fatal("Sleep returned before its time")
	default:
	}
	clk.Advance(time.Minute)
	is.NoErr(<-done) // slept the full hour of the fake clock

	stop, end := context.WithCancel(context.Background())
	go func() { done <- rpc.Sleep(stop, clk, time.Hour) }()
	is.NoErr(clk.BlockUntilContext(ctx, 1))
	end()
	is.Equal(<-done, context.Canceled)                           // an ended context cuts the sleep short
	is.Equal(rpc.Sleep(stop, clk, 0), context.Canceled)          // and is reported even with nothing to wait
	is.NoErr(rpc.Sleep(context.Background(), clk, -time.Second)) // no wait at all for a non-positive pause
}

func TestEvery(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	loop, stop := context.WithCancel(ctx)
	calls := make(chan struct{}, 10)
	done := make(chan struct{})
	go func() {
		rpc.Every(loop, clk, time.Second, func(context.Context) { calls <- struct{}{} })
		close(done)
	}()
	is.NoErr(clk.BlockUntilContext(ctx, 1))
	is.Equal(len(calls), 0) // nothing before the first interval
	for i := range 3 {
		clk.Advance(time.Second)
		select {
		case <-calls:
		case <-ctx.Done():
			t.Fatalf("call %d never came", i)
		}
	}
	stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Every did not return when its context ended")
	}
}

func TestEveryOr(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	loop, stop := context.WithCancel(ctx)
	wake := make(chan struct{})
	calls := make(chan struct{}, 10)
	done := make(chan struct{})
	go func() {
		rpc.EveryOr(loop, clk, time.Hour, wake, func(context.Context) { calls <- struct{}{} })
		close(done)
	}()
	is.NoErr(clk.BlockUntilContext(ctx, 1))
	for i := range 3 {
		select {
		case wake <- struct{}{}:
		case <-ctx.Done():
			t.Fatalf("wake %d not taken", i)
		}
		select {
		case <-calls:
		case <-ctx.Done():
			t.Fatalf("call %d after a wake never came", i)
		}
	}
	clk.Advance(time.Hour)
	select {
	case <-calls:
	case <-ctx.Done():
		t.Fatal("the call of the interval never came")
	}
	is.Equal(len(calls), 0) // one call per wake and per interval, no more
	stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("EveryOr did not return when its context ended")
	}
}
