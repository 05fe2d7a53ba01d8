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

// TestReleasePages: a walk over every record (Files: a term's load, fsck)
// releases what it read as it goes (RssFile grows by much less than the
// file); after a read that maps the whole file in (a raw cursor here),
// ReleasePages takes it out of the resident set; the records read the same
// throughout.
func TestReleasePages(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s, files, size := synthStore(t, 20000)
	is.NoErr(s.ReleasePages())

	read := func() []string {
		var paths []string
		is.NoErr(s.Files(ctx, func(f *meta.File) error {
			paths = append(paths, string(f.Path)+"/"+string(f.Chunks[0].ID))
			return nil
		}))
		return paths
	}
	start := rssFile(t)
	want := read()
	walked := rssFile(t)
	t.Logf("store file %d KiB; RssFile grew %d KiB over a walk of every file", size>>10, (walked-start)>>10)
	is.Equal(len(want), files)
	is.True(walked-start < size/4) // the walk released what it read

	is.NoErr(s.db.View(func(tx *bolt.Tx) error { // every page mapped in, nothing released
		sum := 0
		return tx.Bucket(bucketFiles).ForEach(func(k, v []byte) error { sum += len(k) + len(v); return nil })
	}))
	mapped := rssFile(t)
	is.NoErr(s.ReleasePages())
	released := rssFile(t)
	t.Logf("RssFile %d KiB -> %d KiB", mapped>>10, released>>10)
	is.True(mapped-released >= size/2) // the file's pages left the resident set
	is.Equal(read(), want)             // and read back the same
}

// TestListReleasesWhatItWalked: listing every file, page by page, leaves
// the store file's pages out of the resident set (RssFile grows by much
// less than the file), and lists every file in order.
func TestListReleasesWhatItWalked(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	s, files, size := synthStore(t, 20000)
	is.NoErr(s.ReleasePages())
	before := rssFile(t)
	n, after := 0, ""
	for {
		page, err := s.List(ctx, "/", true, after, 1000)
		is.NoErr(err)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			is.True(meta.ListKey(e) > after) // in order, each once
			after = meta.ListKey(e)
			if !e.IsDir {
				n++
			}
		}
	}
	grown := rssFile(t) - before
	t.Logf("store file %d KiB; RssFile grew %d KiB over the listing", size>>10, grown>>10)
	is.Equal(n, files)      // every file listed
	is.True(grown < size/4) // and the file did not stay mapped in
}

// synthStore returns a store restored from meta.Synth's files, their
// number and the store file's size.
func synthStore(t *testing.T, files int) (*Store, int, int64) {
	t.Helper()
	is := is.New(t)
	synth, err := meta.NewSynth(files, 4096, 8<<20, 1<<20, 3, time.Unix(1_000_000_000, 0))
	is.NoErr(err)
	s := open(t, filepath.Join(t.TempDir(), "meta.db"))
	is.NoErr(s.InitEach(context.Background(), "cluster-1", func(put func(meta.Record) error) error {
		for i := range synth.Files {
			if err := put(meta.Record{File: synth.File(i)}); err != nil {
				return err
			}
		}
		return nil
	}))
	var size int64
	is.NoErr(s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))
	return s, files, size
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
