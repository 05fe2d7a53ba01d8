package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator/coordinatortest"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// loadedSafeMode is safe mode for a term whose files are loaded, which
// reference chunks committed chunks.
func loadedSafeMode(timeout, suspectAfter time.Duration, chunks int, started time.Time, clock clockwork.Clock,
	counts func() (missing, under, total int), ev *events, log zerolog.Logger) *safeMode {
	s := newSafeMode(timeout, suspectAfter, started, clock, counts, ev, log)
	s.loaded(chunks)
	return s
}

// gatedStore is a store whose walk of the committed files waits until the
// test opens its gate (or the walk's ctx ends), the first ones then
// failing if the test says so: a load as slow, or as broken, as a test
// needs.
type gatedStore struct {
	meta.Store
	gate    chan struct{}
	walking chan struct{} // closed when a walk reaches the gate
	once    sync.Once
	// fails is how many walks fail (the first ones), with failWith.
	fails    atomic.Int32
	failWith error
}

func newGatedStore(s meta.Store) *gatedStore {
	return &gatedStore{Store: s, gate: make(chan struct{}), walking: make(chan struct{})}
}

func (g *gatedStore) Files(ctx context.Context, fn func(*meta.File) error) error {
	g.once.Do(func() { close(g.walking) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	if g.fails.Add(-1) >= 0 {
		return g.failWith
	}
	return g.Store.Files(ctx, fn)
}

// loadingFixture is a term over a store of files committed files (one
// chunk each, on the first three of its n datanodes) whose load waits at
// the store's gate: the term is built, its datanodes registered again,
// and its loops not started.
type loadingFixture struct {
	*fixture
	store *gatedStore
	// termCtx is the term's context; end ends the term.
	termCtx context.Context
	end     context.CancelFunc
}

func newLoadingFixture(t *testing.T, n, files int, opts ...func(*Config)) *loadingFixture {
	t.Helper()
	f := newFixture(t, n, nil, opts...)
	for i := range files {
		f.put(fmt.Sprintf("/f/%d", i), testChunk, 3)
	}
	g := newGatedStore(f.store)
	var err error
	f.c.store = g
	termCtx, end := context.WithCancel(f.ctx)
	t.Cleanup(end)
	if f.term, err = f.c.newTerm(termCtx); err != nil {
		t.Fatal(err)
	}
	for i, id := range f.ids { // registered again, their chunks kept
		_, err := f.term.membership.register(f.ctx, registration{node: id, addr: f.addrs[i], usage: usage{capacity: 1 << 40, free: 1 << 40}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return &loadingFixture{fixture: f, store: g, termCtx: termCtx, end: end}
}

// loadInBackground runs the term's load on a goroutine; the channel gets
// its error.
func (f *loadingFixture) loadInBackground(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.term.load(ctx) }()
	select {
	case <-f.store.walking:
	case <-time.After(10 * time.Second):
		f.t.Fatal("the load never reached the store")
	}
	return done
}

// inventoryOf is node's full inventory as one page: the copies the
// fixture's datanodes hold.
func (f *loadingFixture) inventoryOf(node rpc.NodeID) chunkReport {
	r := chunkReport{full: true, page: 1, last: true}
	for _, id := range f.dn.Chunks(f.addrOf(node)) {
		digest, frame := chunkData(id, testChunk)
		r.added = append(r.added, reportedCopy{id: id, size: testChunk, frameSize: frame, digest: digest})
	}
	return r
}

// TestServesWhileLoading: while the files load, the term answers stat,
// list, node listings and heartbeats from what it has, says it is loading
// in its safe-mode status, and refuses placements; once loaded it counts
// every file and waits for the datanodes' reports.
func TestServesWhileLoading(t *testing.T) {
	is := is.New(t)
	f := newLoadingFixture(t, 3, 4)
	done := f.loadInBackground(f.termCtx)

	on, status := f.term.safe.Status()
	is.True(on)                                           // safe mode while loading
	is.True(strings.Contains(status, "loading metadata")) // saying so
	is.True(f.term.safe.isLoading())                      // the term is loading
	p, err := f.term.namespace.stat(f.ctx, pageRequest{path: "/f/1"})
	is.NoErr(err)                           // stat answers from the store
	is.Equal(p.file.Path, rpc.Path("/f/1")) // with the file
	is.Equal(len(p.replicas[0]), 0)         // its chunk not located yet
	entries, _, err := f.term.namespace.list(f.ctx, "/f", false, "", 10)
	is.NoErr(err)             // listing answers
	is.Equal(len(entries), 4) // every file
	_, err = f.term.namespace.download(f.ctx, pageRequest{path: "/f/1"})
	_, notServing := rpc.NotServingOf(err)
	is.True(notServing) // a read waits (NotServing: retry), it is not told the chunk is lost
	is.True(strings.Contains(err.Error(), "loading metadata"))
	f.c.term.Store(f.term)
	many, err := f.c.Server().DownloadFiles(f.ctx, &dfspb.DownloadFilesRequest{Files: []*dfspb.DownloadFileRequest{{Path: "/f/0"}, {Path: "/f/1"}}})
	is.NoErr(err)
	for _, d := range many.Files {
		is.True(d.NotServing)                                    // reads of many files say each is NotServing, to be read again with DownloadFile
		is.True(strings.Contains(d.Message, "loading metadata")) // saying why
	}
	_, err = f.term.membership.heartbeat(f.ids[0], "", usage{capacity: 1 << 40, free: 1 << 40}, 0)
	is.True(rpc.KindOf(err) != rpc.Unavailable) // heartbeats are not held back by the load
	_, all := f.term.nodes.list()
	is.Equal(len(all), 3) // nor are registrations and the node list
	_, err = f.term.uploads.begin(f.ctx, uploadRequest{path: "/new", size: testChunk})
	_, notServing = rpc.NotServingOf(err)
	is.True(notServing) // no placements while loading
	err = f.term.namespace.remove(f.ctx, "/f/0", removeOptions{})
	_, notServing = rpc.NotServingOf(err)
	is.True(notServing) // nor deletes

	close(f.store.gate)
	is.NoErr(<-done) // the load ends
	is.True(!f.term.safe.isLoading())
	files, chunks := f.term.refs.counts()
	is.Equal(files, 4)  // every file loaded
	is.Equal(chunks, 4) // with its chunk
	on, status = f.term.safe.Status()
	is.True(on)                                          // safe mode goes on
	is.True(strings.Contains(status, "report 4 chunks")) // waiting for the reports now
}

// TestInventoriesWaitForLoad: a full inventory that comes while the files
// load waits for the load, as for a turn, and is applied once it is over;
// one that waits longer than --inventory-wait is told to come back later
// (ResourceExhausted with a retry-after), and applies when it does.
// Incremental reports are not held back.
func TestInventoriesWaitForLoad(t *testing.T) {
	is := is.New(t)
	f := newLoadingFixture(t, 3, 2, func(c *Config) { c.InventoryWait = 2 * time.Second })
	done := f.loadInBackground(f.termCtx)
	node := f.ids[0]
	inv := f.inventoryOf(node)
	is.Equal(len(inv.added), 2) // the node holds both chunks

	// Told to come back: the wait is over before the load.
	refused := make(chan error, 1)
	go func() { refused <- f.term.membership.report(f.ctx, node, inv) }()
	is.NoErr(f.clock.BlockUntilContext(f.ctx, 1)) // the page waits
	f.clock.Advance(2 * time.Second)
	err := <-refused
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted) // told to wait
	ns, ok := rpc.NotServingOf(err)
	is.True(ok)                                                                             // with when to come back
	is.True(ns.RetryAfter >= 100*time.Millisecond && ns.RetryAfter <= 500*time.Millisecond) // soon: 100 ms to a quarter of --inventory-wait
	is.True(strings.Contains(err.Error(), "loading its metadata"))
	missing, _, _ := f.term.locs.counts()
	is.Equal(missing, 0)                     // nothing applied (no chunk is referenced yet either)
	is.Equal(len(f.term.locs.reported()), 0) // no copy recorded

	// Waits, then applies once the load is over.
	applied := make(chan error, 1)
	go func() { applied <- f.term.membership.report(f.ctx, node, inv) }()
	is.NoErr(f.clock.BlockUntilContext(f.ctx, 1)) // the page waits
	close(f.store.gate)
	is.NoErr(<-done)
	is.NoErr(<-applied) // applied after the load
	missing, _, total := f.term.locs.counts()
	is.Equal(total, 2)   // against the loaded index
	is.Equal(missing, 0) // both chunks located

	// An incremental report during a load is applied at once.
	g := newLoadingFixture(t, 3, 1)
	gdone := g.loadInBackground(g.termCtx)
	id := g.dn.Chunks(g.addrOf(g.ids[0]))[0]
	digest, frame := chunkData(id, testChunk)
	is.NoErr(g.term.membership.report(g.ctx, g.ids[0], chunkReport{added: []reportedCopy{{id: id, size: testChunk, frameSize: frame, digest: digest}}}))
	close(g.store.gate)
	is.NoErr(<-gdone)
	good, _ := g.term.locs.check(meta.Chunk{ID: id, Size: testChunk, FrameSize: frame, Digest: digest})
	is.Equal(good, []rpc.NodeID{g.ids[0]}) // the copy counts once its file is loaded
}

// TestSafeModeTimeoutCountsFromLoad: a load longer than
// --safe-mode-timeout does not end safe mode; the timeout runs from the
// end of the load.
func TestSafeModeTimeoutCountsFromLoad(t *testing.T) {
	is := is.New(t)
	f := newLoadingFixture(t, 3, 1, func(c *Config) { c.SafeModeTimeout = 30 * time.Second })
	done := f.loadInBackground(f.termCtx)
	stopped := runSafeMode(t, f.ctx, f.term.safe)
	f.clock.Advance(time.Minute) // twice the timeout, still loading
	on, status := f.term.safe.Status()
	is.True(on) // safe mode stays on
	is.True(strings.Contains(status, "loading metadata"))
	close(f.store.gate)
	is.NoErr(<-done)
	is.NoErr(f.clock.BlockUntilContext(f.ctx, 2)) // the safe-mode ticker and its timeout timer wait
	f.clock.Advance(29 * time.Second)
	on, _ = f.term.safe.Status()
	is.True(on) // 29 s after the load: still on
	f.clock.Advance(time.Second)
	select {
	case <-stopped: // ended by its timeout
	case <-time.After(10 * time.Second):
		t.Fatal("safe mode still on after its timeout from the end of the load")
	}
	on, _ = f.term.safe.Status()
	is.True(!on)
}

// TestLoadStopsWithItsTerm: ending the term's ctx mid-load stops the load
// at once, with ctx's error, leaves safe mode on, and refuses at once a
// full inventory that waits for the load (a stop does not wait for it).
func TestLoadStopsWithItsTerm(t *testing.T) {
	is := is.New(t)
	f := newLoadingFixture(t, 3, 1)
	done := f.loadInBackground(f.termCtx)
	refused := make(chan error, 1)
	go func() { refused <- f.term.membership.report(f.ctx, f.ids[0], f.inventoryOf(f.ids[0])) }()
	is.NoErr(f.clock.BlockUntilContext(f.ctx, 1)) // the page waits for the load
	f.end()
	select {
	case err := <-done:
		is.True(errors.Is(err, context.Canceled)) // the load stops with ctx's error
	case <-time.After(10 * time.Second):
		t.Fatal("the load did not stop with its term")
	}
	select {
	case err := <-refused:
		is.Equal(rpc.KindOf(err), rpc.ResourceExhausted) // the page is told to come back, without the clock moving
	case <-time.After(10 * time.Second):
		t.Fatal("an inventory page waiting for the load outlived its term")
	}
	is.True(f.term.safe.isLoading()) // nothing pretends it loaded
}

// TestLoadFiles: the pipelined load adds every file of a store that can
// walk its chunks alone and of one that cannot, in batches (more files
// than a batch), reporting its progress, and stops at a failure of the
// walk.
func TestLoadFiles(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	mem := metatest.NewMem()
	const n = loadBatch*2 + 7
	var recs []meta.Record
	for i := range n {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/l/%05d", i), i%3, 1)})
	}
	is.NoErr(mem.Init(ctx, "5f0f8a56-6c3b-4c56-9a55-3d2b8c1f6a10", recs))
	want := 0
	for _, r := range recs {
		want += len(r.File.Chunks)
	}
	for name, l := range map[string]meta.Loader{"files": mem, "chunks": chunkLoader{mem}} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			ix := newChunkIndex()
			var seen []int
			files, chunks, err := loadFiles(ctx, l, ix.refs(), func(files int) { seen = append(seen, files) })
			is.NoErr(err)
			is.Equal(files, n)                                 // every file
			is.Equal(chunks, want)                             // every chunk
			is.Equal(seen, []int{loadBatch, 2 * loadBatch, n}) // in batches
			f, c := ix.refs().counts()
			is.Equal(f, n)    // in the index
			is.Equal(c, want) // with every chunk referenced
			for _, r := range recs {
				for _, ch := range r.File.Chunks {
					good, bad := ix.check(ch)
					is.True(good == nil && bad == nil) // no copies, but
					is.True(ix.refs().has(ch.ID))      // referenced
				}
			}
		})
	}
	broken := errors.New("disk on fire")
	g := newGatedStore(mem)
	g.fails.Store(1)
	g.failWith = broken
	close(g.gate)
	_, _, err := loadFiles(ctx, g, newChunkIndex().refs(), nil)
	is.True(errors.Is(err, broken)) // a failed walk fails the load
}

// chunkLoader gives a store in memory the chunk walk of meta.ChunkLoader,
// through Files.
type chunkLoader struct{ *metatest.Mem }

func (c chunkLoader) FileChunks(ctx context.Context, fn func(*meta.FileChunks) error) error {
	var fc meta.FileChunks
	return c.Files(ctx, func(f *meta.File) error {
		fc.Replication, fc.Chunks = f.Replication, f.Chunks
		return fn(&fc)
	})
}

// TestFailedLoadEndsTerm: a coordinator whose load fails because the
// metadata is damaged serves at first, then stops with the error; one
// whose store fails for another reason starts a new term a second later,
// which loads.
func TestFailedLoadEndsTerm(t *testing.T) {
	t.Run("damaged", func(t *testing.T) {
		is := is.New(t)
		g := newGatedStore(initMem(t))
		g.fails.Store(1)
		g.failWith = rpc.Errorf(rpc.Internal, "stored file %q is damaged", "/x")
		c := runCoordinator(t, g)
		<-g.walking
		is.True(c.Leading()) // serving while it loads
		close(g.gate)
		select {
		case <-c.done:
			is.True(c.err != nil)                                  // Run fails
			is.True(strings.Contains(c.err.Error(), "is damaged")) // with the damage
		case <-time.After(10 * time.Second):
			t.Fatal("the coordinator kept leading over damaged metadata")
		}
	})
	t.Run("passing", func(t *testing.T) {
		is := is.New(t)
		g := newGatedStore(initMem(t))
		g.fails.Store(1)
		g.failWith = rpc.Errorf(rpc.Unavailable, "store unreachable")
		c := runCoordinator(t, g)
		<-g.walking
		close(g.gate) // the first load fails
		loaded := func() bool { tm := c.term.Load(); return tm != nil && !tm.safe.isLoading() }
		for deadline := time.Now().Add(10 * time.Second); !loaded() && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			c.clock.Advance(100 * time.Millisecond) // the pause before the next term
		}
		is.True(loaded())                  // a new term loaded
		is.Equal(g.fails.Load() < 0, true) // after the failed one
	})
}

// initMem returns an initialized, empty store in memory.
func initMem(t *testing.T) *metatest.Mem {
	mem := metatest.NewMem()
	if err := mem.Init(t.Context(), "5f0f8a56-6c3b-4c56-9a55-3d2b8c1f6a10", nil); err != nil {
		t.Fatal(err)
	}
	return mem
}

// runningCoordinator is a coordinator running over a store, on loopback
// with a fake clock; done is closed when Run returns err.
type runningCoordinator struct {
	*Coordinator
	clock *clockwork.FakeClock
	done  chan struct{}
	err   error
}

func runCoordinator(t *testing.T, store meta.Store) *runningCoordinator {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	clock := clockwork.NewFakeClock()
	c, err := New(cfg, Deps{Log: zerolog.New(zerolog.NewTestWriter(t)), Clock: clock, Store: store, Datanodes: coordinatortest.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &runningCoordinator{Coordinator: c, clock: clock, done: make(chan struct{})}
	go func() { defer close(r.done); r.err = c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			select {
			case <-r.done:
				return
			default:
				clock.Advance(time.Second) // the shutdown's timers
			}
		}
		t.Error("the coordinator did not stop")
	})
	return r
}
