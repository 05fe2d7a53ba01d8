// Package sessions keeps short-lived state under a time-to-live: metadata
// sessions on the coordinator, streaming sessions on the datanodes. Expired
// entries are handed to a callback so their owner can release resources.
package sessions

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/rpc"
)

type entry[V any] struct {
	v       V
	expires time.Time
}

// Table maps keys to values that expire ttl after they were last put or
// touched. It is safe for concurrent use.
type Table[K comparable, V any] struct {
	ttl      time.Duration
	clock    clockwork.Clock
	onExpire func(K, V)

	mu    sync.Mutex
	items map[K]*entry[V]
}

// New returns a table whose entries live for ttl, as clock tells the time
// (nil: the real clock). onExpire, if not nil, is called (outside the
// table's lock) for every entry that expires; it is not called for entries
// removed by Take or Delete.
func New[K comparable, V any](ttl time.Duration, clock clockwork.Clock, onExpire func(K, V)) *Table[K, V] {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Table[K, V]{ttl: ttl, clock: clock, onExpire: onExpire, items: make(map[K]*entry[V])}
}

// TTL returns the table's time-to-live.
func (t *Table[K, V]) TTL() time.Duration { return t.ttl }

// Put stores v under k and returns when it expires.
func (t *Table[K, V]) Put(k K, v V) time.Time {
	exp := t.clock.Now().Add(t.ttl)
	t.mu.Lock()
	t.items[k] = &entry[V]{v: v, expires: exp}
	t.mu.Unlock()
	return exp
}

// PutLimited stores v under k, as Put does, unless the table already
// holds limit entries (expired ones not yet swept included); it reports
// whether v was stored. The check and the store are one step, so racing
// callers never exceed limit.
func (t *Table[K, V]) PutLimited(k K, v V, limit int) (time.Time, bool) {
	exp := t.clock.Now().Add(t.ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.items[k]; !ok && len(t.items) >= limit {
		return time.Time{}, false
	}
	t.items[k] = &entry[V]{v: v, expires: exp}
	return exp, true
}

// Get returns the live value under k and extends its life by ttl.
func (t *Table[K, V]) Get(k K) (V, bool) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.items[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	e.expires = now.Add(t.ttl)
	return e.v, true
}

// Take removes and returns the live value under k; the caller now owns it.
func (t *Table[K, V]) Take(k K) (V, bool) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.items[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	delete(t.items, k)
	return e.v, true
}

// Delete removes k without calling onExpire.
func (t *Table[K, V]) Delete(k K) {
	t.mu.Lock()
	delete(t.items, k)
	t.mu.Unlock()
}

// Len returns the number of entries, expired ones not yet swept included.
func (t *Table[K, V]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.items)
}

// Range calls fn for every live entry, under the table's lock: fn must be
// quick and must not call the table.
func (t *Table[K, V]) Range(fn func(K, V)) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.items {
		if now.Before(e.expires) {
			fn(k, e.v)
		}
	}
}

// Sweep removes every expired entry and calls onExpire for each. It
// returns how many expired.
func (t *Table[K, V]) Sweep() int {
	now := t.clock.Now()
	type kv struct {
		k K
		v V
	}
	var expired []kv
	t.mu.Lock()
	for k, e := range t.items {
		if !now.Before(e.expires) {
			expired = append(expired, kv{k, e.v})
			delete(t.items, k)
		}
	}
	t.mu.Unlock()
	if t.onExpire != nil {
		for _, e := range expired {
			t.onExpire(e.k, e.v)
		}
	}
	return len(expired)
}

// Run sweeps every interval of the table's clock until ctx ends, then
// sweeps nothing more.
func (t *Table[K, V]) Run(ctx context.Context, interval time.Duration) {
	rpc.Every(ctx, t.clock, interval, func(context.Context) { t.Sweep() })
}
