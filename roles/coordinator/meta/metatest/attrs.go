package metatest

import (
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

var (
	alice    = meta.Attr{Owner: "alice", Group: "staff", Mode: 0o640}
	aliceDir = meta.Attr{Owner: "alice", Group: "staff", Mode: 0o750}
)

// attrOf returns the attributes of what p names, as stored.
func attrOf(t *testing.T, s meta.Store, p string) meta.Attr {
	t.Helper()
	e, err := s.Lookup(ctx(t), rpc.Path(p))
	if err != nil {
		t.Fatalf("lookup %s: %v", p, err)
	}
	if e.IsDir {
		return e.Dir.Attr
	}
	return e.File.Attr
}

// testAttrs: files and directories keep the attributes they are made
// with; created parents get the txn's Parents; a record without an owner
// reads as the zero Attr, which Entry.Attr gives as the defaults.
func testAttrs(t *testing.T, s meta.Store, _ func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	parents := meta.Attr{Owner: "alice", Group: "staff", Mode: 0o755}

	f := NewFile("/a/b/f", 1, 1)
	f.Attr = alice
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: f.Path, Put: f, Parents: parents}))
	got, err := s.Get(ctx(t), "/a/b/f")
	is.NoErr(err)
	is.Equal(got.Attr, alice)               // a file keeps its attributes
	is.Equal(attrOf(t, s, "/a"), parents)   // a put's created parents get Parents
	is.Equal(attrOf(t, s, "/a/b"), parents) // every one of them
	is.Equal(attrOf(t, s, "/a/b/f"), alice) // Lookup carries them
	list, err := s.List(ctx(t), "/a/b", false, "", 10)
	is.NoErr(err)
	is.Equal(len(list), 1)
	is.Equal(list[0].File.Attr, alice) // and List

	d := &meta.Dir{Path: "/m/n/o", Modified: dirTime, Attr: aliceDir}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: d.Path, Mkdir: d, MkdirParents: true, Parents: parents}))
	is.Equal(attrOf(t, s, "/m/n/o"), aliceDir) // a mkdir's directory gets its own attributes
	is.Equal(attrOf(t, s, "/m/n"), parents)    // its created parents Parents
	is.Equal(attrOf(t, s, "/m"), parents)

	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/a/b", Move: &meta.Move{To: "/x/y/b", Modified: dirTime}, Parents: aliceDir}))
	is.Equal(attrOf(t, s, "/x/y/b"), parents) // a moved directory keeps its attributes
	is.Equal(attrOf(t, s, "/x/y/b/f"), alice) // and what is below it
	is.Equal(attrOf(t, s, "/x"), aliceDir)    // a move's created parents get Parents
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/x/y/b/f", Expect: 1, Move: &meta.Move{To: "/g", Modified: dirTime}}))
	is.Equal(attrOf(t, s, "/g"), alice) // a moved file keeps its attributes

	old := NewFile("/old/f", 1, 1) // as written before permissions existed
	is.NoErr(put(t, s, old))
	e, err := s.Lookup(ctx(t), "/old/f")
	is.NoErr(err)
	is.Equal(e.File.Attr, meta.Attr{})          // stored without an owner
	is.Equal(e.Attr(), meta.DefaultAttr(false)) // reads as the default
	e, err = s.Lookup(ctx(t), "/old")
	is.NoErr(err)
	is.Equal(e.Attr(), meta.Attr{Owner: meta.DefaultOwner, Group: meta.DefaultGroup, Mode: meta.DefaultDirMode}) // a directory too
	e, err = s.Lookup(ctx(t), "/")
	is.NoErr(err)
	is.Equal(e.Attr(), meta.DefaultAttr(true)) // and the root

	bad := NewFile("/bad", 1, 1)
	bad.Attr = meta.Attr{Owner: "alice", Mode: 0o20000}
	is.Equal(rpc.KindOf(put(t, s, bad)), rpc.Invalid) // a mode beyond 0o1777 is refused
	bad.Attr = meta.Attr{Owner: "al:ice", Mode: 0o644}
	is.Equal(rpc.KindOf(put(t, s, bad)), rpc.Invalid) // so is an owner with a colon
}

// testSetAttr: SetAttr replaces the attributes of a file (its version,
// time and chunks stay) or a directory, durably; it refuses the root, a
// missing path and an expected version.
func testSetAttr(t *testing.T, s meta.Store, reopen func() meta.Store) {
	is := is.New(t)
	initStore(t, s)
	f := NewFile("/d/f", 2, 1)
	is.NoErr(put(t, s, f))
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/d/f", SetAttr: &alice}))
	got, err := s.Get(ctx(t), "/d/f")
	is.NoErr(err)
	is.Equal(got.Attr, alice) // the file's attributes changed
	got.Attr = meta.Attr{}
	is.True(sameFile(got, f)) // and nothing else: version, time, chunks

	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/d", SetAttr: &aliceDir}))
	is.Equal(attrOf(t, s, "/d"), aliceDir) // a directory's too
	e, err := s.Lookup(ctx(t), "/d")
	is.NoErr(err)
	is.True(e.Dir.Modified.Equal(time.Unix(1700000000, 123456789))) // its time stays

	err = s.Commit(ctx(t), &meta.Txn{Path: "/nope", SetAttr: &alice})
	is.Equal(rpc.KindOf(err), rpc.NotFound) // nothing there
	err = s.Commit(ctx(t), &meta.Txn{Path: "/", SetAttr: &aliceDir})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // the root's are fixed
	err = s.Commit(ctx(t), &meta.Txn{Path: "/d/f", Expect: 1, SetAttr: &alice})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // no version is expected
	err = s.Commit(ctx(t), &meta.Txn{Path: "/d/f", SetAttr: &meta.Attr{Owner: "alice", Mode: 0o7777}})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // setuid and setgid are not stored
	err = s.Commit(ctx(t), &meta.Txn{Path: "/d/f", SetAttr: &alice, Delete: true})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // one change per txn

	// A failed SetAttr applies nothing else of its txn.
	err = s.Commit(ctx(t), &meta.Txn{Path: "/nope", SetAttr: &alice, Drain: []rpc.NodeID{nodeA}})
	is.True(err != nil)
	drains, err := s.Drains(ctx(t))
	is.NoErr(err)
	is.Equal(len(drains), 0) // the drain was not applied

	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/d/f", SetAttr: &meta.Attr{}}))
	is.Equal(attrOf(t, s, "/d/f"), meta.Attr{}) // back to no owner: the defaults
	if reopen == nil {
		return
	}
	is.NoErr(s.Commit(ctx(t), &meta.Txn{Path: "/d/f", SetAttr: &alice}))
	s = reopen()
	is.Equal(attrOf(t, s, "/d/f"), alice)  // durable
	is.Equal(attrOf(t, s, "/d"), aliceDir) // both
}
