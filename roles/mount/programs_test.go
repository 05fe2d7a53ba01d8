package mount_test

// Programs that know nothing of dfs, on the mount: tar, git, rsync, cp,
// fio. Each needs its program; a missing one skips its test, saying so.

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// need skips the test when a program is missing.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed; install it to run this test", p)
		}
	}
}

// run runs a program and fails the test, with its output, when it fails.
// It runs in a directory outside the mount, and every path it is given is
// absolute: a child process of the test that entered the mount between
// fork and exec (cmd.Dir) would deadlock the test, which serves the
// mount: the forking thread holds its P until the exec, and a stop of the
// world for the GC then never completes, so the mount never answers.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+os.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LC_ALL=C",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// treeDirs are the packages of Go's source tree the tar test unpacks:
// about 650 files in 60 directories, as many as the package's time budget
// allows under -race, where the in-process cluster makes each file's
// commit cost ~200 ms (15 ms without it). The benchmark unpacks 5,000
// (docs/benchmarks.md, FUSE mount).
var treeDirs = []string{"crypto/tls", "crypto/x509"}

// sourceTree returns Go's source tree and how many files treeDirs hold.
func sourceTree(t *testing.T) (string, int) {
	t.Helper()
	src := filepath.Join(runtime.GOROOT(), "src")
	n := 0
	for _, d := range treeDirs {
		filepath.WalkDir(filepath.Join(src, d), func(_ string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	if n < 300 {
		t.Skipf("the Go source tree at %s is not there (%d files)", src, n)
	}
	return src, n
}

// TestTar: tar x of a source tree of hundreds of files onto the mount
// gives the same tree (diff -r), and the cluster holds every file.
func TestTar(t *testing.T) {
	t.Parallel()
	need(t, "tar", "diff")
	is := is.New(t)
	f := mountCluster(t)
	src, files := sourceTree(t)
	archive := filepath.Join(t.TempDir(), "src.tar")
	run(t, "tar", append([]string{"cf", archive, "-C", src}, treeDirs...)...)

	dst := filepath.Join(f.dir, "src")
	is.NoErr(os.Mkdir(dst, 0o755))
	run(t, "tar", "xf", archive, "-C", dst)
	for _, d := range treeDirs {
		run(t, "diff", "-r", filepath.Join(src, d), filepath.Join(dst, d))
	}
	u, err := f.cl.Usage(t.Context(), "/src")
	is.NoErr(err)
	is.Equal(u.Files, int64(files)) // every file is in the cluster
}

// TestGit: a git clone onto the mount passes git fsck and has a clean
// status; a commit made there is in the log.
func TestGit(t *testing.T) {
	t.Parallel()
	need(t, "git")
	is := is.New(t)
	f := mountCluster(t)
	src, _ := sourceTree(t)
	repo := t.TempDir()
	run(t, "git", "-C", repo, "init", "-q", "-b", "main")
	run(t, "cp", "-r", filepath.Join(src, "encoding", "json"), filepath.Join(src, "encoding", "csv"), repo)
	run(t, "git", "-C", repo, "add", ".")
	run(t, "git", "-C", repo, "commit", "-q", "-m", "first")
	is.NoErr(os.WriteFile(filepath.Join(repo, "more.txt"), []byte("more\n"), 0o644))
	run(t, "git", "-C", repo, "add", ".")
	run(t, "git", "-C", repo, "commit", "-q", "-m", "second")

	clone := filepath.Join(f.dir, "clone")
	run(t, "git", "clone", "-q", repo, clone)
	run(t, "git", "-C", clone, "fsck", "--full", "--strict")
	is.Equal(run(t, "git", "-C", clone, "status", "--porcelain"), "") // a clean checkout

	is.NoErr(os.WriteFile(filepath.Join(clone, "new.txt"), []byte("on the mount\n"), 0o644))
	run(t, "git", "-C", clone, "add", "new.txt")
	run(t, "git", "-C", clone, "commit", "-q", "-m", "on dfs")
	log := run(t, "git", "-C", clone, "log", "--format=%s")
	is.Equal(log, "on dfs\nsecond\nfirst\n") // the history, with the commit made on the mount
	run(t, "git", "-C", clone, "fsck", "--full")
	is.Equal(run(t, "git", "-C", clone, "status", "--porcelain"), "") // still clean
	run(t, "git", "-C", clone, "gc", "-q")
	run(t, "git", "-C", clone, "fsck", "--full")
}

// TestRsync: rsync -a to the mount and back gives the same tree.
func TestRsync(t *testing.T) {
	t.Parallel()
	need(t, "rsync", "diff")
	is := is.New(t)
	f := mountCluster(t)
	src, _ := sourceTree(t)
	from := filepath.Join(src, "encoding") + "/"
	run(t, "rsync", "-a", from, filepath.Join(f.dir, "enc")+"/")
	back := t.TempDir()
	run(t, "rsync", "-a", filepath.Join(f.dir, "enc")+"/", back+"/")
	run(t, "diff", "-r", from, back)
	// A second run finds nothing to send but the times dfs does not keep.
	run(t, "rsync", "-a", "--checksum", from, filepath.Join(f.dir, "enc")+"/")
	st, err := os.Stat(filepath.Join(f.dir, "enc", "json", "decode.go"))
	is.NoErr(err)
	want, err := os.Stat(filepath.Join(from, "json", "decode.go"))
	is.NoErr(err)
	is.Equal(st.Size(), want.Size())               // sizes kept
	is.Equal(st.Mode().Perm(), want.Mode().Perm()) // modes kept
}

// bigCluster mounts a cluster with the default chunk and frame sizes, for
// large files.
func bigCluster(t *testing.T, nodes int) *fixture {
	t.Helper()
	needFUSE(t)
	c := rolestest.Start(t, nodes, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.ChunkSize = 8 << 20 }))
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.FrameSize = 1 << 20 })
	return mountWith(t, c, cl, func(*mount.Config) {})
}

// randomFile writes size random bytes to a new file in a temp dir.
func randomFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "big")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(out, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCopyLarge: cp of a 128 MiB file onto the mount and back gives the
// same bytes; the cluster holds them too.
func TestCopyLarge(t *testing.T) {
	t.Parallel()
	need(t, "cp", "cmp")
	is := is.New(t)
	f := bigCluster(t, 3)
	const size = 128 << 20
	src := randomFile(t, size)
	run(t, "cp", src, filepath.Join(f.dir, "big"))
	back := filepath.Join(t.TempDir(), "back")
	run(t, "cp", filepath.Join(f.dir, "big"), back)
	run(t, "cmp", src, back)
	fi, err := f.cl.Head(t.Context(), "/big")
	is.NoErr(err)
	is.Equal(fi.Size, int64(size)) // committed whole

	// cp over the file replaces it.
	small := randomFile(t, 3<<20+5)
	run(t, "cp", small, filepath.Join(f.dir, "big"))
	run(t, "cmp", small, filepath.Join(f.dir, "big"))
}

// TestDatanodeStoppedDuringCopy: a datanode stopped while a large file is
// copied onto the mount does not fail the copy: the file compares equal.
func TestDatanodeStoppedDuringCopy(t *testing.T) {
	t.Parallel()
	need(t, "cp", "cmp")
	is := is.New(t)
	f := bigCluster(t, 4)
	const size = 96 << 20
	src := randomFile(t, size)
	dst := filepath.Join(f.dir, "big")

	in, err := os.Open(src)
	is.NoErr(err)
	defer in.Close()
	// Opened as cp opens it (write-only), so the file streams to the
	// datanodes as it is written: the stopped node fails chunks in flight.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	is.NoErr(err)
	// A third of the file, then stop a datanode, then the rest.
	_, err = io.CopyN(out, in, size/3)
	is.NoErr(err)
	is.NoErr(f.cluster.StopNode(0))
	_, err = io.Copy(out, in)
	is.NoErr(err)           // the writes go on
	is.NoErr(out.Close())   // and the commit succeeds
	run(t, "cmp", src, dst) // the bytes are the same
	var buf bytes.Buffer
	_, err = f.cl.Get(t.Context(), "/big", &buf, nil)
	is.NoErr(err)
	is.Equal(int64(buf.Len()), int64(size)) // the cluster holds it whole
}

// TestFio: fio's sequential write and read jobs run on the mount and
// verify what they read.
func TestFio(t *testing.T) {
	t.Parallel()
	need(t, "fio")
	f := bigCluster(t, 3)
	for _, rw := range []string{"write", "read"} {
		out := run(t, "fio", "--name=seq"+rw, "--directory="+f.dir, "--rw="+rw, "--bs=1M", "--filename=fio.dat",
			"--size=32M", "--ioengine=psync", "--verify=crc32c", "--do_verify=1", "--fallocate=none",
			"--output-format=terse")
		if !strings.Contains(out, "seq"+rw) {
			t.Fatalf("fio %s printed no result: %s", rw, out)
		}
	}
}
