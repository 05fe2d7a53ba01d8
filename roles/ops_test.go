package roles_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// A put whose commit finds the coordinator's metadata disk full fails
// with "no space left for metadata" on every try: the session is kept
// for the retries (before, the first failure dropped it and the client
// was told "unknown or expired upload session"). Once space is freed,
// puts work again.
func TestPutOnFullMetadataDisk(t *testing.T) {
	is := is.New(t)
	disk := testdisk.Small(t, "4m")
	c := rolestest.Start(t, 3, func(cfg *roles.ClusterConfig) {
		cfg.OpenStore = func() (meta.Store, error) { return roles.OpenBolt(disk, cfg.Log) }
	})
	cl := rolestest.Client(t, c)
	ctx := context.Background()
	_, err := cl.Put(ctx, "/before", bytes.NewReader(randomBytes(1000)), 1000, nil)
	is.NoErr(err) // puts work while there is space

	// The disk fills once the client has read the whole file, so only the
	// commit finds it full. The file's record (60 chunks) needs pages the
	// metadata file does not have yet.
	data := randomBytes(60 * rolestest.ChunkSize)
	r := &hookReader{r: bytes.NewReader(data), at: int64(len(data)), hook: func() { testdisk.Fill(t, disk) }}
	_, err = cl.Put(ctx, "/full", r, int64(len(data)), nil)
	t.Log(err)
	is.True(err != nil)                                                  // the put fails
	is.True(errors.Is(err, rpc.ResourceExhausted))                       // as resource exhausted, on its last try too
	is.True(strings.Contains(err.Error(), "no space left for metadata")) // saying why
	is.True(!strings.Contains(err.Error(), "unknown or expired"))        // not that the session was lost

	is.NoErr(os.Remove(filepath.Join(disk, "filler")))
	_, err = cl.Put(ctx, "/full", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // with space freed the put succeeds
	got, err := getBytes(ctx, cl, "/full")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // and reads back
}

// Readiness says whether the cluster can take writes: with fewer
// placeable datanodes than the replication factor every put fails, so
// /readyz, ListNodes and the status page say not ready and why; a
// datanode more makes it ready. Liveness (/healthz) is unaffected.
func TestReadinessNeedsWritableCluster(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 2, func(cfg *roles.ClusterConfig) { cfg.AdminListen = "127.0.0.1:0" })
	admin := "http://" + c.AdminAddr()

	code, body := httpGet(t, admin+"/readyz")
	is.Equal(code, http.StatusServiceUnavailable)                                                       // not ready
	is.True(strings.Contains(body, "cannot take writes: not enough datanodes: need 3 for replication")) // saying why
	code, _ = httpGet(t, admin+"/healthz")
	is.Equal(code, http.StatusOK) // alive all the same
	resp, err := coordClient(t, c).ListNodes(t.Context(), &dfspb.ListNodesRequest{})
	is.NoErr(err)
	is.True(!resp.Readiness.Writable)                                        // ListNodes says not writable
	is.Equal(resp.Readiness.PlaceableNodes, int32(2))                        // with the placeable nodes
	is.Equal(resp.Readiness.Replication, int32(3))                           // and what they are measured against
	is.True(strings.Contains(resp.Readiness.Reason, "not enough datanodes")) // and the reason
	_, page := httpGet(t, admin+"/")
	is.True(strings.Contains(page, `id="writes">Writes: <strong>refused</strong>`)) // the status page says writes fail
	_, metrics := httpGet(t, admin+"/metrics")
	v, ok := metricValue(metrics, "dfs_coordinator_writable")
	is.True(ok)      // the writable gauge is exported
	is.Equal(v, 0.0) // as 0
	cl := rolestest.Client(t, c)
	_, err = cl.Put(t.Context(), "/x", bytes.NewReader([]byte("x")), 1, nil)
	is.True(err != nil) // as a put finds

	_, err = c.AddNode()
	is.NoErr(err)
	is.NoErr(c.WaitHealthy(3, waitFor))
	code, body = httpGet(t, admin+"/readyz")
	is.Equal(code, http.StatusOK) // ready with a third datanode
	is.Equal(strings.TrimSpace(body), "ready")
	_, page = httpGet(t, admin+"/")
	is.True(strings.Contains(page, `id="writes">Writes: <strong>accepted</strong> (3 datanodes`)) // the page agrees
	_, metrics = httpGet(t, admin+"/metrics")
	v, _ = metricValue(metrics, "dfs_coordinator_writable")
	is.Equal(v, 1.0) // and so does the gauge
	_, err = cl.Put(t.Context(), "/x", bytes.NewReader([]byte("x")), 1, nil)
	is.NoErr(err) // and puts work
}

// failingFiles is a store whose Files walk fails with the errors in errs,
// one per call, then works.
type failingFiles struct {
	meta.Store
	mu    sync.Mutex
	errs  []error
	calls int
}

func (s *failingFiles) Files(ctx context.Context, fn func(*meta.File) error) error {
	s.mu.Lock()
	s.calls++
	var err error
	if len(s.errs) > 0 {
		err, s.errs = s.errs[0], s.errs[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Files(ctx, fn)
}

// A coordinator whose metadata is damaged (loading fails with Internal,
// naming the record) stops with that error instead of retrying for ever
// and answering "is starting"; a passing failure (Unavailable) is still
// retried until it goes away.
func TestCoordinatorStopsOnDamagedMetadata(t *testing.T) {
	run := func(t *testing.T, store meta.Store) (*coordinator.Coordinator, chan error, context.CancelFunc) {
		t.Helper()
		lis, err := rpc.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := coordinator.DefaultConfig()
		cfg.ShutdownGrace = time.Second
		co, err := coordinator.New(cfg, coordinator.Deps{Log: rolestest.Logger(t), Store: store, Listener: lis})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- co.Run(ctx) }()
		t.Cleanup(cancel)
		return co, done, cancel
	}

	t.Run("Damaged", func(t *testing.T) {
		is := is.New(t)
		damaged := rpc.Errorf(rpc.Internal, `damaged metadata file m.db: bucket "files", the record "/x": bad`)
		_, done, _ := run(t, &failingFiles{Store: metatest.NewMem(), errs: []error{damaged, damaged, damaged}})
		select {
		case err := <-done:
			is.True(err != nil)                                   // Run ends with an error
			is.True(errors.Is(err, rpc.Internal))                 // of the damage's kind
			is.True(strings.Contains(err.Error(), `record "/x"`)) // naming the record
		case <-time.After(waitFor):
			t.Fatal("the coordinator kept retrying a damaged store")
		}
	})

	t.Run("Transient", func(t *testing.T) {
		is := is.New(t)
		down := rpc.Errorf(rpc.Unavailable, "store unreachable")
		store := &failingFiles{Store: metatest.NewMem(), errs: []error{down, down}}
		co, done, cancel := run(t, store)
		// A term leads while it loads: wait for the load that works.
		eventually(t, "the coordinator leads once the store answers", func() bool {
			store.mu.Lock()
			defer store.mu.Unlock()
			return store.calls == 3 && co.Leading()
		})
		store.mu.Lock()
		is.Equal(store.calls, 3) // two failed loads, retried, then one that worked
		store.mu.Unlock()
		cancel()
		is.NoErr(<-done) // and it stops cleanly
	})
}
