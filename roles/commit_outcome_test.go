package roles_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// uncertainStore applies a commit and then reports it failed, as etcdstore
// does when the reply to a txn is lost and reading it back fails, or when
// the deletions that did not fit in the first txn cannot be recorded.
type uncertainStore struct {
	meta.Store
	failPut    atomic.Bool // the next commit of a file version
	failDelete atomic.Bool // the next commit of a file deletion
	// holdGets, when set as a commit is failed, fails reads of files
	// until it is cleared: the coordinator cannot tell what happened.
	holdGets atomic.Bool
	failing  atomic.Bool

	mu    sync.Mutex
	ended []rpc.SessionID // sessions ended by commits that put no file
}

func (s *uncertainStore) Commit(ctx context.Context, txn *meta.Txn) error {
	err := s.Store.Commit(ctx, txn)
	if err != nil {
		return err
	}
	if txn.Put == nil {
		s.mu.Lock()
		s.ended = append(s.ended, txn.DeleteUploads...)
		s.mu.Unlock()
	}
	if (txn.Put != nil && s.failPut.CompareAndSwap(true, false)) || (txn.Delete && s.failDelete.CompareAndSwap(true, false)) {
		s.failing.Store(s.holdGets.Load())
		return rpc.Errorf(rpc.Unavailable, "injected: commit applied, reported failed")
	}
	return nil
}

func (s *uncertainStore) Get(ctx context.Context, p rpc.Path) (*meta.File, error) {
	if s.failing.Load() {
		return nil, rpc.Errorf(rpc.Unavailable, "injected: store unreachable")
	}
	return s.Store.Get(ctx, p)
}

func (s *uncertainStore) hasEnded(id rpc.SessionID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.ended, id)
}

// TestCommitOutcomeUnknown: a commit that was applied but reported failed
// is finished, not repeated or undone: the file stays whole, the version
// it replaced is collected, and nothing else is deleted.
func TestCommitOutcomeUnknown(t *testing.T) {
	t.Parallel()
	store := &uncertainStore{}
	c := rolestest.Start(t, 3, func(cfg *roles.ClusterConfig) {
		dir, log := filepath.Join(cfg.Dir, "coordinator"), cfg.Log
		cfg.OpenStore = func() (meta.Store, error) {
			s, err := roles.OpenBolt(dir, log)
			if err != nil {
				return nil, err
			}
			store.Store = s
			return store, nil
		}
	}, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SessionTimeout = time.Second }))
	cl := rolestest.Client(t, c)
	put := func(path string, data []byte) (*client.FileInfo, error) {
		return cl.Put(t.Context(), path, bytes.NewReader(data), int64(len(data)), nil)
	}
	onNoDisk := func(fi *client.FileInfo) func() bool {
		return func() bool {
			for _, ch := range fi.Chunks {
				for _, n := range c.Nodes() {
					if onDiskAnyForm(n, ch.ID) {
						return false
					}
				}
			}
			return true
		}
	}
	settled := func() bool { return health(t, c).Health.PendingDeletions == 0 }

	t.Run("overwrite", func(t *testing.T) {
		is := is.New(t)
		v1, err := put("/x", randomBytes(3*rolestest.ChunkSize))
		is.NoErr(err)
		data := randomBytes(2*rolestest.ChunkSize + 7)
		store.failPut.Store(true)
		v2, err := put("/x", data)
		is.NoErr(err)                   // the client retries and is told it committed
		is.Equal(v2.Version, uint64(2)) // once: not committed a second time over itself
		is.True(!store.failPut.Load())  // (the failure was injected)
		eventually(t, "the replaced version's chunks deleted", onNoDisk(v1))
		eventually(t, "no deletion pending", settled)
		checkFiles(t, cl, map[string][]byte{"/x": data})
	})

	t.Run("delete", func(t *testing.T) {
		is := is.New(t)
		fi, err := cl.Stat(t.Context(), "/x")
		is.NoErr(err)
		store.failDelete.Store(true)
		is.NoErr(cl.Remove(t.Context(), "/x")) // applied, so done
		_, err = cl.Stat(t.Context(), "/x")
		is.True(isKind(err, rpc.NotFound))
		eventually(t, "the deleted file's chunks deleted", onNoDisk(fi))
		eventually(t, "no deletion pending", settled)
	})

	t.Run("session ends before the outcome is known", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(rolestest.ChunkSize + 1)
		store.holdGets.Store(true)
		store.failPut.Store(true)
		_, err := put("/y", data)
		is.True(err != nil) // the outcome could not be learned: the put fails
		store.holdGets.Store(false)
		store.failing.Store(false)
		fi, err := cl.Stat(t.Context(), "/y")
		is.NoErr(err) // but the version was committed
		sid := rpc.SessionID(fi.Session)
		eventually(t, "the session ended (aborted by the client, then expired)", func() bool { return store.hasEnded(sid) })
		eventually(t, "no deletion pending", settled)
		checkFiles(t, cl, map[string][]byte{"/y": data}) // its chunks were kept
	})
}
