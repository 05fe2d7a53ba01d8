package mount_test

// What the mount does with each kind of call beyond go-fuse's cases: the
// errno of what dfs refuses, what chmod/chown/utimes do, the commit on
// close, read-only mounts, permissions, unmounting.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// TestRefused: what dfs has not is refused with the errno POSIX gives for
// it, never faked.
func TestRefused(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	p := filepath.Join(f.dir, "file")
	is.NoErr(os.WriteFile(p, []byte("x"), 0o644))

	is.True(errors.Is(os.Symlink("file", filepath.Join(f.dir, "sym")), syscall.EPERM)) // no symbolic links
	err := os.Link(p, filepath.Join(f.dir, "hard"))
	is.True(errors.Is(err, syscall.EPERM))                                          // no hard links
	is.True(errors.Is(unix.Setxattr(p, "user.a", []byte("1"), 0), syscall.ENOTSUP)) // no xattrs
	_, err = unix.Getxattr(p, "user.a", make([]byte, 16))
	is.True(errors.Is(err, syscall.ENOTSUP))                                            // no xattrs to read
	is.True(errors.Is(unix.Mkfifo(filepath.Join(f.dir, "fifo"), 0o644), syscall.EPERM)) // files and directories only

	fd, err := os.OpenFile(p, os.O_RDWR, 0)
	is.NoErr(err)
	defer fd.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	is.True(errors.Is(unix.FcntlFlock(fd.Fd(), unix.F_SETLK, &lk), syscall.ENOTSUP)) // no locks

	// The errors of the namespace.
	_, err = os.Stat(filepath.Join(f.dir, "missing"))
	is.True(errors.Is(err, syscall.ENOENT)) // not found
	is.NoErr(os.Mkdir(filepath.Join(f.dir, "d"), 0o755))
	is.NoErr(os.WriteFile(filepath.Join(f.dir, "d", "x"), nil, 0o644))
	is.True(errors.Is(syscall.Rmdir(filepath.Join(f.dir, "d")), syscall.ENOTEMPTY))                                                            // not empty
	is.True(errors.Is(syscall.Mkdir(filepath.Join(f.dir, "d"), 0o755), syscall.EEXIST))                                                        // exists
	is.True(errors.Is(syscall.Rename(filepath.Join(f.dir, "d"), p), syscall.ENOTDIR))                                                          // a directory over a file
	is.True(errors.Is(syscall.Rename(p, filepath.Join(f.dir, "d")), syscall.EISDIR))                                                           // a file over a directory
	is.True(errors.Is(unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, filepath.Join(f.dir, "d", "x"), unix.RENAME_NOREPLACE), syscall.EEXIST)) // no replace
}

// TestCommitOnClose: a file's new content reaches the cluster when it is
// closed, not before; a failed commit is the error of close.
func TestCommitOnClose(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	ctx := t.Context()
	p := filepath.Join(f.dir, "f")

	w, err := os.Create(p)
	is.NoErr(err)
	_, err = w.Write([]byte("hello"))
	is.NoErr(err)
	_, err = f.cl.Head(ctx, "/f")
	is.True(errors.Is(err, fs.ErrNotExist)) // nothing visible before close
	st, err := os.Stat(p)
	is.NoErr(err)
	is.Equal(st.Size(), int64(5)) // the mount shows what was written
	is.NoErr(w.Close())
	got := get(t, f.cl, "/f")
	is.Equal(got, "hello") // visible, whole, after close

	// fsync commits too.
	w, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	is.NoErr(err)
	_, err = w.Write([]byte(" world"))
	is.NoErr(err)
	is.NoErr(w.Sync())
	is.Equal(get(t, f.cl, "/f"), "hello world") // an append, committed by fsync
	is.NoErr(w.Close())

	// A random write into an existing file keeps the rest of it
	// (copy-on-write).
	w, err = os.OpenFile(p, os.O_RDWR, 0)
	is.NoErr(err)
	_, err = w.WriteAt([]byte("J"), 6)
	is.NoErr(err)
	is.NoErr(w.Close())
	is.Equal(get(t, f.cl, "/f"), "hello Jorld")

	// O_EXCL: a file another client made meanwhile wins; the close says so.
	x := filepath.Join(f.dir, "excl")
	w, err = os.OpenFile(x, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	is.NoErr(err)
	_, err = w.Write([]byte("mine"))
	is.NoErr(err)
	_, err = f.cl.Put(ctx, "/excl", bytes.NewReader([]byte("theirs")), 6, nil)
	is.NoErr(err)
	is.True(errors.Is(w.Close(), syscall.EEXIST)) // the failed commit is close's error
	is.Equal(get(t, f.cl, "/excl"), "theirs")     // and the other file stays

	// truncate(2) commits at once.
	is.NoErr(os.Truncate(p, 5))
	is.Equal(get(t, f.cl, "/f"), "hello")

	// Changes made elsewhere show once the attribute timeout passes.
	_, err = f.cl.Put(ctx, "/f", bytes.NewReader([]byte("from elsewhere")), -1, nil)
	is.NoErr(err)
	var b []byte
	for deadline := time.Now().Add(rolestest.WaitFor); time.Now().Before(deadline); {
		b, err = os.ReadFile(p)
		is.NoErr(err)
		if string(b) == "from elsewhere" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	is.Equal(string(b), "from elsewhere") // the new version, whole
}

// get reads the file at p from the cluster.
func get(t *testing.T, cl *client.Client, p string) string {
	t.Helper()
	var buf bytes.Buffer
	if _, err := cl.Get(t.Context(), p, &buf, nil); err != nil {
		t.Fatalf("get %s: %v", p, err)
	}
	return buf.String()
}

// TestModeOwnerTimes: chmod and chown reach the cluster; utimes is
// accepted and changes nothing (dfs keeps the commit time); ls -l's
// attributes come with the listing.
func TestModeOwnerTimes(t *testing.T) {
	is := is.New(t)
	f := mountCluster(t)
	ctx := t.Context()
	p := filepath.Join(f.dir, "f")
	is.NoErr(os.WriteFile(p, []byte("x"), 0o600))
	fi, err := f.cl.Head(ctx, "/f")
	is.NoErr(err)
	is.Equal(fi.Mode.Perm(), fs.FileMode(0o600)) // the mode given at create

	is.NoErr(os.Chmod(p, 0o751))
	fi, err = f.cl.Head(ctx, "/f")
	is.NoErr(err)
	is.Equal(fi.Mode.Perm(), fs.FileMode(0o751)) // chmod
	is.NoErr(os.Mkdir(filepath.Join(f.dir, "d"), 0o700))
	fi, err = f.cl.Head(ctx, "/d")
	is.NoErr(err)
	is.Equal(fi.Mode.Perm(), fs.FileMode(0o700)) // mkdir's mode

	is.NoErr(os.Chown(p, 12345, 23456))
	fi, err = f.cl.Head(ctx, "/f")
	is.NoErr(err)
	is.Equal(fi.Owner, "12345") // a uid with no local name is its number
	is.Equal(fi.Group, "23456")
	st, err := os.Stat(p)
	is.NoErr(err)
	is.Equal(st.Sys().(*syscall.Stat_t).Uid, uint32(12345)) // and reads back as the uid

	before := st.ModTime()
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	is.NoErr(os.Chtimes(p, old, old)) // accepted
	st, err = os.Stat(p)
	is.NoErr(err)
	is.Equal(st.ModTime(), before) // the commit time stays

	out, err := exec.Command("ls", "-ln", f.dir).CombinedOutput()
	is.NoErr(err)
	is.True(bytes.Contains(out, []byte("12345 23456"))) // ls -l shows the owner from the listing

	var sfs syscall.Statfs_t
	is.NoErr(syscall.Statfs(f.dir, &sfs))
	is.True(sfs.Blocks > 0) // df shows the datanodes' capacity
}

// TestReadOnly: a read-only mount reads and refuses every change.
func TestReadOnly(t *testing.T) {
	is := is.New(t)
	needFUSE(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	_, err := cl.Put(t.Context(), "/d/f", bytes.NewReader([]byte("data")), 4, nil)
	is.NoErr(err)
	f := mountWith(t, c, cl, func(cfg *mount.Config) { cfg.ReadOnly = true })
	b, err := os.ReadFile(filepath.Join(f.dir, "d", "f"))
	is.NoErr(err)
	is.Equal(string(b), "data")                                                                         // reads work
	is.True(errors.Is(os.WriteFile(filepath.Join(f.dir, "d", "f"), []byte("x"), 0o644), syscall.EROFS)) // no writes
	is.True(errors.Is(os.Remove(filepath.Join(f.dir, "d", "f")), syscall.EROFS))                        // no removes
	is.True(errors.Is(os.Mkdir(filepath.Join(f.dir, "e"), 0o755), syscall.EROFS))                       // no mkdir
	is.Equal(get(t, cl, "/d/f"), "data")                                                                // nothing changed
}

// TestPermissionDenied: on a secure cluster the mount acts as its user;
// what the coordinator refuses is EACCES.
func TestPermissionDenied(t *testing.T) {
	is := is.New(t)
	needFUSE(t)
	c := rolestest.Start(t, 3, rolestest.Secure)
	admin := rolestest.Client(t, c)
	ctx := t.Context()
	is.NoErr(admin.Mkdir(ctx, "/private"))
	is.NoErr(admin.Chmod(ctx, "/private", 0o700))
	_, err := admin.Put(ctx, "/shared.txt", bytes.NewReader([]byte("read me")), 7, nil)
	is.NoErr(err)
	bob := rolestest.UserClient(t, c, "bob", []string{"staff"})
	f := mountWith(t, c, bob, func(*mount.Config) {})

	b, err := os.ReadFile(filepath.Join(f.dir, "shared.txt"))
	is.NoErr(err)
	is.Equal(string(b), "read me") // others may read
	err = os.WriteFile(filepath.Join(f.dir, "shared.txt"), []byte("x"), 0o644)
	is.True(errors.Is(err, syscall.EACCES)) // but not write
	_, err = os.ReadDir(filepath.Join(f.dir, "private"))
	is.True(errors.Is(err, syscall.EACCES))                                                           // nor list admin's private directory
	is.True(errors.Is(os.WriteFile(filepath.Join(f.dir, "new"), []byte("x"), 0o644), syscall.EACCES)) // nor create in /
	is.True(errors.Is(os.Chmod(filepath.Join(f.dir, "shared.txt"), 0o666), syscall.EPERM))            // nor chmod another's file
	is.True(errors.Is(os.Chown(filepath.Join(f.dir, "shared.txt"), 12345, -1), syscall.EPERM))        // nor chown it
	is.Equal(get(t, admin, "/shared.txt"), "read me")                                                 // nothing changed
}

// TestUnmountFromOutside: fusermount3 -u ends Run cleanly.
func TestUnmountFromOutside(t *testing.T) {
	is := is.New(t)
	needFUSE(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	dir := t.TempDir()
	cfg := mount.DefaultConfig()
	cfg.Mountpoint = dir
	m, err := mount.New(cfg, cl, rolestest.Logger(t))
	is.NoErr(err)
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- m.Run(t.Context(), func() { close(ready) }) }()
	<-ready
	is.NoErr(os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644))
	out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput()
	is.NoErr(err) // fusermount3 -u works
	_ = out
	select {
	case err := <-done:
		is.NoErr(err) // Run returns nil
	case <-time.After(rolestest.WaitFor):
		t.Fatal("Run did not return after the unmount")
	}
	is.Equal(get(t, cl, "/f"), "x") // what was written stays
}

// syncBuffer is a log sink safe for the mount's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestUnavailableIsEIO: a file no datanode can serve reads as EIO, and
// the mount logs the error with its request ID.
func TestUnavailableIsEIO(t *testing.T) {
	is := is.New(t)
	needFUSE(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Attempts = 1 })
	_, err := cl.Put(t.Context(), "/f", bytes.NewReader([]byte("data")), 4, nil)
	is.NoErr(err)
	var logs syncBuffer
	dir := t.TempDir()
	cfg := mount.DefaultConfig()
	cfg.Mountpoint = dir
	m, err := mount.New(cfg, cl, zerolog.New(&logs))
	is.NoErr(err)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- m.Run(ctx, func() { close(ready) }) }()
	<-ready
	defer func() {
		cancel()
		is.NoErr(<-done) // a clean stop
	}()
	for i := range c.Nodes() {
		is.NoErr(c.StopNode(i))
	}
	_, err = os.ReadFile(filepath.Join(dir, "f"))
	is.True(errors.Is(err, syscall.EIO))                        // unavailable is EIO
	is.True(strings.Contains(logs.String(), "(request "))       // logged with the request ID
	is.True(strings.Contains(logs.String(), `"level":"error"`)) // as an error
}
