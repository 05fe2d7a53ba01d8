package placement_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

const chunk = 8 << 20

func node(i int, st placement.State, free int64) placement.Node {
	return placement.Node{
		ID:    rpc.NodeID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)),
		Addr:  fmt.Sprintf("127.0.0.1:%d", 9000+i),
		State: st,
		Free:  free,
	}
}

func healthy(n int) []placement.Node {
	var out []placement.Node
	for i := range n {
		out = append(out, node(i, placement.Healthy, 1<<30))
	}
	return out
}

var policies = map[string]placement.Policy{"random": placement.Random{}, "most-free": placement.MostFree{}}

func TestPlaceInvariants(t *testing.T) {
	// A mixed cluster: only nodes 0, 3, 5, 7 and 8 are usable.
	nodes := []placement.Node{
		node(0, placement.Healthy, 1<<30),
		node(1, placement.Suspect, 1<<30),
		node(2, placement.Dead, 1<<30),
		node(3, placement.Healthy, chunk),   // exactly enough
		node(4, placement.Healthy, chunk-1), // full
		node(5, placement.Healthy, 2<<30),
		node(6, placement.Healthy, 1<<30), // excluded
		node(7, placement.Healthy, 3<<30),
		node(8, placement.Healthy, 1<<29),
	}
	exclude := map[rpc.NodeID]bool{nodes[6].ID: true, "not-a-member": true}
	usable := map[rpc.NodeID]bool{nodes[0].ID: true, nodes[3].ID: true, nodes[5].ID: true, nodes[7].ID: true, nodes[8].ID: true}
	for name, p := range policies {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			orig := slices.Clone(nodes)
			for range 200 {
				for n := 1; n <= 5; n++ {
					got, err := placement.Place(p, nodes, n, chunk, exclude)
					is.NoErr(err)         // enough usable nodes
					is.Equal(len(got), n) // exactly n
					seen := map[rpc.NodeID]bool{}
					for _, g := range got {
						is.True(!seen[g.ID])     // never two replicas on one node
						is.True(usable[g.ID])    // never dead, suspect, full or excluded
						is.True(g.Free >= chunk) // room for the chunk
						seen[g.ID] = true
					}
				}
			}
			is.Equal(nodes, orig) // the caller's slice is left alone
		})
	}
}

func TestPlaceNotEnough(t *testing.T) {
	tests := []struct {
		name    string
		nodes   []placement.Node
		n       int
		exclude map[rpc.NodeID]bool
		msg     string
	}{
		{"empty cluster", nil, 1, nil, "need 1 for replication, 0 usable (0 healthy of 0 registered"},
		{"too few", healthy(2), 3, nil, "need 3 for replication, 2 usable (2 healthy of 2 registered, 0 full"},
		{"dead and suspect", []placement.Node{node(0, placement.Dead, 1<<30), node(1, placement.Suspect, 1<<30), node(2, placement.Healthy, 1<<30)}, 2, nil, "1 usable (1 healthy of 3 registered"},
		{"full", []placement.Node{node(0, placement.Healthy, 0), node(1, placement.Healthy, chunk-1)}, 1, nil, "0 usable (2 healthy of 2 registered, 2 full"},
		{"excluded", healthy(3), 3, map[rpc.NodeID]bool{healthy(3)[1].ID: true}, "2 usable (3 healthy of 3 registered, 0 full, 1 excluded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			got, err := placement.Place(placement.Random{}, tt.nodes, tt.n, chunk, tt.exclude)
			is.Equal(got, nil)                              // no partial placement
			is.True(errors.Is(err, rpc.FailedPrecondition)) // FailedPrecondition
			is.True(strings.Contains(err.Error(), tt.msg))  // the message explains why
		})
	}
}

func TestPlaceZero(t *testing.T) {
	is := is.New(t)
	got, err := placement.Place(placement.Random{}, healthy(3), 0, chunk, nil)
	is.NoErr(err)         // asking for nothing is fine
	is.Equal(len(got), 0) // and gets nothing
}

func TestPlaceResultIsClipped(t *testing.T) {
	is := is.New(t)
	nodes := healthy(5)
	got, err := placement.Place(placement.Random{}, nodes, 2, chunk, nil)
	is.NoErr(err)
	_ = append(got, node(99, placement.Healthy, 0))
	is.Equal(cap(got), 2) // appending to the result cannot clobber anything behind it
}

func TestMostFreeOrder(t *testing.T) {
	is := is.New(t)
	nodes := []placement.Node{
		node(0, placement.Healthy, 5<<30),
		node(1, placement.Healthy, 9<<30),
		node(2, placement.Healthy, 1<<30),
		node(3, placement.Healthy, 7<<30),
	}
	got, err := placement.Place(placement.MostFree{}, nodes, 3, chunk, nil)
	is.NoErr(err)
	is.Equal([]rpc.NodeID{got[0].ID, got[1].ID, got[2].ID}, []rpc.NodeID{nodes[1].ID, nodes[3].ID, nodes[0].ID}) // most free first, primary is the emptiest

	c := slices.Clone(nodes)
	placement.MostFree{}.Order(c)
	is.True(slices.IsSortedFunc(c, func(a, b placement.Node) int { return int((b.Free - a.Free) >> 20) })) // Order sorts by free space, descending
}

func TestMostFreeBreaksTiesAtRandom(t *testing.T) {
	is := is.New(t)
	nodes := healthy(4) // all equally free
	nodes = append(nodes, node(4, placement.Healthy, 1<<20*chunk))
	primaries := map[rpc.NodeID]int{}
	seconds := map[rpc.NodeID]int{}
	for range 400 {
		got, err := placement.Place(placement.MostFree{}, nodes, 2, chunk, nil)
		is.NoErr(err)
		primaries[got[0].ID]++
		seconds[got[1].ID]++
	}
	is.Equal(primaries, map[rpc.NodeID]int{nodes[4].ID: 400}) // the emptiest node always leads
	is.Equal(len(seconds), 4)                                 // equal nodes share the load
}

// TestMostFreeNearlyEqualShareThePrimaries: nodes whose free space
// differs by less than a band (1/64 of the most) are equal, so they take
// turns as the primary; a node a band behind never leads.
func TestMostFreeNearlyEqualShareThePrimaries(t *testing.T) {
	is := is.New(t)
	nodes := []placement.Node{
		node(0, placement.Healthy, 80<<30),
		node(1, placement.Healthy, 80<<30-300<<20), // 300 MiB less: reported a moment earlier
		node(2, placement.Healthy, 80<<30-900<<20),
		node(3, placement.Healthy, 70<<30), // 10 GiB less
	}
	primaries := map[rpc.NodeID]int{}
	for range 600 {
		got, err := placement.Place(placement.MostFree{}, nodes, 3, chunk, nil)
		is.NoErr(err)
		primaries[got[0].ID]++
		is.True(got[0].ID != nodes[3].ID && got[1].ID != nodes[3].ID && got[2].ID != nodes[3].ID) // the emptier three are chosen
	}
	is.Equal(len(primaries), 3) // each of the three leads
	for _, n := range primaries {
		is.True(n > 100) // about a third each, not all on the one with the most bytes free
	}
}

func TestRandomSpreads(t *testing.T) {
	is := is.New(t)
	nodes := healthy(10)
	primaries := map[rpc.NodeID]int{}
	all := map[rpc.NodeID]int{}
	for range 1000 {
		got, err := placement.Place(placement.Random{}, nodes, 3, chunk, nil)
		is.NoErr(err)
		primaries[got[0].ID]++
		for _, g := range got {
			all[g.ID]++
		}
	}
	is.Equal(len(primaries), 10) // every node serves as primary
	for id, n := range all {
		// 300 expected per node; the bound is many standard deviations wide.
		is.True(n > 150 && n < 450) // replicas spread roughly evenly
		_ = id
	}
}

func TestOrderForRead(t *testing.T) {
	is := is.New(t)
	reps := []placement.Replica{
		{ID: "dead-1", State: placement.Dead},
		{ID: "healthy-1", State: placement.Healthy},
		{ID: "suspect-1", State: placement.Suspect},
		{ID: "healthy-2", State: placement.Healthy},
		{ID: "dead-2", State: placement.Dead},
		{ID: "healthy-3", State: placement.Healthy},
	}
	orig := slices.Clone(reps)
	first := map[rpc.NodeID]int{}
	for range 300 {
		got := placement.OrderForRead(reps)
		is.Equal(len(got), len(reps)) // every replica is kept
		states := make([]placement.State, len(got))
		for i, r := range got {
			states[i] = r.State
		}
		is.Equal(states, []placement.State{placement.Healthy, placement.Healthy, placement.Healthy, placement.Suspect, placement.Dead, placement.Dead}) // healthy first, suspect next, dead last
		ids := func(rs []placement.Replica) []rpc.NodeID {
			var out []rpc.NodeID
			for _, r := range rs {
				out = append(out, r.ID)
			}
			slices.Sort(out)
			return out
		}
		is.Equal(ids(got), ids(reps)) // same replicas
		first[got[0].ID]++
	}
	is.Equal(reps, orig)                          // input not modified
	is.Equal(len(first), 3)                       // reads spread over all healthy copies
	is.Equal(len(placement.OrderForRead(nil)), 0) // nothing to order
}

func TestByName(t *testing.T) {
	is := is.New(t)
	for name, want := range map[string]placement.Policy{
		"random":    placement.Random{},
		"most-free": placement.MostFree{},
		"mostfree":  placement.MostFree{},
	} {
		p, err := placement.ByName(name)
		is.NoErr(err)     // known policy
		is.Equal(p, want) // of the right type
	}
	for _, name := range []string{"", "Random", "round-robin", "most free"} {
		p, err := placement.ByName(name)
		is.Equal(p, nil)                                 // no policy
		is.True(errors.Is(err, rpc.Invalid))             // unknown names are Invalid
		is.True(strings.Contains(err.Error(), "random")) // and the message lists the choices
	}
}

func TestStateString(t *testing.T) {
	is := is.New(t)
	is.Equal(placement.Healthy.String(), "healthy")  // healthy
	is.Equal(placement.Suspect.String(), "suspect")  // suspect
	is.Equal(placement.Dead.String(), "dead")        // dead
	is.Equal(placement.State(9).String(), "unknown") // anything else
}

// TestPlaceNegative: a bad replication count is refused, not a panic.
func TestPlaceNegative(t *testing.T) {
	is := is.New(t)
	got, err := placement.Place(placement.Random{}, healthy(3), -1, chunk, nil)
	is.True(err != nil) // refused
	is.Equal(got, nil)  // with nothing placed
}

// TestPlaceFailingLast: nodes marked Failing are placed only when too few
// others qualify, and then still are, so placement never stops.
func TestPlaceFailingLast(t *testing.T) {
	for name, p := range policies {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			nodes := healthy(5)
			nodes[1].Failing = true
			nodes[3].Failing = true
			for range 50 {
				got, err := placement.Place(p, nodes, 3, chunk, nil)
				is.NoErr(err)
				for _, n := range got {
					is.True(!n.Failing) // three good nodes exist: no failing one is chosen
				}
			}
			got, err := placement.Place(p, nodes, 4, chunk, nil)
			is.NoErr(err)
			failing := 0
			for i, n := range got {
				if n.Failing {
					failing++
					is.Equal(i, 3) // a failing node comes after the good ones
				}
			}
			is.Equal(failing, 1) // one failing node fills the fourth place

			for i := range nodes {
				nodes[i].Failing = true
			}
			got, err = placement.Place(p, nodes, 3, chunk, nil)
			is.NoErr(err)         // every node reported failing: placement still works
			is.Equal(len(got), 3) // with three of them
		})
	}
}
