package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenNewStore(t *testing.T) {
	for _, name := range []string{"missing", "missing, with a leftover of a crashed creation"} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "meta.db")
			if name != "missing" {
				is.NoErr(os.WriteFile(path+".new", []byte("half"), 0o600))
			}
			s := open(t, path)
			entries, err := os.ReadDir(dir)
			is.NoErr(err)
			is.Equal(len(entries), 1)   // the store file alone: nothing left beside it
			is.Equal(s.ClusterID(), "") // a new store is uninitialized
			_, err = s.Get(context.Background(), "/x")
			is.True(errors.Is(err, rpc.FailedPrecondition)) // and refuses reads
			id := uuid.NewString()
			is.NoErr(s.Init(context.Background(), id, nil))
			is.NoErr(s.Close())
			s = open(t, path)
			is.Equal(s.ClusterID(), id) // the cluster survives a reopen
		})
	}
}

// fileState is a file's bytes and times, to show that Open left it alone.
type fileState struct {
	data  []byte
	mtime time.Time
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{b, fi.ModTime()}
}

// newStoreFile makes a store file at path holding files, and returns the
// size its database needs (the file itself has bolt's preallocated tail).
func newStoreFile(t *testing.T, path string, files int) int64 {
	t.Helper()
	s, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	var recs []meta.Record
	for i := range files {
		recs = append(recs, meta.Record{File: metatest.NewFile("/f/"+strings.Repeat("x", i%50)+uuid.NewString(), 3, 1)})
	}
	if err := s.Init(context.Background(), uuid.NewString(), recs); err != nil {
		t.Fatal(err)
	}
	var size int64
	if err := s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return size
}

// editBolt changes a bolt file directly.
func editBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	garbage := func(n int) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			b := make([]byte, n)
			r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8)})
			r.Read(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncated := func(cut func(need int64) int64) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			need := newStoreFile(t, path, 300)
			if err := os.Truncate(path, cut(need)); err != nil {
				t.Fatal(err)
			}
		}
	}
	setFormat := func(v []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, v) })
		}
	}
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	tests := []struct {
		name  string
		make  func(t *testing.T, path string)
		want  string // in the error message
		clean bool   // the file is left as it was
	}{
		{"empty", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "empty (0 bytes), but a new store is only created where none exists", true},
		{"bolt without buckets", func(t *testing.T, path string) {
			editBolt(t, path, func(*bolt.Tx) error { return nil })
		}, "a bolt database without any dfs bucket, but a new store is only created where none exists", true},
		{"1 byte of garbage", garbage(1), "not a bolt database", true},
		{"garbage under a page", garbage(4000), "not a bolt database", true},
		{"one page of garbage", garbage(4096), "not a bolt database", true},
		{"garbage over a page", garbage(5000), "not a bolt database", true},
		{"two pages of garbage", garbage(8192), "not a bolt database", true},
		{"1 MiB of garbage", garbage(1 << 20), "not a bolt database", true},
		{"truncated to half", truncated(func(n int64) int64 { return n / 2 }), "truncated", true},
		{"truncated by a page", truncated(func(n int64) int64 { return n - 4096 }), "truncated", true},
		{"truncated to the meta pages", truncated(func(int64) int64 { return 8192 }), "truncated", true},
		{"truncated into the second meta page", truncated(func(int64) int64 { return 4096 + 100 }), "not a bolt database", true},
		{"truncated into the first meta page", truncated(func(int64) int64 { return 1000 }), "not a bolt database", true},
		{"foreign bolt database", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("users"))
				if err != nil {
					return err
				}
				return b.Put([]byte("alice"), []byte("admin"))
			})
		}, `unexpected bucket "users"`, true},
		{"foreign bolt database with a meta bucket", func(t *testing.T, path string) {
			editBolt(t, path, func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("meta"))
				if err != nil {
					return err
				}
				return b.Put([]byte("version"), []byte("3"))
			})
		}, "no format version", true},
		{"our buckets and another", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("extra")); return err })
		}, `unexpected bucket "extra"`, true},
		{"a bucket missing", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketUploads) })
		}, `no "uploads" bucket`, true},
		{"newer format", setFormat(u64(formatVersion + 1)), fmt.Sprintf("format version %d is newer", formatVersion+1), true},
		{"newer format with a bucket of its own", func(t *testing.T, path string) {
			setFormat(u64(formatVersion+1))(t, path)
			editBolt(t, path, func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("future")); return err })
		}, fmt.Sprintf("format version %d is newer", formatVersion+1), true},
		{"drains bucket missing", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketDrains) })
		}, `no "drains" bucket`, true},
		{"format 1 with a bucket missing", func(t *testing.T, path string) {
			makeFormat1(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketDeletions) })
		}, `no "deletions" bucket`, true},
		{"format 1 uninitialized with data", func(t *testing.T, path string) {
			makeFormat1(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyCluster) })
		}, "uninitialized but", true},
		{"format zero", setFormat(u64(0)), "no format version", true},
		{"format of the wrong size", setFormat([]byte{1}), "no format version", true},
		{"uninitialized with data", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyCluster) })
		}, "uninitialized but", true},
		{"initialized and marked as being restored", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyRestoring, []byte(uuid.NewString())) })
		}, "marked as being restored", true},
		{"restoring a cluster id that is not a UUID", func(t *testing.T, path string) {
			newStoreFile(t, path, 3)
			editBolt(t, path, func(tx *bolt.Tx) error {
				m := tx.Bucket(bucketMeta)
				if err := m.Delete(keyCluster); err != nil {
					return err
				}
				return m.Put(keyRestoring, []byte("cluster-1"))
			})
		}, "not a UUID", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "meta.db")
			tt.make(t, path)
			past := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
			is.NoErr(os.Chtimes(path, past, past))
			before := stateOf(t, path)

			s, err := Open(path, testOptions(t))
			if err == nil {
				s.Close()
			}
			t.Log(err)
			is.True(err != nil)                             // the file is refused
			is.True(errors.Is(err, rpc.FailedPrecondition)) // as a store that cannot be used
			is.True(strings.Contains(err.Error(), path))    // the error names the file
			is.True(strings.Contains(err.Error(), tt.want)) // and says what is wrong

			after := stateOf(t, path)
			is.True(bytes.Equal(after.data, before.data)) // the file's bytes are untouched
			is.True(after.mtime.Equal(before.mtime))      // it was not even written
			entries, err := os.ReadDir(dir)
			is.NoErr(err)
			is.Equal(len(entries), 1) // and nothing was created beside it
		})
	}
}

// makeFormat1 makes a store file of format 1 at path, as a dfs before the
// drains bucket wrote it: files files, an upload and a deletion. It
// returns the store's contents as metatest.Dump renders them.
func makeFormat1(t *testing.T, path string, files int) (cluster, dump string) {
	t.Helper()
	s, err := Open(path, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	node := rpc.NodeID(uuid.NewString())
	recs := []meta.Record{
		{Upload: &meta.Upload{ID: rpc.NewSessionID(), Path: "/u", ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(3, 0)}},
		{Deletion: &meta.Deletion{Node: node, Chunk: rpc.NewChunkID("/old", "s", 0, 0)}},
	}
	for i := range files {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/f/%03d", i), 1+i%3, 1)})
	}
	cluster = uuid.NewString()
	if err := s.Init(context.Background(), cluster, recs); err != nil {
		t.Fatal(err)
	}
	dump = metatest.Dump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	editBolt(t, path, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketDrains); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, binary.BigEndian.AppendUint64(nil, 1))
	})
	return cluster, dump
}

// formatOf reads the format of the closed store file at path.
func formatOf(t *testing.T, path string) (format uint64, drains bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		format = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyFormat))
		drains = tx.Bucket(bucketDrains) != nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return format, drains
}

func TestOpenUpgradesFormat1(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	cluster, dump := makeFormat1(t, path, 20)
	format, drains := formatOf(t, path)
	is.Equal(format, uint64(1)) // the fixture is a format 1 store
	is.True(!drains)            // without a drains bucket

	s := open(t, path)
	is.Equal(s.ClusterID(), cluster)    // the upgraded store keeps its cluster
	is.Equal(metatest.Dump(t, s), dump) // and its records
	got, err := s.Drains(ctx)
	is.NoErr(err)
	is.Equal(len(got), 0) // and drains no node
	node := rpc.NodeID(uuid.NewString())
	is.NoErr(s.Commit(ctx, &meta.Txn{Drain: []rpc.NodeID{node}}))
	is.NoErr(s.Close())

	format, drains = formatOf(t, path)
	is.Equal(format, formatVersion) // the open raised the format
	is.True(drains)                 // and added the bucket
	s = open(t, path)
	got, err = s.Drains(ctx)
	is.NoErr(err)
	is.Equal(got, []rpc.NodeID{node}) // a drain in an upgraded store is durable
}

func TestOpenUpgradesUninitializedFormat1(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "meta.db")
	s := open(t, path)
	is.NoErr(s.Close())
	editBolt(t, path, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketDrains); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, binary.BigEndian.AppendUint64(nil, 1))
	})
	s = open(t, path)
	is.Equal(s.ClusterID(), "") // still uninitialized
	id := uuid.NewString()
	node := rpc.NodeID(uuid.NewString())
	is.NoErr(s.Init(context.Background(), id, []meta.Record{{Drain: &node}})) // and takes a restore with drains
	got, err := s.Drains(context.Background())
	is.NoErr(err)
	is.Equal(got, []rpc.NodeID{node})
	is.NoErr(s.Close())
	format, _ := formatOf(t, path)
	is.Equal(format, formatVersion)
}

func TestOpenLocked(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "meta.db")
	first := open(t, path)
	is.NoErr(first.Init(context.Background(), uuid.NewString(), nil))
	o := testOptions(t)
	o.LockTimeout = 200 * time.Millisecond
	_, err := Open(path, o)
	is.True(errors.Is(err, rpc.Unavailable))                    // a second opener gives up
	is.True(strings.Contains(err.Error(), "locked by another")) // and says why
	t.Log(err)
	is.NoErr(first.Close())
	second, err := Open(path, o)
	is.NoErr(err) // once the first has closed, the file opens
	is.Equal(second.ClusterID(), first.ClusterID())
	is.NoErr(second.Close())
}

func TestOpenNotAFile(t *testing.T) {
	is := is.New(t)
	_, err := Open(t.TempDir(), testOptions(t))
	is.True(errors.Is(err, rpc.FailedPrecondition)) // a directory is not a store
	_, err = Open(filepath.Join(t.TempDir(), "no", "such", "dir", "meta.db"), testOptions(t))
	is.True(err != nil) // nor is a path in a missing directory
}
