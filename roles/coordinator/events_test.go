package coordinator

import (
	"fmt"
	"testing"

	"github.com/matryer/is"
)

func TestEventsRing(t *testing.T) {
	is := is.New(t)
	e := newEvents(nil)
	is.Equal(len(e.recent()), 0) // empty at first

	e.add("node", "event %d", 0)
	e.add("node", "event %d", 1)
	got := e.recent()
	is.Equal(len(got), 2)                     // two events
	is.Equal(got[0].Message, "event 1")       // newest first
	is.Equal(got[1].Message, "event 0")       // then older
	is.True(!got[0].Time.Before(got[1].Time)) // in time order

	for i := 2; i < maxEvents+50; i++ {
		e.add("repair", "event %d", i)
	}
	got = e.recent()
	is.Equal(len(got), maxEvents) // bounded
	for i, ev := range got {
		is.Equal(ev.Message, fmt.Sprintf("event %d", maxEvents+49-i)) // the newest, newest first
	}
	is.Equal(got[0].Kind, "repair") // with their kind
}
