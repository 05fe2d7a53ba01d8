package etcdstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// writeV2 writes a prefix as a dfs of layout 2 left it: the files' keys
// and no directory keys.
func writeV2(t *testing.T, s *Store, paths []string) {
	t.Helper()
	ctx := testCtx(t)
	for _, p := range paths {
		v, err := meta.MarshalFile(metatest.NewFile(p, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.cli.Put(ctx, s.fileKey(rpc.Path(p)), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"cluster": uuid.NewString(), "format": formatNoDirs} {
		if _, err := s.cli.Put(ctx, s.metaKey(k), v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpgradeLayout2(t *testing.T) {
	eps := etcdtest.Start(t)
	for _, ops := range []int{0, 8} { // 8: the upgrade takes many txns
		t.Run(fmt.Sprintf("max txn ops %d", ops), func(t *testing.T) {
			is := is.New(t)
			s := open(t, eps, Options{MaxTxnOps: ops})
			paths := []string{"/a/b/c.txt", "/a/d.txt", "/a/b0", "/top.bin", "/x/y/z/deep.dat"}
			for i := range 20 {
				paths = append(paths, fmt.Sprintf("/many/%02d/f", i))
			}
			writeV2(t, s, paths)
			up, err := Open(testCtx(t), s.opts)
			is.NoErr(err) // a layout 2 prefix opens
			defer up.Close()
			r, err := s.cli.Get(testCtx(t), s.metaKey("format"))
			is.NoErr(err)
			is.Equal(string(r.Kvs[0].Value), formatVersion) // and is upgraded
			for _, d := range []rpc.Path{"/a", "/a/b", "/x", "/x/y", "/x/y/z", "/many", "/many/07"} {
				e, err := up.Lookup(testCtx(t), d)
				is.NoErr(err)
				is.True(e.IsDir) // the parents of the files are directories
			}
			e, _ := up.Lookup(testCtx(t), "/a/b")
			is.True(e.Dir.Modified.Equal(metatest.NewFile("/a/b/c.txt", 1, 1).Modified)) // with a file's time
			es, err := up.List(testCtx(t), "/", true, "", 1000)
			is.NoErr(err)
			is.Equal(len(es), len(paths)+5+21) // every file and directory lists
			n := 0
			is.NoErr(up.Files(testCtx(t), func(*meta.File) error { n++; return nil }))
			is.Equal(n, len(paths)) // the walk sees the files alone
			dump := metatest.Dump(t, up)
			again, err := Open(testCtx(t), s.opts)
			is.NoErr(err)
			defer again.Close()
			is.Equal(metatest.Dump(t, again), dump) // a second open finds the same store
		})
	}
}

func TestMoveBound(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	initStore(t, s)
	max := s.MaxMoveEntries()
	var recs []meta.Record
	for i := range max {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/big/%04d", i), 1, 1)})
	}
	fresh := open(t, eps, Options{})
	is.NoErr(fresh.Init(testCtx(t), uuid.NewString(), recs))
	mv := func(from, to string) error {
		return fresh.Commit(testCtx(t), &meta.Txn{Path: rpc.Path(from), Move: &meta.Move{To: rpc.Path(to), Modified: time.Unix(9, 0)}})
	}
	err := mv("/big", "/moved")
	is.True(errors.Is(err, rpc.ResourceExhausted))                           // the directory and its files are one more than a move may rewrite
	is.True(strings.Contains(err.Error(), fmt.Sprintf("more than %d", max))) // naming the limit
	is.NoErr(fresh.Commit(testCtx(t), &meta.Txn{Path: "/big/0000", Expect: 1, Delete: true}))
	is.NoErr(mv("/big", "/moved")) // at the limit it moves
	n := 0
	is.NoErr(fresh.Files(testCtx(t), func(f *meta.File) error {
		if !strings.HasPrefix(string(f.Path), "/moved/") {
			return fmt.Errorf("%s not moved", f.Path)
		}
		n++
		return nil
	}))
	is.Equal(n, max-1)
}
