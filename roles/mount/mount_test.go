package mount_test

// The mount over a real in-process cluster (roles/rolestest): go-fuse's
// POSIX cases, then real programs (tar, git, rsync, cp) on the mount.
// Every test skips, saying why, where FUSE cannot be used.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// needFUSE skips the test where FUSE cannot be used.
func needFUSE(t *testing.T) {
	t.Helper()
	if err := mount.Available(); err != nil {
		t.Skipf("FUSE is not available here (%v): install fuse3 and make /dev/fuse usable to run the mount tests", err)
	}
}

// fixture is a cluster, a client of it and a mount of it.
type fixture struct {
	cluster *roles.Cluster
	cl      *client.Client
	dir     string // the mount point
}

// mountCluster starts a cluster of three datanodes and mounts it; the
// mount ends, cleanly, with the test.
func mountCluster(t *testing.T, opts ...rolestest.Option) *fixture {
	t.Helper()
	needFUSE(t)
	c := rolestest.Start(t, 3, opts...)
	cl := rolestest.Client(t, c)
	return mountWith(t, c, cl, func(*mount.Config) {})
}

// mountWith mounts the cluster cl talks to, adjusting the configuration.
func mountWith(t *testing.T, c *roles.Cluster, cl *client.Client, tune func(*mount.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := mount.DefaultConfig()
	cfg.Mountpoint = dir
	cfg.SpoolDir = t.TempDir()
	tune(&cfg)
	m, err := mount.New(cfg, cl, rolestest.Logger(t))
	if err != nil {
		t.Fatalf("mount.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("mount ended with %v", err)
			}
		case <-time.After(rolestest.WaitFor):
			t.Errorf("the mount did not end")
		}
	})
	return &fixture{cluster: c, cl: cl, dir: dir}
}

// TestPosix runs go-fuse's POSIX cases that apply to dfs, each on a
// directory of its own on one mount.
func TestPosix(t *testing.T) {
	f := mountCluster(t)
	for _, name := range []string{
		"FileBasic", "FileLarge", "TruncateFile", "TruncateNoFile", "MkdirRmdir",
		"ReadDirBasic", "ReadDirConsistency", "DirSeek", "RenameOverwriteDestExist",
		"RenameOverwriteDestNoExist", "RenameOpenDir", "OpenAt", "FdLeak", "FstatDeleted",
		"NlinkZero", "AppendWrite", "ParallelFileOpen",
	} {
		fn, ok := posixtest.All[name]
		if !ok {
			t.Fatalf("posixtest has no case %s", name)
		}
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := filepath.Join(f.dir, name)
			is.NoErr(os.Mkdir(dir, 0o755)) // a directory per case
			fn(t, dir)
		})
	}
}
