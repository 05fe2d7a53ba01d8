package boltstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// backupOf returns the records of a backup of cluster id holding files
// one-chunk files under /<dir>/, an upload, a deletion and a drain, in
// backup order, and a Mem restored from them.
func backupOf(t *testing.T, id, dir string, files int) ([]meta.Record, *metatest.Mem) {
	t.Helper()
	is := is.New(t)
	var recs []meta.Record
	for i := range files {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/%s/%04d", dir, i), 1, 1)})
	}
	node := rpc.NodeID(uuid.NewString())
	recs = append(recs,
		meta.Record{Upload: &meta.Upload{ID: rpc.NewSessionID(), Path: rpc.Path("/" + dir + "/open")}},
		meta.Record{Deletion: &meta.Deletion{Node: node, Chunk: recs[0].File.Chunks[0].ID}},
		meta.Record{Drain: &node})
	mem := metatest.NewMem()
	is.NoErr(mem.Init(context.Background(), id, recs))
	var ordered []meta.Record
	is.NoErr(mem.Snapshot(context.Background(), func(r meta.Record) error { ordered = append(ordered, r); return nil }))
	return ordered, mem
}

// marker returns the restore marker the file at s holds ("" for none).
func marker(t *testing.T, s *Store) string {
	t.Helper()
	var m string
	if err := s.db.View(func(tx *bolt.Tx) error { m = string(tx.Bucket(bucketMeta).Get(keyRestoring)); return nil }); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRestoreInBatches: a restore larger than a transaction's limits
// (records, or bytes) is written in many write transactions and reads
// back as a one-transaction restore does, before and after a reopen,
// with no marker left behind.
func TestRestoreInBatches(t *testing.T) {
	for _, lim := range []restoreLimits{{records: 7, bytes: 1 << 30}, {records: 1 << 20, bytes: 1000}} {
		t.Run(fmt.Sprintf("%d records or %d bytes", lim.records, lim.bytes), func(t *testing.T) {
			is := is.New(t)
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "meta.db")
			s := open(t, path)
			s.restoreBatch = lim
			id := uuid.NewString()
			recs, want := backupOf(t, id, "a", 60)

			before := writeTxns(t, s)
			is.NoErr(s.Init(ctx, id, recs))
			txns := writeTxns(t, s) - before
			t.Logf("%d records in %d write transactions", len(recs), txns)
			is.True(txns >= 8)                                    // the restore was written in many transactions
			is.Equal(s.ClusterID(), id)                           // and initialized the store
			is.Equal(marker(t, s), "")                            // leaving no marker
			is.Equal(metatest.Dump(t, s), metatest.Dump(t, want)) // every record, as Init loads them

			is.NoErr(s.Close())
			s = open(t, path)
			is.Equal(s.ClusterID(), id)                           // the restore is durable
			is.Equal(metatest.Dump(t, s), metatest.Dump(t, want)) // with every record
		})
	}
}

// TestInterruptedRestore: a restore that fails after some of its
// transactions committed (the backup changed while it was read, or the
// context ended) leaves a store that is not initialized and says so on
// every use (from its first transaction on), before and after a reopen,
// as does a copy of the file taken between two transactions (what a
// crash leaves); a coordinator cannot make a new cluster of it, nor can
// a backup of another cluster be restored into it; a restore of its
// cluster run again empties it and holds exactly the new backup's
// records.
func TestInterruptedRestore(t *testing.T) {
	boom := errors.New("backup: changed while it was restored")
	for _, name := range []string{"the backup changed", "the context ended"} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			path, crashed := filepath.Join(dir, "meta.db"), filepath.Join(dir, "crashed.db")
			s := open(t, path)
			s.restoreBatch = restoreLimits{records: 100, bytes: 1 << 30}
			id := uuid.NewString()
			first, _ := backupOf(t, id, "old", 1200)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			err := s.InitEach(ctx, id, func(put func(meta.Record) error) error {
				for i, r := range first {
					if i == 300 {
						// Three transactions are in: the file as a crash now would leave it.
						b, err := os.ReadFile(path)
						if err != nil {
							return err
						}
						if err := os.WriteFile(crashed, b, 0o600); err != nil {
							return err
						}
						err = s.Snapshot(context.Background(), func(meta.Record) error { return nil })
						is.True(errors.Is(err, rpc.FailedPrecondition)) // meanwhile no read sees part of the backup
						if name == "the backup changed" {
							return boom
						}
						cancel() // put notices it within 1024 records
					}
					if err := put(r); err != nil {
						return err
					}
				}
				return nil
			})
			t.Log(err)
			if name == "the backup changed" {
				is.True(errors.Is(err, boom)) // the reader's error is returned
			} else {
				is.True(errors.Is(err, context.Canceled)) // the context's error is returned
			}
			is.Equal(s.ClusterID(), "") // the store is not initialized
			is.Equal(marker(t, s), id)  // and holds the marker

			refused := func(err error) {
				t.Helper()
				is.True(errors.Is(err, rpc.FailedPrecondition))                              // every use is refused
				is.True(strings.Contains(err.Error(), "interrupted restore of cluster "+id)) // saying why
				is.True(strings.Contains(err.Error(), "--restore"))                          // and what to do
			}
			_, err = s.Get(context.Background(), "/old/0000")
			refused(err)
			refused(s.Snapshot(context.Background(), func(meta.Record) error { return nil })) // no backup of a part
			_, err = s.Uploads(context.Background())
			refused(err)
			refused(s.Commit(context.Background(), &meta.Txn{PutUploads: []*meta.Upload{}}))
			refused(s.Init(context.Background(), uuid.NewString(), nil)) // a coordinator does not start a new cluster on it
			other, _ := backupOf(t, uuid.NewString(), "other", 3)
			refused(s.Init(context.Background(), uuid.NewString(), other)) // nor restores another cluster into it
			is.Equal(marker(t, s), id)                                     // which leave it as it was

			c := open(t, crashed)
			is.Equal(c.ClusterID(), "") // what a crash leaves opens uninitialized
			_, err = c.Get(context.Background(), "/old/0000")
			refused(err) // and refused

			is.NoErr(s.Close())
			s = open(t, path)
			is.Equal(s.ClusterID(), "") // a reopened store is still not initialized
			_, err = s.Get(context.Background(), "/old/0000")
			refused(err)

			s.restoreBatch = restoreLimits{records: 100, bytes: 1 << 30}
			second, want := backupOf(t, id, "new", 250)
			is.NoErr(s.Init(context.Background(), id, second)) // a restore of its cluster runs again
			is.Equal(s.ClusterID(), id)
			is.Equal(marker(t, s), "")
			is.Equal(metatest.Dump(t, s), metatest.Dump(t, want)) // holding exactly the new backup's records
			is.NoErr(s.Close())
			s = open(t, path)
			is.Equal(metatest.Dump(t, s), metatest.Dump(t, want)) // durably

			small, want := backupOf(t, id, "small", 5)
			is.NoErr(c.Init(context.Background(), id, small)) // a restore that fits one transaction clears it too
			is.Equal(marker(t, c), "")
			is.Equal(metatest.Dump(t, c), metatest.Dump(t, want))
		})
	}
}
