package coordinator

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// deletedChunks returns the chunks of f with a recorded deletion.
func (f *fixture) deletedChunks(file *meta.File) map[rpc.ChunkID]bool {
	out := map[rpc.ChunkID]bool{}
	dels := f.deletions()
	for _, c := range file.Chunks {
		for d := range dels {
			if d.Chunk == c.ID {
				out[c.ID] = true
			}
		}
	}
	return out
}

// TestCopySharesChunks pins the GC interplay of a server-side copy: the
// copy references the source's chunks, so removing either file leaves
// them for the other, and removing both deletes them.
func TestCopySharesChunks(t *testing.T) {
	for _, order := range []string{"source first", "copy first"} {
		t.Run(order, func(t *testing.T) {
			is := is.New(t)
			f := newFixture(t, 3, nil)
			src := f.put("/src", 3*testChunk, 3)
			cp, err := f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{})
			is.NoErr(err)
			is.Equal(cp.Path, rpc.Path("/dst"))
			is.Equal(cp.Version, uint64(1))
			is.Equal(len(cp.Chunks), 3)
			is.Equal(cp.Chunks[0].ID, src.Chunks[0].ID) // the chunks are shared, not copied
			got, err := f.store.Get(f.ctx, "/dst")
			is.NoErr(err)
			is.Equal(got.SHA256, src.SHA256)

			first, second := rpc.Path("/src"), rpc.Path("/dst")
			if order == "copy first" {
				first, second = second, first
			}
			is.NoErr(f.term.namespace.remove(f.ctx, first, removeOptions{}))
			is.Equal(len(f.deletedChunks(src)), 0) // the other file still uses every chunk
			is.NoErr(f.term.namespace.remove(f.ctx, second, removeOptions{}))
			is.Equal(len(f.deletedChunks(src)), 3) // the last user gone, the chunks go
		})
	}
}

// TestCopyReplacesAndChecks pins a copy's preconditions and that the
// file it replaces goes to GC.
func TestCopyReplacesAndChecks(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	f.put("/src", 2*testChunk, 3)
	old := f.put("/dst", testChunk, 3)

	_, err := f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{notExist: true})
	is.True(errors.Is(err, fs.ErrExist)) // create-only copy over a file
	_, err = f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{version: 7})
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // wrong version
	is.Equal(len(f.deletedChunks(old)), 0)            // refused copies delete nothing

	cp, err := f.term.namespace.copy(f.ctx, "/src", "/dst", precondition{version: old.Version})
	is.NoErr(err)
	is.Equal(cp.Version, old.Version+1)
	is.Equal(len(f.deletedChunks(old)), 1) // the replaced file's chunk goes

	_, err = f.term.namespace.copy(f.ctx, "/missing", "/x", precondition{})
	is.True(errors.Is(err, fs.ErrNotExist))
	_, err = f.term.namespace.copy(f.ctx, "/src", "/src", precondition{})
	is.Equal(rpc.KindOf(err), rpc.Invalid)
}

// TestRenameKeepsChunks: a renamed file keeps its chunks and version; one
// renamed over another replaces it, whose chunks go to GC.
func TestRenameKeepsChunks(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	a := f.put("/dir/a", 2*testChunk, 3)
	b := f.put("/b", testChunk, 3)

	is.NoErr(f.term.namespace.rename(f.ctx, "/dir/a", "/moved/a2", false))
	got, err := f.store.Get(f.ctx, "/moved/a2")
	is.NoErr(err)
	is.Equal(got.Version, a.Version)
	is.Equal(got.Chunks[1].ID, a.Chunks[1].ID)
	is.Equal(len(f.deletions()), 0) // nothing to delete
	_, err = f.store.Get(f.ctx, "/dir/a")
	is.True(errors.Is(err, fs.ErrNotExist))

	err = f.term.namespace.rename(f.ctx, "/moved/a2", "/b", true)
	is.True(errors.Is(err, fs.ErrExist)) // no_replace
	is.NoErr(f.term.namespace.rename(f.ctx, "/moved/a2", "/b", false))
	is.Equal(len(f.deletedChunks(b)), 1) // the replaced file's chunk goes
	is.Equal(len(f.deletedChunks(a)), 0)

	is.NoErr(f.term.namespace.rename(f.ctx, "/moved", "/moved2", false)) // a directory
	err = f.term.namespace.rename(f.ctx, "/moved2", "/moved2/in", false)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // into itself
	err = f.term.namespace.rename(f.ctx, "/nothing", "/x", false)
	is.True(errors.Is(err, fs.ErrNotExist))
}

// TestRemoveDirectories: rm of an empty directory, refusal of a
// non-empty one, and a recursive removal whose files' chunks all go to
// GC.
func TestRemoveDirectories(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	x := f.put("/d/x", testChunk, 3)
	y := f.put("/d/sub/y", testChunk, 3)
	is.NoErr(f.term.namespace.mkdir(f.ctx, "/d/empty", false))
	is.NoErr(f.term.namespace.mkdir(f.ctx, "/d/empty", true)) // -p accepts it
	err := f.term.namespace.mkdir(f.ctx, "/d/empty", false)
	is.True(errors.Is(err, fs.ErrExist))

	is.NoErr(f.term.namespace.remove(f.ctx, "/d/empty", removeOptions{}))
	err = f.term.namespace.remove(f.ctx, "/d", removeOptions{})
	is.Equal(rpc.KindOf(err), rpc.NotEmpty)
	err = f.term.namespace.remove(f.ctx, "/d", removeOptions{version: 1})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a directory has no version

	u, err := f.term.namespace.usage(f.ctx, "/d")
	is.NoErr(err)
	is.Equal(u, treeUsage{bytes: 2 * testChunk, files: 2, dirs: 1})

	is.NoErr(f.term.namespace.remove(f.ctx, "/d", removeOptions{recursive: true}))
	_, err = f.store.Lookup(f.ctx, "/d")
	is.True(errors.Is(err, fs.ErrNotExist))
	is.Equal(len(f.deletedChunks(x)), 1)
	is.Equal(len(f.deletedChunks(y)), 1)
	err = f.term.namespace.remove(f.ctx, "/", removeOptions{recursive: true})
	is.Equal(rpc.KindOf(err), rpc.Invalid) // the root is never removed, nor emptied at once
	err = f.term.namespace.remove(f.ctx, "/", removeOptions{})
	is.Equal(rpc.KindOf(err), rpc.Invalid)
}

// TestUploadPreconditions: an upload's preconditions refuse it as it
// opens, and again at its commit against what changed meanwhile.
func TestUploadPreconditions(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	v1 := f.put("/f", testChunk, 3)

	_, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/f", size: 1, cond: precondition{notExist: true}})
	is.True(errors.Is(err, fs.ErrExist)) // refused before any byte
	_, err = f.term.uploads.begin(f.ctx, uploadRequest{path: "/f", size: 1, cond: precondition{version: 9}})
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition)

	// Opened over version 1; another put makes version 2 first.
	id, rs := f.upload("/f", testChunk, 3)
	f.put("/f", testChunk, 3)
	c, err := f.confirmWith(id, testChunk, rs, precondition{version: v1.Version})
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // the commit checks again
	is.True(c.file == nil)
	cur, err := f.store.Get(f.ctx, "/f")
	is.NoErr(err)
	is.Equal(cur.Version, uint64(2)) // the other put's version stands

	id, rs = f.upload("/g", testChunk, 3)
	_, err = f.confirmWith(id, testChunk, rs, precondition{notExist: true})
	is.NoErr(err) // create-only, and nothing was there
}
