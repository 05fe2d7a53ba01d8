package mount_test

// What the mount does when a write path fails or the namespace changes
// under files being written: no content is lost silently, and nothing is
// committed on top of a loss.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// TestFailedStreamStaysFailed: once a streamed file's upload failed, every
// later write and close of it fails with EIO, and nothing written after
// the loss reaches the cluster.
func TestFailedStreamStaysFailed(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	ctx := t.Context()
	p := filepath.Join(f.dir, "x")

	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	is.NoErr(err)
	_, err = w.Write([]byte("mine"))
	is.NoErr(err)
	_, err = f.cl.Put(ctx, "/x", bytes.NewReader([]byte("theirs")), 6, nil)
	is.NoErr(err)
	is.True(errors.Is(w.Sync(), syscall.EEXIST)) // the stream's commit fails
	_, err = w.Write([]byte("more"))
	is.True(errors.Is(err, syscall.EIO))       // later writes fail
	is.True(errors.Is(w.Sync(), syscall.EIO))  // and so do fsync
	is.True(errors.Is(w.Close(), syscall.EIO)) // and close
	is.Equal(get(t, f.cl, "/x"), "theirs")     // nothing was committed over the other file

	// The last writer gone, the file is usable again.
	is.NoErr(os.WriteFile(p, []byte("again"), 0o644))
	is.Equal(get(t, f.cl, "/x"), "again")
}

// TestRmdirKeepsUncommittedFiles: a directory holding a file created on
// the mount and not committed yet is not empty.
func TestRmdirKeepsUncommittedFiles(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	d := filepath.Join(f.dir, "d")
	is.NoErr(os.Mkdir(d, 0o755))
	w, err := os.Create(filepath.Join(d, "f"))
	is.NoErr(err)
	_, err = w.Write([]byte("data"))
	is.NoErr(err)
	is.True(errors.Is(syscall.Rmdir(d), syscall.ENOTEMPTY)) // the open file counts
	is.NoErr(w.Close())
	is.Equal(get(t, f.cl, "/d/f"), "data") // and is committed
}

// TestRenameDirWhileWriting: a file written below a directory renamed
// meanwhile ends up under the new name, whole; the old name is gone.
func TestRenameDirWhileWriting(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	ctx := t.Context()
	is.NoErr(os.Mkdir(filepath.Join(f.dir, "d"), 0o755))
	is.NoErr(os.Mkdir(filepath.Join(f.dir, "d", "sub"), 0o755))
	w, err := os.OpenFile(filepath.Join(f.dir, "d", "sub", "f"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	is.NoErr(err) // streamed: written in order by a write-only descriptor
	_, err = w.Write([]byte("abc"))
	is.NoErr(err)
	r, err := os.Create(filepath.Join(f.dir, "d", "g")) // read-write: spooled
	is.NoErr(err)
	_, err = r.Write([]byte("xyz"))
	is.NoErr(err)

	is.NoErr(os.Rename(filepath.Join(f.dir, "d"), filepath.Join(f.dir, "e")))
	_, err = w.Write([]byte("def"))
	is.NoErr(err)
	is.NoErr(w.Close())
	_, err = r.Write([]byte("!"))
	is.NoErr(err)
	is.NoErr(r.Close())

	is.Equal(get(t, f.cl, "/e/sub/f"), "abcdef") // the whole file, at the new path
	is.Equal(get(t, f.cl, "/e/g"), "xyz!")
	_, err = f.cl.Head(ctx, "/d")
	is.True(errors.Is(err, fs.ErrNotExist)) // the old directory is not made again
}

// TestRenameUncommittedOver: a file created on the mount and renamed over
// an existing one before its close (mkstemp, then rename) replaces it,
// even when created O_EXCL; removing the new name then removes it.
func TestRenameUncommittedOver(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	ctx := t.Context()
	_, err := f.cl.Put(ctx, "/dst", bytes.NewReader([]byte("old")), 3, nil)
	is.NoErr(err)
	_, err = f.cl.Put(ctx, "/dst2", bytes.NewReader([]byte("old")), 3, nil)
	is.NoErr(err)

	tmp := filepath.Join(f.dir, "tmp.XXXXXX")
	w, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	is.NoErr(err)
	_, err = w.Write([]byte("new"))
	is.NoErr(err)
	is.NoErr(os.Rename(tmp, filepath.Join(f.dir, "dst")))
	_, err = w.Write([]byte("er"))
	is.NoErr(err)
	is.NoErr(w.Close())                     // no EEXIST: the rename replaced dst
	is.Equal(get(t, f.cl, "/dst"), "newer") // the new content, at the new name
	_, err = f.cl.Head(ctx, "/tmp.XXXXXX")
	is.True(errors.Is(err, fs.ErrNotExist))

	tmp2 := filepath.Join(f.dir, "tmp2")
	w, err = os.OpenFile(tmp2, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	is.NoErr(err)
	_, err = w.Write([]byte("x"))
	is.NoErr(err)
	is.NoErr(os.Rename(tmp2, filepath.Join(f.dir, "dst2")))
	is.NoErr(os.Remove(filepath.Join(f.dir, "dst2")))
	is.NoErr(w.Close())
	_, err = f.cl.Head(ctx, "/dst2")
	is.True(errors.Is(err, fs.ErrNotExist)) // neither the old dst2 nor the new one
	_, err = f.cl.Head(ctx, "/tmp2")
	is.True(errors.Is(err, fs.ErrNotExist))
}

// TestStopFinishesCommits: a file being written when the mount is told to
// stop is committed by its close, not aborted.
func TestStopFinishesCommits(t *testing.T) {
	is := is.New(t)
	needFUSE(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	dir := t.TempDir()
	cfg := mount.DefaultConfig()
	cfg.Mountpoint = dir
	cfg.SpoolDir = t.TempDir()
	m, err := mount.New(cfg, cl, rolestest.Logger(t))
	is.NoErr(err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- m.Run(ctx, func() { close(ready) }) }()
	<-ready
	w, err := os.OpenFile(filepath.Join(dir, "f"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	is.NoErr(err)
	_, err = w.Write([]byte("written before the stop"))
	is.NoErr(err)
	cancel()            // SIGTERM
	is.NoErr(w.Close()) // the commit is not aborted
	select {
	case err := <-done:
		is.NoErr(err) // a clean stop
	case <-time.After(rolestest.WaitFor):
		t.Fatal("Run did not return after the stop")
	}
	is.Equal(get(t, cl, "/f"), "written before the stop")
}
