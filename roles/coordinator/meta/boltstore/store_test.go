package boltstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// openInit opens an initialized store; batch settings as given.
func openInit(t *testing.T, delay time.Duration, size int) *Store {
	t.Helper()
	o := testOptions(t)
	o.BatchDelay, o.BatchSize = delay, size
	s, err := Open(filepath.Join(t.TempDir(), "meta.db"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Init(context.Background(), uuid.NewString(), nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// concurrently runs fn(0..n-1) in n goroutines released together.
func concurrently(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}

func TestConcurrentCommitsShareWriteTxns(t *testing.T) {
	is := is.New(t)
	// A long delay makes the sharing certain without timing assertions:
	// a batch runs when it is full or after the delay.
	s := openInit(t, 200*time.Millisecond, 16)
	const workers, each = 16, 10
	before, applied := writeTxns(t, s), s.applied.Load()
	errs := make([]error, workers)
	concurrently(workers, func(w int) {
		for i := range each {
			f := metatest.NewFile(fmt.Sprintf("/share/%02d/%02d", w, i), 1, 1)
			if err := s.Commit(context.Background(), &meta.Txn{Path: f.Path, Put: f}); err != nil {
				errs[w] = err
			}
		}
	})
	for _, err := range errs {
		is.NoErr(err) // every commit succeeds
	}
	txns := writeTxns(t, s) - before
	t.Logf("%d commits in %d write transactions", workers*each, txns)
	is.True(txns < workers*each)                            // commits shared write transactions (and fsyncs)
	is.Equal(s.applied.Load()-applied, int64(workers*each)) // and none was run twice
}

func TestFailedCheckDoesNotFailItsBatch(t *testing.T) {
	is := is.New(t)
	s := openInit(t, 200*time.Millisecond, 16)
	ctx := context.Background()
	is.NoErr(s.Commit(ctx, &meta.Txn{Path: "/dir/f", Put: metatest.NewFile("/dir/f", 1, 1)}))
	is.NoErr(s.Commit(ctx, &meta.Txn{Path: "/file", Put: metatest.NewFile("/file", 1, 1)}))
	before, applied := writeTxns(t, s), s.applied.Load()

	// 16 commits in one batch: every fourth fails a different check.
	errs := make([]error, 16)
	concurrently(16, func(i int) {
		p := rpc.Path(fmt.Sprintf("/ok/%02d", i))
		txn := &meta.Txn{Path: p, Put: metatest.NewFile(string(p), 1, 1)}
		switch i {
		case 0:
			txn = &meta.Txn{Path: "/file", Expect: 7, Put: metatest.NewFile("/file", 1, 8)} // conflict
		case 4:
			txn = &meta.Txn{Path: "/missing", Delete: true} // not found
		case 8:
			txn = &meta.Txn{Path: "/dir", Put: metatest.NewFile("/dir", 1, 1)} // a directory
		case 12:
			txn = &meta.Txn{Path: "/file/below", Put: metatest.NewFile("/file/below", 1, 1)} // below a file
		}
		errs[i] = s.Commit(ctx, txn)
	})
	is.True(errors.Is(errs[0], meta.ErrConflict)) // each failed commit sees its own error
	is.True(errors.Is(errs[4], rpc.NotFound))
	is.True(errors.Is(errs[8], rpc.Exists))
	is.True(errors.Is(errs[12], rpc.Exists))
	for i, err := range errs {
		if i%4 != 0 {
			is.NoErr(err) // and the others of the batch succeed
		}
	}
	is.Equal(s.applied.Load()-applied, int64(16)) // without bolt re-running the batch
	t.Logf("16 commits in %d write transactions", writeTxns(t, s)-before)
	entries, err := s.List(ctx, "/ok", false, "", 100)
	is.NoErr(err)
	is.Equal(len(entries), 12)
	got, err := s.Get(ctx, "/file")
	is.NoErr(err)
	is.Equal(got.Version, uint64(1)) // the conflicting put changed nothing
}

func TestCanceledCommitAppliesNothing(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 16)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Commit(ctx, &meta.Txn{Path: "/c", Put: metatest.NewFile("/c", 1, 1)})
	is.True(errors.Is(err, context.Canceled)) // a canceled commit says so
	_, err = s.Get(context.Background(), "/c")
	is.True(errors.Is(err, rpc.NotFound)) // and applied nothing
}

func TestDamagedValues(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 16)
	ctx := context.Background()
	good := metatest.NewFile("/d/good", 1, 1)
	is.NoErr(s.Commit(ctx, &meta.Txn{Path: good.Path, Put: good}))
	wrongKey, err := meta.MarshalFile(good)
	is.NoErr(err)
	is.NoErr(s.db.Update(func(tx *bolt.Tx) error {
		files := tx.Bucket(bucketFiles)
		return errors.Join(
			files.Put([]byte("/d/garbage"), []byte{0xff, 0xff, 0xff, 0x01, 0x02}),
			files.Put([]byte("/d/empty"), []byte{}),
			files.Put([]byte("/d/moved"), wrongKey),
		)
	}))
	for _, p := range []rpc.Path{"/d/garbage", "/d/empty", "/d/moved"} {
		_, err := s.Get(ctx, p)
		is.True(errors.Is(err, rpc.Internal)) // a damaged file is an error, not a panic
		t.Log(err)
		err = s.Commit(ctx, &meta.Txn{Path: p, Expect: 1, Delete: true})
		is.True(errors.Is(err, rpc.Internal)) // commits over it fail too
	}
	_, err = s.List(ctx, "/d", false, "", 100)
	is.True(errors.Is(err, rpc.Internal)) // so does a listing that meets one
	is.True(errors.Is(s.Files(ctx, func(*meta.File) error { return nil }), rpc.Internal))
	is.True(errors.Is(s.Snapshot(ctx, func(meta.Record) error { return nil }), rpc.Internal))
	got, err := s.Get(ctx, good.Path)
	is.NoErr(err)
	is.Equal(got.Version, uint64(1)) // the good file is still readable

	is.NoErr(s.db.Update(func(tx *bolt.Tx) error {
		return errors.Join(
			tx.Bucket(bucketUploads).Put([]byte(rpc.NewSessionID()), []byte("\x0a\x03abc")),
			tx.Bucket(bucketDeletions).Put([]byte("not-a-node/chunk"), []byte{}),
			tx.Bucket(bucketDrains).Put([]byte("not-a-node"), []byte{}),
		)
	}))
	_, err = s.Uploads(ctx)
	is.True(errors.Is(err, rpc.Internal)) // a damaged upload is an error
	_, err = s.Deletions(ctx)
	is.True(errors.Is(err, rpc.Internal)) // and so is a damaged deletion key
	_, err = s.Drains(ctx)
	is.True(errors.Is(err, rpc.Internal)) // and a damaged drain key
}

func TestCommitRefusesRecordsThatWouldNotReadBack(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 16)
	ctx := context.Background()
	f := metatest.NewFile("/bad", 1, 1)
	f.SHA256 = f.SHA256[:5]
	err := s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f})
	is.True(errors.Is(err, rpc.Invalid)) // a file meta would refuse to decode is refused up front
	u := &meta.Upload{ID: "not a session id", Path: "/u"}
	err = s.Commit(ctx, &meta.Txn{PutUploads: []*meta.Upload{u}})
	is.True(errors.Is(err, rpc.Invalid)) // so is such an upload
	err = s.Commit(ctx, &meta.Txn{AddDeletions: []meta.Deletion{{Node: "n", Chunk: "c"}}})
	is.True(errors.Is(err, rpc.Invalid)) // and such a deletion
	err = s.Commit(ctx, &meta.Txn{Drain: []rpc.NodeID{"n"}})
	is.True(errors.Is(err, rpc.Invalid)) // and such a drain
	n := 0
	is.NoErr(s.Snapshot(ctx, func(meta.Record) error { n++; return nil }))
	is.Equal(n, 0) // nothing was stored
}

func TestInitIsAtomic(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "meta.db")
	s := open(t, path)
	ctx := context.Background()
	bad := metatest.NewFile("/r/bad", 2, 1)
	bad.Chunks[0].Digest = nil
	recs := []meta.Record{
		{File: metatest.NewFile("/r/a", 1, 1)},
		{Upload: &meta.Upload{ID: rpc.NewSessionID(), Path: "/r/u"}},
		{File: bad},
	}
	err := s.Init(ctx, uuid.NewString(), recs)
	is.True(errors.Is(err, rpc.Invalid)) // a record that would not read back fails the restore
	t.Log(err)
	badNode := rpc.NodeID("not-a-node")
	err = s.Init(ctx, uuid.NewString(), append(recs[:2:2], meta.Record{Drain: &badNode}))
	is.True(errors.Is(err, rpc.Invalid)) // so does a drain of a malformed node
	is.Equal(s.ClusterID(), "")          // the store stays uninitialized
	n := 0
	is.NoErr(s.Snapshot(ctx, func(meta.Record) error { n++; return nil }))
	is.Equal(n, 0) // and empty
	is.NoErr(s.Close())

	s = open(t, path) // an uninitialized, empty store opens again
	id := uuid.NewString()
	is.NoErr(s.Init(ctx, id, recs[:2]))
	is.Equal(s.ClusterID(), id)
	ups, err := s.Uploads(ctx)
	is.NoErr(err)
	is.Equal(len(ups), 1) // a good restore loads its records
}

func TestCloseIsIdempotent(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 16)
	is.NoErr(s.Close())
	is.NoErr(s.Close()) // a second close is harmless
	_, err := s.Get(context.Background(), "/x")
	is.True(errors.Is(err, rpc.FailedPrecondition)) // a closed store refuses reads
	err = s.Commit(context.Background(), &meta.Txn{Path: "/x", Put: metatest.NewFile("/x", 1, 1)})
	is.True(errors.Is(err, rpc.FailedPrecondition)) // and commits
	is.True(!errors.Is(err, meta.ErrConflict))      // which is no conflict: a retry would not cure it
}

func TestConflictKeepsItsCause(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 16)
	is.NoErr(s.Commit(context.Background(), &meta.Txn{Path: "/x", Put: metatest.NewFile("/x", 1, 1)}))
	err := s.Commit(context.Background(), &meta.Txn{Path: "/x", Put: metatest.NewFile("/x", 1, 1)})
	is.True(errors.Is(err, meta.ErrConflict))                                       // a lost race is a conflict
	is.True(errors.Is(err, rpc.FailedPrecondition))                                 // of the kind that crosses the wire
	is.Equal(err.Error(), "file /x is at version 1, expected 0 (version conflict)") // readable, naming the path
}

func TestFilesWalksPagesAndAllowsCommits(t *testing.T) {
	is := is.New(t)
	s := openInit(t, time.Millisecond, 1000)
	ctx := context.Background()
	const n = 2*walkPage + 7
	var want []string
	var wg sync.WaitGroup
	for i := range n {
		p := fmt.Sprintf("/w/%05d", i)
		want = append(want, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Commit(ctx, &meta.Txn{Path: rpc.Path(p), Put: metatest.NewFile(p, 1, 1)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var got []string
	err := s.Files(ctx, func(f *meta.File) error {
		got = append(got, string(f.Path))
		if len(got)%100 != 0 {
			return nil
		}
		// fn may use the store: commit beside the walk, before it in
		// path order, so the walk does not see these.
		q := rpc.Path(fmt.Sprintf("/a/%05d", len(got)))
		return s.Commit(ctx, &meta.Txn{Path: q, Put: metatest.NewFile(string(q), 1, 1)})
	})
	is.NoErr(err)
	is.Equal(got, want) // every file once, in path order, across pages
	entries, err := s.List(ctx, "/a", false, "", 2*n)
	is.NoErr(err)
	is.Equal(len(entries), n/100) // and the commits made during the walk landed
}

// TestListMatchesMem lists random trees in random ways and compares every
// answer with the reference implementation's.
func TestListMatchesMem(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	segs := []string{"a", "b", "a-b", "a.b", "b0", "ab", "z", "é", "a b"}
	randPath := func() string {
		p := ""
		for range 1 + r.IntN(4) {
			p += "/" + segs[r.IntN(len(segs))]
		}
		return p
	}
	for round := range 8 {
		s := openInit(t, 100*time.Microsecond, 1000)
		m := metatest.NewMem()
		is.NoErr(m.Init(ctx, s.ClusterID(), nil))
		for range 60 {
			p := randPath()
			txn := &meta.Txn{Path: rpc.Path(p), Put: metatest.NewFile(p, 1, 1)}
			errM, errB := m.Commit(ctx, txn), s.Commit(ctx, txn)
			is.Equal(rpc.KindOf(errM), rpc.KindOf(errB)) // commits agree
		}
		for range 300 {
			dir := rpc.Path("/")
			if r.IntN(4) > 0 {
				dir = rpc.Path(randPath())
			}
			after := ""
			if r.IntN(2) == 0 {
				after = randPath()
			}
			rec, limit := r.IntN(2) == 0, 1+r.IntN(6)
			em, errM := m.List(ctx, dir, rec, after, limit)
			eb, errB := s.List(ctx, dir, rec, after, limit)
			is.Equal(rpc.KindOf(errM), rpc.KindOf(errB)) // errors agree
			is.Equal(names(em), names(eb))               // entries agree
		}
		is.Equal(metatest.Dump(t, m), metatest.Dump(t, s)) // contents agree
		t.Logf("round %d ok", round)
	}
}

func names(es []meta.Entry) []string {
	var out []string
	for _, e := range es {
		n := string(e.Path)
		if e.IsDir {
			n += "/"
		} else if e.File == nil || e.File.Path != e.Path {
			n += "!"
		}
		out = append(out, n)
	}
	return out
}
