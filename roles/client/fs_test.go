package client_test

import (
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// TestFS runs io/fs's own conformance test (testing/fstest) on FS over a
// tree of files in nested directories, listed two entries a page, and
// checks the mapping of names.
func TestFS(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startCluster(t, func(cfg *client.Config) { cfg.ListPageSize = 2 })
	ctx := t.Context()
	files := map[string][]byte{
		"a.txt":             []byte("a"),
		"empty":             nil,
		"d/b.txt":           []byte("b in d"),
		"d/e/c.txt":         []byte("c in e"),
		"d/e/f/g.txt":       []byte("g in f"),
		"d/e/f/h.txt":       []byte("h in f"),
		"d-e/i.txt":         []byte("i, beside d"),
		"z/y/x/w/deep.txt":  []byte("deep"),
		"z/y/x/w/deep2.txt": []byte("deep 2"),
	}
	var names []string
	for name, data := range files {
		_, err := cl.Put(ctx, "/"+name, strings.NewReader(string(data)), int64(len(data)), nil)
		is.NoErr(err) // put
		names = append(names, name)
	}
	is.NoErr(cl.MkdirAll(ctx, "/d/empty/also-empty")) // explicit empty directories
	names = append(names, "d/empty/also-empty")
	fsys := cl.FS(ctx)
	// fstest reads every file one byte at a time, with ReadAt too: the
	// tree it checks holds small files only.
	is.NoErr(fstest.TestFS(fsys, names...)) // io/fs's conformance test
	di, err := fs.Stat(fsys, "d/empty")
	is.NoErr(err)
	is.True(di.IsDir())
	is.True(!di.ModTime().IsZero()) // a directory has the time it was made

	// A file of several chunks reads whole, from any offset, and across
	// chunk boundaries.
	files["d/big"] = randomBytes(3*rolestest.ChunkSize + 7)
	_, err = cl.Put(ctx, "/d/big", strings.NewReader(string(files["d/big"])), -1, nil)
	is.NoErr(err)

	for name, data := range files {
		got, err := fs.ReadFile(fsys, name)
		is.NoErr(err)                       // read through FS
		is.Equal(string(got), string(data)) // the bytes put
	}
	for _, bad := range []string{"/a.txt", "d/", "d//b.txt", "../a.txt", "./a.txt", ""} {
		_, err := fsys.Open(bad)
		var pe *fs.PathError
		is.True(errors.As(err, &pe) && errors.Is(err, fs.ErrInvalid)) // an invalid name
		_, err = fs.Stat(fsys, bad)
		is.True(errors.Is(err, fs.ErrInvalid)) // for Stat too
	}
	_, err = fsys.Open("nope")
	is.True(errors.Is(err, fs.ErrNotExist)) // a missing name
	_, err = fs.ReadDir(fsys, "a.txt")
	is.True(err != nil) // a file is no directory

	// A directory reads a part at a time.
	f, err := fsys.Open("d")
	is.NoErr(err)
	dir, ok := f.(fs.ReadDirFile)
	is.True(ok) // a ReadDirFile
	var got []string
	for {
		es, err := dir.ReadDir(1)
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		is.Equal(len(es), 1) // one at a time
		got = append(got, es[0].Name())
		is.True(len(got) <= 10) // bounded
	}
	is.Equal(got, []string{"b.txt", "big", "e", "empty"}) // every entry
	is.NoErr(f.Close())
	is.True(errors.Is(f.Close(), fs.ErrClosed)) // closed once

	// A file reads at any offset, and closed halfway stops its reads.
	f, err = fsys.Open("d/big")
	is.NoErr(err)
	buf := make([]byte, 100)
	_, err = io.ReadFull(f, buf)
	is.NoErr(err)
	is.Equal(buf, files["d/big"][:100]) // from the start
	at := int64(rolestest.ChunkSize - 50)
	_, err = f.(io.ReaderAt).ReadAt(buf, at)
	is.NoErr(err)
	is.Equal(buf, files["d/big"][at:at+100]) // across a chunk boundary
	_, err = f.(io.Seeker).Seek(2*rolestest.ChunkSize, io.SeekStart)
	is.NoErr(err)
	rest, err := io.ReadAll(f)
	is.NoErr(err)
	is.Equal(rest, files["d/big"][2*rolestest.ChunkSize:]) // after a Seek
	is.NoErr(f.Close())
	_, err = f.Read(buf)
	is.True(errors.Is(err, fs.ErrClosed)) // no read after Close
	fi, err := fs.Stat(fsys, "d/big")
	is.NoErr(err)
	is.Equal(fi.Size(), int64(len(files["d/big"])))      // the file's size
	is.Equal(fi.Sys().(*client.FileInfo).Path, "/d/big") // the SDK's metadata behind it
}
