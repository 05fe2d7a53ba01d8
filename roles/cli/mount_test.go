package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// mounted says whether dir is a mount point (/proc/self/mountinfo).
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestMountCommand: dfs mount serves the cluster at a directory until its
// context ends (a signal, in the real program), then unmounts; bad
// arguments are refused with a clear error.
func TestMountCommand(t *testing.T) {
	if err := mount.Available(); err != nil {
		t.Skipf("FUSE is not available here (%v): install fuse3 to run this test", err)
	}
	is := is.New(t)
	c := startInprocCluster(t)
	cl := rolestest.Client(t, c)
	dir := t.TempDir()

	r := dfsRun(t.Context(), nil, "mount", "--coordinator", c.Addr())
	is.True(rpc.KindOf(r.err) == rpc.Invalid) // no mount point
	r = dfsRun(t.Context(), nil, "mount", "--coordinator", c.Addr(), filepath.Join(dir, "missing"))
	is.True(errors.Is(r.err, os.ErrNotExist)) // a missing mount point

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan cmdResult, 1)
	go func() { done <- dfsRun(ctx, nil, "mount", "--coordinator", c.Addr(), dir) }()
	for deadline := time.Now().Add(rolestest.WaitFor); !mounted(t, dir); time.Sleep(20 * time.Millisecond) {
		select {
		case r := <-done:
			t.Fatalf("dfs mount ended: %v\n%s", r.err, r.errOut)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("dfs mount did not mount")
		}
	}
	// Written by another process: the mount shows in mountinfo before
	// go-fuse's poll hack has run, and a first open by this process (the
	// one serving the mount) could then register the file with the Go
	// netpoller, whose epoll_ctl waits for a POLL answer that a stopped
	// world cannot give (docs/fuse.md).
	out, err := exec.Command("sh", "-c", `printf hello > "$1"`, "sh", filepath.Join(dir, "hello.txt")).CombinedOutput()
	is.True(err == nil && len(out) == 0) // written through the mount
	var buf bytes.Buffer
	_, err = cl.Get(t.Context(), "/hello.txt", &buf, nil)
	is.NoErr(err)
	is.Equal(buf.String(), "hello") // written through the mount

	cancel() // what SIGINT or SIGTERM does
	select {
	case r := <-done:
		is.NoErr(r.err)                                         // a clean stop
		is.True(strings.Contains(r.out, "serving the cluster")) // it said where
	case <-time.After(rolestest.WaitFor):
		t.Fatal("dfs mount did not stop")
	}
	is.True(!mounted(t, dir)) // unmounted
}
