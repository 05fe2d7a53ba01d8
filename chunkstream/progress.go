package chunkstream

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/rpc"
)

// DefaultProgressTimeout is how long a stream may wait for its peer's next
// sign of life (an ack, a frame, a keepalive) before it is failed. It is
// shorter than the RPC timeouts (10-15 s) and the transport's keepalive
// (10 s ping + 5 s), which used to be what ended a stream to a paused
// peer, and far longer than a healthy peer ever pauses: receivers repeat
// their last ack while they wait on their own replicas or disk commit.
const DefaultProgressTimeout = 5 * time.Second

// Watchdog fails a stream that stops making progress. While armed, it
// cancels the stream's context, with a DeadlineExceeded cause, unless Kick
// is called within the timeout; a paused or cut-off peer then costs one
// timeout, not the whole pause. It is safe for concurrent use.
type Watchdog struct {
	clock   clockwork.Clock
	timeout time.Duration
	what    string
	cancel  context.CancelCauseFunc
	heard   func() time.Time // see HeardFrom; nil: not used

	mu    sync.Mutex
	timer clockwork.Timer
	gen   uint64 // bumped by every Kick, Pause and Stop: a stale timer does nothing
	armed bool
	err   error
}

type watchdogKey struct{}

// NewWatchdog returns a context for one stream, derived from ctx, and the
// watchdog that cancels it; what names the peer in the error. Its
// deadlines run on clk (nil: the real clock). The watchdog starts armed,
// covering the stream's opening. A timeout of 0 or less never fires. Stop
// must be called once the stream is done.
//
// An Upload whose context comes from NewWatchdog arms it while it waits
// for acks, and disarms it while it has nothing outstanding.
func NewWatchdog(ctx context.Context, clk clockwork.Clock, timeout time.Duration, what string) (context.Context, *Watchdog) {
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &Watchdog{clock: clk, timeout: timeout, what: what, cancel: cancel}
	w.Kick()
	return context.WithValue(ctx, watchdogKey{}, w), w
}

// watchdogOf returns the watchdog ctx was made by, or nil.
func watchdogOf(ctx context.Context) *Watchdog {
	w, _ := ctx.Value(watchdogKey{}).(*Watchdog)
	return w
}

// Kick records progress: the deadline starts again from now (and the
// watchdog is armed if it was not).
func (w *Watchdog) Kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armLocked(true)
}

// Arm arms the watchdog if it is not armed; an armed one keeps its
// deadline (sending is not progress, an answer is).
func (w *Watchdog) Arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armLocked(false)
}

func (w *Watchdog) armLocked(restart bool) {
	if w.err != nil || w.timeout <= 0 || w.gen == ^uint64(0) {
		return
	}
	if w.armed && !restart {
		return
	}
	w.gen++
	w.armed = true
	gen := w.gen
	if w.timer != nil {
		w.timer.Stop()
	}
	w.timer = w.clock.AfterFunc(w.timeout, func() { w.fire(gen) })
}

// HeardFrom makes the watchdog ask heard, when its deadline comes, when
// the connection the stream shares with other calls last moved
// (rpc.Pool.Heard: a message in from the peer, or out to it): if that was
// within the timeout, the peer is alive and the stream only slow (its
// frames wait behind others on a busy connection), and the deadline is
// pushed back instead of firing. A paused or cut-off peer stops the whole
// connection, and the deadline fires. heard's times are compared with the
// watchdog's clock. Call it before the stream starts.
func (w *Watchdog) HeardFrom(heard func() time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.heard = heard
}

// Pause disarms the watchdog: nothing is awaited from the peer.
func (w *Watchdog) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != ^uint64(0) {
		w.gen++
	}
	w.armed = false
	if w.timer != nil {
		w.timer.Stop()
	}
}

// Stop disarms the watchdog for good and cancels its context.
func (w *Watchdog) Stop() {
	w.mu.Lock()
	w.gen = ^uint64(0)
	w.armed = false
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	w.cancel(context.Canceled)
}

func (w *Watchdog) fire(gen uint64) {
	w.mu.Lock()
	if gen != w.gen || !w.armed || w.err != nil {
		w.mu.Unlock()
		return
	}
	if w.heard != nil {
		if quiet := w.clock.Since(w.heard()); quiet < w.timeout {
			w.timer = w.clock.AfterFunc(w.timeout-quiet, func() { w.fire(gen) })
			w.mu.Unlock()
			return
		}
	}
	w.err = rpc.Errorf(rpc.DeadlineExceeded, "%s: no progress for %s (stalled)", w.what, w.timeout)
	err := w.err
	w.mu.Unlock()
	w.cancel(err)
}

// Err returns the DeadlineExceeded error once the watchdog has fired, and
// nil before.
func (w *Watchdog) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// watch wraps the source of a download: every frame kicks the watchdog,
// and a receive ended by the watchdog returns its error.
func (w *Watchdog) watch(next source) source {
	return func() (*rpc.PiecedFrame, error) {
		f, err := next()
		if werr := w.Err(); werr != nil {
			if err == nil {
				f.Pieces.Free()
			}
			return nil, werr
		}
		if err == nil {
			w.Kick()
		}
		return f, err
	}
}
