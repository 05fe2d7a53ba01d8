package metatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Factory opens a new, empty, uninitialized store for one test. reopen,
// when not nil, closes the store and opens it again on the same data, as a
// restarted coordinator would; stores that are not durable return nil.
type Factory func(t *testing.T) (s meta.Store, reopen func() meta.Store)

// Run runs the conformance suite against the stores newStore makes.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s meta.Store, reopen func() meta.Store)
	}{
		{"Init", testInit},
		{"PutGet", testPutGet},
		{"Versions", testVersions},
		{"Directories", testDirectories},
		{"Mkdir", testMkdir},
		{"Rmdir", testRmdir},
		{"ExplicitDirs", testExplicitDirs},
		{"Walk", testWalk},
		{"ListDirsPaging", testListDirsPaging},
		{"MoveFile", testMoveFile},
		{"MoveDir", testMoveDir},
		{"MoveFailsCleanly", testMoveFailsCleanly},
		{"DirsDurable", testDirsDurable},
		{"Attrs", testAttrs},
		{"SetAttr", testSetAttr},
		{"ConcurrentDirs", testConcurrentDirs},
		{"FailedTxnAppliesNothing", testFailedTxn},
		{"List", testList},
		{"ListPaging", testListPaging},
		{"UploadsAndDeletions", testUploadsAndDeletions},
		{"FilesWalk", testFilesWalk},
		{"ChunksWalk", testChunksWalk},
		{"Drains", testDrains},
		{"FailedTxnDrainsNothing", testFailedTxnDrains},
		{"BackupRestore", testBackupRestore},
		{"InitRestores", testInitRestores},
		{"ConcurrentCommits", testConcurrentCommits},
		{"ConcurrentConflicts", testConcurrentConflicts},
		{"Durable", testDurable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, reopen := newStore(t)
			t.Cleanup(func() { s.Close() })
			var cur = s
			reopenTracked := reopen
			if reopen != nil {
				reopenTracked = func() meta.Store {
					cur = reopen()
					t.Cleanup(func() { cur.Close() })
					return cur
				}
			}
			tt.fn(t, s, reopenTracked)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func initStore(t *testing.T, s meta.Store) string {
	t.Helper()
	id := uuid.NewString()
	if err := s.Init(ctx(t), id, nil); err != nil {
		t.Fatalf("init: %v", err)
	}
	return id
}

var nodeA, nodeB, nodeC = rpc.NodeID(uuid.NewString()), rpc.NodeID(uuid.NewString()), rpc.NodeID(uuid.NewString())

// NewFile returns a valid file of n chunks at p with version v.
func NewFile(p string, n int, v uint64) *meta.File {
	f := &meta.File{Path: rpc.Path(p), ChunkSize: 1 << 20, Replication: 3, Modified: time.Unix(1700000000, 123456789), Version: v,
		Session: rpc.SessionID(uuid.NewSHA1(uuid.NameSpaceURL, []byte(p+strconv.FormatUint(v, 10))).String())}
	sum := sha256.Sum256([]byte(p + strconv.FormatUint(v, 10)))
	f.SHA256 = sum[:]
	f.Metadata = map[string]string{"content-type": "text/plain", "version": strconv.FormatUint(v, 10)}
	for i := 0; i < n; i++ {
		d := sha256.Sum256([]byte(fmt.Sprint(p, v, i)))
		size := int64(1 << 20)
		if i == n-1 {
			size = 1000
		}
		f.Chunks = append(f.Chunks, meta.Chunk{ID: rpc.NewChunkID(f.Path, rpc.SessionID(strconv.FormatUint(v, 10)), 0, uint32(i)), Size: size, Digest: d[:], FrameSize: 1 << 16})
		f.Size += size
	}
	return f
}

func put(t *testing.T, s meta.Store, f *meta.File) error {
	t.Helper()
	return s.Commit(ctx(t), &meta.Txn{Path: f.Path, Expect: f.Version - 1, Put: f})
}

func sameFile(a, b *meta.File) bool {
	if a.Path != b.Path || a.Size != b.Size || !bytes.Equal(a.SHA256, b.SHA256) || a.ChunkSize != b.ChunkSize ||
		a.Replication != b.Replication || !a.Modified.Equal(b.Modified) || a.Version != b.Version || len(a.Chunks) != len(b.Chunks) ||
		a.Session != b.Session || a.Attr != b.Attr || !maps.Equal(a.Metadata, b.Metadata) {
		return false
	}
	for i := range a.Chunks {
		x, y := a.Chunks[i], b.Chunks[i]
		if x.ID != y.ID || x.Size != y.Size || !bytes.Equal(x.Digest, y.Digest) || x.FrameSize != y.FrameSize {
			return false
		}
	}
	return true
}

func testInit(t *testing.T, s meta.Store, reopen func() meta.Store) {
	is := is.New(t)
	is.Equal(s.ClusterID(), "") // a new store has no cluster
	err := s.Commit(ctx(t), &meta.Txn{PutUploads: []*meta.Upload{}})
	is.True(errors.Is(err, rpc.FailedPrecondition)) // an uninitialized store refuses commits
	id := initStore(t, s)
	is.Equal(s.ClusterID(), id) // init sets the cluster
	err = s.Init(ctx(t), uuid.NewString(), nil)
	is.True(errors.Is(err, rpc.Exists)) // a second init is refused
	is.Equal(s.ClusterID(), id)         // and changes nothing
	if reopen != nil {
		s = reopen()
		is.Equal(s.ClusterID(), id) // the cluster id survives a reopen
	}
}

func testPutGet(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	f := NewFile("/a/b.txt", 3, 1)
	is.NoErr(put(t, s, f))
	got, err := s.Get(ctx(t), "/a/b.txt")
	is.NoErr(err)
	is.True(sameFile(got, f)) // every field comes back
	_, err = s.Get(ctx(t), "/a/c")
	is.True(errors.Is(err, rpc.NotFound)) // a missing file is NotFound
	empty := NewFile("/empty", 0, 1)
	is.NoErr(put(t, s, empty))
	got, err = s.Get(ctx(t), "/empty")
	is.NoErr(err)
	is.True(sameFile(got, empty)) // a file without chunks comes back too
	got.Chunks = append(got.Chunks, meta.Chunk{})
	again, _ := s.Get(ctx(t), "/empty")
	is.Equal(len(again.Chunks), 0) // callers cannot change stored files through results
}

func testVersions(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(put(t, s, NewFile("/v", 1, 1)))
	err := put(t, s, NewFile("/v", 1, 1))
	is.True(errors.Is(err, meta.ErrConflict)) // a second first version conflicts
	is.NoErr(put(t, s, NewFile("/v", 2, 2)))
	err = s.Commit(ctx(t), &meta.Txn{Path: "/v", Expect: 1, Put: NewFile("/v", 1, 2)})
	is.True(errors.Is(err, meta.ErrConflict)) // a stale expectation conflicts
	got, _ := s.Get(ctx(t), "/v")
	is.Equal(got.Version, uint64(2))
	is.Equal(len(got.Chunks), 2) // the conflicting put changed nothing
	err = s.Commit(ctx(t), &meta.Txn{Path: "/v", Expect: 2, Put: NewFile("/v", 1, 5)})
	is.True(errors.Is(err, rpc.Invalid)) // a put must be version expect+1
	err = s.Commit(ctx(t), &meta.Txn{Path: "/v", Expect: 1, Delete: true})
	is.True(errors.Is(err, meta.ErrConflict)) // deletes check the version too
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/v", Expect: 2, Delete: true}))
	_, err = s.Get(ctx(t), "/v")
	is.True(errors.Is(err, rpc.NotFound)) // deleted
	err = s.Commit(ctx(t), &meta.Txn{Path: "/v", Expect: 2, Delete: true})
	is.True(errors.Is(err, rpc.NotFound))    // deleting a missing file is NotFound
	is.NoErr(put(t, s, NewFile("/v", 1, 1))) // a deleted path starts again at version 1
}

func testDirectories(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(put(t, s, NewFile("/d/f", 1, 1)))
	err := put(t, s, NewFile("/d", 1, 1))
	is.True(errors.Is(err, rpc.Exists)) // a path with files below it is a directory
	err = put(t, s, NewFile("/d/f/g", 1, 1))
	is.True(errors.Is(err, rpc.Exists)) // nothing can live below a file
	err = put(t, s, NewFile("/d/f/g/h", 1, 1))
	is.True(errors.Is(err, rpc.Exists))              // not even deeper
	is.NoErr(put(t, s, NewFile("/d-sibling", 1, 1))) // a name that shares a prefix is fine
	is.NoErr(put(t, s, NewFile("/d/f2", 1, 1)))
}

func testFailedTxn(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	u := &meta.Upload{ID: rpc.NewSessionID(), Path: "/x", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(5, 0)}
	d := meta.Deletion{Node: nodeA, Chunk: rpc.NewChunkID("/x", "s", 0, 0)}
	err := s.Commit(ctx(t), &meta.Txn{Path: "/missing", Delete: true, PutUploads: []*meta.Upload{u}, AddDeletions: []meta.Deletion{d}})
	is.True(errors.Is(err, rpc.NotFound))
	ups, err := s.Uploads(ctx(t))
	is.NoErr(err)
	is.Equal(len(ups), 0) // the failed txn stored no upload
	dels, err := s.Deletions(ctx(t))
	is.NoErr(err)
	is.Equal(len(dels), 0) // nor a deletion
	is.NoErr(put(t, s, NewFile("/p/q", 1, 1)))
	err = s.Commit(ctx(t), &meta.Txn{Path: "/p", Put: NewFile("/p", 1, 1), DeleteUploads: []rpc.SessionID{u.ID}, AddDeletions: []meta.Deletion{d}})
	is.True(errors.Is(err, rpc.Exists))
	dels, _ = s.Deletions(ctx(t))
	is.Equal(len(dels), 0) // a refused put applies nothing either
	err = s.Commit(ctx(t), &meta.Txn{Put: NewFile("/p", 1, 1)})
	is.True(errors.Is(err, rpc.Invalid)) // a put without a path is malformed
}

func testList(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	entries, err := s.List(ctx(t), "/", false, "", 100)
	is.NoErr(err)
	is.Equal(len(entries), 0) // an empty root lists nothing
	for _, p := range []string{"/a", "/b/c", "/b/d/e", "/b/d/f", "/b-x", "/c"} {
		is.NoErr(put(t, s, NewFile(p, 1, 1)))
	}
	names := func(es []meta.Entry) []string {
		var out []string
		for _, e := range es {
			n := string(e.Path)
			if e.IsDir {
				n += "/"
			}
			out = append(out, n)
		}
		return out
	}
	entries, err = s.List(ctx(t), "/", false, "", 100)
	is.NoErr(err)
	is.Equal(names(entries), []string{"/a", "/b-x", "/b/", "/c"})   // one level, directories folded
	is.True(entries[0].File != nil && entries[0].File.Path == "/a") // files carry their metadata
	entries, err = s.List(ctx(t), "/b", false, "", 100)
	is.NoErr(err)
	is.Equal(names(entries), []string{"/b/c", "/b/d/"})
	entries, err = s.List(ctx(t), "/b", true, "", 100)
	is.NoErr(err)
	is.Equal(names(entries), []string{"/b/c", "/b/d/", "/b/d/e", "/b/d/f"})                   // recursive lists every file and directory below
	is.True(entries[1].Dir != nil && entries[1].Dir.Path == "/b/d" && entries[1].File == nil) // directories carry theirs
	entries, err = s.List(ctx(t), "/", true, "", 100)
	is.NoErr(err)
	is.Equal(len(entries), 8)
	entries, err = s.List(ctx(t), "/a", false, "", 100)
	is.NoErr(err)
	is.Equal(names(entries), []string{"/a"}) // a file lists itself
	_, err = s.List(ctx(t), "/nope", false, "", 100)
	is.True(errors.Is(err, rpc.NotFound)) // a missing directory is NotFound
	_, err = s.List(ctx(t), "/b/c/x", false, "", 100)
	is.True(errors.Is(err, rpc.NotFound))
}

func testListPaging(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	var want []string
	for i := 0; i < 25; i++ {
		p := fmt.Sprintf("/p/%02d", i)
		if i%5 == 0 {
			p = fmt.Sprintf("/p/%02d/sub", i) // some directories among the files
		}
		is.NoErr(put(t, s, NewFile(p, 1, 1)))
		want = append(want, fmt.Sprintf("/p/%02d", i))
	}
	for _, pageSize := range []int{1, 2, 3, 7, 100} {
		var got []string
		after := ""
		for range 100 {
			entries, err := s.List(ctx(t), "/p", false, after, pageSize)
			is.NoErr(err)
			is.True(len(entries) <= pageSize) // a page never exceeds its limit
			for _, e := range entries {
				got = append(got, string(e.Path))
			}
			if len(entries) < pageSize {
				break
			}
			after = meta.ListKey(entries[len(entries)-1])
		}
		is.Equal(got, want) // pages neither repeat nor drop an entry
	}
	// A file whose name sorts before a sibling directory's subtree
	// ("/q/b.txt" < "/q/b/x"): every page size lists both exactly once.
	for _, p := range []string{"/q/a", "/q/b.txt", "/q/b/x", "/q/b/y", "/q/b0", "/q/c"} {
		is.NoErr(put(t, s, NewFile(p, 1, 1)))
	}
	for _, pageSize := range []int{1, 2, 3} {
		var got []string
		after := ""
		for range 100 {
			entries, err := s.List(ctx(t), "/q", false, after, pageSize)
			is.NoErr(err)
			for _, e := range entries {
				got = append(got, meta.ListKey(e))
			}
			if len(entries) < pageSize {
				break
			}
			after = meta.ListKey(entries[len(entries)-1])
		}
		is.Equal(got, []string{"/q/a", "/q/b.txt", "/q/b/", "/q/b0", "/q/c"}) // a directory among files with similar names
	}
}

func testUploadsAndDeletions(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	u1 := &meta.Upload{ID: rpc.NewSessionID(), Path: "/u1", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(10, 5)}
	u2 := &meta.Upload{ID: rpc.NewSessionID(), Path: "/u2", ChunkSize: 2 << 20, Replication: 2, Created: time.Unix(11, 0),
		Chunks: []meta.Allocation{{Index: 0, Attempt: 1, ID: rpc.NewChunkID("/u2", "s", 1, 0), Nodes: []rpc.NodeID{nodeA, nodeB}}}}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{PutUploads: []*meta.Upload{u1, u2}}))
	ups, err := s.Uploads(ctx(t))
	is.NoErr(err)
	is.Equal(len(ups), 2)
	byID := map[rpc.SessionID]*meta.Upload{}
	for _, u := range ups {
		byID[u.ID] = u
	}
	got := byID[u2.ID]
	is.True(got != nil && got.Path == "/u2" && got.ChunkSize == 2<<20 && got.Replication == 2 && got.Created.Equal(u2.Created))
	is.Equal(got.Chunks, u2.Chunks) // allocations come back whole
	u1.Chunks = append(u1.Chunks, meta.Allocation{Index: 0, ID: rpc.NewChunkID("/u1", "s", 0, 0), Nodes: []rpc.NodeID{nodeB}})
	is.NoErr(s.Commit(ctx(t), &meta.Txn{PutUploads: []*meta.Upload{u1}, DeleteUploads: []rpc.SessionID{u2.ID}}))
	ups, _ = s.Uploads(ctx(t))
	is.Equal(len(ups), 1)
	is.Equal(ups[0].ID, u1.ID)
	is.Equal(len(ups[0].Chunks), 1) // a put replaces the upload

	d1 := meta.Deletion{Node: nodeA, Chunk: rpc.NewChunkID("/d", "s", 0, 0)}
	d2 := meta.Deletion{Node: nodeB, Chunk: rpc.NewChunkID("/d", "s", 0, 0)}
	d3 := meta.Deletion{Node: nodeA, Chunk: rpc.NewChunkID("/d", "s", 0, 1)}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{AddDeletions: []meta.Deletion{d1, d2, d3, d1}}))
	dels, err := s.Deletions(ctx(t))
	is.NoErr(err)
	is.Equal(len(dels), 3) // deletions are a set
	is.NoErr(s.Commit(ctx(t), &meta.Txn{DoneDeletions: []meta.Deletion{d1, d3, {Node: nodeB, Chunk: d3.Chunk}}}))
	dels, _ = s.Deletions(ctx(t))
	is.Equal(dels, []meta.Deletion{d2}) // done deletions go, unknown ones are ignored
}

func testFilesWalk(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	paths := []string{"/z", "/a/b", "/m", "/a/a"}
	for _, p := range paths {
		is.NoErr(put(t, s, NewFile(p, 2, 1)))
	}
	var got []string
	is.NoErr(s.Files(ctx(t), func(f *meta.File) error {
		got = append(got, string(f.Path))
		is.Equal(len(f.Chunks), 2)
		return nil
	}))
	is.Equal(got, []string{"/a/a", "/a/b", "/m", "/z"}) // every file, in path order
	stop := errors.New("stop")
	n := 0
	err := s.Files(ctx(t), func(*meta.File) error { n++; return stop })
	is.True(errors.Is(err, stop)) // fn's error ends the walk
	is.Equal(n, 1)
}

// testChunksWalk: a store that can walk the files' chunks alone
// (meta.ChunkLoader) gives what Files gives of them, for more files than
// a page of any backend's walk; one that can count files counts them.
func testChunksWalk(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	const n = 1300
	var recs []meta.Record
	for i := range n {
		f := NewFile(fmt.Sprintf("/w/%05d", i), i%4, uint64(1+i%3))
		f.Replication = uint32(1 + i%5)
		recs = append(recs, meta.Record{File: f})
	}
	is.NoErr(s.Init(ctx(t), uuid.NewString(), recs))
	if c, ok := s.(meta.FileCounter); ok {
		got, err := c.CountFiles(ctx(t))
		is.NoErr(err)
		is.True(got >= n && got <= n+1) // every file counted (and perhaps the directory: see meta.FileCounter)
	}
	l, ok := s.(meta.ChunkLoader)
	if !ok {
		t.Skip("the store walks files whole only")
	}
	var want []meta.File
	is.NoErr(s.Files(ctx(t), func(f *meta.File) error { want = append(want, *f); return nil }))
	i := 0
	is.NoErr(l.FileChunks(ctx(t), func(fc *meta.FileChunks) error {
		is.True(i < len(want))                        // no more files than Files gives
		is.Equal(fc.Replication, want[i].Replication) // the replication
		is.Equal(len(fc.Chunks), len(want[i].Chunks)) // and the chunks
		for k, c := range fc.Chunks {
			w := want[i].Chunks[k]
			is.True(c.ID == w.ID && c.Size == w.Size && c.FrameSize == w.FrameSize && bytes.Equal(c.Digest, w.Digest)) // of the same file, in the same order
		}
		i++
		return nil
	}))
	is.Equal(i, n) // every file
	stop := errors.New("stop")
	calls := 0
	err := l.FileChunks(ctx(t), func(*meta.FileChunks) error { calls++; return stop })
	is.True(errors.Is(err, stop)) // fn's error ends the walk
	is.Equal(calls, 1)
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	err = l.FileChunks(cctx, func(*meta.FileChunks) error { return nil })
	is.True(errors.Is(err, context.Canceled)) // so does the end of ctx
}

// fill commits 40 files, an upload, a deletion and two drains (fillRecords
// records in a snapshot).
func sortedNodes(ns ...rpc.NodeID) []rpc.NodeID {
	return slices.Sorted(slices.Values(ns))
}

func testDrains(t *testing.T, s meta.Store, reopen func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	drains := func() []rpc.NodeID {
		t.Helper()
		ns, err := s.Drains(ctx(t))
		is.NoErr(err)
		return ns
	}
	is.Equal(len(drains()), 0) // a new store drains no node
	var n [6]rpc.NodeID
	for i := range n {
		n[i] = rpc.NodeID(uuid.NewString())
	}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{n[0], n[1], n[2], n[0]}}))
	is.Equal(drains(), sortedNodes(n[0], n[1], n[2])) // drains are a set, listed in ID order
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{n[1]}, Undrain: []rpc.NodeID{n[0], n[3]}}))
	is.Equal(drains(), sortedNodes(n[1], n[2])) // undrain clears; redraining or undraining an unknown node is harmless
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{n[4]}, Undrain: []rpc.NodeID{n[4]}}))
	is.Equal(drains(), sortedNodes(n[1], n[2])) // in one txn, undrain follows drain

	f := NewFile("/dr", 1, 1)
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: f.Path, Put: f, Drain: []rpc.NodeID{n[3]}, Undrain: []rpc.NodeID{n[2]}}))
	is.Equal(drains(), sortedNodes(n[1], n[3])) // drains travel with a file change
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: f.Path, Expect: 1, Delete: true, Drain: []rpc.NodeID{n[5]}}))
	is.Equal(drains(), sortedNodes(n[1], n[3], n[5])) // and with a delete
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Undrain: []rpc.NodeID{n[5]}}))

	got := drains()
	got[0] = "changed"
	is.Equal(drains(), sortedNodes(n[1], n[3])) // callers cannot change the store through results

	err := s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{n[0], "not-a-node"}})
	is.True(errors.Is(err, rpc.Invalid)) // a malformed node ID is refused
	err = s.Commit(ctx(t), &meta.Txn{Undrain: []rpc.NodeID{n[1], ""}})
	is.True(errors.Is(err, rpc.Invalid))
	err = s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{rpc.NodeID(strings.ToUpper(string(n[0])))}})
	is.True(errors.Is(err, rpc.Invalid))        // so is a non-canonical one
	is.Equal(drains(), sortedNodes(n[1], n[3])) // with nothing of its txn applied

	if reopen != nil {
		s = reopen()
		is.Equal(drains(), sortedNodes(n[1], n[3])) // drains survive a reopen
	}
}

func testFailedTxnDrains(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(put(t, s, NewFile("/f/g", 1, 1)))
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Drain: []rpc.NodeID{nodeA}}))
	d := meta.Deletion{Node: nodeA, Chunk: rpc.NewChunkID("/x", "s", 0, 0)}
	for _, txn := range []*meta.Txn{
		{Path: "/f/g", Expect: 3, Put: NewFile("/f/g", 1, 4)}, // conflict
		{Path: "/missing", Delete: true},                      // not found
		{Path: "/f", Put: NewFile("/f", 1, 1)},                // a directory
		{Path: "/f/g/h", Put: NewFile("/f/g/h", 1, 1)},        // below a file
	} {
		txn.Drain = []rpc.NodeID{nodeB, nodeC}
		txn.Undrain = []rpc.NodeID{nodeA}
		txn.AddDeletions = []meta.Deletion{d}
		err := s.Commit(ctx(t), txn)
		is.True(err != nil) // the txn fails
		drains, err := s.Drains(ctx(t))
		is.NoErr(err)
		is.Equal(drains, []rpc.NodeID{nodeA}) // and neither drains nor undrains
		dels, err := s.Deletions(ctx(t))
		is.NoErr(err)
		is.Equal(len(dels), 0) // nor applies anything else
	}
	f, err := s.Get(ctx(t), "/f/g")
	is.NoErr(err)
	is.Equal(f.Version, uint64(1))
}

func fill(t *testing.T, s meta.Store) {
	is := is.New(t)
	for i := 0; i < 40; i++ {
		f := NewFile(fmt.Sprintf("/bk/%03d", i), i%4, 1)
		if i%3 == 0 {
			f.Attr = meta.Attr{Owner: "alice", Group: "staff", Mode: 0o640}
		}
		is.NoErr(put(t, s, f))
	}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/bk/000", Expect: 1, Put: NewFile("/bk/000", 2, 2), Drain: []rpc.NodeID{nodeB, nodeC}}))
	u := &meta.Upload{ID: rpc.NewSessionID(), Path: "/bk/up", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(99, 0), Owner: "bob",
		Chunks: []meta.Allocation{{Index: 0, ID: rpc.NewChunkID("/bk/up", "s", 0, 0), Nodes: []rpc.NodeID{nodeA}}}}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{PutUploads: []*meta.Upload{u},
		AddDeletions: []meta.Deletion{{Node: nodeA, Chunk: rpc.NewChunkID("/old", "s", 0, 0)}},
		Drain:        []rpc.NodeID{nodeA}, Undrain: []rpc.NodeID{nodeC}}))
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/bk-empty/sub", Mkdir: &meta.Dir{Path: "/bk-empty/sub", Modified: time.Unix(77, 5),
		Attr: meta.Attr{Owner: "carol", Group: "staff", Mode: 0o1777}}, MkdirParents: true, Parents: meta.Attr{Owner: "carol", Group: "staff", Mode: 0o755}}))
}

// fillRecords is what fill stores: 40 files, 3 directories, an upload, a
// deletion and two drains.
const fillRecords = 47

// Dump renders a store's whole contents as one comparable string.
func Dump(t *testing.T, s meta.Store) string {
	t.Helper()
	var b bytes.Buffer
	err := s.Snapshot(ctx(t), func(r meta.Record) error {
		switch {
		case r.File != nil:
			fmt.Fprintf(&b, "F %s %d %x %d %d %d %d %s %v", r.File.Path, r.File.Size, r.File.SHA256, r.File.ChunkSize, r.File.Replication, r.File.Modified.UnixNano(), r.File.Version, r.File.Session, r.File.Attr)
			for _, c := range r.File.Chunks {
				fmt.Fprintf(&b, " %s:%d:%x:%d", c.ID, c.Size, c.Digest, c.FrameSize)
			}
		case r.Dir != nil:
			fmt.Fprintf(&b, "R %s %d %v", r.Dir.Path, r.Dir.Modified.UnixNano(), r.Dir.Attr)
		case r.Upload != nil:
			fmt.Fprintf(&b, "U %s %s %d %d %d %s %v", r.Upload.ID, r.Upload.Path, r.Upload.ChunkSize, r.Upload.Replication, r.Upload.Created.UnixNano(), r.Upload.Owner, r.Upload.Chunks)
		case r.Deletion != nil:
			fmt.Fprintf(&b, "D %s", meta.DeletionKey(*r.Deletion))
		case r.Drain != nil:
			fmt.Fprintf(&b, "N %s", *r.Drain)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return b.String()
}

func testBackupRestore(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	id := initStore(t, s)
	fill(t, s)
	var buf bytes.Buffer
	n, err := meta.Backup(ctx(t), s, &buf, meta.BackupInfo{ClusterID: s.ClusterID(), Created: time.Now(), Store: "test"})
	is.NoErr(err)
	is.Equal(n, uint64(fillRecords)) // 40 files, 3 directories, an upload, a deletion and two drains
	var dirs []string
	is.NoErr(s.Snapshot(ctx(t), func(r meta.Record) error {
		if r.Dir != nil {
			dirs = append(dirs, string(r.Dir.Path))
		}
		return nil
	}))
	is.Equal(dirs, []string{"/bk-empty", "/bk-empty/sub", "/bk"}) // directories are backed up, in key order ("-" < "/")
	info, recs, err := meta.ReadBackup(bytes.NewReader(buf.Bytes()))
	is.NoErr(err)
	is.Equal(info.ClusterID, id) // the backup names its cluster
	is.Equal(len(recs), fillRecords)
	var drains []rpc.NodeID
	for _, r := range recs {
		if r.Drain != nil {
			drains = append(drains, *r.Drain)
		}
	}
	is.Equal(drains, sortedNodes(nodeA, nodeB)) // drains are backed up

	var files []meta.Record // a backup from before directories were explicit
	for _, r := range recs {
		if r.Dir == nil {
			files = append(files, r)
		}
	}
	old := NewMem()
	is.NoErr(old.Init(ctx(t), info.ClusterID, files))
	e, err := old.Lookup(ctx(t), "/bk")
	is.NoErr(err)
	is.True(e.IsDir) // a restore creates the parents of its files

	into := NewMem()
	is.NoErr(into.Init(ctx(t), info.ClusterID, recs))
	is.Equal(Dump(t, into), Dump(t, s)) // a restore reproduces the store exactly
	err = s.Init(ctx(t), info.ClusterID, recs)
	is.True(errors.Is(err, rpc.Exists)) // restoring over an initialized store is refused

	raw := buf.Bytes()
	for _, cut := range []int{0, 5, len(raw) / 2, len(raw) - 1} {
		_, recs, err := meta.ReadBackup(bytes.NewReader(raw[:cut]))
		is.True(errors.Is(err, rpc.Invalid)) // a truncated backup is refused
		is.Equal(len(recs), 0)               // with nothing to restore
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 0x40
	_, _, err = meta.ReadBackup(bytes.NewReader(flipped))
	is.True(errors.Is(err, rpc.Invalid)) // an altered backup is refused
	_, _, err = meta.ReadBackup(bytes.NewReader(append(bytes.Clone(raw), 'x')))
	is.True(errors.Is(err, rpc.Invalid)) // so is one with trailing data
}

func testInitRestores(t *testing.T, s meta.Store, reopen func() meta.Store) {
	is := is.New(t)
	from := NewMem()
	id := initStore(t, from)
	fill(t, from)
	var recs []meta.Record
	is.NoErr(from.Snapshot(ctx(t), func(r meta.Record) error { recs = append(recs, r); return nil }))
	is.Equal(len(recs), fillRecords)
	is.NoErr(s.Init(ctx(t), id, recs))
	is.Equal(s.ClusterID(), id)
	is.Equal(Dump(t, s), Dump(t, from)) // Init loads every record
	drains, err := s.Drains(ctx(t))
	is.NoErr(err)
	is.Equal(drains, sortedNodes(nodeA, nodeB)) // drains included
	if reopen != nil {
		s = reopen()
		is.Equal(Dump(t, s), Dump(t, from)) // and the restore is durable
	}
}

func testConcurrentCommits(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	const workers, each = 16, 20
	var wg sync.WaitGroup
	var failed atomic.Int32
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := put(t, s, NewFile(fmt.Sprintf("/c/%02d/%03d", w, i), 1, 1)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	is.Equal(failed.Load(), int32(0)) // every concurrent commit succeeds
	entries, err := s.List(ctx(t), "/c", true, "", 1000)
	is.NoErr(err)
	is.Equal(len(entries), workers*each+workers) // and every one is visible, with its directory
}

func testConcurrentConflicts(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(put(t, s, NewFile("/race", 1, 1)))
	for round := uint64(1); round <= 5; round++ {
		var wg sync.WaitGroup
		var won, conflicted atomic.Int32
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.Commit(ctx(t), &meta.Txn{Path: "/race", Expect: round, Put: NewFile("/race", 1+w, round+1)})
				switch {
				case err == nil:
					won.Add(1)
				case errors.Is(err, meta.ErrConflict):
					conflicted.Add(1)
				}
			}()
		}
		wg.Wait()
		is.Equal(won.Load(), int32(1))        // exactly one writer wins each round
		is.Equal(conflicted.Load(), int32(7)) // the others see a conflict
	}
	got, err := s.Get(ctx(t), "/race")
	is.NoErr(err)
	is.Equal(got.Version, uint64(6))
}

func testDurable(t *testing.T, s meta.Store, reopen func() meta.Store) {
	if reopen == nil {
		t.Skip("store is not durable")
	}
	is := is.New(t)
	initStore(t, s)
	fill(t, s)
	before := Dump(t, s)
	s = reopen()
	is.Equal(Dump(t, s), before) // everything committed survives a reopen
	is.NoErr(put(t, s, NewFile("/after", 1, 1)))
	got, err := s.Get(ctx(t), "/bk/000")
	is.NoErr(err)
	is.Equal(got.Version, uint64(2))
}
