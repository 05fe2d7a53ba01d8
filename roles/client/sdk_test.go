package client_test

// The SDK against a real in-process cluster (roles/rolestest): the
// Writer, the namespace calls the coordinator serves, the errors, and
// concurrent use of one Client. The fake coordinators of the package's
// own tests cover the edge cases.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// getBytes reads the whole file at p.
func getBytes(t *testing.T, cl *client.Client, p string) ([]byte, *client.FileInfo, error) {
	t.Helper()
	var buf bytes.Buffer
	fi, err := cl.Get(t.Context(), p, &buf, nil)
	return buf.Bytes(), fi, err
}

// startCluster starts a cluster of three datanodes and returns it with a
// client of it.
func startCluster(t *testing.T, tune ...func(*client.Config)) (*roles.Cluster, *client.Client) {
	t.Helper()
	c := rolestest.Start(t, 3)
	return c, rolestest.Client(t, c, tune...)
}

// TestWriter: a Writer streams the chunks while it is written to, holds
// at most Parallel+1 of them, and makes the file visible only on Close.
func TestWriter(t *testing.T) {
	t.Parallel()
	_, cl := startCluster(t, func(cfg *client.Config) { cfg.Parallel = 2 })
	ctx := t.Context()

	t.Run("streams and commits on close", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(6*rolestest.ChunkSize + 123)
		var stored atomic.Int64
		w, err := cl.Create(ctx, "/w/file", &client.CreateOptions{Progress: func(n int64) { stored.Add(n) }})
		is.NoErr(err) // create
		// Small writes, as io.Copy from a slow source would make them.
		for b := data; len(b) > 0; {
			n := min(len(b), 10_000)
			k, err := w.Write(b[:n])
			is.NoErr(err) // write
			is.Equal(k, n)
			b = b[n:]
		}
		// Five chunks were handed over with three buffers: at least two
		// had to be stored before the writes could go on.
		is.True(stored.Load() >= 2*rolestest.ChunkSize) // chunks reach the datanodes before Close
		_, err = cl.Stat(ctx, "/w/file")
		is.True(errors.Is(err, fs.ErrNotExist)) // nothing visible before Close
		is.Equal(w.Info(), nil)                 // nor any metadata
		is.NoErr(w.Close())                     // commit
		is.NoErr(w.Close())                     // a second Close says the same
		fi := w.Info()
		is.Equal(fi.Size, int64(len(data))) // the committed size
		is.Equal(fi.ChunkCount, uint32(7))  // in whole chunks
		is.Equal(len(fi.Chunks), 7)         // with the chunk map
		is.Equal(stored.Load(), fi.Size)    // every byte reported once
		got, _, err := getBytes(t, cl, "/w/file")
		is.NoErr(err)                   // get
		is.True(bytes.Equal(got, data)) // the bytes written
		_, err = w.Write([]byte("more"))
		is.True(err != nil) // no write after Close
	})

	t.Run("empty file", func(t *testing.T) {
		is := is.New(t)
		w, err := cl.Create(ctx, "/w/empty", nil)
		is.NoErr(err)
		is.NoErr(w.Close())
		is.Equal(w.Info().Size, int64(0)) // an empty file
		fi, err := cl.Stat(ctx, "/w/empty")
		is.NoErr(err)
		is.Equal(fi.ChunkCount, uint32(0)) // no chunk
	})

	t.Run("abort keeps the old version", func(t *testing.T) {
		is := is.New(t)
		old := randomBytes(1000)
		_, err := cl.Put(ctx, "/w/kept", bytes.NewReader(old), int64(len(old)), nil)
		is.NoErr(err)
		w, err := cl.Create(ctx, "/w/kept", nil)
		is.NoErr(err)
		_, err = w.Write(randomBytes(3 * rolestest.ChunkSize))
		is.NoErr(err)
		w.Abort()
		is.True(w.Close() != nil) // Close after Abort fails
		_, err = w.Write([]byte("x"))
		is.True(err != nil) // and so does Write
		got, _, err := getBytes(t, cl, "/w/kept")
		is.NoErr(err)
		is.True(bytes.Equal(got, old)) // the old version stays
	})

	t.Run("a failed write aborts", func(t *testing.T) {
		is := is.New(t)
		old := []byte("old")
		_, err := cl.Put(ctx, "/w/sized", bytes.NewReader(old), int64(len(old)), nil)
		is.NoErr(err)
		w, err := cl.Create(ctx, "/w/sized", &client.CreateOptions{Size: 10})
		is.NoErr(err)
		_, err = w.Write(make([]byte, 11))
		is.True(errors.Is(err, fs.ErrInvalid)) // more than the declared size
		is.True(strings.Contains(err.Error(), "create /w/sized (request "))
		is.Equal(w.Close(), err) // Close returns the same error
		got, _, err := getBytes(t, cl, "/w/sized")
		is.NoErr(err)
		is.True(bytes.Equal(got, old)) // the old version stays

		w, err = cl.Create(ctx, "/w/sized", &client.CreateOptions{Size: 10})
		is.NoErr(err)
		_, err = w.Write(make([]byte, 9))
		is.NoErr(err)
		is.True(errors.Is(w.Close(), fs.ErrInvalid)) // fewer than the declared size
	})

	t.Run("canceled context aborts", func(t *testing.T) {
		is := is.New(t)
		cctx, cancel := context.WithCancel(ctx)
		w, err := cl.Create(cctx, "/w/canceled", nil)
		is.NoErr(err)
		_, err = w.Write(randomBytes(rolestest.ChunkSize + 1))
		is.NoErr(err)
		cancel()
		err = w.Close()
		is.Equal(rpc.KindOf(err), rpc.Canceled) // interrupted
		_, err = cl.Stat(ctx, "/w/canceled")
		is.True(errors.Is(err, fs.ErrNotExist)) // nothing committed
	})

	t.Run("options", func(t *testing.T) {
		is := is.New(t)
		w, err := cl.Create(ctx, "/w/opts", &client.CreateOptions{ChunkSize: 128 << 10, Replication: 2})
		is.NoErr(err)
		_, err = io.Copy(w, bytes.NewReader(randomBytes(300<<10)))
		is.NoErr(err)
		is.NoErr(w.Close())
		fi := w.Info()
		is.Equal(fi.ChunkSize, int64(128<<10))  // the chunk size asked for
		is.Equal(fi.Replication, uint32(2))     // and the replication
		is.Equal(len(fi.Chunks[0].Replicas), 2) // two copies of a chunk

		_, err = cl.Create(ctx, "relative", nil)
		is.True(errors.Is(err, fs.ErrInvalid)) // an invalid path
		_, err = cl.Create(ctx, "/w/opts/below", nil)
		is.True(errors.Is(err, fs.ErrExist)) // below a file
	})
}

// TestErrors: errors match io/fs's sentinels and name the operation, the
// path and the request ID.
func TestErrors(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startCluster(t)
	ctx := rpc.WithRequestID(t.Context(), "req-0123")

	_, err := cl.Stat(ctx, "/missing")
	is.True(errors.Is(err, fs.ErrNotExist))                                       // a missing file
	is.True(strings.HasPrefix(err.Error(), "stat /missing (request req-0123): ")) // op, path, request ID
	_, _, err = getBytes(t, cl, "/missing")
	is.True(errors.Is(err, fs.ErrNotExist))                           // get too
	is.True(strings.HasPrefix(err.Error(), "get /missing (request ")) // with a request ID of its own
	err = cl.Remove(ctx, "/missing")
	is.True(errors.Is(err, fs.ErrNotExist)) // rm
	is.True(strings.Contains(err.Error(), "req-0123"))
	for _, err := range cl.List(ctx, "/missing", nil) {
		is.True(errors.Is(err, fs.ErrNotExist)) // ls
		is.True(strings.Contains(err.Error(), "ls /missing (request req-0123)"))
	}

	_, err = cl.Put(ctx, "/f", strings.NewReader("x"), 1, nil)
	is.NoErr(err)
	_, err = cl.Put(ctx, "/f/below", strings.NewReader("x"), 1, nil)
	is.True(errors.Is(err, fs.ErrExist)) // a put below a file
	is.True(strings.Contains(err.Error(), "put /f/below (request req-0123)"))
	_, err = cl.Stat(ctx, "no/slash")
	is.True(errors.Is(err, fs.ErrInvalid))  // an invalid path
	is.NoErr(cl.RemoveAll(ctx, "/missing")) // RemoveAll of nothing is no error
}

// TestConcurrentClient: one Client serves puts, gets, stats and listings
// from eight goroutines at once (run with -race).
func TestConcurrentClient(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startCluster(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 {
				p := fmt.Sprintf("/c/%d/%d", g, i)
				data := randomBytes(rolestest.ChunkSize*(i%3) + 100*g + 1)
				if i%2 == 0 {
					if _, err := cl.Put(ctx, p, bytes.NewReader(data), int64(len(data)), nil); err != nil {
						errs <- err
						return
					}
				} else {
					w, err := cl.Create(ctx, p, nil)
					if err == nil {
						_, err = w.Write(data)
					}
					if err == nil {
						err = w.Close()
					}
					if err != nil {
						errs <- err
						return
					}
				}
				fi, err := cl.Stat(ctx, p)
				if err != nil {
					errs <- err
					return
				}
				var buf bytes.Buffer
				if _, err := cl.Get(ctx, p, &buf, nil); err != nil {
					errs <- err
					return
				}
				if fi.Size != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
					errs <- fmt.Errorf("%s: read back %d bytes, size %d, wrote %d", p, buf.Len(), fi.Size, len(data))
					return
				}
				for _, err := range cl.List(ctx, fmt.Sprintf("/c/%d", g), nil) {
					if err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err) // every call of every goroutine
	}
	n := 0
	for e, err := range cl.List(ctx, "/c", &client.ListOptions{Recursive: true}) {
		is.NoErr(err)
		if !e.IsDir {
			n++
		}
	}
	is.Equal(n, 32) // every file
}

// TestWalk: Walk visits a tree as fs.WalkDir would, with SkipDir and
// SkipAll, from a directory or a file, and reports a missing root.
func TestWalk(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startCluster(t, func(cfg *client.Config) { cfg.ListPageSize = 2 })
	ctx := t.Context()
	for _, p := range []string{"/t/a", "/t/b/c", "/t/b/d/e", "/t/b/f", "/t/g/h", "/t/z"} {
		_, err := cl.Put(ctx, p, strings.NewReader(p), int64(len(p)), nil)
		is.NoErr(err)
	}
	walk := func(root string, fn func(p string, e client.DirEntry) error) ([]string, error) {
		var seen []string
		err := cl.Walk(ctx, root, func(p string, e client.DirEntry, err error) error {
			if err != nil {
				return err
			}
			mark := ""
			if e.IsDir {
				mark = "/"
			}
			seen = append(seen, p+mark)
			if fn != nil {
				return fn(p, e)
			}
			return nil
		})
		return seen, err
	}
	seen, err := walk("/t", nil)
	is.NoErr(err)
	is.Equal(seen, []string{"/t/", "/t/a", "/t/b/", "/t/b/c", "/t/b/d/", "/t/b/d/e", "/t/b/f", "/t/g/", "/t/g/h", "/t/z"}) // everything, in order

	seen, err = walk("/t", func(p string, e client.DirEntry) error {
		if p == "/t/b" {
			return fs.SkipDir
		}
		return nil
	})
	is.NoErr(err)
	is.Equal(seen, []string{"/t/", "/t/a", "/t/b/", "/t/g/", "/t/g/h", "/t/z"}) // SkipDir on a directory skips it

	seen, err = walk("/t", func(p string, e client.DirEntry) error {
		if p == "/t/b/c" {
			return fs.SkipDir
		}
		return nil
	})
	is.NoErr(err)
	is.Equal(seen, []string{"/t/", "/t/a", "/t/b/", "/t/b/c", "/t/g/", "/t/g/h", "/t/z"}) // on a file, the rest of its directory

	seen, err = walk("/t", func(p string, e client.DirEntry) error {
		if p == "/t/b/d/e" {
			return fs.SkipAll
		}
		return nil
	})
	is.NoErr(err)
	is.Equal(seen[len(seen)-1], "/t/b/d/e") // SkipAll ends the walk, with no error

	stop := errors.New("stop")
	_, err = walk("/t", func(p string, e client.DirEntry) error {
		if p == "/t/g/h" {
			return stop
		}
		return nil
	})
	is.Equal(err, stop) // fn's error comes back as it is

	seen, err = walk("/t/b/f", nil)
	is.NoErr(err)
	is.Equal(seen, []string{"/t/b/f"}) // a file root is visited alone

	_, err = walk("/nope", nil)
	is.True(errors.Is(err, fs.ErrNotExist)) // a missing root is reported to fn
	calls := 0
	is.NoErr(cl.Walk(ctx, "/nope", func(p string, e client.DirEntry, err error) error {
		calls++
		is.Equal(e, client.DirEntry{}) // no entry
		return nil
	}))
	is.Equal(calls, 1) // once
}

// TestNamespace: the namespace calls against a coordinator that serves
// them: directories, rename, server-side copy, usage, recursive removal,
// and the Writer's preconditions.
func TestNamespace(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startCluster(t)
	ctx := t.Context()
	put := func(p, data string) *client.FileInfo {
		t.Helper()
		fi, err := cl.Put(ctx, p, strings.NewReader(data), int64(len(data)), nil)
		is.NoErr(err) // put
		return fi
	}

	is.NoErr(cl.Mkdir(ctx, "/n"))                             // mkdir
	is.True(errors.Is(cl.Mkdir(ctx, "/n"), fs.ErrExist))      // twice
	is.True(errors.Is(cl.Mkdir(ctx, "/x/y"), fs.ErrNotExist)) // without its parent
	is.NoErr(cl.MkdirAll(ctx, "/n/a/b"))                      // mkdir -p
	is.NoErr(cl.MkdirAll(ctx, "/n/a/b"))                      // again: no error
	st, err := cl.Stat(ctx, "/n/a")
	is.NoErr(err)
	is.True(st.IsDir) // a directory's stat

	put("/n/f", "first")
	is.True(errors.Is(cl.Remove(ctx, "/n"), rpc.NotEmpty)) // rm of a directory with entries

	// Rename, and NoReplace.
	is.NoErr(cl.Rename(ctx, "/n/f", "/n/a/g", nil))
	_, err = cl.Stat(ctx, "/n/f")
	is.True(errors.Is(err, fs.ErrNotExist)) // gone from the source
	got, _, err := getBytes(t, cl, "/n/a/g")
	is.NoErr(err)
	is.Equal(string(got), "first") // at the destination
	put("/n/h", "other")
	is.True(errors.Is(cl.Rename(ctx, "/n/h", "/n/a/g", &client.RenameOptions{NoReplace: true}), fs.ErrExist)) // NoReplace

	// Copy, with its preconditions.
	cp, err := cl.Copy(ctx, "/n/a/g", "/n/copy", nil)
	is.NoErr(err)
	is.Equal(cp.Size, int64(5)) // the copy's metadata
	got, _, err = getBytes(t, cl, "/n/copy")
	is.NoErr(err)
	is.Equal(string(got), "first") // the same bytes
	_, err = cl.Copy(ctx, "/n/h", "/n/copy", &client.CopyOptions{IfNotExist: true})
	is.True(errors.Is(err, fs.ErrExist)) // IfNotExist
	_, err = cl.Copy(ctx, "/n/h", "/n/copy", &client.CopyOptions{IfVersion: cp.Version + 100})
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // IfVersion that does not hold

	// The Writer's preconditions.
	_, err = cl.Create(ctx, "/n/h", &client.CreateOptions{IfNotExist: true})
	is.True(errors.Is(err, fs.ErrExist)) // IfNotExist, as the upload opens
	hv, err := cl.Stat(ctx, "/n/h")
	is.NoErr(err)
	w, err := cl.Create(ctx, "/n/h", &client.CreateOptions{IfVersion: hv.Version})
	is.NoErr(err) // the version holds as it opens
	put("/n/h", "meanwhile")
	_, err = io.WriteString(w, "late")
	is.NoErr(err)
	is.Equal(rpc.KindOf(w.Close()), rpc.FailedPrecondition) // but not at the commit
	got, _, err = getBytes(t, cl, "/n/h")
	is.NoErr(err)
	is.Equal(string(got), "meanwhile") // the other writer's version stays

	// Usage, and the tree as a whole.
	u, err := cl.Usage(ctx, "/n")
	is.NoErr(err)
	is.Equal(u.Files, int64(3))                               // g, h, copy
	is.Equal(u.Bytes, int64(len("first")*2+len("meanwhile"))) // their bytes
	is.True(u.Dirs >= 2)                                      // a and a/b (and perhaps /n itself)
	is.NoErr(cl.RemoveAll(ctx, "/n"))                         // rm -r
	_, err = cl.Stat(ctx, "/n")
	is.True(errors.Is(err, fs.ErrNotExist)) // all gone
	is.NoErr(cl.RemoveAll(ctx, "/n"))       // and again: no error
}
