package boltstore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// smallDisk mounts a tmpfs of size bytes on a temp dir for the test, or
// skips the test where mounting is not permitted (not root, a container
// without the capability).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for range 1 << 16 { // bounded: 256 MiB, far more than the tmpfs
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the file system never filled up")
}

// A commit on a full disk fails with ResourceExhausted saying that there
// is no space left for metadata (before, it was an internal error that the
// coordinator treated as a refused upload), and succeeds once space is
// freed.
func TestCommitOnFullDisk(t *testing.T) {
	is := is.New(t)
	dir := smallDisk(t, "2m")
	ctx := context.Background()
	s, err := Open(filepath.Join(dir, "meta.db"), testOptions(t))
	is.NoErr(err) // the store opens on the small disk
	defer s.Close()
	is.NoErr(s.Init(ctx, uuid.NewString(), nil)) // and initializes
	fill(t, dir)

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
