package roles_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// cancelOn cancels when a log message equal to msg is written.
type cancelOn struct {
	msg    string
	cancel context.CancelFunc
}

func (h cancelOn) Run(_ *zerolog.Event, _ zerolog.Level, msg string) {
	if msg == h.msg {
		h.cancel()
	}
}

// TestInterruptedRestoreIsNoNewCluster: a coordinator started without
// --restore on a bolt store that holds an interrupted restore (what a
// crash part-way through a large restore leaves: the marker and part of
// the records) refuses to start, saying what to do, and leaves the store
// as it was rather than initializing a new, empty cluster on it; started
// with --restore of a backup of that cluster, it restores it whole and
// serves.
func TestInterruptedRestoreIsNoNewCluster(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "metadata.db")
	id := uuid.NewString()

	// The store a crash in the middle of a restore leaves.
	s, err := roles.OpenBolt(dir, zerolog.Nop())
	is.NoErr(err) // a new store
	is.NoErr(s.Close())
	part, err := meta.MarshalFile(metatest.NewFile("/part/of/the/backup", 1, 1))
	is.NoErr(err)
	db, err := bolt.Open(file, 0o600, nil)
	is.NoErr(err)
	is.NoErr(db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("meta")).Put([]byte("restoring"), []byte(id)); err != nil {
			return err
		}
		return tx.Bucket([]byte("files")).Put([]byte("/part/of/the/backup"), part)
	}))
	is.NoErr(db.Close())

	cfg := coordinator.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	log := zerolog.New(zerolog.NewTestWriter(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = roles.RunCoordinator(ctx, cfg, roles.StoreConfig{Kind: "bolt", Dir: dir}, roles.Admin{}, nil, log)
	t.Log(err)
	is.True(errors.Is(err, rpc.FailedPrecondition))                              // the coordinator refuses to start
	is.True(strings.Contains(err.Error(), "interrupted restore of cluster "+id)) // saying why
	is.True(strings.Contains(err.Error(), "--restore"))                          // and what to do
	s, err = roles.OpenBolt(dir, zerolog.Nop())
	is.NoErr(err)
	is.Equal(s.ClusterID(), "") // no new cluster was made of the store
	is.NoErr(s.Close())

	// A backup of the cluster, restored over it.
	from := metatest.NewMem()
	is.NoErr(from.Init(ctx, id, []meta.Record{{File: metatest.NewFile("/restored", 1, 1)}}))
	backup := filepath.Join(dir, "backup")
	f, err := os.Create(backup)
	is.NoErr(err)
	_, err = meta.Backup(ctx, from, f, meta.BackupInfo{ClusterID: id, Created: time.Now(), Store: "test"})
	is.NoErr(err)
	is.NoErr(f.Close())
	run, stop := context.WithCancel(ctx)
	defer stop()
	err = roles.RunCoordinator(run, cfg, roles.StoreConfig{Kind: "bolt", Dir: dir, Restore: backup},
		roles.Admin{}, nil, log.Hook(cancelOn{"metadata restored from backup", stop}))
	is.NoErr(err) // the restore runs, and the coordinator stops cleanly after it
	b, err := boltstore.Open(file, boltstore.Options{})
	is.NoErr(err)
	defer b.Close()
	is.Equal(b.ClusterID(), id) // the store is the cluster's
	_, err = b.Get(ctx, "/restored")
	is.NoErr(err) // with the backup's records
	_, err = b.Get(ctx, "/part/of/the/backup")
	is.True(errors.Is(err, rpc.NotFound)) // and none of the interrupted restore's
}
