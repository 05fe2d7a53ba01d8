package sessions

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
)

func newFakeClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
}

// expired records onExpire calls.
type expired struct {
	mu   sync.Mutex
	got  map[string]int
	seen chan string
}

func newExpired() *expired { return &expired{got: map[string]int{}, seen: make(chan string, 100)} }

func (e *expired) fn(k string, v int) {
	e.mu.Lock()
	e.got[k] = v
	e.mu.Unlock()
	select {
	case e.seen <- k:
	default:
	}
}

func (e *expired) keys() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.got {
		out[k] = v
	}
	return out
}

const ttl = time.Minute

func TestPutGet(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	tb := New[string, int](ttl, clk, nil)
	is.Equal(tb.TTL(), ttl) // TTL

	exp := tb.Put("a", 1)
	is.Equal(exp, clk.Now().Add(ttl)) // Put returns the expiry
	v, ok := tb.Get("a")
	is.True(ok)    // live entry found
	is.Equal(v, 1) // with its value
	_, ok = tb.Get("missing")
	is.True(!ok) // missing key

	tb.Put("a", 2)
	v, _ = tb.Get("a")
	is.Equal(v, 2)        // Put replaces
	is.Equal(tb.Len(), 1) // one entry
}

func TestExpiry(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	tb := New[string, int](ttl, clk, nil)
	tb.Put("a", 1)

	clk.Advance(ttl - time.Nanosecond)
	_, ok := tb.Take("zzz")
	is.True(!ok) // unrelated Take
	clk.Advance(time.Nanosecond)
	_, ok = tb.Get("a")
	is.True(!ok) // an entry is dead exactly ttl after it was put
	_, ok = tb.Take("a")
	is.True(!ok)          // and cannot be taken
	is.Equal(tb.Len(), 1) // but stays until swept
}

func TestGetExtendsLife(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	tb := New[string, int](ttl, clk, nil)
	tb.Put("a", 1)
	for range 10 {
		clk.Advance(ttl - time.Second)
		_, ok := tb.Get("a")
		is.True(ok) // each Get keeps the entry alive for another ttl
	}
	clk.Advance(ttl - time.Second)
	n := 0
	tb.Range(func(string, int) { n++ })
	is.Equal(n, 1) // Range sees it but does not extend it
	clk.Advance(time.Second)
	_, ok := tb.Get("a")
	is.True(!ok) // ttl after the last Get it is gone
}

func TestTake(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	ex := newExpired()
	tb := New(ttl, clk, ex.fn)
	tb.Put("a", 1)
	v, ok := tb.Take("a")
	is.True(ok)           // taken
	is.Equal(v, 1)        // with its value
	is.Equal(tb.Len(), 0) // and removed
	_, ok = tb.Take("a")
	is.True(!ok) // only once
	clk.Advance(2 * ttl)
	is.Equal(tb.Sweep(), 0)     // nothing left to expire
	is.Equal(len(ex.keys()), 0) // onExpire is not called for taken entries
}

func TestPutLimited(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	tb := New[string, int](ttl, clk, nil)
	_, ok := tb.PutLimited("a", 1, 2)
	is.True(ok) // below the limit: stored
	exp, ok := tb.PutLimited("b", 2, 2)
	is.True(ok)                       // up to the limit
	is.Equal(exp, clk.Now().Add(ttl)) // with its expiry
	_, ok = tb.PutLimited("c", 3, 2)  //
	is.True(!ok)                      // beyond it: refused
	_, found := tb.Get("c")           //
	is.True(!found)                   // and not stored
	_, ok = tb.PutLimited("a", 10, 2) //
	is.True(ok)                       // replacing a key adds no entry
	v, _ := tb.Take("a")              //
	is.Equal(v, 10)                   //
	_, ok = tb.PutLimited("c", 3, 2)  //
	is.True(ok)                       // a taken entry makes room
	clk.Advance(2 * ttl)              //
	tb.Sweep()                        //
	_, ok = tb.PutLimited("d", 4, 2)  //
	is.True(ok)                       // and so do swept ones
	is.Equal(tb.Len(), 1)

	// Racing callers never exceed the limit.
	tb = New[string, int](ttl, clk, nil)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() { defer wg.Done(); tb.PutLimited(fmt.Sprint(i), i, 10) }()
	}
	wg.Wait()
	is.Equal(tb.Len(), 10)
}

func TestDelete(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	ex := newExpired()
	tb := New(ttl, clk, ex.fn)
	tb.Put("a", 1)
	tb.Delete("a")
	tb.Delete("never there")
	is.Equal(tb.Len(), 0) // deleted
	clk.Advance(2 * ttl)
	tb.Sweep()
	is.Equal(len(ex.keys()), 0) // onExpire is not called for deleted entries
}

func TestSweep(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	ex := newExpired()
	tb := New(ttl, clk, ex.fn)
	tb.Put("old1", 1)
	tb.Put("old2", 2)
	clk.Advance(30 * time.Second)
	tb.Put("young", 3)
	tb.Put("touched", 4)
	clk.Advance(30 * time.Second) // old* expire now; young and touched have 30s left
	_, ok := tb.Get("touched")
	is.True(ok) // touched gets a fresh ttl

	is.Equal(tb.Sweep(), 2)                                   // two expired
	is.Equal(ex.keys(), map[string]int{"old1": 1, "old2": 2}) // onExpire gets exactly the expired entries with their values
	is.Equal(tb.Len(), 2)                                     // the live ones stay
	is.Equal(tb.Sweep(), 0)                                   // sweeping again finds nothing

	clk.Advance(30 * time.Second)
	is.Equal(tb.Sweep(), 1) // young expires
	_, ok = tb.Get("touched")
	is.True(ok)                                                           // touched is still alive
	is.Equal(ex.keys(), map[string]int{"old1": 1, "old2": 2, "young": 3}) // young reported
}

func TestSweepNilCallback(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	tb := New[int, string](ttl, clk, nil)
	tb.Put(1, "x")
	clk.Advance(ttl)
	is.Equal(tb.Sweep(), 1) // expires without a callback
	is.Equal(tb.Len(), 0)   // removed
}

// TestOnExpireOutsideLock: the callback runs without the table's lock, so
// it may use the table (e.g. re-register a replacement session).
func TestOnExpireOutsideLock(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	var tb *Table[string, int]
	var calls int
	tb = New(ttl, clk, func(k string, v int) {
		calls++
		free := tb.mu.TryLock()
		if free {
			tb.mu.Unlock()
		}
		is.True(free)          // the lock is not held during onExpire
		tb.Put(k+"-next", v+1) // the table is usable from the callback
		_, ok := tb.Get(k)
		is.True(!ok) // the expired entry is already gone
	})
	tb.Put("a", 1)
	tb.Put("b", 2)
	clk.Advance(ttl)
	is.Equal(tb.Sweep(), 2) // both expired
	is.Equal(calls, 2)      // one callback each
	v, ok := tb.Get("a-next")
	is.True(ok)    // callback's Put landed
	is.Equal(v, 2) // with its value
}

func TestConcurrentUse(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	ex := newExpired()
	tb := New(ttl, clk, ex.fn)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := fmt.Sprintf("%d-%d", g, i)
				tb.Put(k, i)
				tb.Get(k)
				if i%2 == 0 {
					tb.Take(k)
				}
				if i%50 == 0 {
					clk.Advance(time.Second)
					tb.Sweep()
					tb.Range(func(string, int) {})
				}
			}
		}()
	}
	wg.Wait()
	clk.Advance(2 * ttl)
	tb.Sweep()
	is.Equal(tb.Len(), 0)           // everything expired or was taken
	is.Equal(len(ex.keys()), 8*100) // exactly the entries not taken expired
}

// TestRun: Run sweeps at each tick of the table's clock, and only then;
// after it returned nothing sweeps.
func TestRun(t *testing.T) {
	is := is.New(t)
	clk := newFakeClock()
	ex := newExpired()
	tb := New(ttl, clk, ex.fn)
	tb.Put("a", 1)
	tb.Put("b", 2)
	clk.Advance(ttl)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		tb.Run(ctx, time.Second)
		close(done)
	}()
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	is.NoErr(clk.BlockUntilContext(bctx, 1)) // Run waits on its ticker
	is.Equal(tb.Len(), 2)                    // no tick yet: nothing swept
	clk.Advance(time.Second)
	for range 2 {
		select {
		case <-ex.seen:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not sweep the expired entries")
		}
	}
	is.Equal(ex.keys(), map[string]int{"a": 1, "b": 2}) // the tick's sweep expired them
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	tb.Put("c", 3)
	clk.Advance(ttl)
	is.Equal(tb.Len(), 1) // nothing sweeps after Run returned
}

func TestRealClock(t *testing.T) {
	is := is.New(t)
	tb := New[string, int](time.Hour, nil, nil)
	tb.Put("a", 1)
	_, ok := tb.Get("a")
	is.True(ok) // a nil clock means the real clock: an hour has not passed
}
