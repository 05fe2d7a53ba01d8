package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// jsonDu is one line of `du --json`.
type jsonDu struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Files int64  `json:"files"`
	Dirs  int64  `json:"dirs"`
}

// TestNamespaceCommands pins mv, cp, mkdir, rm -r, du, ls -h and stat of
// a directory against an in-process cluster.
func TestNamespaceCommands(t *testing.T) {
	c := startInprocCluster(t)

	t.Run("mkdir", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "mkdir", "/ns")
		is.Equal(cli.ok(nil, "mkdir", "/ns/mk"), "") // mkdir prints nothing
		is.Equal(cli.ok(nil, "ls", "/ns"), "/ns/mk/\n")
		r := cli.run(nil, "mkdir", "/ns/mk")
		is.Equal(rpc.KindOf(r.err), rpc.Exists) // an existing directory, without -p
		r = cli.run(nil, "mkdir", "/ns/no/such/parent")
		is.Equal(rpc.KindOf(r.err), rpc.NotFound) // a missing parent, without -p
		cli.ok(nil, "mkdir", "-p", "/ns/mk", "/ns/deep/er/est")
		is.Equal(cli.ok(nil, "ls", "-r", "/ns/deep"), "/ns/deep/er/\n/ns/deep/er/est/\n") // -p makes the parents
		cli.ok([]byte("f"), "put", "-", "/ns/mkfile")
		r = cli.run(nil, "mkdir", "-p", "/ns/mkfile/sub")
		is.Equal(rpc.KindOf(r.err), rpc.Exists) // a file on the way
		r = cli.run(nil, "mkdir")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // no PATH
	})

	t.Run("chmod and chown", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "mkdir", "-p", "/ns/perm/sub")
		cli.ok([]byte("f"), "put", "-", "/ns/perm/sub/f")
		is.Equal(cli.ok(nil, "chmod", "750", "/ns/perm"), "") // chmod prints nothing
		is.Equal(cli.ok(nil, "chown", "alice:staff", "/ns/perm"), "")
		out := cli.ok(nil, "ls", "-l", "/ns")
		is.True(strings.Contains(out, "drwxr-x---  alice  staff")) // ls -l shows mode, owner and group
		cli.ok(nil, "chmod", "-R", "1777", "/ns/perm/sub")
		out = cli.ok(nil, "ls", "-l", "/ns/perm/sub")
		is.True(strings.HasPrefix(out, "-rwxrwxrwt  ")) // -R reached the file (its sticky bit shows as t)
		cli.ok(nil, "chown", "-R", ":wheel", "/ns/perm/sub")
		out = cli.ok(nil, "stat", "/ns/perm/sub/f")
		is.True(strings.Contains(out, "group:       wheel\n"))             // chown :GROUP changes the group only
		is.True(strings.Contains(out, "mode:        1777 (-rwxrwxrwt)\n")) // stat shows the mode
		var j struct {
			Path     string    `json:"path"`
			Dir      bool      `json:"dir"`
			Modified time.Time `json:"modified"`
			Owner    string    `json:"owner"`
			Group    string    `json:"group"`
			Mode     string    `json:"mode"`
		}
		decodeJSON(t, cli.ok(nil, "stat", "--json", "/ns/perm"), &j)
		is.Equal([]string{j.Owner, j.Group, j.Mode}, []string{"alice", "staff", "0750"}) // --json
		for _, bad := range [][]string{{"chmod", "8", "/ns/perm"}, {"chmod", "2755", "/ns/perm"}, {"chmod", "u+x", "/ns/perm"}, {"chmod", "755"}, {"chown", ":", "/ns/perm"}} {
			is.Equal(rpc.KindOf(cli.run(nil, bad[0], bad[1:]...).err), rpc.Invalid) // bad usage
		}
		is.Equal(rpc.KindOf(cli.run(nil, "chmod", "755", "/ns/nope").err), rpc.NotFound)
	})

	t.Run("stat of a directory", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "mkdir", "-p", "/ns/statdir")
		out := cli.ok(nil, "stat", "/ns/statdir")
		is.True(strings.Contains(out, "path:        /ns/statdir\n")) // the path
		is.True(strings.Contains(out, "type:        directory\n"))   // says it is a directory
		var j struct {
			Path     string    `json:"path"`
			Dir      bool      `json:"dir"`
			Modified time.Time `json:"modified"`
			Owner    string    `json:"owner"`
			Group    string    `json:"group"`
			Mode     string    `json:"mode"`
		}
		decodeJSON(t, cli.ok(nil, "stat", "--json", "/ns/statdir"), &j)
		is.Equal(j.Path, "/ns/statdir") // --json path
		is.True(j.Dir)                  // --json dir
	})

	t.Run("rm of directories", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "mkdir", "-p", "/ns/rm/empty")
		is.Equal(cli.ok(nil, "rm", "/ns/rm/empty"), "") // an empty directory goes
		cli.ok([]byte("x"), "put", "-", "/ns/rm/full/a")
		cli.ok([]byte("y"), "put", "-", "/ns/rm/full/sub/b")
		r := cli.run(nil, "rm", "/ns/rm/full")
		is.Equal(rpc.KindOf(r.err), rpc.NotEmpty)                 // a non-empty one does not
		is.True(strings.Contains(r.err.Error(), "rm -r removes")) // saying how
		is.True(!strings.ContainsAny(r.err.Error(), "\n"))        // on one line
		is.Equal(cli.ok(nil, "ls", "-r", "/ns/rm"), "/ns/rm/full/\n/ns/rm/full/a\n/ns/rm/full/sub/\n/ns/rm/full/sub/b\n")
		is.Equal(cli.ok(nil, "rm", "-r", "/ns/rm/full"), "") // rm -r
		is.Equal(cli.ok(nil, "ls", "/ns/rm"), "")            // everything below went
		r = cli.run(nil, "rm", "-r", "/ns/rm/full")
		is.Equal(rpc.KindOf(r.err), rpc.NotFound) // rm -r of a missing path fails
		r = cli.run(nil, "rm", "-r", "/")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // rm -r / is refused
	})

	t.Run("mv", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		a, b := randomData(100<<10), randomData(10)
		cli.ok(a, "put", "-", "/ns/mv/a")
		cli.ok(b, "put", "-", "/ns/mv/b")
		is.Equal(cli.ok(nil, "mv", "/ns/mv/a", "/ns/mv/a2"), "")   // a rename prints nothing
		is.True(cli.ok(nil, "get", "/ns/mv/a2", "-") == string(a)) // the same bytes under the new name
		is.Equal(rpc.KindOf(cli.run(nil, "stat", "/ns/mv/a").err), rpc.NotFound)

		r := cli.run(nil, "mv", "-n", "/ns/mv/b", "/ns/mv/a2")
		is.Equal(rpc.KindOf(r.err), rpc.Exists)                    // -n refuses to replace
		is.True(cli.ok(nil, "get", "/ns/mv/a2", "-") == string(a)) // and leaves it
		cli.ok(nil, "mv", "/ns/mv/b", "/ns/mv/a2")
		is.True(cli.ok(nil, "get", "/ns/mv/a2", "-") == string(b)) // without -n a file replaces a file

		// Into a directory: a trailing /, or an existing directory.
		cli.ok(nil, "mkdir", "/ns/mv/into")
		cli.ok([]byte("1"), "put", "-", "/ns/mv/x")
		cli.ok([]byte("2"), "put", "-", "/ns/mv/y")
		cli.ok([]byte("3"), "put", "-", "/ns/mv/z")
		cli.ok(nil, "mv", "/ns/mv/x", "/ns/mv/into")
		cli.ok(nil, "mv", "/ns/mv/y", "/ns/mv/z", "/ns/mv/into/")
		is.Equal(cli.ok(nil, "ls", "/ns/mv/into"), "/ns/mv/into/x\n/ns/mv/into/y\n/ns/mv/into/z\n") // moved into

		// A directory with what it holds.
		cli.ok(nil, "mv", "/ns/mv/into/", "/ns/mv/moved")                                                     // a source's trailing / names the directory
		is.Equal(cli.ok(nil, "ls", "-r", "/ns/mv/moved"), "/ns/mv/moved/x\n/ns/mv/moved/y\n/ns/mv/moved/z\n") // the subtree moved
		is.Equal(cli.ok(nil, "get", "/ns/mv/moved/z", "-"), "3")

		r = cli.run(nil, "mv", "/ns/mv/a2", "/ns/mv/moved/x", "/ns/mv/nodir")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // several sources need a directory
		r = cli.run(nil, "mv", "/ns/mv/missing", "/ns/mv/other")
		is.Equal(rpc.KindOf(r.err), rpc.NotFound) // a missing source
		r = cli.run(nil, "mv", "/ns/mv/a2")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // one argument
	})

	t.Run("cp", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		a := randomData(150 << 10)
		cli.ok(a, "put", "-", "/ns/cp/a")
		is.Equal(cli.ok(nil, "cp", "/ns/cp/a", "/ns/cp/b"), "")   // cp prints nothing
		is.True(cli.ok(nil, "get", "/ns/cp/b", "-") == string(a)) // the copy reads back
		is.True(cli.ok(nil, "get", "/ns/cp/a", "-") == string(a)) // the source stays

		cli.ok([]byte("other"), "put", "-", "/ns/cp/c")
		r := cli.run(nil, "cp", "-n", "/ns/cp/c", "/ns/cp/b")
		is.Equal(rpc.KindOf(r.err), rpc.Exists)                   // -n refuses to replace
		is.True(cli.ok(nil, "get", "/ns/cp/b", "-") == string(a)) // and leaves the file
		cli.ok(nil, "cp", "/ns/cp/c", "/ns/cp/b")
		is.Equal(cli.ok(nil, "get", "/ns/cp/b", "-"), "other") // without -n it replaces

		cli.ok(nil, "mkdir", "/ns/cp/into")
		cli.ok(nil, "cp", "/ns/cp/a", "/ns/cp/c", "/ns/cp/into/")
		is.Equal(cli.ok(nil, "ls", "/ns/cp/into"), "/ns/cp/into/a\n/ns/cp/into/c\n") // several into a directory

		cli.ok(nil, "mkdir", "-p", "/ns/cp/tree/empty")
		cli.ok([]byte("deep"), "put", "-", "/ns/cp/tree/sub/deep")
		cli.ok([]byte("top"), "put", "-", "/ns/cp/tree/top")
		r = cli.run(nil, "cp", "/ns/cp/tree", "/ns/cp/tree2")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid)                 // a directory needs -r
		is.True(strings.Contains(r.err.Error(), "cp -r copies")) // saying so
		cli.ok(nil, "cp", "-r", "/ns/cp/tree", "/ns/cp/tree2")
		is.Equal(cli.ok(nil, "ls", "-r", "/ns/cp/tree2"), "/ns/cp/tree2/empty/\n/ns/cp/tree2/sub/\n/ns/cp/tree2/sub/deep\n/ns/cp/tree2/top\n") // the tree copied
		is.Equal(cli.ok(nil, "get", "/ns/cp/tree2/sub/deep", "-"), "deep")
		r = cli.run(nil, "cp", "-r", "/ns/cp/tree", "/ns/cp/tree/inside")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // not into itself
	})

	t.Run("du", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(randomData(3000), "put", "-", "/ns/du/top")
		cli.ok(randomData(1000), "put", "-", "/ns/du/a/f1")
		cli.ok(randomData(2000), "put", "-", "/ns/du/a/deeper/f2")
		cli.ok(nil, "mkdir", "/ns/du/b")

		var lines []jsonDu
		decodeJSON(t, cli.ok(nil, "du", "--json", "/ns/du"), &lines)
		is.Equal(lines, []jsonDu{
			{Path: "/ns/du/a", Bytes: 3000, Files: 2, Dirs: 1},
			{Path: "/ns/du/b"},
			{Path: "/ns/du", Bytes: 6000, Files: 3, Dirs: 3},
		}) // each subdirectory, then the total
		lines = nil
		decodeJSON(t, cli.ok(nil, "du", "-s", "--json", "/ns/du", "/ns/du/a"), &lines)
		is.Equal(lines, []jsonDu{{Path: "/ns/du", Bytes: 6000, Files: 3, Dirs: 3}, {Path: "/ns/du/a", Bytes: 3000, Files: 2, Dirs: 1}}) // -s: one line per PATH

		is.Equal(cli.ok(nil, "du", "/ns/du"), "3000  2 files  /ns/du/a\n   0  0 files  /ns/du/b\n6000  3 files  /ns/du\n") // text: size, files, path
		is.Equal(cli.ok(nil, "du", "-s", "-h", "/ns/du"), "5.9 KiB  3 files  /ns/du\n")                                    // -h: binary units
		is.Equal(cli.ok(nil, "du", "-sh", "/ns/du/a"), "2.9 KiB  2 files  /ns/du/a\n")                                     // combined short flags
		r := cli.run(nil, "du", "/ns/du/none")
		is.Equal(rpc.KindOf(r.err), rpc.NotFound) // a missing path
		help := cli.ok(nil, "du", "--help")
		is.True(strings.Contains(help, "--human-readable, -h")) // --help still works, -h is human
	})

	t.Run("ls -h", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(randomData(3<<10+512), "put", "-", "/ns/lsh/f")
		long := cli.ok(nil, "ls", "-lh", "/ns/lsh")
		is.True(strings.Contains(long, " 3.5 KiB ")) // ls -lh: human sizes
		long = cli.ok(nil, "ls", "-l", "/ns/lsh")
		is.True(strings.Contains(long, " 3584 ")) // ls -l: bytes
		is.True(strings.Contains(cli.ok(nil, "ls", "--help"), "--long, -l"))
	})
}

// TestExitCodes: Run's exit status says the error's kind; the error is one
// line on stderr, with the request ID of a failed call.
func TestExitCodes(t *testing.T) {
	c := startInprocCluster(t)
	cli := inprocCLI{t: t, addr: c.Addr()}
	cli.ok([]byte("x"), "put", "-", "/exit/file")
	cli.ok([]byte("x"), "put", "-", "/exit/dir/file")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"ok", []string{"stat", "--coordinator", c.Addr(), "/exit/file"}, 0},
		{"not found", []string{"stat", "--coordinator", c.Addr(), "/exit/none"}, ExitNotFound},
		{"invalid path", []string{"stat", "--coordinator", c.Addr(), "exit"}, ExitInvalid},
		{"unknown flag", []string{"ls", "--bogus"}, ExitInvalid},
		{"unknown command", []string{"bogus"}, ExitInvalid},
		{"salvage exits 1", []string{"admin", "salvage", "--from", "/nonexistent/metadata.db", "--to", "/nonexistent/new.db"}, ExitOther},
		{"missing arguments", []string{"mv", "--coordinator", c.Addr(), "/exit/file"}, ExitInvalid},
		{"exists", []string{"mkdir", "--coordinator", c.Addr(), "/exit/dir"}, ExitExists},
		{"not empty", []string{"rm", "--coordinator", c.Addr(), "/exit/dir"}, ExitNotEmpty},
		{"unavailable", []string{"nodes", "--coordinator", dead}, ExitUnavailable},
		{"health exits 1", []string{"health", "--addr", dead, "--timeout", "2s"}, ExitOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			code := Run(ctx, append([]string{"dfs"}, tc.args...), Version{}, IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, &bytes.Buffer{})
			is.Equal(code, tc.code) // the exit status
			if code != 0 {
				is.True(strings.HasPrefix(errOut.String(), "dfs: ")) // one line on stderr
				is.Equal(strings.Count(errOut.String(), "\n"), 1)    // one line only
				t.Logf("dfs %s: exit %d: %s", strings.Join(tc.args, " "), code, strings.TrimSpace(errOut.String()))
			}
		})
	}

	is := is.New(t)
	r := cli.run(nil, "stat", "/exit/none")
	is.True(errors.Is(r.err, rpc.NotFound))
	is.True(strings.Contains(r.err.Error(), "(request ")) // the request ID of the failed call

	var out bytes.Buffer
	is.Equal(Run(t.Context(), []string{"dfs", "--help"}, Version{}, IO{Out: &out, Err: &out}, &bytes.Buffer{}), 0)
	is.True(strings.Contains(out.String(), "6 unavailable")) // dfs --help lists the exit statuses
}

// TestCompletionAndMan: the completion scripts and the man page name the
// commands.
func TestCompletionAndMan(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"completion", "bash"}, []string{"--generate-bash-completion", "complete ", "dfs"}},
		{[]string{"completion", "zsh"}, []string{"#compdef dfs", "--generate-bash-completion"}},
		{[]string{"completion", "fish"}, []string{"complete -c dfs", "'mv'", "'cp'", "'mkdir'", "'du'", "'put'", "'ls'"}},
		{[]string{"man"}, []string{".TH", "mv", "cp", "mkdir", "du", "put", "completion"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			is := is.New(t)
			r := dfsRun(t.Context(), nil, tc.args...)
			is.NoErr(r.err) // the command succeeds
			for _, w := range tc.want {
				if !strings.Contains(r.out, w) {
					t.Errorf("dfs %s does not print %q", strings.Join(tc.args, " "), w)
				}
			}
		})
	}
	is := is.New(t)
	r := dfsRun(t.Context(), nil, "completion", "tcsh")
	is.Equal(rpc.KindOf(r.err), rpc.Invalid) // an unknown shell

	// What the bash and zsh scripts ask dfs (--generate-bash-completion)
	// depends on os.Args, so the process test in e2e/ pins it.
}

// TestVersionJSON: dfs version --json prints what the text prints.
func TestVersionJSON(t *testing.T) {
	is := is.New(t)
	var out bytes.Buffer
	app := App(Version{Version: "v1.2.3", Commit: "abc"}, IO{In: strings.NewReader(""), Out: &out, Err: &out}, &bytes.Buffer{})
	is.NoErr(app.Run([]string{"dfs", "version", "--json"}))
	var v struct {
		Version string `json:"version"`
		Commit  string `json:"commit"`
		Go      string `json:"go"`
		OS      string `json:"os"`
		Arch    string `json:"arch"`
	}
	decodeJSON(t, out.String(), &v)
	is.Equal(v.Version, "v1.2.3")                     // the version
	is.Equal(v.Commit, "abc")                         // the commit
	is.True(v.Go != "" && v.OS != "" && v.Arch != "") // the toolchain and platform
}

// TestManPageCurrent: docs/dfs.1 is what dfs man prints (after a change of
// commands or flags: make man).
func TestManPageCurrent(t *testing.T) {
	is := is.New(t)
	want, err := os.ReadFile("../../docs/dfs.1")
	is.NoErr(err) // docs/dfs.1 is readable
	r := dfsRun(t.Context(), nil, "man")
	is.NoErr(r.err) // dfs man
	if r.out != string(want) {
		t.Errorf("docs/dfs.1 differs from what dfs man prints: run make man")
	}
}
