package coordinator

import (
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// maxEvents is how many events the coordinator remembers for its status
// page.
const maxEvents = 100

// Event is something that happened to the cluster, as the status page
// lists it: a node joined or died, a repair finished, safe mode ended, a
// leader was elected.
type Event struct {
	Time time.Time
	// Kind is a short lower-case tag: "node", "repair", "decommission",
	// "safe-mode", "leader", "corrupt".
	Kind    string
	Message string
}

// events keeps the latest maxEvents events in a ring. The coordinator
// owns it, so it spans leadership terms.
type events struct {
	clock clockwork.Clock

	mu   sync.Mutex
	ring []Event
	next int // where the next event goes once the ring is full
}

// newEvents returns an empty ring whose events take their time from
// clock (nil: the real clock).
func newEvents(clock clockwork.Clock) *events {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &events{clock: clock, ring: make([]Event, 0, maxEvents)}
}

// add records an event now.
func (e *events) add(kind, format string, args ...any) {
	ev := Event{Time: e.clock.Now(), Kind: kind, Message: fmt.Sprintf(format, args...)}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.ring) < cap(e.ring) {
		e.ring = append(e.ring, ev)
		return
	}
	e.ring[e.next] = ev
	e.next = (e.next + 1) % len(e.ring)
}

// recent returns the remembered events, newest first.
func (e *events) recent() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Event, 0, len(e.ring))
	for i := range e.ring {
		// Walk back from the newest: the one before next.
		j := (e.next - 1 - i + 2*len(e.ring)) % len(e.ring)
		out = append(out, e.ring[j])
	}
	return out
}

// Events returns the coordinator's recent events, newest first.
func (c *Coordinator) Events() []Event { return c.events.recent() }
