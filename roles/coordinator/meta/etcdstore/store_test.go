package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

func initStore(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Init(testCtx(t), uuid.NewString(), nil); err != nil {
		t.Fatalf("init: %v", err)
	}
}

func putFile(t *testing.T, s meta.Store, f *meta.File) error {
	t.Helper()
	return s.Commit(testCtx(t), &meta.Txn{Path: f.Path, Expect: f.Version - 1, Put: f})
}

func deletions(n int, node rpc.NodeID) []meta.Deletion {
	var out []meta.Deletion
	for i := 0; i < n; i++ {
		out = append(out, meta.Deletion{Node: node, Chunk: rpc.NewChunkID("/old", "s", 0, uint32(i))})
	}
	return out
}

// hook wraps a store's KV to count the keys its reads return and to fail
// chosen txns.
type hook struct {
	clientv3.KV
	keys    atomic.Int64
	txns    atomic.Int64
	failTxn func(n int64) error // n counts txns from 1
	// failAfter, when it returns an error, replaces the result of a txn
	// that was applied: a reply lost on its way back.
	failAfter func(n int64) error
}

func hookStore(s *Store) *hook {
	h := &hook{KV: s.cli.KV}
	s.cli.KV = h
	return h
}

func (h *hook) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r, err := h.KV.Get(ctx, key, opts...)
	if err == nil {
		h.keys.Add(int64(len(r.Kvs)))
	}
	return r, err
}

func (h *hook) GetStream(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	in, err := h.KV.GetStream(ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	out := make(chan clientv3.RangeStreamResponse)
	go func() {
		defer close(out)
		for r := range in {
			if r.RangeResponse != nil {
				h.keys.Add(int64(len(r.Kvs)))
			}
			out <- r
		}
	}()
	return out, nil
}

func (h *hook) Txn(ctx context.Context) clientv3.Txn { return &hookTxn{Txn: h.KV.Txn(ctx), h: h} }

type hookTxn struct {
	clientv3.Txn
	h *hook
}

func (t *hookTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *hookTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *hookTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t *hookTxn) Commit() (*clientv3.TxnResponse, error) {
	n := t.h.txns.Add(1)
	if t.h.failTxn != nil {
		if err := t.h.failTxn(n); err != nil {
			return nil, err
		}
	}
	r, err := t.Txn.Commit()
	if t.h.failAfter != nil && err == nil {
		if ferr := t.h.failAfter(n); ferr != nil {
			return nil, ferr
		}
	}
	if err == nil {
		for _, op := range r.Responses {
			t.h.keys.Add(int64(len(op.GetResponseRange().GetKvs())))
		}
	}
	return r, err
}

func TestOpenUnreachable(t *testing.T) {
	is := is.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = Open(testCtx(t), Options{Endpoints: []string{addr}, DialTimeout: time.Second})
	is.True(err != nil)                                                    // no etcd, no store
	is.True(errors.Is(err, rpc.Unavailable))                               // of kind Unavailable
	is.True(strings.Contains(err.Error(), "etcd at "+addr+" unreachable")) // naming the endpoint
	_, err = Open(testCtx(t), Options{})
	is.True(errors.Is(err, rpc.Invalid)) // endpoints are required
}

func TestOpenRefusesForeignPrefix(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{Prefix: "/other/"})
	_, err := s.cli.Put(testCtx(t), "/other/config", "x")
	is.NoErr(err)
	_, err = Open(testCtx(t), Options{Endpoints: eps, Prefix: "/other"})
	is.True(errors.Is(err, rpc.FailedPrecondition))                    // keys of something else under the prefix
	is.True(strings.Contains(err.Error(), "not a dfs metadata store")) // says so
	err = s.Init(testCtx(t), uuid.NewString(), nil)
	is.True(errors.Is(err, rpc.FailedPrecondition)) // and Init refuses a non-empty prefix
}

func testRecords() []meta.Record {
	var recs []meta.Record
	for i := 0; i < 60; i++ {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/r/%03d", i), i%3, uint64(1+i%4))})
	}
	node := rpc.NodeID(uuid.NewString())
	for i := 0; i < 5; i++ {
		recs = append(recs, meta.Record{Upload: &meta.Upload{ID: rpc.NewSessionID(), Path: "/r/up", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(int64(i), 0),
			Chunks: []meta.Allocation{{Index: 0, ID: rpc.NewChunkID("/r/up", "s", 0, 0), Nodes: []rpc.NodeID{node}}}}})
	}
	for _, d := range deletions(40, node) {
		recs = append(recs, meta.Record{Deletion: &d})
	}
	for i := 0; i < 12; i++ {
		n := rpc.NodeID(uuid.NewString())
		recs = append(recs, meta.Record{Drain: &n})
	}
	return recs
}

func TestRestoreInBatches(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{MaxTxnOps: 8, MaxTxnBytes: 4 << 10})
	h := hookStore(s)
	recs := testRecords()
	id := uuid.NewString()
	is.NoErr(s.Init(testCtx(t), id, recs))
	is.True(h.txns.Load() > 10) // the restore took many txns
	mem := metatest.NewMem()
	is.NoErr(mem.Init(testCtx(t), id, recs))
	is.Equal(metatest.Dump(t, s), metatest.Dump(t, mem)) // it restored every record
	r, err := s.cli.Get(testCtx(t), s.metaKey("restoring"))
	is.NoErr(err)
	is.Equal(len(r.Kvs), 0) // and removed its marker
	again, err := Open(testCtx(t), s.opts)
	is.NoErr(err)
	defer again.Close()
	is.Equal(again.ClusterID(), id) // a reopen finds the cluster
	err = again.Init(testCtx(t), id, recs)
	is.True(errors.Is(err, rpc.Exists)) // and a second restore is refused
}

func TestInterruptedRestore(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{MaxTxnOps: 8})
	h := hookStore(s)
	h.failTxn = func(n int64) error {
		if n == 4 {
			return errors.New("injected: etcd went away")
		}
		return nil
	}
	err := s.Init(testCtx(t), uuid.NewString(), testRecords())
	is.True(err != nil)                             // the restore failed part-way
	is.True(errors.Is(err, rpc.FailedPrecondition)) // leaving a store that is unusable
	is.Equal(s.ClusterID(), "")                     // and not initialized
	h.failTxn = nil
	err = s.Commit(testCtx(t), &meta.Txn{AddDeletions: deletions(1, rpc.NodeID(uuid.NewString()))})
	is.True(errors.Is(err, rpc.FailedPrecondition)) // commits are refused
	err = s.Init(testCtx(t), uuid.NewString(), nil)
	is.True(errors.Is(err, rpc.FailedPrecondition)) // so is another init

	_, err = Open(testCtx(t), s.opts)
	is.True(errors.Is(err, rpc.FailedPrecondition))              // a restarted coordinator refuses the store
	is.True(strings.Contains(err.Error(), "incomplete restore")) // and says why
	is.True(strings.Contains(err.Error(), "clear the prefix"))   // and what to do

	_, err = s.cli.Delete(testCtx(t), s.pfx, clientv3.WithPrefix())
	is.NoErr(err)
	fresh, err := Open(testCtx(t), s.opts)
	is.NoErr(err) // a cleared prefix opens
	defer fresh.Close()
	is.NoErr(fresh.Init(testCtx(t), uuid.NewString(), testRecords())) // and takes a restore
}

func TestCommitManyDeletions(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	h := hookStore(s)
	node := rpc.NodeID(uuid.NewString())
	dels := deletions(1000, node)

	err := s.Commit(testCtx(t), &meta.Txn{Path: "/many", Expect: 3, Put: metatest.NewFile("/many", 1, 4), AddDeletions: dels})
	is.True(errors.Is(err, meta.ErrConflict)) // a failed check...
	got, err := s.Deletions(testCtx(t))
	is.NoErr(err)
	is.Equal(len(got), 0) // ...applies none of the deletions

	before := h.txns.Load()
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{Path: "/many", Put: metatest.NewFile("/many", 1, 1), AddDeletions: dels}))
	is.True(h.txns.Load()-before > 2) // more than etcd's 128 ops per txn took more txns
	got, err = s.Deletions(testCtx(t))
	is.NoErr(err)
	is.Equal(len(got), 1000) // and every deletion is recorded

	// A later batch that fails once is retried.
	failed := atomic.Bool{}
	h.failTxn = func(n int64) error {
		if n == h.txns.Load() && n > before+8 && !failed.Swap(true) {
			return fmt.Errorf("%w", clientv3.ErrNoAvailableEndpoints)
		}
		return nil
	}
	before = h.txns.Load()
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{Path: "/many", Expect: 1, Delete: true, DoneDeletions: dels}))
	is.True(failed.Load()) // a batch failed
	got, err = s.Deletions(testCtx(t))
	is.NoErr(err)
	is.Equal(len(got), 0) // and was applied on a retry
	_, err = s.Get(testCtx(t), "/many")
	is.True(errors.Is(err, rpc.NotFound))

	// A txn without a path splits too.
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{AddDeletions: dels[:300], DoneDeletions: dels[:10]}))
	got, _ = s.Deletions(testCtx(t))
	is.Equal(len(got), 290)
}

func TestCommitSameKeyTwice(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	mem := metatest.NewMem()
	is.NoErr(mem.Init(testCtx(t), s.ClusterID(), nil))
	u := &meta.Upload{ID: rpc.NewSessionID(), Path: "/x", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(7, 0)}
	d := deletions(2, rpc.NodeID(uuid.NewString()))
	n := []rpc.NodeID{rpc.NodeID(uuid.NewString()), rpc.NodeID(uuid.NewString())}
	txn := &meta.Txn{Path: "/x", Put: metatest.NewFile("/x", 1, 1), PutUploads: []*meta.Upload{u, u}, DeleteUploads: []rpc.SessionID{u.ID},
		AddDeletions: []meta.Deletion{d[0], d[1], d[0]}, DoneDeletions: []meta.Deletion{d[1]},
		Drain: []rpc.NodeID{n[0], n[1], n[0]}, Undrain: []rpc.NodeID{n[1]}}
	is.NoErr(s.Commit(testCtx(t), txn)) // etcd refuses a key twice in a txn; the store folds them
	is.NoErr(mem.Commit(testCtx(t), txn))
	is.Equal(metatest.Dump(t, s), metatest.Dump(t, mem)) // to the state Mem reaches
}

func TestDeepPaths(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	deep := func(n int) string { return strings.Repeat("/d", n) }
	is.NoErr(putFile(t, s, metatest.NewFile(deep(120), 1, 1))) // 120 levels fit in one txn
	err := putFile(t, s, metatest.NewFile(deep(121)+"/x", 1, 1))
	is.True(errors.Is(err, rpc.Exists)) // the parent check covers every level
	err = putFile(t, s, metatest.NewFile(deep(200), 1, 1))
	is.True(errors.Is(err, rpc.Invalid)) // a path too deep to check atomically is refused
}

func TestListSkipsLargeSubdirectory(t *testing.T) {
	eps := etcdtest.Start(t)
	t.Run("stream", func(t *testing.T) { testListSkipsLargeSubdirectory(t, open(t, eps, Options{})) })
	t.Run("paged", func(t *testing.T) { testListSkipsLargeSubdirectory(t, open(t, eps, Options{pagedReads: true})) })
}

func testListSkipsLargeSubdirectory(t *testing.T, s *Store) {
	is := is.New(t)
	var recs []meta.Record
	for i := 0; i < 2000; i++ {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/big/sub/%04d", i), 1, 1)})
	}
	for _, p := range []string{"/big/a", "/big/sub-x", "/big/z", "/big/sub0"} {
		recs = append(recs, meta.Record{File: metatest.NewFile(p, 1, 1)})
	}
	is.NoErr(s.Init(testCtx(t), uuid.NewString(), recs)) // a restore is the quick way to fill a store
	h := hookStore(s)
	entries, err := s.List(testCtx(t), "/big", false, "", 100)
	is.NoErr(err)
	var names []string
	for _, e := range entries {
		names = append(names, string(e.Path))
	}
	is.Equal(names, []string{"/big/a", "/big/sub-x", "/big/sub", "/big/sub0", "/big/z"}) // path order, as Mem lists
	is.True(entries[2].IsDir)
	t.Logf("listing read %d keys", h.keys.Load())
	is.True(h.keys.Load() < 1000) // the listing jumped past the 2,000 files below /big/sub
	all, err := s.List(testCtx(t), "/big", true, "", 5000)
	is.NoErr(err)
	is.Equal(len(all), 2005) // a recursive listing reads them all, and the directory
	entries, err = s.List(testCtx(t), "/big", false, "", 0)
	is.NoErr(err)
	is.Equal(len(entries), 0) // a zero limit lists nothing
	_, err = s.List(testCtx(t), "/nothing", false, "", 0)
	is.True(errors.Is(err, rpc.NotFound)) // but still knows a missing directory
}

func TestFenceStopsADeposedLeader(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	l, err := s.Election("coordinator").Campaign(testCtx(t), "10.0.0.1:7000", 2*time.Second)
	is.NoErr(err)
	s.SetFence(l)
	is.NoErr(putFile(t, s, metatest.NewFile("/a", 1, 1))) // the leader writes
	// The lease goes (as when keep-alives stop past the TTL).
	_, err = s.cli.Revoke(testCtx(t), l.session.Lease())
	is.NoErr(err)
	select {
	case <-l.Done():
	case <-time.After(time.Minute):
		t.Fatal("leadership not lost after its lease was revoked")
	}
	err = putFile(t, s, metatest.NewFile("/b", 1, 1))
	is.True(errors.Is(err, ErrNotLeader))    // a deposed leader cannot write
	is.True(errors.Is(err, rpc.Unavailable)) // and the client is told to go elsewhere
	err = s.Commit(testCtx(t), &meta.Txn{AddDeletions: deletions(3, rpc.NodeID(uuid.NewString()))})
	is.True(errors.Is(err, ErrNotLeader)) // not even unconditional changes
	_, err = s.Get(testCtx(t), "/b")
	is.True(errors.Is(err, rpc.NotFound)) // nothing was applied
	s.SetFence(nil)
	is.NoErr(putFile(t, s, metatest.NewFile("/b", 1, 1))) // an unfenced store writes again
}

func TestStoreOnThreeMembers(t *testing.T) {
	is := is.New(t)
	c := etcdtest.StartCluster(t, 3)
	s := open(t, c.Endpoints(), Options{})
	initStore(t, s)
	is.NoErr(putFile(t, s, metatest.NewFile("/before", 1, 1)))
	c.Stop(0)
	is.NoErr(putFile(t, s, metatest.NewFile("/after", 1, 1))) // two of three members still commit
	for _, p := range []rpc.Path{"/before", "/after"} {
		_, err := s.Get(testCtx(t), p)
		is.NoErr(err) // and serve reads
	}
}

func TestSnapshotIsOneView(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	for _, paged := range []bool{false, true} {
		s := open(t, eps, Options{pagedReads: paged})
		initStore(t, s)
		other, err := Open(testCtx(t), s.opts) // a second coordinator's view of the same store
		is.NoErr(err)
		defer other.Close()
		for i := 0; i < 30; i++ {
			is.NoErr(putFile(t, s, metatest.NewFile(fmt.Sprintf("/s/%02d", i), 1, 1)))
		}
		before := metatest.Dump(t, s)
		var files, dels int
		is.NoErr(s.Snapshot(testCtx(t), func(r meta.Record) error {
			if r.File != nil {
				if files == 0 { // changes made while the snapshot runs
					is.NoErr(putFile(t, other, metatest.NewFile("/s/zz", 1, 1)))
					is.NoErr(putFile(t, other, metatest.NewFile("/s/00", 2, 2)))
					is.NoErr(other.Commit(testCtx(t), &meta.Txn{AddDeletions: deletions(2, rpc.NodeID(uuid.NewString()))}))
				}
				files++
				is.Equal(r.File.Version, uint64(1)) // no later version shows
			}
			if r.Deletion != nil {
				dels++
			}
			return nil
		}))
		is.Equal(files, 30) // no later file shows
		is.Equal(dels, 0)   // nor later deletions
		is.True(metatest.Dump(t, s) != before)
	}
}

func TestCommitWithLostReply(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	h := hookStore(s)
	h.failAfter = func(n int64) error {
		if n == 2 { // the pre-read is txn 1
			return context.DeadlineExceeded
		}
		return nil
	}
	is.NoErr(putFile(t, s, metatest.NewFile("/lost", 1, 1))) // a put that was applied is a success, reply or not
	got, err := s.Get(testCtx(t), "/lost")
	is.NoErr(err)
	is.Equal(got.Version, uint64(1))
	h.txns.Store(0)
	err = s.Commit(testCtx(t), &meta.Txn{Path: "/lost", Expect: 1, Delete: true})
	is.True(errors.Is(err, context.DeadlineExceeded)) // a delete's fate stays unknown to the caller
}

func nodes(n int) []rpc.NodeID {
	var out []rpc.NodeID
	for range n {
		out = append(out, rpc.NodeID(uuid.NewString()))
	}
	return out
}

func TestDrains(t *testing.T) {
	eps := etcdtest.Start(t)

	t.Run("FirstTxn", func(t *testing.T) {
		// Drains travel in a txn's first etcd txn, with the file change:
		// when a later batch of deletions fails, the drains are applied.
		is := is.New(t)
		s := open(t, eps, Options{MaxTxnOps: 8})
		initStore(t, s)
		h := hookStore(s)
		dels := deletions(30, rpc.NodeID(uuid.NewString()))
		for _, path := range []rpc.Path{"", "/f"} {
			drain := nodes(3)
			txn := &meta.Txn{Drain: drain, AddDeletions: dels}
			if path != "" {
				txn = &meta.Txn{Path: path, Put: metatest.NewFile(string(path), 1, 1), Drain: drain, AddDeletions: dels}
			}
			first := h.txns.Load() + 1
			if path != "" {
				first++ // the pre-read
			}
			h.failTxn = func(n int64) error {
				if n > first {
					return rpctypes.ErrPermissionDenied // not retried
				}
				return nil
			}
			err := s.Commit(testCtx(t), txn)
			h.failTxn = nil
			is.True(err != nil) // a later batch failed
			got, err := s.Drains(testCtx(t))
			is.NoErr(err)
			for _, n := range drain {
				is.True(slices.Contains(got, n)) // but the drains were applied with the first
			}
			_, err = s.cli.Delete(testCtx(t), s.pfx+"d/", clientv3.WithPrefix())
			is.NoErr(err)
		}
	})

	t.Run("TooMany", func(t *testing.T) {
		is := is.New(t)
		s := open(t, eps, Options{MaxTxnOps: 8})
		initStore(t, s)
		err := s.Commit(testCtx(t), &meta.Txn{Drain: nodes(9)})
		is.True(errors.Is(err, rpc.Invalid)) // more drains than one etcd txn holds are refused
		err = s.Commit(testCtx(t), &meta.Txn{Path: "/g", Put: metatest.NewFile("/g", 1, 1), Drain: nodes(5), Undrain: nodes(3)})
		is.True(errors.Is(err, rpc.Invalid)) // so are drains that do not fit beside a file change
		is.NoErr(s.Commit(testCtx(t), &meta.Txn{Drain: nodes(8)}))
		is.NoErr(s.Commit(testCtx(t), &meta.Txn{Path: "/g", Put: metatest.NewFile("/g", 1, 1), Drain: nodes(4), Undrain: nodes(3)}))
		got, err := s.Drains(testCtx(t))
		is.NoErr(err)
		is.Equal(len(got), 12) // what fits is applied
	})

	t.Run("InitRefusesPrefixWithDrains", func(t *testing.T) {
		is := is.New(t)
		s := open(t, eps, Options{})
		_, err := s.cli.Put(testCtx(t), s.drainKey(rpc.NodeID(uuid.NewString())), "")
		is.NoErr(err)
		err = s.Init(testCtx(t), uuid.NewString(), nil)
		is.True(errors.Is(err, rpc.FailedPrecondition)) // a drain is data: the prefix is not empty
		bad := rpc.NodeID("not-a-node")
		fresh := open(t, eps, Options{})
		err = fresh.Init(testCtx(t), uuid.NewString(), []meta.Record{{Drain: &bad}})
		is.True(errors.Is(err, rpc.Invalid)) // a restore with a malformed drain is refused
		is.Equal(fresh.ClusterID(), "")
	})

	t.Run("Damaged", func(t *testing.T) {
		is := is.New(t)
		s := open(t, eps, Options{})
		initStore(t, s)
		_, err := s.cli.Put(testCtx(t), s.pfx+"n/not-a-node", "")
		is.NoErr(err)
		_, err = s.Drains(testCtx(t))
		is.True(errors.Is(err, rpc.Internal)) // a damaged drain key is an error
		err = s.Snapshot(testCtx(t), func(meta.Record) error { return nil })
		is.True(errors.Is(err, rpc.Internal)) // in a snapshot too
	})

	t.Run("UpgradeLayout1", func(t *testing.T) {
		is := is.New(t)
		s := open(t, eps, Options{})
		initStore(t, s)
		is.NoErr(putFile(t, s, metatest.NewFile("/old", 2, 1)))
		is.NoErr(s.Commit(testCtx(t), &meta.Txn{AddDeletions: deletions(3, rpc.NodeID(uuid.NewString()))}))
		before := metatest.Dump(t, s)
		_, err := s.cli.Put(testCtx(t), s.metaKey("format"), "1") // as a dfs before drains left it
		is.NoErr(err)

		up, err := Open(testCtx(t), s.opts)
		is.NoErr(err) // a layout 1 prefix opens
		defer up.Close()
		is.Equal(up.ClusterID(), s.ClusterID())
		is.Equal(metatest.Dump(t, up), before) // with every record
		r, err := s.cli.Get(testCtx(t), s.metaKey("format"))
		is.NoErr(err)
		is.Equal(string(r.Kvs[0].Value), formatVersion) // and is upgraded
		n := rpc.NodeID(uuid.NewString())
		is.NoErr(up.Commit(testCtx(t), &meta.Txn{Drain: []rpc.NodeID{n}}))
		got, err := up.Drains(testCtx(t))
		is.NoErr(err)
		is.Equal(got, []rpc.NodeID{n}) // and drains

		for _, v := range []string{"0", "4", ""} {
			_, err = s.cli.Put(testCtx(t), s.metaKey("format"), v)
			is.NoErr(err)
			_, err = Open(testCtx(t), s.opts)
			is.True(errors.Is(err, rpc.FailedPrecondition))          // other layouts are refused
			is.True(strings.Contains(err.Error(), "layout version")) // saying why
		}
	})
}

// TestLargestFileFits pins MaxFileChunks: a file of that many chunks, with
// the longest path and chunk IDs, commits in one etcd txn under etcd's
// default --max-request-bytes, so the coordinator's lowered limit is one
// the store can hold.
func TestLargestFileFits(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	n := s.MaxFileChunks()
	is.True(n > 10000 && n < rpc.MaxFileChunks) // about 11,400 chunks with the defaults
	seg := strings.Repeat("p", rpc.MaxSegmentLen)
	path := strings.Repeat("/"+seg, rpc.MaxPathLen/(rpc.MaxSegmentLen+1)-1)
	path += "/" + strings.Repeat("q", rpc.MaxPathLen-len(path)-1)
	p, err := rpc.ParsePath(path)
	is.NoErr(err) // the longest path
	f := metatest.NewFile(string(p), 0, 1)
	f.ChunkSize = rpc.MaxChunkSize
	for i := range n {
		f.Chunks = append(f.Chunks, meta.Chunk{ID: rpc.NewChunkID(p, f.Session, 0, rpc.MaxChunkIndex-uint32(i)), Size: rpc.MaxChunkSize,
			Digest: make([]byte, rpc.DigestSize), FrameSize: rpc.MaxFrameSize})
	}
	f.Size = int64(n) * rpc.MaxChunkSize
	up := &meta.Upload{ID: f.Session, Path: p, ChunkSize: rpc.MaxChunkSize, Replication: 3, Created: time.Unix(7, 0)}
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{PutUploads: []*meta.Upload{up}}))
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{Path: p, Put: f, DeleteUploads: []rpc.SessionID{up.ID}})) // the largest file commits
	got, err := s.Get(testCtx(t), p)
	is.NoErr(err)
	is.Equal(len(got.Chunks), n) // and reads back whole
}

// TestWalkWithinMaxTxnOps: a Walk of a path as deep as commits allow
// stays within a server's --max-txn-ops lower than the default, taking
// several transactions.
func TestWalkWithinMaxTxnOps(t *testing.T) {
	is := is.New(t)
	s := open(t, etcdtest.StartMaxTxnOps(t, 8), Options{MaxTxnOps: 8})
	is.NoErr(s.Init(testCtx(t), uuid.NewString(), nil))
	f := metatest.NewFile("/a/b/c/d/f", 1, 1) // 5 levels: as deep as 8 operations a txn allow
	is.NoErr(s.Commit(testCtx(t), &meta.Txn{Path: f.Path, Put: f}))
	es, err := s.Walk(testCtx(t), f.Path)
	is.NoErr(err)        // 10 keys to read: two txns
	is.Equal(len(es), 6) // the root, 4 directories and the file
	is.Equal(es[5].Path, f.Path)
	is.True(es[4].IsDir && es[4].Path == "/a/b/c/d")
}
