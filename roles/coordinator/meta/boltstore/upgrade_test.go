package boltstore

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// TestUpgradeV1 opens a copy of testdata/v1.db, a store written by the
// release before directories were explicit (see testdata/README.md): the
// open creates the directories of its files and raises the format, keeps
// every record, and a second open changes nothing.
func TestUpgradeV1(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	copyFile(t, filepath.Join("testdata", "v1.db"), path)
	format, _ := formatOf(t, path)
	is.Equal(format, uint64(2)) // the fixture is a store of format 2

	s := open(t, path)
	is.Equal(s.ClusterID(), "6f1c1c3e-2d1b-4e8a-9a57-0c3a1d6b2f10") // the cluster stays
	for _, d := range []rpc.Path{"/a", "/a/b", "/x", "/x/y", "/x/y/z"} {
		e, err := s.Lookup(ctx, d)
		is.NoErr(err)
		is.True(e.IsDir) // the parents of the files are directories now
	}
	// /gone's only file was deleted before the upgrade: an implied
	// directory that had vanished stays gone.
	_, err := s.Lookup(ctx, "/gone")
	is.True(errors.Is(err, rpc.NotFound))
	e, _ := s.Lookup(ctx, "/a/b")
	is.True(e.Dir.Modified.Equal(metatest.NewFile("/a/b/c.txt", 2, 1).Modified)) // with the time of a file in it
	for _, f := range []*meta.File{metatest.NewFile("/a/b/c.txt", 2, 1), metatest.NewFile("/a/d.txt", 1, 2),
		metatest.NewFile("/top.bin", 2, 1), metatest.NewFile("/x/y/z/deep.dat", 2, 1)} {
		f.Metadata = nil // the fixture was written before files had metadata
		got, err := s.Get(ctx, f.Path)
		is.NoErr(err)
		want, _ := meta.MarshalFile(f)
		have, _ := meta.MarshalFile(got)
		is.True(bytes.Equal(have, want)) // every file is intact
	}
	var keys []string
	for after := ""; ; {
		es, err := s.List(ctx, "/", true, after, 3)
		is.NoErr(err)
		for _, e := range es {
			keys = append(keys, meta.ListKey(e))
		}
		if len(es) < 3 {
			break
		}
		after = meta.ListKey(es[len(es)-1])
	}
	is.Equal(keys, []string{"/a/", "/a/b/", "/a/b/c.txt", "/a/d.txt", "/top.bin", "/x/", "/x/y/", "/x/y/z/", "/x/y/z/deep.dat"}) // the whole tree lists
	n := 0
	is.NoErr(s.Files(ctx, func(*meta.File) error { n++; return nil }))
	is.Equal(n, 4) // the walk sees the files alone
	ups, err := s.Uploads(ctx)
	is.NoErr(err)
	is.Equal(len(ups), 1)
	is.Equal(ups[0].Path, rpc.Path("/a/b/pending.bin")) // the upload is there
	dels, err := s.Deletions(ctx)
	is.NoErr(err)
	is.Equal(len(dels), 2) // the deletions
	drains, err := s.Drains(ctx)
	is.NoErr(err)
	is.Equal(drains, []rpc.NodeID{"5e2d8c1b-0a9f-4e3d-b7c6-1f2e3d4c5b6a"}) // and the drain
	dump := metatest.Dump(t, s)
	is.NoErr(s.Close())
	format, _ = formatOf(t, path)
	is.Equal(format, formatVersion) // the format is raised

	s = open(t, path)
	txid := writeTxns(t, s)
	is.Equal(metatest.Dump(t, s), dump) // a second open finds the same store
	is.NoErr(s.Close())
	s = open(t, path)
	is.Equal(writeTxns(t, s), txid) // and writes nothing
	is.NoErr(s.Close())
}

// TestUpgradeResumes opens a copy of testdata/v1.db as one whose upgrade
// stopped part-way: some directories exist, the format is still 2. It
// upgrades one file per write transaction.
func TestUpgradeResumes(t *testing.T) {
	is := is.New(t)
	defer func(n int) { upgradeBatch = n }(upgradeBatch)
	upgradeBatch = 1
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	copyFile(t, filepath.Join("testdata", "v1.db"), path)
	early := time.Unix(5, 0)
	editBolt(t, path, func(tx *bolt.Tx) error {
		return putDirs(tx.Bucket(bucketFiles), nil, []rpc.Path{"/a", "/x/y"}, early)
	})
	before := txID(t, path)
	s := open(t, path)
	defer s.Close()
	is.Equal(writeTxns(t, s)-before, 1+4) // the buckets, then one transaction per file, the last raising the format
	for _, d := range []rpc.Path{"/a", "/a/b", "/x", "/x/y", "/x/y/z"} {
		e, err := s.Lookup(ctx, d)
		is.NoErr(err)
		is.True(e.IsDir) // every directory is made
	}
	e, _ := s.Lookup(ctx, "/a")
	is.True(e.Dir.Modified.Equal(early)) // and one made before is kept
}

// txID returns the ID of the last write transaction of the closed store
// file at path.
func txID(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id := 0
	if err := db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestMoveBound: a Move of a directory rewrites at most maxMove entries
// (MaxMoveEntries, lowered here) and refuses more, changing nothing.
func TestMoveBound(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "meta.db"))
	defer s.Close()
	is.NoErr(s.Init(ctx, "6f1c1c3e-2d1b-4e8a-9a57-0c3a1d6b2f10", nil))
	s.maxMove = 4
	for _, p := range []rpc.Path{"/d/a", "/d/b", "/d/sub/c"} { // with /d and /d/sub: 5 entries
		f := metatest.NewFile(string(p), 1, 1)
		is.NoErr(s.Commit(ctx, &meta.Txn{Path: p, Put: f}))
	}
	mv := &meta.Txn{Path: "/d", Move: &meta.Move{To: "/e", Modified: time.Unix(9, 0)}}
	before := metatest.Dump(t, s)
	err := s.Commit(ctx, mv)
	is.True(errors.Is(err, rpc.ResourceExhausted)) // one more than a move may rewrite
	is.True(strings.Contains(err.Error(), "more than 4 entries"))
	is.Equal(metatest.Dump(t, s), before) // and nothing moved
	is.NoErr(s.Commit(ctx, &meta.Txn{Path: "/d/a", Expect: 1, Delete: true}))
	is.NoErr(s.Commit(ctx, mv)) // at the bound it moves
	e, err := s.Lookup(ctx, "/e/sub/c")
	is.NoErr(err)
	is.True(!e.IsDir)
}

// TestUpgradeDefaultAttrs opens a store written before files and
// directories had owners: nothing is rewritten, and every entry reads
// with the default owner, group and mode.
func TestUpgradeDefaultAttrs(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	copyFile(t, filepath.Join("testdata", "v1.db"), path)
	s := open(t, path)
	for _, p := range []rpc.Path{"/", "/a", "/a/b", "/a/b/c.txt", "/top.bin"} {
		e, err := s.Lookup(ctx, p)
		is.NoErr(err)
		a := e.Attr()
		is.Equal(a.Owner, meta.DefaultOwner) // the default owner
		is.Equal(a.Group, meta.DefaultGroup) // and group
		if e.IsDir {
			is.Equal(a.Mode, uint32(0o755)) // a directory's mode
		} else {
			is.Equal(a.Mode, uint32(0o644)) // a file's
		}
	}
}
