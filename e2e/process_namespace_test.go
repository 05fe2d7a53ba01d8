package e2e

// A process test for the namespace commands: directories made, a file and
// a directory renamed, files copied server-side, then kill -9 of the
// coordinator; after its restart the directories, renames and copies are
// all there and the files read back byte for byte.

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestProcessNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{
		nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second,
		coordFlags: []string{"--chunk-size", "64KiB"},
	})
	run := func(args ...string) procResult {
		t.Helper()
		res := c.dfs(procCLITimeout, args...)
		if res.code != 0 {
			t.Fatalf("dfs %s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
		}
		return res
	}

	a := c.put("/ns/src/a", procTestData(200<<10+3, "/ns/src/a"))
	b := c.put("/ns/src/sub/b", procTestData(70<<10, "/ns/src/sub/b"))
	f := c.put("/ns/file", procTestData(130<<10+1, "/ns/file"))
	run("mkdir", "/ns/empty")
	run("mkdir", "-p", "/ns/deep/er")
	run("mv", "/ns/file", "/ns/renamed")     // a file
	run("mv", "/ns/src", "/ns/moved")        // a directory with files
	run("cp", "/ns/renamed", "/ns/copy")     // a file, sharing its chunks
	run("cp", "-r", "/ns/moved", "/ns/tree") // a directory, file by file
	want := strings.Join([]string{
		"/ns/copy", "/ns/deep/", "/ns/deep/er/", "/ns/empty/",
		"/ns/moved/", "/ns/moved/a", "/ns/moved/sub/", "/ns/moved/sub/b",
		"/ns/renamed",
		"/ns/tree/", "/ns/tree/a", "/ns/tree/sub/", "/ns/tree/sub/b",
	}, "\n") + "\n"
	is.Equal(run("ls", "-r", "/ns").stdout, want) // before the kill

	c.kill(c.coordProc)
	c.startCoordinator()

	// The client retries while the restarted coordinator is in safe mode,
	// but not while it cannot be reached: wait until it listens.
	pollUntil(t, "the restarted coordinator to answer", func() (bool, string) {
		res := c.dfs(procCLITimeout, "ls", "/")
		return res.code == 0, res.stderr
	})
	is.Equal(run("ls", "-r", "/ns").stdout, want)                                        // the same namespace after kill -9
	is.True(strings.Contains(run("stat", "/ns/empty").stdout, "type:        directory")) // the empty directory survived
	is.True(strings.Contains(run("stat", "/ns/deep/er").stdout, "type:        directory"))
	for remote, sum := range map[string][32]byte{
		"/ns/renamed": f, "/ns/copy": f,
		"/ns/moved/a": a, "/ns/moved/sub/b": b,
		"/ns/tree/a": a, "/ns/tree/sub/b": b,
	} {
		c.checkFile(remote, sum) // byte for byte
	}
	for _, gone := range []string{"/ns/file", "/ns/src", "/ns/src/a"} {
		res := c.dfs(procCLITimeout, "stat", gone)
		is.Equal(res.code, 3) // the old names stay gone: exit 3, not found
	}

	// The copy shares the chunks: removing the source leaves it readable.
	run("rm", "/ns/renamed")
	c.checkFile("/ns/copy", f)
	res := c.dfs(procCLITimeout, "rm", "/ns/moved")
	is.Equal(res.code, 7) // a directory that is not empty: exit 7
	run("rm", "-r", "/ns/moved")
	c.checkFile("/ns/tree/sub/b", b)

	// What the bash and zsh completion scripts ask the binary.
	res = run("--generate-bash-completion")
	is.True(strings.Contains(res.stdout, "mkdir\n") && strings.Contains(res.stdout, "mv\n")) // the commands
	res = run("mv", "-", "--generate-bash-completion")
	is.True(strings.Contains(res.stdout, "--no-clobber")) // a command's flags
}
