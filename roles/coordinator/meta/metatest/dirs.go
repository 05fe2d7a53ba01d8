package metatest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// The suite's tests of explicit directories, Mkdir, Rmdir and Move.

var dirTime = time.Unix(1700000500, 42)

func mkdir(t *testing.T, s meta.Store, p string, parents bool) error {
	t.Helper()
	return s.Commit(ctx(t), &meta.Txn{Path: rpc.Path(p), Mkdir: &meta.Dir{Path: rpc.Path(p), Modified: dirTime}, MkdirParents: parents})
}

func rmdir(t *testing.T, s meta.Store, p string) error {
	t.Helper()
	return s.Commit(ctx(t), &meta.Txn{Path: rpc.Path(p), Rmdir: true})
}

func move(t *testing.T, s meta.Store, from string, expect uint64, to string, replace uint64) error {
	t.Helper()
	return s.Commit(ctx(t), &meta.Txn{Path: rpc.Path(from), Expect: expect, Move: &meta.Move{To: rpc.Path(to), Replace: replace, Modified: dirTime}})
}

// kind returns what p names: "file", "dir" or "none".
func kind(t *testing.T, s meta.Store, p string) string {
	t.Helper()
	e, err := s.Lookup(ctx(t), rpc.Path(p))
	switch {
	case errors.Is(err, rpc.NotFound):
		return "none"
	case err != nil:
		t.Fatalf("lookup %s: %v", p, err)
	case e.IsDir:
		if e.Dir == nil || e.File != nil || e.Path != rpc.Path(p) || e.Dir.Path != rpc.Path(p) {
			t.Fatalf("lookup %s: malformed directory entry %+v", p, e)
		}
		return "dir"
	case e.File == nil || e.File.Path != rpc.Path(p) || e.Path != rpc.Path(p):
		t.Fatalf("lookup %s: malformed file entry %+v", p, e)
	}
	return "file"
}

// walked returns the paths of a Walk of p, a directory's with a slash.
func walked(t *testing.T, s meta.Store, p string) []string {
	t.Helper()
	es, err := s.Walk(ctx(t), rpc.Path(p))
	if err != nil {
		t.Fatalf("walk %s: %v", p, err)
	}
	out := []string{}
	for _, e := range es {
		if e.IsDir != (e.Dir != nil) || e.IsDir == (e.File != nil) {
			t.Fatalf("walk %s: malformed entry %+v", p, e)
		}
		out = append(out, meta.ListKey(e))
	}
	return out
}

func testWalk(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	f := NewFile("/w/x/f.txt", 2, 1)
	is.NoErr(put(t, s, f))
	is.NoErr(mkdir(t, s, "/w/y", false))
	is.Equal(walked(t, s, "/"), []string{"//"})                                              // the root, which is never stored
	is.Equal(walked(t, s, "/w/x/f.txt"), []string{"//", "/w/", "/w/x/", "/w/x/f.txt"})       // down to the file
	is.Equal(walked(t, s, "/w/y"), []string{"//", "/w/", "/w/y/"})                           // down to a directory
	is.Equal(walked(t, s, "/w/x/nope"), []string{"//", "/w/", "/w/x/"})                      // up to what is missing
	is.Equal(walked(t, s, "/w/nope/deeper/f"), []string{"//", "/w/"})                        // a missing middle ends it
	is.Equal(walked(t, s, "/w/x/f.txt/below"), []string{"//", "/w/", "/w/x/", "/w/x/f.txt"}) // and a file above
	es, err := s.Walk(ctx(t), "/w/x/f.txt")
	is.NoErr(err)
	is.True(sameFile(es[3].File, f)) // the file whole, as Get reads it
	deep := ""
	for i := range 70 { // deeper than one etcd transaction reads
		deep += fmt.Sprintf("/d%d", i)
	}
	is.NoErr(put(t, s, NewFile(deep+"/f", 1, 1)))
	got := walked(t, s, deep+"/f")
	is.Equal(len(got), 72)
	is.Equal(got[70], deep+"/")
	is.Equal(got[71], deep+"/f")
}

// keys lists the ListKey of everything below dir, recursively.
func keys(t *testing.T, s meta.Store, dir string) []string {
	t.Helper()
	es, err := s.List(ctx(t), rpc.Path(dir), true, "", 10000)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	var out []string
	for _, e := range es {
		out = append(out, meta.ListKey(e))
	}
	return out
}

func testMkdir(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(mkdir(t, s, "/m", false))
	e, err := s.Lookup(ctx(t), "/m")
	is.NoErr(err)
	is.True(e.IsDir && e.Dir.Modified.Equal(dirTime)) // mkdir makes a directory with its time
	err = mkdir(t, s, "/m", false)
	is.True(errors.Is(err, rpc.Exists)) // an existing directory
	is.NoErr(mkdir(t, s, "/m", true))   // is fine with parents
	err = mkdir(t, s, "/x/y/z", false)
	is.True(errors.Is(err, rpc.NotFound)) // a missing parent
	is.Equal(kind(t, s, "/x"), "none")    // and nothing made
	is.NoErr(mkdir(t, s, "/x/y/z", true))
	is.Equal(keys(t, s, "/x"), []string{"/x/y/", "/x/y/z/"}) // parents are made
	is.NoErr(put(t, s, NewFile("/m/f", 1, 1)))
	err = mkdir(t, s, "/m/f", false)
	is.True(errors.Is(err, rpc.Exists)) // a file is there
	err = mkdir(t, s, "/m/f", true)
	is.True(errors.Is(err, rpc.Exists)) // even with parents
	err = mkdir(t, s, "/m/f/g", true)
	is.True(errors.Is(err, rpc.Exists)) // an ancestor is a file
	err = mkdir(t, s, "/m/f/g/h", false)
	is.True(errors.Is(err, rpc.Exists) || errors.Is(err, rpc.NotFound)) // no directory below a file
	is.Equal(kind(t, s, "/m/f/g"), "none")
	err = mkdir(t, s, "/", false)
	is.True(errors.Is(err, rpc.Exists)) // the root exists
	is.NoErr(mkdir(t, s, "/", true))
	e, err = s.Lookup(ctx(t), "/")
	is.NoErr(err)
	is.True(e.IsDir && e.Path == "/" && e.Dir != nil) // the root is a directory
	err = s.Commit(ctx(t), &meta.Txn{Path: "/n", Mkdir: &meta.Dir{Path: "/n"}})
	is.True(errors.Is(err, rpc.Invalid)) // a directory needs a time
	err = s.Commit(ctx(t), &meta.Txn{Path: "/n", Mkdir: &meta.Dir{Path: "/o", Modified: dirTime}})
	is.True(errors.Is(err, rpc.Invalid)) // and its txn's path
	err = s.Commit(ctx(t), &meta.Txn{Path: "/n", Mkdir: &meta.Dir{Path: "/n", Modified: dirTime}, Delete: true})
	is.True(errors.Is(err, rpc.Invalid)) // one change per txn
	is.Equal(kind(t, s, "/n"), "none")
}

func testRmdir(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	is.NoErr(mkdir(t, s, "/r/empty", true))
	is.NoErr(put(t, s, NewFile("/r/full/f", 1, 1)))
	is.NoErr(rmdir(t, s, "/r/empty"))
	is.Equal(kind(t, s, "/r/empty"), "none") // an empty directory goes
	err := rmdir(t, s, "/r/full")
	is.True(errors.Is(err, meta.ErrNotEmpty)) // a directory with a file is not empty
	is.Equal(rpc.KindOf(err), rpc.NotEmpty)   // of kind NotEmpty
	is.Equal(kind(t, s, "/r/full/f"), "file") // and stays whole
	err = rmdir(t, s, "/r")
	is.True(errors.Is(err, meta.ErrNotEmpty)) // nor one with a directory
	err = rmdir(t, s, "/r/missing")
	is.True(errors.Is(err, rpc.NotFound)) // a missing directory
	err = rmdir(t, s, "/r/full/f")
	is.True(errors.Is(err, rpc.Invalid)) // a file is not a directory
	err = rmdir(t, s, "/")
	is.True(errors.Is(err, rpc.Invalid)) // nor is the root removable
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/r/full/f", Expect: 1, Delete: true}))
	is.NoErr(rmdir(t, s, "/r/full"))
	is.NoErr(rmdir(t, s, "/r"))
	is.Equal(keys(t, s, "/"), []string(nil)) // nothing left
}

func testExplicitDirs(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	f := NewFile("/e/f/g.txt", 1, 1)
	is.NoErr(put(t, s, f))
	for _, d := range []string{"/e", "/e/f"} {
		e, err := s.Lookup(ctx(t), rpc.Path(d))
		is.NoErr(err)
		is.True(e.IsDir)                          // a put makes the parents
		is.True(e.Dir.Modified.Equal(f.Modified)) // with the file's time
	}
	e, err := s.Lookup(ctx(t), "/e/f/g.txt")
	is.NoErr(err)
	is.True(!e.IsDir && sameFile(e.File, f)) // a file looks up as itself
	_, err = s.Lookup(ctx(t), "/e/nope")
	is.True(errors.Is(err, rpc.NotFound))
	_, err = s.Get(ctx(t), "/e/f")
	is.True(errors.Is(err, rpc.NotFound)) // a directory is not a file
	is.NoErr(put(t, s, NewFile("/e/f/h.txt", 1, 1)))
	is.Equal(keys(t, s, "/"), []string{"/e/", "/e/f/", "/e/f/g.txt", "/e/f/h.txt"})
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/e/f/g.txt", Expect: 1, Delete: true}))
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/e/f/h.txt", Expect: 1, Delete: true}))
	is.Equal(kind(t, s, "/e/f"), "dir") // the last file's removal keeps the directory
	es, err := s.List(ctx(t), "/e/f", false, "", 10)
	is.NoErr(err)
	is.Equal(len(es), 0) // an empty directory lists nothing
	es, err = s.List(ctx(t), "/e", false, "", 10)
	is.NoErr(err)
	is.Equal(len(es), 1)
	is.True(es[0].IsDir && es[0].Path == "/e/f" && es[0].Dir != nil) // and is listed
	err = put(t, s, NewFile("/e", 1, 1))
	is.True(errors.Is(err, rpc.Exists)) // an empty directory is still not a file
	files := 0
	is.NoErr(s.Files(ctx(t), func(*meta.File) error { files++; return nil }))
	is.Equal(files, 0) // directories are not files
}

func testListDirsPaging(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	for _, p := range []string{"/l/a", "/l/b.txt", "/l/b/x", "/l/b/y/z", "/l/b0", "/l/c"} {
		is.NoErr(put(t, s, NewFile(p, 1, 1)))
	}
	is.NoErr(mkdir(t, s, "/l/b/empty", false))
	is.NoErr(mkdir(t, s, "/l/d", false))
	for _, tc := range []struct {
		recursive bool
		want      []string
	}{
		{false, []string{"/l/a", "/l/b.txt", "/l/b/", "/l/b0", "/l/c", "/l/d/"}},
		{true, []string{"/l/a", "/l/b.txt", "/l/b/", "/l/b/empty/", "/l/b/x", "/l/b/y/", "/l/b/y/z", "/l/b0", "/l/c", "/l/d/"}},
	} {
		for _, pageSize := range []int{1, 2, 3, 100} {
			var got []string
			after := ""
			for range 100 {
				es, err := s.List(ctx(t), "/l", tc.recursive, after, pageSize)
				is.NoErr(err)
				is.True(len(es) <= pageSize)
				for _, e := range es {
					got = append(got, meta.ListKey(e))
				}
				if len(es) < pageSize {
					break
				}
				after = meta.ListKey(es[len(es)-1])
			}
			is.Equal(got, tc.want) // pages across directories neither repeat nor drop an entry
		}
	}
}

func testMoveFile(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	f := NewFile("/mv/a", 2, 1)
	is.NoErr(put(t, s, f))
	is.NoErr(put(t, s, NewFile("/mv/a", 3, 2)))
	is.NoErr(move(t, s, "/mv/a", 2, "/mv/b", 0))
	_, err := s.Get(ctx(t), "/mv/a")
	is.True(errors.Is(err, rpc.NotFound)) // the old path is gone
	got, err := s.Get(ctx(t), "/mv/b")
	is.NoErr(err)
	want := NewFile("/mv/a", 3, 2)
	want.Path = "/mv/b"
	is.True(sameFile(got, want)) // the file moved with its version, chunks and session

	is.NoErr(put(t, s, NewFile("/mv/c", 1, 1)))
	err = move(t, s, "/mv/b", 2, "/mv/c", 0)
	is.True(errors.Is(err, rpc.Exists)) // an existing target needs Replace
	err = move(t, s, "/mv/b", 2, "/mv/c", 5)
	is.True(errors.Is(err, meta.ErrConflict)) // at its version
	err = move(t, s, "/mv/b", 1, "/mv/c", 1)
	is.True(errors.Is(err, meta.ErrConflict)) // and the source at its version
	is.NoErr(move(t, s, "/mv/b", 2, "/mv/c", 1))
	got, err = s.Get(ctx(t), "/mv/c")
	is.NoErr(err)
	is.Equal(got.Version, uint64(2)) // the moved file replaced the target
	is.Equal(kind(t, s, "/mv/b"), "none")

	is.NoErr(move(t, s, "/mv/c", 2, "/new/deep/c", 0))
	is.Equal(keys(t, s, "/new"), []string{"/new/deep/", "/new/deep/c"}) // missing parents are made
	e, _ := s.Lookup(ctx(t), "/new")
	is.True(e.Dir.Modified.Equal(dirTime)) // with the move's time
	is.Equal(kind(t, s, "/mv"), "dir")     // the old parent stays

	is.NoErr(mkdir(t, s, "/mv/dir", false))
	err = move(t, s, "/new/deep/c", 2, "/mv/dir", 0)
	is.True(errors.Is(err, rpc.Exists)) // a file does not replace a directory
	err = move(t, s, "/new/deep/c", 2, "/mv/dir", 1)
	is.True(errors.Is(err, rpc.Exists)) // whatever Replace says
	is.NoErr(put(t, s, NewFile("/mv/file", 1, 1)))
	err = move(t, s, "/new/deep/c", 2, "/mv/file/below", 0)
	is.True(errors.Is(err, rpc.Exists)) // nothing moves below a file
	err = move(t, s, "/mv/missing", 0, "/mv/other", 0)
	is.True(errors.Is(err, rpc.NotFound))                    // a missing source
	is.NoErr(move(t, s, "/new/deep/c", 2, "/new/deep/c", 0)) // onto itself: nothing changes
	is.Equal(kind(t, s, "/new/deep/c"), "file")
	err = move(t, s, "/new/deep/c", 2, "/", 0)
	is.True(errors.Is(err, rpc.Invalid)) // onto the root
}

// tree puts a small tree below root and returns its keys below root.
func tree(t *testing.T, s meta.Store, root string) []string {
	is := is.New(t)
	for _, p := range []string{"a.txt", "sub/b.txt", "sub/deeper/c.txt", "z"} {
		is.NoErr(put(t, s, NewFile(root+"/"+p, 2, 1)))
	}
	is.NoErr(mkdir(t, s, root+"/sub/empty", false))
	return []string{"a.txt", "sub/", "sub/b.txt", "sub/deeper/", "sub/deeper/c.txt", "sub/empty/", "z"}
}

func testMoveDir(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	rel := tree(t, s, "/src/d")
	is.NoErr(put(t, s, NewFile("/src/d0", 1, 1))) // a sibling sharing the prefix
	is.NoErr(put(t, s, NewFile("/src/d.txt", 1, 1)))
	is.NoErr(move(t, s, "/src/d", 0, "/dst/x/d2", 0))
	var want []string
	for _, r := range rel {
		want = append(want, "/dst/x/d2/"+r)
	}
	is.Equal(keys(t, s, "/dst/x/d2"), want)                         // everything below moved
	is.Equal(kind(t, s, "/src/d"), "none")                          // the old path is gone
	is.Equal(kind(t, s, "/dst/x"), "dir")                           // the target's parents are made
	is.Equal(keys(t, s, "/src"), []string{"/src/d.txt", "/src/d0"}) // siblings stay
	got, err := s.Get(ctx(t), "/dst/x/d2/sub/deeper/c.txt")
	is.NoErr(err)
	want1 := NewFile("/src/d/sub/deeper/c.txt", 2, 1)
	want1.Path = "/dst/x/d2/sub/deeper/c.txt"
	is.True(sameFile(got, want1)) // a moved file keeps its version, chunks and session
	var walked []string
	is.NoErr(s.Files(ctx(t), func(f *meta.File) error { walked = append(walked, string(f.Path)); return nil }))
	is.Equal(len(walked), 6) // the walk sees every file once, at its new path
	_, err = s.Get(ctx(t), "/src/d/sub/b.txt")
	is.True(errors.Is(err, rpc.NotFound))

	err = move(t, s, "/dst/x", 0, "/dst/x/d2/in", 0)
	is.True(errors.Is(err, rpc.Invalid)) // into itself
	err = move(t, s, "/dst/x", 0, "/dst/x", 0)
	is.NoErr(err) // onto itself: nothing changes
	err = move(t, s, "/dst/x", 0, "/src/d0", 1)
	is.True(errors.Is(err, rpc.Exists)) // a directory never replaces a file
	is.NoErr(mkdir(t, s, "/other", false))
	err = move(t, s, "/dst/x", 0, "/other", 0)
	is.True(errors.Is(err, rpc.Exists)) // nor a directory
	err = move(t, s, "/dst/x", 3, "/moved", 0)
	is.True(errors.Is(err, meta.ErrConflict)) // a directory has no version
	err = move(t, s, "/", 0, "/moved", 0)
	is.True(errors.Is(err, rpc.Invalid)) // the root does not move
	is.NoErr(move(t, s, "/dst", 0, "/dst0", 0))
	is.Equal(len(keys(t, s, "/dst0")), len(rel)+2) // a move to a name sharing the prefix
	is.Equal(kind(t, s, "/dst"), "none")
}

func testMoveFailsCleanly(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	tree(t, s, "/k")
	is.NoErr(put(t, s, NewFile("/f", 1, 1)))
	is.NoErr(mkdir(t, s, "/taken", false))
	before := Dump(t, s)
	d := meta.Deletion{Node: nodeA, Chunk: rpc.NewChunkID("/x", "s", 0, 0)}
	for _, txn := range []*meta.Txn{
		{Path: "/k", Move: &meta.Move{To: "/taken", Modified: dirTime}},              // onto a directory
		{Path: "/k", Move: &meta.Move{To: "/f", Replace: 1, Modified: dirTime}},      // onto a file
		{Path: "/k", Move: &meta.Move{To: "/k/sub/x", Modified: dirTime}},            // into itself
		{Path: "/k", Move: &meta.Move{To: "/f/below", Modified: dirTime}},            // below a file
		{Path: "/k/z", Expect: 2, Move: &meta.Move{To: "/new/z", Modified: dirTime}}, // a conflict
		{Path: "/nope", Move: &meta.Move{To: "/new/z", Modified: dirTime}},           // missing
		{Path: "/k/z", Expect: 1, Move: &meta.Move{To: "/new/z"}},                    // no time
		{Path: "/k", Rmdir: true}, // not empty
		{Path: "/k/a.txt/x", Mkdir: &meta.Dir{Path: "/k/a.txt/x", Modified: dirTime}, MkdirParents: true},
	} {
		txn.AddDeletions = []meta.Deletion{d}
		txn.Drain = []rpc.NodeID{nodeB}
		err := s.Commit(ctx(t), txn)
		is.True(err != nil)                  // the txn fails
		is.Equal(Dump(t, s), before)         // and changes nothing
		is.Equal(kind(t, s, "/new"), "none") // not even the target's parents
	}
}

func testDirsDurable(t *testing.T, s meta.Store, reopen func() meta.Store) {
	if reopen == nil {
		t.Skip("store is not durable")
	}
	is := is.New(t)
	initStore(t, s)
	tree(t, s, "/du")
	is.NoErr(mkdir(t, s, "/empty/one", true))
	is.NoErr(move(t, s, "/du", 0, "/moved/du", 0))
	is.NoErr(move(t, s, "/moved/du/z", 1, "/z", 0))
	before := Dump(t, s)
	s = reopen()
	is.Equal(Dump(t, s), before) // directories, moves and mkdirs survive a reopen
	is.Equal(kind(t, s, "/empty/one"), "dir")
	is.Equal(kind(t, s, "/du"), "none")
	is.Equal(kind(t, s, "/moved/du/sub/deeper/c.txt"), "file")
	is.Equal(fmt.Sprint(keys(t, s, "/empty")), "[/empty/one/]")
}

// testConcurrentDirs runs puts, deletes, mkdirs, rmdirs and moves of a
// small tree from several goroutines at once, then checks that the store
// is a tree: every file and directory has its parent directory, and the
// walk, the listing and Lookup agree.
func testConcurrentDirs(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	names := []string{"/t/a", "/t/a/b", "/t/a/b/f", "/t/c", "/t/c/f", "/t/a/g", "/t/d"}
	const workers, each = 6, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := names[(w*7+i*3)%len(names)]
				q := names[(w*5+i*11+1)%len(names)]
				var txn *meta.Txn
				switch (w + i) % 5 {
				case 0:
					e, err := s.Lookup(ctx(t), rpc.Path(p))
					v := uint64(0)
					if err == nil && !e.IsDir {
						v = e.File.Version
					}
					txn = &meta.Txn{Path: rpc.Path(p), Expect: v, Put: NewFile(p, 1, v+1)}
				case 1:
					e, err := s.Lookup(ctx(t), rpc.Path(p))
					if err != nil || e.IsDir {
						continue
					}
					txn = &meta.Txn{Path: rpc.Path(p), Expect: e.File.Version, Delete: true}
				case 2:
					txn = &meta.Txn{Path: rpc.Path(p), Mkdir: &meta.Dir{Path: rpc.Path(p), Modified: dirTime}, MkdirParents: i%2 == 0}
				case 3:
					txn = &meta.Txn{Path: rpc.Path(p), Rmdir: true}
				default:
					e, err := s.Lookup(ctx(t), rpc.Path(p))
					if err != nil {
						continue
					}
					v := uint64(0)
					if !e.IsDir {
						v = e.File.Version
					}
					txn = &meta.Txn{Path: rpc.Path(p), Expect: v, Move: &meta.Move{To: rpc.Path(q), Modified: dirTime}}
				}
				err := s.Commit(ctx(t), txn)
				switch k := rpc.KindOf(err); {
				case err == nil, errors.Is(err, meta.ErrConflict), k == rpc.NotFound, k == rpc.Exists, k == rpc.Invalid, k == rpc.NotEmpty:
				default:
					t.Errorf("commit %+v: unexpected error %v", txn, err)
				}
			}
		}()
	}
	wg.Wait()
	all := keys(t, s, "/")
	set := map[string]bool{}
	for _, k := range all {
		set[k] = true
	}
	for _, k := range all {
		p := rpc.Path(strings.TrimSuffix(k, "/"))
		if d := p.Dir(); d != "/" {
			is.True(set[meta.DirKey(d)]) // every entry's parent is a directory
		}
		if strings.HasSuffix(k, "/") {
			is.True(!set[string(p)]) // no path is both a file and a directory
			is.Equal(kind(t, s, string(p)), "dir")
		} else {
			is.Equal(kind(t, s, string(p)), "file")
		}
	}
	files := 0
	is.NoErr(s.Files(ctx(t), func(f *meta.File) error {
		is.True(set[string(f.Path)]) // the walk and the listing agree
		files++
		return nil
	}))
	dirs := 0
	for _, k := range all {
		if strings.HasSuffix(k, "/") {
			dirs++
		}
	}
	is.Equal(files+dirs, len(all))
}
