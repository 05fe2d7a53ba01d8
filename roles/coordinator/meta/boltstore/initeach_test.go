package boltstore

import (
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

// TestInitEach: records given one at a time load as Init loads them; a
// restore within one transaction's limits (restoreLimits) is one
// transaction, so an error part-way leaves the store uninitialized,
// empty and unmarked, as if it had not run (and a later InitEach
// succeeds); an initialized store is refused.
func TestInitEach(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	synth, err := meta.NewSynth(50, 4096, 8<<20, 1<<20, 3, time.Unix(1_000_000_000, 0))
	is.NoErr(err)
	var recs []meta.Record
	for i := range synth.Files {
		recs = append(recs, meta.Record{File: synth.File(i)})
	}
	each := func(n int, end error) func(put func(meta.Record) error) error {
		return func(put func(meta.Record) error) error {
			for _, r := range recs[:n] {
				if err := put(r); err != nil {
					return err
				}
			}
			return end
		}
	}
	s := open(t, filepath.Join(t.TempDir(), "meta.db"))

	boom := errors.New("the backup changed")
	before := writeTxns(t, s)
	err = s.InitEach(ctx, "cluster-1", each(20, boom))
	is.True(errors.Is(err, boom)) // the reader's error is returned
	is.Equal(s.ClusterID(), "")   // the store stays uninitialized
	is.NoErr(s.db.View(func(tx *bolt.Tx) error {
		is.Equal(tx.Bucket(bucketFiles).Stats().KeyN, 0) // and empty
		return nil
	}))
	is.Equal(marker(t, s), "") // and unmarked
	_, err = s.Get(ctx, "/x")
	is.True(errors.Is(err, rpc.FailedPrecondition))        // refused as any uninitialized store
	is.True(!strings.Contains(err.Error(), "interrupted")) // not as an interrupted restore
	is.Equal(writeTxns(t, s), before)                      // nothing was committed

	is.NoErr(s.InitEach(ctx, "cluster-1", each(len(recs), nil)))
	is.Equal(s.ClusterID(), "cluster-1")
	want := metatest.NewMem()
	is.NoErr(want.Init(ctx, "cluster-1", recs))
	is.Equal(metatest.Dump(t, s), metatest.Dump(t, want)) // every record, as Init loads them

	err = s.InitEach(ctx, "cluster-2", each(1, nil))
	is.True(errors.Is(err, rpc.Exists)) // an initialized store is refused
	is.Equal(s.ClusterID(), "cluster-1")
}
