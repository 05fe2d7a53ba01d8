package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// localTree is a local directory's content: each regular file's path
// (slash-separated, below the root) and bytes, and each empty directory
// with a trailing /.
type localTree map[string]string

// makeTree writes tree below a new temporary directory and returns it.
func makeTree(t *testing.T, tree localTree) string {
	t.Helper()
	root := t.TempDir()
	for p, data := range tree {
		full := filepath.Join(root, filepath.FromSlash(p))
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// readTree reads the tree below root as makeTree writes it.
func readTree(t *testing.T, root string) localTree {
	t.Helper()
	out := localTree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			if len(entries) == 0 && rel != "." {
				out[rel+"/"] = ""
			}
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		default:
			out[rel] = "<" + d.Type().String() + ">"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lsR is what dfs ls -r prints for dir, one path a line.
func (c inprocCLI) lsR(dir string) []string {
	return strings.Fields(c.ok(nil, "ls", "-r", dir))
}

// dfsRunTerminal runs `dfs args...` as dfsRun does, with stderr taken for
// a terminal (progress bars).
func dfsRunTerminal(ctx context.Context, args ...string) cmdResult {
	var out, errOut bytes.Buffer
	app := App(Version{}, IO{In: bytes.NewReader(nil), Out: &out, Err: &errOut, Terminal: true}, io.Discard)
	err := app.RunContext(ctx, append([]string{"dfs"}, args...))
	return cmdResult{out: out.String(), errOut: errOut.String(), err: err}
}

func TestTransfer(t *testing.T) {
	c := startInprocCluster(t)
	big := string(randomData(200<<10 + 5)) // four 64 KiB chunks
	tree := localTree{
		"a":               "file a",
		"big":             big,
		"empty":           "",
		"sub/b":           "file b",
		"sub/deeper/c":    "file c",
		"sub/hollow/":     "",
		"only-dirs/x/y/":  "",
		"with space/d e":  "file d e",
		"sub/deeper/zzz/": "",
	}

	t.Run("put -r and get -r keep the tree", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		src := makeTree(t, tree)
		is.NoErr(os.Symlink(filepath.Join(src, "a"), filepath.Join(src, "link"))) // a symbolic link, skipped

		r := cli.run(nil, "put", "-r", "--transfers", "3", src, "/tr/one")
		is.NoErr(r.err)                                 // put -r into a new remote path
		is.Equal(r.out, "")                             // prints nothing on stdout
		is.True(strings.Contains(r.errOut, "skipping")) // the link is skipped with a notice
		is.True(strings.Contains(r.errOut, "link"))     // naming it
		is.Equal(cli.lsR("/tr/one"), []string{          // /tr/one did not exist: it is the tree's root
			"/tr/one/a", "/tr/one/big", "/tr/one/empty", "/tr/one/only-dirs/", "/tr/one/only-dirs/x/", "/tr/one/only-dirs/x/y/",
			"/tr/one/sub/", "/tr/one/sub/b", "/tr/one/sub/deeper/", "/tr/one/sub/deeper/c", "/tr/one/sub/deeper/zzz/",
			"/tr/one/sub/hollow/", "/tr/one/with", "space/", "/tr/one/with", "space/d", "e",
		})
		is.Equal(cli.ok(nil, "cat", "/tr/one/big"), big) // byte for byte

		// Into a remote directory that exists: under the source's name.
		cli.ok(nil, "put", "-r", src, "/tr/one")
		is.Equal(cli.ok(nil, "cat", "/tr/one/"+filepath.Base(src)+"/sub/deeper/c"), "file c") // /tr/one/SRC/...

		// get -r to a new local path: it becomes the tree's root.
		out := filepath.Join(t.TempDir(), "out")
		cli.ok(nil, "get", "-r", "/tr/one/"+filepath.Base(src), out)
		is.Equal(readTree(t, out), tree) // the round trip keeps every file and every empty directory

		// get -r into a local directory that exists: under the source's name.
		into := t.TempDir()
		cli.ok(nil, "get", "-r", "--transfers", "1", "/tr/one/sub", into)
		is.Equal(readTree(t, filepath.Join(into, "sub")), localTree{"b": "file b", "deeper/c": "file c", "deeper/zzz/": "", "hollow/": ""}) // into/sub/...
	})

	t.Run("several sources and a trailing slash", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		src := makeTree(t, localTree{"f1": "one", "f2": "two", "d/g": "gee"})
		f1, f2, d := filepath.Join(src, "f1"), filepath.Join(src, "f2"), filepath.Join(src, "d")

		cli.ok(nil, "put", f1, "/tr/slash/")
		is.Equal(cli.lsR("/tr/slash"), []string{"/tr/slash/f1"}) // a trailing / means into (and makes the directory)
		cli.ok(nil, "put", f2, "/tr/slash")
		is.Equal(cli.lsR("/tr/slash"), []string{"/tr/slash/f1", "/tr/slash/f2"}) // an existing directory too
		cli.ok(nil, "put", f2, "/tr/slash/renamed")
		is.Equal(cli.ok(nil, "cat", "/tr/slash/renamed"), "two") // else the path is the file's

		cli.ok(nil, "put", "-r", f1, f2, d, "/tr/many/")
		is.Equal(cli.lsR("/tr/many"), []string{"/tr/many/d/", "/tr/many/d/g", "/tr/many/f1", "/tr/many/f2"}) // several sources, files and a directory
		cli.ok(nil, "put", f1, f2, "/tr/many")
		r := cli.run(nil, "put", f1, f2, "/tr/none")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid)                            // several sources need a remote directory
		is.True(strings.Contains(r.err.Error(), "end it with / to create")) // saying how to make one
		r = cli.run(nil, "put", f1, d, "/tr/many/")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid)            // a directory without -r
		is.True(strings.Contains(r.err.Error(), "-r puts")) // saying what -r does
		r = cli.run(nil, "put", "-", f1, "/tr/many/")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // stdin among several sources

		dst := t.TempDir()
		cli.ok(nil, "get", "/tr/many/f1", "/tr/many/f2", dst)
		is.Equal(readTree(t, dst), localTree{"f1": "one", "f2": "two"}) // several remote files into a local directory
		r = cli.run(nil, "get", "/tr/many/f1", "/tr/many/f2", filepath.Join(dst, "none"))
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // several sources need an existing local directory
		r = cli.run(nil, "get", "/tr/many/f1", filepath.Join(dst, "none")+"/")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // so does a trailing /
		r = cli.run(nil, "get", "/tr/many/f1", "/tr/many/d", dst)
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // a remote directory without -r
		r = cli.run(nil, "get", "/tr/many/f1", "/tr/many/f2", "-")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // stdout takes one file
		r = cli.run(nil, "get", "/tr/many/none", "/tr/many/f1", t.TempDir())
		is.Equal(rpc.KindOf(r.err), rpc.NotFound) // a missing source fails the command
		r = cli.run(nil, "put", "--transfers", "0", f1, f2, "/tr/many/")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // --transfers at least 1
	})

	t.Run("put --no-clobber", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok([]byte("first"), "put", "-", "/tr/nc/file")
		local := writeLocal(t, "second", []byte("second"))
		r := cli.run(nil, "put", "--no-clobber", local, "/tr/nc/file")
		is.Equal(rpc.KindOf(r.err), rpc.Exists)              // refused
		is.True(errors.Is(r.err, fs.ErrExist))               // as fs.ErrExist
		is.Equal(cli.ok(nil, "cat", "/tr/nc/file"), "first") // the remote file untouched
		r = cli.run([]byte("third"), "put", "-n", "-", "/tr/nc/file")
		is.Equal(rpc.KindOf(r.err), rpc.Exists) // from stdin too
		cli.ok(nil, "put", "-n", local, "/tr/nc/new")
		is.Equal(cli.ok(nil, "cat", "/tr/nc/new"), "second") // a new path is written
		cli.ok(nil, "put", "-n", writeLocal(t, "e", nil), "/tr/nc/empty")
		is.Equal(cli.ok(nil, "cat", "/tr/nc/empty"), "") // an empty file too
		cli.ok(nil, "put", local, "/tr/nc/file")
		is.Equal(cli.ok(nil, "cat", "/tr/nc/file"), "second") // without it, put replaces

		// Recursive: the files that exist are left and reported, the others written.
		src := makeTree(t, localTree{"file": "mine", "other": "other", "sub/x": "x"})
		base := "/tr/ncr/" + filepath.Base(src)
		cli.ok([]byte("theirs"), "put", "-", base+"/file")
		r = cli.run(nil, "put", "-r", "-n", src, "/tr/ncr/")
		is.Equal(rpc.KindOf(r.err), rpc.Exists)                              // the command fails with Exists
		is.True(strings.Contains(r.err.Error(), "1 of 3 files"))             // counting the files left alone
		is.True(strings.Contains(r.errOut, base+"/file"))                    // each reported on stderr
		is.Equal(cli.ok(nil, "cat", base+"/file"), "theirs")                 // left as it was
		is.Equal(cli.ok(nil, "cat", base+"/other", base+"/sub/x"), "otherx") // the others written
	})

	t.Run("get -r does not clobber", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "put", "-r", makeTree(t, localTree{"a": "remote a", "b": "remote b", "d/c": "remote c"}), "/tr/gnc")
		dst := makeTree(t, localTree{"a": "local a", "d/": ""})
		r := cli.run(nil, "get", "-r", "/tr/gnc", dst+"/")
		is.NoErr(r.err) // dst/gnc did not exist
		r = cli.run(nil, "get", "-r", "/tr/gnc/a", "/tr/gnc/b", "/tr/gnc/d", dst)
		is.Equal(rpc.KindOf(r.err), rpc.Exists)                      // a exists locally
		is.True(strings.Contains(r.err.Error(), "1 of 3 files"))     // the others are written
		is.True(strings.Contains(r.err.Error(), "-f overwrites"))    // saying how to overwrite
		is.True(strings.Contains(r.errOut, filepath.Join(dst, "a"))) // naming the file on stderr
		want := localTree{"a": "local a", "b": "remote b", "d/c": "remote c",
			"gnc/a": "remote a", "gnc/b": "remote b", "gnc/d/c": "remote c"}
		is.Equal(readTree(t, dst), want) // a kept, b and d/c written, no temporary file left
		cli.ok(nil, "get", "-r", "-f", "/tr/gnc/a", "/tr/gnc/d", dst)
		want["a"] = "remote a"
		is.Equal(readTree(t, dst), want) // -f overwrites
	})

	t.Run("a failure ends the transfer", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok(nil, "put", "-r", makeTree(t, localTree{"a": "a", "d/c": "c", "e": "e"}), "/tr/fatal")
		// A local file where the remote tree has the directory d: the
		// directory cannot be made, which is no "exists" to skip.
		dst := makeTree(t, localTree{"fatal/d": "in the way"})
		r := cli.run(nil, "get", "-r", "/tr/fatal", dst+"/")
		is.True(r.err != nil) // the command fails
		t.Logf("get -r: %v", r.err)
		is.True(rpc.KindOf(r.err) != rpc.Exists)                // with the failure, not a count of refusals
		is.True(strings.Contains(r.err.Error(), "/tr/fatal/d")) // naming the directory
		got := readTree(t, dst)
		is.Equal(got["fatal/d"], "in the way") // the file in the way untouched
		for p := range got {
			is.True(!strings.Contains(p, ".dfs-")) // no temporary file left behind
		}
	})

	t.Run("cat", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok([]byte("one\n"), "put", "-", "/tr/cat/1")
		cli.ok([]byte(big), "put", "-", "/tr/cat/2")
		is.Equal(cli.ok(nil, "cat", "/tr/cat/1", "/tr/cat/2", "/tr/cat/1"), "one\n"+big+"one\n") // the files in order
		r := cli.run(nil, "cat", "/tr/cat/1", "/tr/cat/none")
		is.True(errors.Is(r.err, rpc.NotFound)) // a missing file fails
		is.Equal(r.out, "one\n")                // after the files before it
		r = cli.run(nil, "cat", "/tr/cat")
		is.True(r.err != nil) // a directory is not a file
		r = cli.run(nil, "cat")
		is.Equal(rpc.KindOf(r.err), rpc.Invalid) // cat needs a path
	})

	t.Run("progress on a terminal", func(t *testing.T) {
		is := is.New(t)
		src := makeTree(t, localTree{"a": "aa", "b": big, "c/d": "dd"})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		r := dfsRunTerminal(ctx, "put", "--coordinator", c.Addr(), "-r", src, "/tr/progress")
		is.NoErr(r.err)
		t.Logf("stderr: %q", r.errOut)
		is.True(strings.Contains(r.errOut, "put 3/3 files")) // files done and total
		is.True(strings.Contains(r.errOut, "205/205 kB"))    // and bytes
		r = dfsRunTerminal(ctx, "get", "--coordinator", c.Addr(), "-r", "/tr/progress", filepath.Join(t.TempDir(), "out"))
		is.NoErr(r.err)
		is.True(strings.Contains(r.errOut, "get 3/3 files")) // on get too
		r = dfsRun(ctx, nil, "get", "--coordinator", c.Addr(), "-r", "/tr/progress", filepath.Join(t.TempDir(), "out"))
		is.NoErr(r.err)
		is.Equal(r.errOut, "") // nothing when stderr is not a terminal
	})
}

// TestBenchTree runs the bench's recursive put and get, small, against
// the in-process cluster: it moves every file and cleans up after itself.
func TestBenchTree(t *testing.T) {
	is := is.New(t)
	c := startInprocCluster(t)
	cl, err := client.New(t.Context(), client.Config{Coordinators: []string{c.Addr()}})
	is.NoErr(err)
	defer cl.Close()
	res := &BenchResult{TreeFiles: 150, TreeFileBytes: 3000, TreeTransfers: 4}
	is.NoErr(runBench(t.Context(), cl, cl, nil, res, io.Discard, true)) // the recursive figure alone
	is.True(res.TreePutsPerSec > 0)                                     // put -r timed
	is.True(res.TreeGetsPerSec > 0)                                     // get -r timed
	_, err = cl.Stat(t.Context(), "/bench/tree")
	is.True(errors.Is(err, fs.ErrNotExist)) // the remote tree is deleted
}
