package client

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// TestOrderForReadSpreadsReads: chunks read at once go to different
// replicas, the least busy first, while a suspect replica still comes
// after every healthy one and a replica that failed lately after all the
// others, however idle.
func TestOrderForReadSpreadsReads(t *testing.T) {
	is := is.New(t)
	c := &Client{clock: clockwork.NewFakeClock()}
	replicas := []placement.Replica{
		{ID: "a", State: placement.Healthy}, {ID: "b", State: placement.Healthy},
		{ID: "c", State: placement.Healthy}, {ID: "s", State: placement.Suspect},
	}
	firsts := map[rpc.NodeID]bool{}
	for range 3 {
		order := c.orderForRead(replicas) // each read stays in flight
		firsts[order[0].ID] = true
		is.Equal(order[3].ID, rpc.NodeID("s")) // the suspect replica last
	}
	is.Equal(len(firsts), 3) // three reads in flight, three different replicas

	// With one read on each healthy replica, the next still prefers them
	// to the suspect one; one read ended makes its replica first.
	is.True(c.orderForRead(replicas)[0].ID != "s") // healthy before suspect, busy or not
	c.reading("b", -1)
	c.reading("b", -1)                                        // b's reads end
	is.Equal(c.orderForRead(replicas)[0].ID, rpc.NodeID("b")) // the idle replica first

	// A replica that failed lately comes last however idle it is.
	c.failing = map[rpc.NodeID]time.Time{"b": c.clock.Now().Add(time.Minute)}
	for range 5 {
		order := c.orderForRead(replicas)
		is.Equal(order[3].ID, rpc.NodeID("b")) // the failing replica last
		c.reading(order[0].ID, -1)
	}
}
