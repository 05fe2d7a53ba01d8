package boltstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// A commit on a full disk fails with ResourceExhausted saying that there
// is no space left for metadata (before, it was an internal error that the
// coordinator treated as a refused upload), and succeeds once space is
// freed.
func TestCommitOnFullDisk(t *testing.T) {
	is := is.New(t)
	dir := testdisk.Small(t, "2m")
	ctx := context.Background()
	s, err := Open(filepath.Join(dir, "meta.db"), testOptions(t))
	is.NoErr(err) // the store opens on the small disk
	defer s.Close()
	is.NoErr(s.Init(ctx, uuid.NewString(), nil)) // and initializes
	testdisk.Fill(t, dir)

	// A large record needs pages the file does not have yet.
	big := metatest.NewFile("/big", 2000, 1)
	err = s.Commit(ctx, &meta.Txn{Path: big.Path, Put: big})
	t.Log(err)
	is.True(err != nil)                                                  // the commit fails on the full disk
	is.True(errors.Is(err, rpc.ResourceExhausted))                       // as a resource exhausted
	is.True(strings.Contains(err.Error(), "no space left for metadata")) // saying what ran out
	_, err = s.Get(ctx, big.Path)
	is.True(errors.Is(err, rpc.NotFound)) // nothing was committed

	is.NoErr(os.Remove(filepath.Join(dir, "filler")))
	is.NoErr(s.Commit(ctx, &meta.Txn{Path: big.Path, Put: big})) // once space is freed the same commit succeeds
	got, err := s.Get(ctx, big.Path)
	is.NoErr(err)
	is.Equal(len(got.Chunks), 2000) // and reads back
}

func TestNoSpaceErrors(t *testing.T) {
	is := is.New(t)
	for _, err := range []error{
		&os.PathError{Op: "write", Path: "meta.db", Err: syscall.ENOSPC},
		errors.New("file resize error: no space left on device"), // bolt's unwrapped resize error
		&os.PathError{Op: "write", Path: "meta.db", Err: syscall.EDQUOT},
	} {
		got := boltErr("boltstore.Commit", err)
		is.True(errors.Is(got, rpc.ResourceExhausted))                       // disk full is a resource exhausted
		is.True(strings.Contains(got.Error(), "no space left for metadata")) // with a message that says so
	}
	is.True(errors.Is(boltErr("boltstore.Commit", syscall.EIO), rpc.Internal)) // other failures stay internal
}
