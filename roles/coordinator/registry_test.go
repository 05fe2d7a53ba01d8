package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

const (
	nodeA = rpc.NodeID("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa")
	nodeB = rpc.NodeID("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb")
)

func statusOf(r *registry, id rpc.NodeID) nodeStatus {
	_, nodes := r.list()
	for _, n := range nodes {
		if n.id == id {
			return n
		}
	}
	return nodeStatus{}
}

// TestRegistryIdentity pins that a node ID alive at one address is not
// moved by a registration from another one, that heartbeats must present
// the latest registration's incarnation, and the moves that are allowed:
// the same address again (a restart in place), an old address found gone,
// and one silent for the suspect timeout.
func TestRegistryIdentity(t *testing.T) {
	is := is.New(t)
	r := newRegistry(10*time.Second, 30*time.Second, time.Hour, newEvents(nil), zerolog.New(zerolog.NewTestWriter(t)))
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	_, inc1, err := r.register(nodeA, "127.0.0.1:1", "", usage{}, at(0))
	is.NoErr(err)       // first registration
	is.True(inc1 != "") // with an incarnation

	_, _, err = r.register(nodeA, "127.0.0.1:2", "", usage{}, at(time.Second))
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // a live node ID from another address is refused
	for _, s := range []string{string(nodeA), "127.0.0.1:1", "127.0.0.1:2"} {
		is.True(strings.Contains(err.Error(), s)) // the refusal names the ID and both addresses
	}
	addr, _, _ := r.lookup(nodeA)
	is.Equal(addr, "127.0.0.1:1")                                    // the node stays where it is
	is.Equal(statusOf(r, nodeA).conflictAddr, "127.0.0.1:2")         // and the conflict is flagged
	_, err = r.heartbeat(nodeA, inc1, usage{}, 0, at(2*time.Second)) // the real node goes on
	is.NoErr(err)                                                    // its heartbeat is accepted

	_, err = r.heartbeat(nodeA, "", usage{}, 0, at(2*time.Second))
	is.Equal(rpc.KindOf(err), rpc.NotFound) // a heartbeat without the incarnation must register

	_, inc2, err := r.register(nodeA, "127.0.0.1:1", "", usage{}, at(3*time.Second))
	is.NoErr(err)         // the same address registers again at once (a restart in place)
	is.True(inc2 != inc1) // as a new incarnation
	_, err = r.heartbeat(nodeA, inc1, usage{}, 0, at(3*time.Second))
	is.Equal(rpc.KindOf(err), rpc.NotFound) // the earlier process's heartbeats are refused
	_, err = r.heartbeat(nodeA, inc2, usage{}, 0, at(3*time.Second))
	is.NoErr(err) // the new one's are not

	_, inc3, err := r.register(nodeA, "127.0.0.1:2", "127.0.0.1:1", usage{}, at(4*time.Second))
	is.NoErr(err) // the old address found gone: the node moves at once
	addr, _, _ = r.lookup(nodeA)
	is.Equal(addr, "127.0.0.1:2")                 // moved
	is.Equal(statusOf(r, nodeA).conflictAddr, "") // no conflict any more
	_, err = r.heartbeat(nodeA, inc2, usage{}, 0, at(4*time.Second))
	is.Equal(rpc.KindOf(err), rpc.NotFound) // the process at the old address cannot keep it alive

	_, err = r.heartbeat(nodeA, inc3, usage{}, 0, at(5*time.Second))
	is.NoErr(err) // heartbeats from the new address
	_, _, err = r.register(nodeA, "127.0.0.1:3", "", usage{}, at(14*time.Second))
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // heartbeat 9 s ago: still alive
	_, _, err = r.register(nodeA, "127.0.0.1:3", "", usage{}, at(15*time.Second))
	is.NoErr(err) // silent for the suspect timeout: it may move
	addr, _, _ = r.lookup(nodeA)
	is.Equal(addr, "127.0.0.1:3") // moved
}

// TestRegistryConflictClears: the conflict flag goes once no refused
// registration came for the dead timeout.
func TestRegistryConflictClears(t *testing.T) {
	is := is.New(t)
	r := newRegistry(10*time.Second, 30*time.Second, time.Hour, newEvents(nil), zerolog.New(zerolog.NewTestWriter(t)))
	t0 := time.Now()
	_, inc, err := r.register(nodeA, "127.0.0.1:1", "", usage{}, t0)
	is.NoErr(err)
	_, _, err = r.register(nodeA, "127.0.0.1:2", "", usage{}, t0)
	is.True(err != nil) // refused
	for d := time.Duration(0); d <= 40*time.Second; d += 5 * time.Second {
		_, err := r.heartbeat(nodeA, inc, usage{}, 0, t0.Add(d))
		is.NoErr(err) // the real node heartbeats
		r.tick(t0.Add(d))
	}
	is.Equal(statusOf(r, nodeA).conflictAddr, "") // flag cleared
}

// TestRegistryForget: a node dead for the forget time leaves the
// registry; incremental heartbeat replies carry it marked forgotten, full
// ones no longer list it; a node that heartbeats stays.
func TestRegistryForget(t *testing.T) {
	is := is.New(t)
	r := newRegistry(10*time.Second, 30*time.Second, time.Minute, newEvents(nil), zerolog.New(zerolog.NewTestWriter(t)))
	t0 := time.Now()
	_, _, err := r.register(nodeA, "127.0.0.1:1", "", usage{}, t0)
	is.NoErr(err)
	v, incB, err := r.register(nodeB, "127.0.0.1:2", "", usage{}, t0)
	is.NoErr(err)

	live := func(at time.Time) {
		_, err := r.heartbeat(nodeB, incB, usage{}, v, at)
		is.NoErr(err) // B heartbeats
	}
	live(t0.Add(80 * time.Second))
	r.tick(t0.Add(80 * time.Second))
	is.Equal(len(r.forget(t0.Add(80*time.Second))), 0) // A dead for 50 s: kept
	live(t0.Add(90 * time.Second))
	r.tick(t0.Add(90 * time.Second))
	is.Equal(r.forget(t0.Add(90*time.Second)), []rpc.NodeID{nodeA}) // dead for 60 s: forgotten
	_, _, ok := r.lookup(nodeA)
	is.True(!ok) // gone from the registry

	resp, err := r.heartbeat(nodeB, incB, usage{}, v, t0.Add(91*time.Second))
	is.NoErr(err)
	last := resp.updates[len(resp.updates)-1].node
	is.Equal(last.id, nodeA) // the latest change is A
	is.True(last.forgotten)  // forgotten
	resp, err = r.heartbeat(nodeB, incB, usage{}, 0, t0.Add(91*time.Second))
	is.NoErr(err)
	is.True(resp.full)           // the full list
	is.Equal(len(resp.nodes), 1) // has B alone
	is.Equal(resp.nodes[0].id, nodeB)

	_, _, err = r.register(nodeA, "127.0.0.1:1", "", usage{}, t0.Add(92*time.Second))
	is.NoErr(err) // it comes back as a new node
	_, _, ok = r.lookup(nodeA)
	is.True(ok) // known again
}

// TestLocationsDropNodes: the copies of forgotten nodes, counted or held
// apart, leave the locations; the others stay.
func TestLocationsDropNodes(t *testing.T) {
	is := is.New(t)
	l := newLocations()
	st := func(id rpc.ChunkID) reportedCopy {
		return reportedCopy{id: id, size: 1, frameSize: 1, digest: make([]byte, rpc.DigestSize)}
	}
	const c1, c2 = rpc.ChunkID("0123456789abcdef0123456789abcdef_0"), rpc.ChunkID("0123456789abcdef0123456789abcdef_1")
	none := func(rpc.ChunkID) bool { return false }
	l.report(nodeA, inventoryPage{first: true, last: true}, []reportedCopy{st(c1), st(c2)}, nil, nil, none)
	l.report(nodeB, inventoryPage{first: true, last: true}, []reportedCopy{st(c1)}, nil, nil, none)
	l.forget([]meta.Deletion{{Node: nodeA, Chunk: c2}}) // held apart
	l.dropNodes(map[rpc.NodeID]bool{nodeA: true})
	is.Equal(l.nodes(c1), []rpc.NodeID{nodeB}) // B's copy stays
	is.Equal(l.count(c2), 0)                   // A's are gone
	is.Equal(len(l.heldCopies(c2)), 0)         // held ones too
	is.Equal(l.perNode()[nodeA], int64(0))
}
