package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// hookStore runs before on each Commit; fail, when it returns an error,
// is returned after the commit is applied (an outcome reported lost).
type hookStore struct {
	*metatest.Mem
	before func(txn *meta.Txn)
	after  func(txn *meta.Txn) error
}

func (h *hookStore) Commit(ctx context.Context, txn *meta.Txn) error {
	if h.before != nil {
		h.before(txn)
	}
	if err := h.Mem.Commit(ctx, txn); err != nil {
		return err
	}
	if h.after != nil {
		return h.after(txn)
	}
	return nil
}

// A directory's move lands (straight in the store) between removeFile's
// read and its commit: the delete fails NotFound, which applied nothing,
// so removeFile must not take it for applied and record the deletion of
// the chunks of the file now at /e/f.
func TestRemoveRacingDirMove(t *testing.T) {
	is := is.New(t)
	h := &hookStore{Mem: metatest.NewMem()}
	f := newFixture(t, 3, h)
	file := f.put("/d/f", 2*testChunk, 3)
	h.before = func(txn *meta.Txn) {
		if txn.Delete && txn.Path == "/d/f" {
			h.before = nil
			is.NoErr(h.Mem.Commit(f.ctx, &meta.Txn{Path: "/d", Move: &meta.Move{To: "/e", Modified: f.clock.Now()}}))
		}
	}
	err := f.term.namespace.remove(f.ctx, "/d/f", removeOptions{})
	t.Logf("remove: %v", err)
	moved, err := f.store.Get(f.ctx, "/e/f")
	is.NoErr(err)
	is.Equal(moved.Chunks[0].ID, file.Chunks[0].ID)
	is.Equal(len(f.deletedChunks(file)), 0) // /e/f still uses every chunk
}

// copyReplyLost copies /src (two chunks) to /dst through a store that
// applies the copy's commit and reports it failed (Unavailable: the reply
// lost), and returns the fixture and /src.
func copyReplyLost(t *testing.T) (*fixture, *meta.File) {
	h := &hookStore{Mem: metatest.NewMem()}
	f := newFixture(t, 3, h)
	src := f.put("/src", 2*testChunk, 3)
	h.after = func(txn *meta.Txn) error {
		if txn.Put != nil && txn.Path == "/dst" {
			h.after = nil
			return rpc.Errorf(rpc.Unavailable, "reply lost")
		}
		return nil
	}
	_, err := f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{})
	t.Logf("copy: %v", err)
	return f, src
}

// A copy whose commit applied but was reported failed keeps the copy's
// references: the source's removal then keeps the chunks /dst uses.
func TestCopyUncertainCommit(t *testing.T) {
	is := is.New(t)
	f, src := copyReplyLost(t)
	_, err := f.store.Get(f.ctx, "/dst")
	is.NoErr(err) // the copy is there
	is.NoErr(f.term.namespace.remove(f.ctx, "/src", removeOptions{}))
	is.Equal(len(f.deletedChunks(src)), 0) // /dst still uses every chunk
}

// The same, then the client retries the copy: the retry replaces the
// first copy, and deletes none of the chunks both share with the source.
func TestCopyUncertainRetry(t *testing.T) {
	is := is.New(t)
	f, src := copyReplyLost(t)
	_, err := f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{})
	is.NoErr(err)
	is.Equal(len(f.deletedChunks(src)), 0) // /src and /dst use every chunk
}

// lookupHook runs after on each Lookup.
type lookupHook struct {
	*metatest.Mem
	after func(p rpc.Path)
}

func (h *lookupHook) Lookup(ctx context.Context, p rpc.Path) (meta.Entry, error) {
	e, err := h.Mem.Lookup(ctx, p)
	if h.after != nil {
		h.after(p)
	}
	return e, err
}

// A rename of /d and a removal of the moved file, started while copy has
// read /d/f, wait for the copy (the rename holds the tree lock, which the
// copy holds shared): the removal then sees the chunks shared and keeps
// them for /dst.
func TestCopyRacingDirMoveAndRemove(t *testing.T) {
	is := is.New(t)
	h := &lookupHook{Mem: metatest.NewMem()}
	f := newFixture(t, 3, h)
	src := f.put("/d/f", 2*testChunk, 3)
	done := make(chan error, 1)
	h.after = func(p rpc.Path) {
		if p == "/d/f" {
			h.after = nil
			go func() {
				err := f.term.namespace.rename(f.ctx, "/d", "/e", false)
				if err == nil {
					err = f.term.namespace.remove(f.ctx, "/e/f", removeOptions{})
				}
				done <- err
			}()
			time.Sleep(50 * time.Millisecond) // the rename, had it no lock to wait for, would run now
		}
	}
	cp, err := f.term.namespace.copy(f.ctx, "/d/f", "/dst", precondition{})
	is.NoErr(err)
	is.NoErr(<-done)
	is.Equal(cp.Chunks[0].ID, src.Chunks[0].ID)
	is.Equal(len(f.deletedChunks(src)), 0) // /dst uses every chunk
	_, err = f.store.Get(f.ctx, "/e/f")
	is.True(rpc.KindOf(err) == rpc.NotFound) // the moved file was removed
}

// A move of a path whose upload's commit has an unknown outcome, or of a
// directory above it, waits (Unavailable) until the upload ends: the
// version it may have committed is not in the chunk index, and only its
// path can find it.
func TestMoveWaitsForUnsettledCommit(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	f.put("/d/f", testChunk, 3)
	f.term.namespace.paths.unsettle("/d/f")
	err := f.term.namespace.rename(f.ctx, "/d", "/e", false)
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the directory above
	err = f.term.namespace.rename(f.ctx, "/d/f", "/g", false)
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the path itself
	f.term.namespace.paths.settle("/d/f")
	is.NoErr(f.term.namespace.rename(f.ctx, "/d", "/e", false)) // settled: it moves
}
