package coordinator

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// TestPenalties: a report penalizes a registered node for the window,
// restarted by each report; the registry marks it Failing for placement
// and shows when the penalty ends, and both stop once it is over.
func TestPenalties(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRegistry(time.Minute, 2*time.Minute, time.Hour, newEvents(nil), zerolog.New(zerolog.NewTestWriter(t)))
	r.penalties = newPenalties(time.Minute, clk)
	a, b := rpc.NodeID("aaaaaaaa-0000-0000-0000-000000000000"), rpc.NodeID("bbbbbbbb-0000-0000-0000-000000000000")
	_, _, err := r.register(a, "127.0.0.1:1", "", usage{free: 1 << 30}, clk.Now())
	is.NoErr(err)
	_, _, err = r.register(b, "127.0.0.1:2", "", usage{free: 1 << 30}, clk.Now())
	is.NoErr(err)
	failing := func() map[rpc.NodeID]bool {
		out := map[rpc.NodeID]bool{}
		for _, n := range r.candidates() {
			out[n.ID] = n.Failing
		}
		return out
	}

	is.True(r.penalties.report(a))                              // a new penalty
	is.Equal(failing(), map[rpc.NodeID]bool{a: true, b: false}) // placed last
	clk.Advance(40 * time.Second)
	is.True(!r.penalties.report(a)) // a repeated report renews it
	clk.Advance(40 * time.Second)
	is.True(failing()[a]) // still within the renewed window
	_, nodes := r.list()
	for _, n := range nodes {
		is.Equal(!n.failingUntil.IsZero(), n.id == a) // ListNodes shows it
	}
	clk.Advance(21 * time.Second)
	is.Equal(failing(), map[rpc.NodeID]bool{a: false, b: false}) // over after the window

	r.penalties.report(b)
	_, _, err = r.register(b, "127.0.0.1:2", "", usage{free: 1 << 30}, clk.Now())
	is.NoErr(err)
	is.True(!failing()[b]) // a node that registers again (restarted) starts afresh
}

// TestDiskErrorLeavesPlacement: a heartbeat with a disk error takes the
// node out of placement (and bumps the cluster version, so peers learn
// it); one without puts it back.
func TestDiskErrorLeavesPlacement(t *testing.T) {
	is := is.New(t)
	now := time.Now()
	r := newRegistry(time.Minute, 2*time.Minute, time.Hour, newEvents(nil), zerolog.New(zerolog.NewTestWriter(t)))
	a := rpc.NodeID("aaaaaaaa-0000-0000-0000-000000000000")
	v, inc, err := r.register(a, "127.0.0.1:1", "", usage{free: 1 << 30}, now)
	is.NoErr(err)
	_, err = r.heartbeat(a, inc, usage{free: 1 << 30, diskErr: "read-only file system"}, v, now)
	is.NoErr(err)
	is.Equal(len(r.candidates()), 0) // no placement on it
	v2, nodes := r.list()
	is.True(v2 > v)                                     // a membership change
	is.Equal(nodes[0].diskErr, "read-only file system") // shown in ListNodes
	_, err = r.heartbeat(a, inc, usage{free: 1 << 30}, v2, now)
	is.NoErr(err)
	is.Equal(len(r.candidates()), 1) // writable again: placed again
}
