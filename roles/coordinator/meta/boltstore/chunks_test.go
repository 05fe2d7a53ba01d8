package boltstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// TestFileChunksDamaged: a walk of the chunks that meets a damaged file
// record (not protobuf, empty, or stored under another path) fails with
// rpc.Internal naming the record, as Files does; it never panics.
func TestFileChunksDamaged(t *testing.T) {
	good := metatest.NewFile("/d/good", 1, 1)
	moved, err := meta.MarshalFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for key, value := range map[string][]byte{"/d/garbage": {0xff, 0xff, 0xff, 0x01, 0x02}, "/d/empty": {}, "/d/moved": moved} {
		t.Run(key, func(t *testing.T) {
			is := is.New(t)
			s := openInit(t, time.Millisecond, 16)
			ctx := context.Background()
			is.NoErr(s.Commit(ctx, &meta.Txn{Path: good.Path, Put: good}))
			is.NoErr(s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFiles).Put([]byte(key), value) }))
			err := s.FileChunks(ctx, func(*meta.FileChunks) error { return nil })
			is.True(errors.Is(err, rpc.Internal))       // a damaged file fails the walk
			is.True(strings.Contains(err.Error(), key)) // naming it
		})
	}
}
