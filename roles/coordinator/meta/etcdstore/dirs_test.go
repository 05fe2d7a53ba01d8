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

// TestCommitRaces makes another coordinator's commit land between a
// commit's read and its txn: the txn's compares catch every change the
// plan rested on, and the commit, planned again, ends as Mem would after
// the other commit.
func TestCommitRaces(t *testing.T) {
	eps := etcdtest.Start(t)
	at := time.Unix(9, 0)
	put := func(p string) *meta.Txn { return &meta.Txn{Path: rpc.Path(p), Put: metatest.NewFile(p, 1, 1)} }
	mkdir := func(p string) *meta.Txn {
		return &meta.Txn{Path: rpc.Path(p), Mkdir: &meta.Dir{Path: rpc.Path(p), Modified: at}, MkdirParents: true}
	}
	mv := func(from, to string) *meta.Txn {
		return &meta.Txn{Path: rpc.Path(from), Move: &meta.Move{To: rpc.Path(to), Modified: at}}
	}
	for _, tc := range []struct {
		name        string
		setup       []*meta.Txn
		txn, other  *meta.Txn
		wantErr     error
		exist, gone []string
	}{
		{"rmdir vs a put below", []*meta.Txn{mkdir("/r")}, &meta.Txn{Path: "/r", Rmdir: true}, put("/r/f"), meta.ErrNotEmpty, []string{"/r/f"}, nil},
		{"put vs a rmdir of its parent", []*meta.Txn{mkdir("/p")}, put("/p/q/f"), &meta.Txn{Path: "/p", Rmdir: true}, nil, []string{"/p", "/p/q", "/p/q/f"}, nil},
		{"put vs a file at a missing parent", []*meta.Txn{mkdir("/m")}, put("/m/x/f"), put("/m/x"), rpc.Exists, []string{"/m/x"}, []string{"/m/x/f"}},
		{"put vs a mkdir of its path", nil, put("/f"), mkdir("/f"), rpc.Exists, []string{"/f"}, nil},
		{"mkdir vs a put of its path", nil, &meta.Txn{Path: "/k", Mkdir: &meta.Dir{Path: "/k", Modified: at}}, put("/k"), rpc.Exists, []string{"/k"}, nil},
		{"move vs a put below", []*meta.Txn{put("/s/a")}, mv("/s", "/t"), put("/s/new"), nil, []string{"/t/a", "/t/new"}, []string{"/s", "/s/new"}},
		{"move vs a delete below", []*meta.Txn{put("/s/a"), put("/s/b")}, mv("/s", "/t"), &meta.Txn{Path: "/s/a", Expect: 1, Delete: true},
			nil, []string{"/t/b"}, []string{"/t/a", "/s"}},
		{"move vs a move of its target's parent", []*meta.Txn{put("/s/a"), mkdir("/u")}, mv("/s", "/u/t"), mv("/u", "/v"),
			nil, []string{"/u/t/a", "/v"}, []string{"/s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			s := open(t, eps, Options{})
			initStore(t, s)
			other := open(t, eps, Options{Prefix: s.pfx})
			mem := metatest.NewMem()
			is.NoErr(mem.Init(testCtx(t), s.ClusterID(), nil))
			for _, txn := range tc.setup {
				is.NoErr(s.Commit(testCtx(t), txn))
				is.NoErr(mem.Commit(testCtx(t), txn))
			}
			h := hookStore(s)
			h.failTxn = func(n int64) error {
				if n == 2 { // after the read, before the txn
					is.NoErr(other.Commit(testCtx(t), tc.other))
				}
				return nil
			}
			err := s.Commit(testCtx(t), tc.txn)
			is.True(h.txns.Load() > 2) // the txn failed its compares and was planned again
			if tc.wantErr == nil {
				is.NoErr(err)
			} else {
				is.True(errors.Is(err, tc.wantErr)) // the commit fails as it would after the other
			}
			is.NoErr(mem.Commit(testCtx(t), tc.other))
			merr := mem.Commit(testCtx(t), tc.txn)
			is.Equal(rpc.KindOf(merr), rpc.KindOf(err))          // as Mem decides
			is.Equal(metatest.Dump(t, s), metatest.Dump(t, mem)) // and to the state Mem reaches
			for _, p := range tc.exist {
				_, err := s.Lookup(testCtx(t), rpc.Path(p))
				is.NoErr(err)
			}
			for _, p := range tc.gone {
				_, err := s.Lookup(testCtx(t), rpc.Path(p))
				is.True(errors.Is(err, rpc.NotFound))
			}
		})
	}
}
