package repair

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// fakeCluster is a cluster whose needs the test sets.
type fakeCluster struct {
	mu    sync.Mutex
	needs []Need
	nodes []placement.Node
}

func (f *fakeCluster) Needs() []Need {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Need(nil), f.needs...)
}

func (f *fakeCluster) Candidates() []placement.Node { return f.nodes }

// fakeCopier records copies and blocks them until released.
type fakeCopier struct {
	mu      sync.Mutex
	tasks   []Task
	release chan struct{}
	fail    func(Task) error
}

func (f *fakeCopier) Copy(ctx context.Context, t Task) error {
	f.mu.Lock()
	f.tasks = append(f.tasks, t)
	f.mu.Unlock()
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.fail != nil {
		return f.fail(t)
	}
	return nil
}

func (f *fakeCopier) copies() []Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Task(nil), f.tasks...)
}

func nodes(n int) []placement.Node {
	var out []placement.Node
	for i := range n {
		out = append(out, placement.Node{ID: rpc.NodeID(uuid.NewString()), Addr: "127.0.0.1:" + string(rune('1'+i)), State: placement.Healthy, Free: 1 << 40})
	}
	return out
}

// newFakeClock returns a fake clock at a fixed time.
func newFakeClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

func chunk(i int) rpc.ChunkID { return rpc.NewChunkID("/f", "s", 0, uint32(i)) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCopiesGoToNodesWithoutACopy(t *testing.T) {
	is := is.New(t)
	ns := nodes(5)
	cl := &fakeCluster{nodes: ns, needs: []Need{{Chunk: chunk(0), Size: 100, Missing: 2, Sources: ns[:1], Holders: []rpc.NodeID{ns[0].ID, ns[1].ID}}}}
	cp := &fakeCopier{}
	c := New(Config{Bandwidth: 0}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Log: zerolog.Nop()})
	c.Step(context.Background())
	waitFor(t, "two copies", func() bool { return c.Stats().Done == 2 })
	got := cp.copies()
	is.Equal(len(got), 2)                         // as many copies as are missing
	is.Equal(got[0].Source.ID, ns[0].ID)          // from the good copy
	is.True(got[0].Target.ID != got[1].Target.ID) // to two different nodes
	for _, task := range got {
		is.True(task.Target.ID != ns[0].ID && task.Target.ID != ns[1].ID) // never to a node that holds a copy
	}
	is.Equal(c.Stats().BytesCopied, int64(200))
}

func TestLimits(t *testing.T) {
	is := is.New(t)
	ns := nodes(6)
	var needs []Need
	for i := range 20 {
		needs = append(needs, Need{Chunk: chunk(i), Size: 10, Missing: 1, Sources: ns[:3], Holders: []rpc.NodeID{ns[0].ID, ns[1].ID, ns[2].ID}})
	}
	cl := &fakeCluster{nodes: ns, needs: needs}
	cp := &fakeCopier{release: make(chan struct{})}
	c := New(Config{PerNode: 1, Total: 8}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Step(ctx)
	c.Step(ctx) // a second look starts nothing more while the limits hold
	waitFor(t, "copies to start", func() bool { return len(cp.copies()) == 3 })
	is.Equal(c.Stats().InProgress, 3) // one copy per target node: 3 free targets
	busy := map[rpc.NodeID]int{}
	for _, task := range cp.copies() {
		busy[task.Source.ID]++
		busy[task.Target.ID]++
	}
	for id, n := range busy {
		is.True(n <= 1) // no node takes part in more than one copy
		_ = id
	}
	close(cp.release)
	waitFor(t, "copies to finish", func() bool { return c.Stats().InProgress == 0 })
}

func TestMostEndangeredFirst(t *testing.T) {
	is := is.New(t)
	ns := nodes(4)
	cl := &fakeCluster{nodes: ns, needs: []Need{
		{Chunk: chunk(1), Size: 10, Missing: 1, Sources: ns[:1], Holders: []rpc.NodeID{ns[0].ID}},
		{Chunk: chunk(2), Size: 10, Missing: 1, Sources: ns[1:3], Holders: []rpc.NodeID{ns[1].ID, ns[2].ID}},
	}}
	cp := &fakeCopier{release: make(chan struct{})}
	c := New(Config{Total: 1}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Log: zerolog.Nop()})
	c.Step(context.Background())
	waitFor(t, "a copy", func() bool { return len(cp.copies()) == 1 })
	is.Equal(cp.copies()[0].Chunk, chunk(1)) // the chunk listed first (one copy left) goes first
	close(cp.release)
	waitFor(t, "done", func() bool { return c.Stats().InProgress == 0 })
}

// TestBandwidthPacing: a copy spends its size from the bandwidth budget
// when it starts, and the next one starts once the clock has earned the
// debt back; a long pause earns at most one second's worth.
func TestBandwidthPacing(t *testing.T) {
	is := is.New(t)
	ns := nodes(8)
	var needs []Need
	for i := range 4 {
		needs = append(needs, Need{Chunk: chunk(i), Size: 1000, Missing: 1, Sources: ns[:1], Holders: []rpc.NodeID{ns[0].ID}})
	}
	cl := &fakeCluster{nodes: ns, needs: needs}
	clk := newFakeClock()
	c := New(Config{Bandwidth: 1000, PerNode: 10}, Deps{Cluster: cl, Copier: &fakeCopier{}, Policy: placement.Random{}, Clock: clk, Log: zerolog.Nop()})
	started := func() int64 { s := c.Stats(); return int64(s.InProgress) + s.Done + s.Failed }
	ctx := context.Background()
	c.Step(ctx)
	is.Equal(started(), int64(1)) // a copy spends the bandwidth budget: the others wait
	clk.Advance(999 * time.Millisecond)
	c.Step(ctx)
	is.Equal(started(), int64(1)) // still in debt
	clk.Advance(time.Millisecond)
	c.Step(ctx)
	is.Equal(started(), int64(2)) // the debt is paid after a second: one more
	clk.Advance(time.Minute)
	c.Step(ctx)
	is.Equal(started(), int64(4)) // a minute earns a second's worth: one copy on it, one more into debt
}

func TestBadSourceIsAvoided(t *testing.T) {
	is := is.New(t)
	ns := nodes(5)
	cl := &fakeCluster{nodes: ns, needs: []Need{{Chunk: chunk(0), Size: 10, Missing: 1, Sources: ns[:2], Holders: []rpc.NodeID{ns[0].ID, ns[1].ID}}}}
	cp := &fakeCopier{fail: func(t Task) error {
		if t.Source.ID == ns[0].ID {
			return rpc.NodeError(rpc.Invalid, []string{string(ns[0].ID)}, "bad bytes")
		}
		return nil
	}}
	c := New(Config{}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Log: zerolog.Nop()})
	c.Step(context.Background())
	waitFor(t, "a failure", func() bool { return c.Stats().Failed == 1 })
	c.Step(context.Background())
	waitFor(t, "a copy", func() bool { return c.Stats().Done == 1 })
	got := cp.copies()
	is.Equal(got[len(got)-1].Source.ID, ns[1].ID) // the next attempt reads another copy
}

// TestNextCopyStartsWhenOneEnds: with one copy at a time and an hour
// between looks, every copy still runs, each one as soon as the one
// before it ended.
func TestNextCopyStartsWhenOneEnds(t *testing.T) {
	is := is.New(t)
	ns := nodes(3)
	cl := &fakeCluster{nodes: ns}
	for i := range 10 {
		cl.needs = append(cl.needs, Need{Chunk: chunk(i), Size: 10, Missing: 1, Sources: ns[:1], Holders: []rpc.NodeID{ns[0].ID}})
	}
	cp := &fakeCopier{fail: func(task Task) error {
		// The copy counts from now on: the cluster no longer needs it.
		cl.mu.Lock()
		defer cl.mu.Unlock()
		for i, n := range cl.needs {
			if n.Chunk == task.Chunk {
				cl.needs = append(cl.needs[:i], cl.needs[i+1:]...)
				break
			}
		}
		return nil
	}}
	// The clock never moves: only the end of a copy can start the next.
	c := New(Config{Interval: time.Hour, PerNode: 1, Total: 1}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Clock: newFakeClock(), Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "ten copies, one after the other", func() bool { return c.Stats().Done == 10 })
	is.Equal(len(cp.copies()), 10) // each chunk copied once
}

// TestFailedCopyWaitsForTheNextLook: a failed copy does not wake Run, so
// it is tried again at the next Interval of the clock, not in a hot loop.
func TestFailedCopyWaitsForTheNextLook(t *testing.T) {
	is := is.New(t)
	ns := nodes(3)
	cl := &fakeCluster{nodes: ns, needs: []Need{{Chunk: chunk(0), Size: 10, Missing: 1, Sources: ns[:1], Holders: []rpc.NodeID{ns[0].ID}}}}
	clk := newFakeClock()
	t0 := clk.Now()
	calls := make(chan time.Time, 10)
	failed := false
	cp := &fakeCopier{fail: func(Task) error {
		calls <- clk.Now()
		if !failed {
			failed = true
			return rpc.Errorf(rpc.Unavailable, "target down")
		}
		cl.mu.Lock()
		defer cl.mu.Unlock()
		cl.needs = nil // the copy counts from now on
		return nil
	}}
	c := New(Config{Interval: time.Hour}, Deps{Cluster: cl, Copier: cp, Policy: placement.Random{}, Clock: clk, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	next := func() time.Time {
		select {
		case at := <-calls:
			return at
		case <-time.After(10 * time.Second):
			t.Fatal("no copy")
		}
		return time.Time{}
	}
	is.Equal(next(), t0) // Run looks at once
	waitFor(t, "the copy to fail", func() bool { return c.Stats().Failed == 1 })
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	is.NoErr(clk.BlockUntilContext(bctx, 1)) // Run waits on its ticker
	clk.Advance(time.Hour)
	is.Equal(next(), t0.Add(time.Hour)) // the retry came with the next look
	waitFor(t, "the copy", func() bool { return c.Stats().Done == 1 })
}
