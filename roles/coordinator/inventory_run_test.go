package coordinator

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/internal/testlog"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// running is a coordinator run over gRPC on a fixture's store and
// datanodes, restarted: it is in safe mode, waiting for inventories.
type running struct {
	c    *Coordinator
	reg  *prometheus.Registry
	cc   dfspb.CoordinatorClient
	stop context.CancelFunc
	done chan error
}

// runRestarted runs a new coordinator (real clock, gRPC on 127.0.0.1:0)
// over f's store and datanodes, with hook called before each report is
// applied.
func runRestarted(t *testing.T, f *fixture, hook func(ctx context.Context, node rpc.NodeID), opts ...func(*Config)) *running {
	t.Helper()
	is := is.New(t)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.ChunkSize = testChunk
	cfg.ShutdownGrace = 500 * time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	r := &running{reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	var err error
	r.c, err = New(cfg, Deps{Log: testlog.New(t), Store: f.store, Datanodes: f.dn, Metrics: r.reg})
	is.NoErr(err)
	r.c.beforeReport = hook
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { r.done <- r.c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	select {
	case <-r.c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
	for deadline := time.Now().Add(10 * time.Second); !r.c.Leading(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("coordinator not leading")
		}
	}
	conn, err := grpc.NewClient(r.c.Addr(), rpc.DialOptions()...)
	is.NoErr(err)
	t.Cleanup(func() { conn.Close() })
	r.cc = dfspb.NewCoordinatorClient(conn)
	for i, id := range f.ids {
		_, err := r.cc.RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{NodeId: string(id), Addr: f.addrs[i], Capacity: 1 << 40, Free: 1 << 40})
		is.NoErr(err) // the datanodes come back
	}
	return r
}

// inventory is node's full inventory of the chunks of file f, in one
// page.
func inventory(f *fixture, node rpc.NodeID, chunks []rpc.ChunkID) *dfspb.ReportChunksRequest {
	req := &dfspb.ReportChunksRequest{NodeId: string(node), Full: true, Page: 1, Last: true}
	for _, id := range chunks {
		digest, frame := chunkData(id, testChunk)
		req.Added = append(req.Added, &dfspb.ChunkStat{ChunkId: string(id), Present: true, Size: testChunk, FrameSize: frame, Digest: digest})
	}
	return req
}

// within fails the test unless fn returns within d.
func within(t *testing.T, what string, d time.Duration, fn func()) {
	t.Helper()
	start := time.Now()
	fn()
	took := time.Since(start)
	if took > d {
		t.Fatalf("%s took %s, more than %s", what, took, d)
	}
	t.Logf("%s answered in %s", what, took)
}

// TestShutdownWhileApplyingInventory: a coordinator stops within its
// shutdown grace while a datanode's inventory is being applied, even one
// that never ends (the hook ignores the context), and while another
// waits for its turn.
func TestShutdownWhileApplyingInventory(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 3))
	entered := make(chan rpc.NodeID, 3)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	r := runRestarted(t, f, func(ctx context.Context, node rpc.NodeID) {
		entered <- node
		<-stuck // a page whose application does not end
	}, func(c *Config) { c.MaxInventories = 1; c.InventoryWait = time.Minute })
	on, _ := r.c.term.Load().safe.Status()
	is.True(on) // in safe mode: waiting for the inventories

	for _, id := range f.ids[:2] {
		go r.cc.ReportChunks(context.Background(), inventory(f, id, []rpc.ChunkID{ch.ID}))
	}
	<-entered // one applies, the other waits its turn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, waiting := r.c.term.Load().membership.inventories.stats(); waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second inventory does not wait")
		}
	}
	start := time.Now()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		is.NoErr(err) // a clean stop
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	t.Logf("Run returned %s after its context ended (grace 500ms)", took)
	is.True(took < 500*time.Millisecond+300*time.Millisecond) // within the grace (and a little)
}

// TestReadersWhileApplyingInventory: while a datanode's inventory is
// being applied (the hook blocks, holding the locations' lock as a page
// being applied does), /metrics, the status page, ListNodes and
// StatFile answer, and another datanode's inventory that gets no turn
// within --inventory-wait is told over the wire when to come back.
func TestReadersWhileApplyingInventory(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 3))
	entered := make(chan struct{}, 3)
	release := make(chan struct{})
	var r *running
	r = runRestarted(t, f, func(ctx context.Context, node rpc.NodeID) {
		unlock := holdLocations(r.c.term.Load())
		defer unlock()
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}, func(c *Config) { c.MaxInventories = 1; c.InventoryWait = 200 * time.Millisecond })
	applied := make(chan error, 1)
	go func() {
		_, err := r.cc.ReportChunks(t.Context(), inventory(f, f.ids[0], []rpc.ChunkID{ch.ID}))
		applied <- err
	}()
	<-entered

	within(t, "/metrics", time.Second, func() {
		mfs, err := r.reg.Gather()
		is.NoErr(err)         // metrics gathered
		is.True(len(mfs) > 0) // some
	})
	within(t, "the status page", time.Second, func() {
		rec := httptest.NewRecorder()
		r.c.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		is.Equal(rec.Code, http.StatusOK) // the page
	})
	within(t, "ListNodes", time.Second, func() {
		resp, err := r.cc.ListNodes(t.Context(), &dfspb.ListNodesRequest{})
		is.NoErr(err)                // answered
		is.True(resp.SafeMode)       // in safe mode still
		is.Equal(len(resp.Nodes), 3) // every node
	})
	within(t, "the refused inventory", 5*time.Second, func() {
		_, err := r.cc.ReportChunks(t.Context(), inventory(f, f.ids[1], []rpc.ChunkID{ch.ID}))
		is.Equal(status.Code(err), codes.ResourceExhausted) // no turn within the wait
		ns, ok := rpc.NotServingOf(rpc.FromStatus(err))
		is.True(ok && ns.RetryAfter > 0) // and when to send it again
	})
	close(release)
	is.NoErr(<-applied) // the first inventory applied

	// StatFile reads the locations: it answers once no page holds them.
	within(t, "StatFile", time.Second, func() {
		_, err := r.cc.StatFile(t.Context(), &dfspb.StatFileRequest{Path: "/a"})
		is.NoErr(err) // its only chunk is located: served in safe mode
	})
}

// holdLocations takes the lock that applying a report page takes, as a
// page being applied holds it; the returned function lets it go.
func holdLocations(t *term) (unlock func()) {
	t.locs.mu.Lock()
	return t.locs.mu.Unlock
}

// deafElector campaigns forever, whatever its context says: a loop of
// the coordinator's that does not heed the end of Run.
type deafElector struct{ release chan struct{} }

func (e deafElector) Campaign(context.Context, string) (<-chan struct{}, error) {
	<-e.release
	return nil, context.Canceled
}

func (e deafElector) Leader(context.Context) (string, error) { return "", nil }

// TestRunStopsWithinGrace: Run returns within the shutdown grace even
// when one of its loops does not stop, and says so in the log.
func TestRunStopsWithinGrace(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 0, nil)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.ShutdownGrace = 300 * time.Millisecond
	e := deafElector{release: make(chan struct{})}
	t.Cleanup(func() { close(e.release) })
	c, err := New(cfg, Deps{Log: testlog.New(t), Store: f.store, Datanodes: f.dn, Elector: e})
	is.NoErr(err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		is.NoErr(err) // stopped
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	t.Logf("Run returned %s after its context ended (grace 300ms)", took)
	is.True(took < 300*time.Millisecond+300*time.Millisecond) // within the grace (and a little)
}
