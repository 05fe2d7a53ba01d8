package roles_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// putWith writes data to path with metadata md, set when the file is
// created, and returns what was committed.
func putWith(ctx context.Context, cl *client.Client, path string, data []byte, opts *client.CreateOptions) (*client.FileInfo, error) {
	w, err := cl.Create(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Info(), nil
}

// TestFileMetadata: metadata written with a file comes back from stat and
// from a listing that asks for it; a copy keeps it or takes new metadata;
// a rename keeps it; a new version has its own; bad metadata commits
// nothing.
func TestFileMetadata(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)

	md := map[string]string{"content-type": "text/plain", "x-amz-meta-owner": "ops team"}
	w, err := cl.Create(ctx, "/m/a", &client.CreateOptions{Metadata: md})
	is.NoErr(err)
	_, err = w.Write([]byte("hello"))
	is.NoErr(err)
	w.SetMetadata(map[string]string{"content-type": "text/plain", "s3.etag": "5d41402abc4b2a76b9719d911017c592"}) // known once written
	is.NoErr(w.Close())
	fi, err := cl.Stat(ctx, "/m/a")
	is.NoErr(err)
	is.Equal(fi.Metadata, map[string]string{"content-type": "text/plain", "s3.etag": "5d41402abc4b2a76b9719d911017c592"}) // what SetMetadata set

	r, err := cl.Open(ctx, "/m/a")
	is.NoErr(err)
	info := r.Info()
	r.Close()
	is.Equal(info.Metadata, fi.Metadata)    // a reader tells the metadata of what it reads
	is.Equal(info.Version, fi.Version)      // and its version
	is.Equal(info.Size, int64(5))           // and size
	is.Equal(info.Mode, fs.FileMode(0o644)) // and mode

	var listed []client.DirEntry
	for e, err := range cl.List(ctx, "/m", &client.ListOptions{Metadata: true}) {
		is.NoErr(err)
		listed = append(listed, e)
	}
	is.Equal(len(listed), 1)
	is.Equal(listed[0].Metadata, fi.Metadata) // a listing asked for it carries it
	for e, err := range cl.List(ctx, "/m", nil) {
		is.NoErr(err)
		is.Equal(e.Metadata, nil) // not asked for: none
	}

	cp, err := cl.Copy(ctx, "/m/a", "/m/b", nil)
	is.NoErr(err)
	is.Equal(cp.Metadata, fi.Metadata) // a copy keeps it
	cp, err = cl.Copy(ctx, "/m/a", "/m/c", &client.CopyOptions{Metadata: map[string]string{"content-type": "image/png"}})
	is.NoErr(err)
	is.Equal(cp.Metadata, map[string]string{"content-type": "image/png"}) // or takes what it is given
	cp, err = cl.Copy(ctx, "/m/a", "/m/d", &client.CopyOptions{Metadata: map[string]string{}})
	is.NoErr(err)
	is.Equal(len(cp.Metadata), 0) // empty, not nil, replaces with none

	// Onto itself with new metadata: a new version of the same bytes,
	// of the version asked for only.
	before, err := cl.Stat(ctx, "/m/a")
	is.NoErr(err)
	_, err = cl.Copy(ctx, "/m/a", "/m/a", &client.CopyOptions{Metadata: map[string]string{"content-type": "text/html"}, SrcVersion: before.Version + 1})
	is.True(rpc.KindOf(err) == rpc.FailedPrecondition) // not the version asked for
	_, err = cl.Copy(ctx, "/m/a", "/m/a", nil)
	is.True(rpc.KindOf(err) == rpc.Invalid) // onto itself without new metadata: nothing to do
	cp, err = cl.Copy(ctx, "/m/a", "/m/a", &client.CopyOptions{Metadata: map[string]string{"content-type": "text/html"}, SrcVersion: before.Version})
	is.NoErr(err)
	is.Equal(cp.Version, before.Version+1)             // a new version
	is.Equal(cp.Metadata["content-type"], "text/html") // with the new metadata
	eventually(t, "no chunk deletion pending", func() bool { return c.Coordinator().PendingDeletes() == 0 })
	got, err := getBytes(ctx, cl, "/m/a")
	is.NoErr(err)
	is.Equal(string(got), "hello") // and the same bytes, none deleted

	is.NoErr(cl.Rename(ctx, "/m/b", "/m/e", nil))
	fi, err = cl.Stat(ctx, "/m/e")
	is.NoErr(err)
	is.Equal(fi.Metadata["s3.etag"], "5d41402abc4b2a76b9719d911017c592") // a rename keeps it

	_, err = putWith(ctx, cl, "/m/e", []byte("v2"), nil)
	is.NoErr(err)
	fi, err = cl.Stat(ctx, "/m/e")
	is.NoErr(err)
	is.Equal(len(fi.Metadata), 0) // a new version has its own (none)

	for _, bad := range []map[string]string{
		{"big": strings.Repeat("x", 5000)},
		{"": "empty key"},
		{"ctl": "a\nb"},
	} {
		_, err = putWith(ctx, cl, "/m/e", []byte("v3"), &client.CreateOptions{Metadata: bad})
		is.True(rpc.KindOf(err) == rpc.Invalid) // refused
		got, err := getBytes(ctx, cl, "/m/e")
		is.NoErr(err)
		is.Equal(string(got), "v2") // and the old version stays
	}
	_, err = cl.Copy(ctx, "/m/a", "/m/f", &client.CopyOptions{Metadata: map[string]string{"big": strings.Repeat("x", 5000)}})
	is.True(rpc.KindOf(err) == rpc.Invalid) // a copy too
}

// TestConcat: files of whole equal chunks and a last one make one file
// with their bytes, sharing their chunks (the sources can go); anything
// else is refused and changes nothing.
func TestConcat(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	const cs = 128 << 10
	parts := [][]byte{randomBytes(cs), randomBytes(3 * cs), randomBytes(cs/2 + 7)}
	var srcs []string
	for i, p := range parts {
		src := "/parts/" + string(rune('a'+i))
		_, err := putWith(ctx, cl, src, p, &client.CreateOptions{ChunkSize: cs})
		is.NoErr(err)
		srcs = append(srcs, src)
	}
	want := bytes.Join(parts, nil)
	fi, err := cl.Concat(ctx, "/whole", srcs, &client.ConcatOptions{Metadata: map[string]string{"s3.etag": "x-3"}})
	is.NoErr(err)
	is.Equal(fi.Size, int64(len(want)))
	is.Equal(fi.SHA256, nil)                // no whole-file digest
	is.Equal(fi.Metadata["s3.etag"], "x-3") // the metadata given
	is.Equal(fi.ChunkSize, int64(cs))       // the parts' chunk size
	is.NoErr(cl.RemoveAll(ctx, "/parts"))   // the sources go
	got, err := getBytes(ctx, cl, "/whole") // and a get
	is.NoErr(err)                           // verifies every frame
	is.True(bytes.Equal(got, want))         // of the bytes in order
	r, err := cl.Open(ctx, "/whole")        // a ranged read
	is.NoErr(err)                           //
	defer r.Close()                         //
	buf := make([]byte, cs)                 //
	_, err = r.ReadAt(buf, 4*cs-100)        // across the last two sources
	is.True(err == nil || errors.Is(err, io.EOF))
	is.True(bytes.Equal(buf[:100+cs/2+7], want[4*cs-100:]))

	// Refused: a source of another chunk size in the middle, the
	// destination among the sources, a missing source, an existing dst
	// with IfNotExist, no source.
	_, err = putWith(ctx, cl, "/odd", randomBytes(cs/2), &client.CreateOptions{ChunkSize: cs})
	is.NoErr(err)
	_, err = putWith(ctx, cl, "/full", randomBytes(cs), &client.CreateOptions{ChunkSize: cs})
	is.NoErr(err)
	_, err = cl.Concat(ctx, "/bad", []string{"/full", "/odd", "/full"}, nil)
	is.True(rpc.KindOf(err) == rpc.Invalid) // a short chunk before the last
	_, err = putWith(ctx, cl, "/big-last", randomBytes(cs+cs/2), &client.CreateOptions{ChunkSize: 2 * cs})
	is.NoErr(err)
	_, err = cl.Concat(ctx, "/bad", []string{"/full", "/big-last"}, nil)
	is.True(rpc.KindOf(err) == rpc.Invalid) // a last chunk larger than the others'
	_, err = cl.Concat(ctx, "/bad", []string{"/full", "/full"}, nil)
	is.NoErr(err) // a source twice is fine: its chunks twice
	_, err = cl.Concat(ctx, "/full", []string{"/full", "/odd"}, nil)
	is.True(rpc.KindOf(err) == rpc.Invalid) // onto a source
	_, err = cl.Concat(ctx, "/bad", []string{"/full", "/nope"}, nil)
	is.True(errors.Is(err, fs.ErrNotExist)) // a missing source
	_, err = cl.Concat(ctx, "/whole", []string{"/full", "/odd"}, &client.ConcatOptions{IfNotExist: true})
	is.True(errors.Is(err, fs.ErrExist)) // create-only over an existing file
	_, err = cl.Concat(ctx, "/bad", nil, nil)
	is.True(rpc.KindOf(err) == rpc.Invalid) // nothing to join
	got, err = getBytes(ctx, cl, "/bad")
	is.NoErr(err)
	full, err := getBytes(ctx, cl, "/full")
	is.NoErr(err)
	is.True(bytes.Equal(got, append(bytes.Clone(full), full...))) // the only one that was made
	is.NoErr(cl.Remove(ctx, "/bad"))

	fi, err = cl.Concat(ctx, "/whole", []string{"/full", "/odd"}, nil) // replacing /whole
	is.NoErr(err)
	is.Equal(fi.Size, int64(cs+cs/2))
	eventually(t, "the replaced concatenation's chunks are deleted", func() bool {
		return c.Coordinator().PendingDeletes() == 0
	})
	got, err = getBytes(ctx, cl, "/whole")
	is.NoErr(err)
	is.True(bytes.HasPrefix(got, full)) // the new one reads
	is.NoErr(cl.Remove(ctx, "/full"))
	got, err = getBytes(ctx, cl, "/whole")
	is.NoErr(err)
	is.True(bytes.HasPrefix(got, full)) // and still does when its sources are gone
}

// TestListAfter: a listing taken up after a key gives what follows it in
// listing order, recursive or not, whether the key exists or not.
func TestListAfter(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.ListPageSize = 2 })
	for _, p := range []string{"/b/a.txt", "/b/a/x", "/b/a/y", "/b/a0", "/b/c"} {
		_, err := putWith(ctx, cl, p, []byte(p), nil)
		is.NoErr(err)
	}
	list := func(opts client.ListOptions) []string {
		var out []string
		for e, err := range cl.List(ctx, "/b", &opts) {
			is.NoErr(err)
			out = append(out, e.Path)
		}
		return out
	}
	is.Equal(list(client.ListOptions{Recursive: true}), []string{"/b/a.txt", "/b/a", "/b/a/x", "/b/a/y", "/b/a0", "/b/c"})
	is.Equal(list(client.ListOptions{Recursive: true, After: "/b/a/x"}), []string{"/b/a/y", "/b/a0", "/b/c"})
	is.Equal(list(client.ListOptions{Recursive: true, After: "/b/a/"}), []string{"/b/a/x", "/b/a/y", "/b/a0", "/b/c"})          // into the directory
	is.Equal(list(client.ListOptions{Recursive: true, After: "/b/a.u"}), []string{"/b/a", "/b/a/x", "/b/a/y", "/b/a0", "/b/c"}) // a key no entry has
	is.Equal(list(client.ListOptions{After: "/b/a/"}), []string{"/b/a0", "/b/c"})                                               // one level: past the directory
	is.Equal(list(client.ListOptions{After: "/b/c"}), []string(nil))
	for _, err := range cl.List(ctx, "/b", &client.ListOptions{After: "b/x"}) {
		is.True(rpc.KindOf(err) == rpc.Invalid) // not a path
	}
}

// TestActingAs: a gateway's calls made for a user are that user's (owner
// of what they make, refused what the user may not do); anyone but a
// gateway asking to act for another is refused.
func TestActingAs(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	admin := rolestest.Client(t, c)
	gw := rolestest.GatewayClient(t, c, "s3")
	alice := rolestest.UserClient(t, c, "alice", nil)

	is.NoErr(admin.Mkdir(ctx, "/alice"))
	is.NoErr(admin.Chown(ctx, "/alice", "alice", "alice"))
	is.NoErr(admin.Chmod(ctx, "/alice", 0o700))
	asAlice := client.ActingAs(ctx, "alice")
	_, err := putWith(asAlice, gw, "/alice/f", []byte("hers"), nil)
	is.NoErr(err) // the gateway, for alice, writes in her home
	fi, err := admin.Stat(ctx, "/alice/f")
	is.NoErr(err)
	is.Equal(fi.Owner, "alice") // as alice
	_, err = putWith(client.ActingAs(ctx, "bob"), gw, "/alice/g", []byte("not his"), nil)
	is.True(permissionDenied(err)) // for bob it may not
	_, err = gw.Stat(ctx, "/alice/f")
	is.True(permissionDenied(err)) // nor for itself

	_, err = alice.Stat(client.ActingAs(ctx, "admin"), "/alice/f")
	is.True(rpc.KindOf(err) == rpc.Unauthenticated) // a user cannot act for another
	_, err = gw.Stat(client.ActingAs(ctx, "admin"), "/alice/f")
	is.True(permissionDenied(err)) // a gateway acting for a superuser's name is no superuser

	// Reads for alice and for bob at once (a client's reads at once share
	// calls to the coordinator): each is answered as its own user.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		user := []string{"alice", "bob"}[i%2]
		wg.Go(func() {
			var out bytes.Buffer
			_, err := gw.Get(client.ActingAs(ctx, user), "/alice/f", &out, nil)
			switch {
			case user == "alice" && (err != nil || out.String() != "hers"):
				errs <- fmt.Errorf("a read for alice: %v (%q)", err, out.String())
			case user == "bob" && !permissionDenied(err):
				errs <- fmt.Errorf("a read for bob: %v (%q)", err, out.String())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
