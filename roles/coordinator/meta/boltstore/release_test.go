package boltstore

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
)

// TestReleasePages: after a pass over every record, ReleasePages takes
// the store file's pages out of the process's resident set (RssFile falls
// by about the file's size), and the records read the same afterwards.
func TestReleasePages(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	synth, err := meta.NewSynth(20000, 4096, 8<<20, 1<<20, 3, time.Unix(1_000_000_000, 0))
	is.NoErr(err)
	s := open(t, filepath.Join(t.TempDir(), "meta.db"))
	is.NoErr(s.InitEach(ctx, "cluster-1", func(put func(meta.Record) error) error {
		for i := range synth.Files {
			if err := put(meta.Record{File: synth.File(i)}); err != nil {
				return err
			}
		}
		return nil
	}))
	var size int64
	is.NoErr(s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))

	read := func() []string {
		var paths []string
		is.NoErr(s.Files(ctx, func(f *meta.File) error {
			paths = append(paths, string(f.Path)+"/"+string(f.Chunks[0].ID))
			return nil
		}))
		return paths
	}
	before := read() // every page mapped in
	mapped := rssFile(t)
	is.NoErr(s.ReleasePages())
	released := rssFile(t)
	t.Logf("store file %d KiB; RssFile %d KiB -> %d KiB", size>>10, mapped>>10, released>>10)
	is.True(mapped-released >= size/2) // the file's pages left the resident set
	is.Equal(read(), before)           // and read back the same
}

// rssFile returns the process's resident file-backed memory.
func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}
