package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Callers of the permission tests: admin is the default superuser.
var (
	asAdmin = auth.Identity{User: "admin", Role: pki.Client}
	asAlice = auth.Identity{User: "alice", Groups: []string{"staff"}, Role: pki.Client}
	asBob   = auth.Identity{User: "bob", Groups: []string{"staff"}, Role: pki.Client}
)

// permFixture calls a term's gRPC adapter as one caller or another.
type permFixture struct {
	*fixture
	srv dfspb.CoordinatorServer
}

func newPermFixture(t *testing.T) *permFixture { return newPermFixtureOn(t, nil) }

// newPermFixtureOn is newPermFixture over store (nil: a new in-memory one).
func newPermFixtureOn(t *testing.T, store meta.Store) *permFixture {
	f := newFixture(t, 3, store)
	f.c.term.Store(f.term)
	return &permFixture{fixture: f, srv: f.c.Server()}
}

func (f *permFixture) as(id auth.Identity) context.Context { return auth.NewContext(f.ctx, id) }

// putAs uploads and commits a file of one chunk as id.
func (f *permFixture) putAs(id auth.Identity, p string) error {
	g := *f.fixture
	g.ctx = f.as(id)
	o, err := g.term.uploads.begin(g.ctx, uploadRequest{path: rpc.Path(p), size: testChunk, replication: 3})
	if err != nil {
		return err
	}
	digest, frame := chunkData(o.plans[0].id, testChunk)
	r := receipt{index: 0, id: string(o.plans[0].id), size: testChunk, digest: digest, frameSize: frame}
	for _, n := range o.plans[0].nodes {
		g.storeCopy(n.ID, o.plans[0].id, testChunk, digest)
		r.nodes = append(r.nodes, n.ID)
	}
	_, err = g.confirm(o.session, testChunk, []receipt{r})
	return err
}

func (f *permFixture) chmod(id auth.Identity, p string, mode uint32) error {
	_, err := f.srv.SetAttr(f.as(id), &dfspb.SetAttrRequest{Path: p, Mode: mode, SetMode: true})
	return err
}

func (f *permFixture) chown(id auth.Identity, p, owner, group string) error {
	_, err := f.srv.SetAttr(f.as(id), &dfspb.SetAttrRequest{Path: p, Owner: owner, Group: group})
	return err
}

func (f *permFixture) stat(id auth.Identity, p string) (*dfspb.FileInfo, error) {
	resp, err := f.srv.StatFile(f.as(id), &dfspb.StatFileRequest{Path: p})
	return resp.GetFile(), err
}

// readOne reads p's chunk map as id with DownloadFile alone.
func (f *permFixture) readOne(id auth.Identity, p string) error {
	_, err := f.srv.DownloadFile(f.as(id), &dfspb.DownloadFileRequest{Path: p})
	return err
}

// read reads p's chunk map as id, with DownloadFile and with
// DownloadFiles (p between two paths that are not there), which must
// answer the same.
func (f *permFixture) read(id auth.Identity, p string) error {
	one, err := f.srv.DownloadFile(f.as(id), &dfspb.DownloadFileRequest{Path: p})
	many, merr := f.srv.DownloadFiles(f.as(id), &dfspb.DownloadFilesRequest{Files: []*dfspb.DownloadFileRequest{{Path: "/not-there"}, {Path: p}, {Path: "/not-there-either"}}})
	if merr != nil {
		return fmt.Errorf("DownloadFiles: %w", merr)
	}
	got := many.Files[1]
	st := status.Convert(err)
	switch {
	case len(many.Files) != 3 || many.Files[0].Code == 0 || many.Files[2].Code == 0:
		return fmt.Errorf("DownloadFiles answered %d files, or found paths that are not there", len(many.Files))
	case got.Code != uint32(st.Code()) || got.Message != st.Message():
		return fmt.Errorf("DownloadFile and DownloadFiles disagree: %v; %d %s", err, got.Code, got.Message)
	case err == nil && (got.Download.GetFile().GetVersion() != one.File.Version || len(got.Download.File.Chunks) != len(one.File.Chunks) ||
		got.Download.NextChunk != one.NextChunk):
		return fmt.Errorf("DownloadFile and DownloadFiles returned different files")
	}
	return err
}

func (f *permFixture) list(id auth.Identity, p string, recursive bool) ([]string, error) {
	var out []string
	token := ""
	for range 100 {
		resp, err := f.srv.ListFiles(f.as(id), &dfspb.ListFilesRequest{Path: p, Recursive: recursive, PageSize: 2, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.Entries {
			out = append(out, e.Path)
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	return out, nil
}

func (f *permFixture) rename(id auth.Identity, src, dst string) error {
	_, err := f.srv.Rename(f.as(id), &dfspb.RenameRequest{Src: src, Dst: dst})
	return err
}

func (f *permFixture) remove(id auth.Identity, p string, recursive bool) error {
	_, err := f.srv.DeleteFile(f.as(id), &dfspb.DeleteFileRequest{Path: p, Recursive: recursive})
	return err
}

func (f *permFixture) mkdir(id auth.Identity, p string, parents bool) error {
	_, err := f.srv.Mkdir(f.as(id), &dfspb.MkdirRequest{Path: p, Parents: parents})
	return err
}

func (f *permFixture) copy(id auth.Identity, src, dst string) error {
	_, err := f.srv.CopyFile(f.as(id), &dfspb.CopyFileRequest{Src: src, Dst: dst})
	return err
}

func (f *permFixture) usage(id auth.Identity, p string) error {
	_, err := f.srv.Usage(f.as(id), &dfspb.UsageRequest{Path: p})
	return err
}

// attr returns the attributes of p as the store holds them (defaults
// applied).
func (f *permFixture) attr(p string) meta.Attr {
	f.t.Helper()
	e, err := f.store.Lookup(f.ctx, rpc.Path(p))
	if err != nil {
		f.t.Fatalf("lookup %s: %v", p, err)
	}
	return e.Attr()
}

// refused reports whether err is a refusal for want of permission: a
// status from the adapter, or an error from a part.
func refused(err error) bool {
	return status.Code(err) == codes.PermissionDenied || rpc.KindOf(err) == rpc.Permission
}

// homeOfAlice makes /alice, owned by alice in group staff, mode 0700, as
// the superuser.
func (f *permFixture) homeOfAlice() {
	is := is.New(f.t)
	is.NoErr(f.mkdir(asAdmin, "/alice", false))
	is.NoErr(f.chown(asAdmin, "/alice", "alice", "staff"))
	is.NoErr(f.chmod(asAdmin, "/alice", 0o700))
}

// TestPermissionsOwnFiles: a user can do everything to their own files,
// and another user, who may not search their directory, nothing.
func TestPermissionsOwnFiles(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.homeOfAlice()

	is.NoErr(f.putAs(asAlice, "/alice/f"))                                                              // alice puts
	is.Equal(f.attr("/alice/f"), meta.Attr{Owner: "alice", Group: "staff", Mode: meta.DefaultFileMode}) // hers, in the directory's group
	fi, err := f.stat(asAlice, "/alice/f")
	is.NoErr(err) // stats
	is.Equal(fi.Owner, "alice")
	is.Equal(fi.Mode, uint32(0o644))
	names, err := f.list(asAlice, "/alice", false)
	is.NoErr(err) // lists
	is.Equal(names, []string{"/alice/f"})
	is.NoErr(f.read(asAlice, "/alice/f"))               // reads
	is.NoErr(f.putAs(asAlice, "/alice/f"))              // overwrites
	is.NoErr(f.rename(asAlice, "/alice/f", "/alice/g")) // renames
	is.NoErr(f.copy(asAlice, "/alice/g", "/alice/h"))   // copies
	is.NoErr(f.mkdir(asAlice, "/alice/d/e", true))      // makes directories
	is.Equal(f.attr("/alice/d").Owner, "alice")         // hers too
	is.Equal(f.attr("/alice/d/e").Group, "staff")       // in the group of the parent
	is.NoErr(f.usage(asAlice, "/alice"))                // sums

	// bob may not search /alice: nothing below it is his to see.
	_, err = f.stat(asBob, "/alice/g")
	is.True(refused(err)) // no stat
	_, err = f.list(asBob, "/alice", false)
	is.True(refused(err))                                  // no listing
	is.True(refused(f.read(asBob, "/alice/g")))            // no read
	is.True(refused(f.putAs(asBob, "/alice/g")))           // no overwrite
	is.True(refused(f.putAs(asBob, "/alice/new")))         // no new file
	is.True(refused(f.rename(asBob, "/alice/g", "/bob")))  // no rename
	is.True(refused(f.remove(asBob, "/alice/g", false)))   // no delete
	is.True(refused(f.remove(asBob, "/alice", true)))      // no recursive delete
	is.True(refused(f.mkdir(asBob, "/alice/x", false)))    // no mkdir
	is.True(refused(f.copy(asBob, "/alice/g", "/stolen"))) // no copy out
	is.True(refused(f.usage(asBob, "/alice")))             // no du
	is.True(refused(f.chmod(asBob, "/alice/g", 0o777)))    // no chmod
	_, err = f.stat(asBob, "/alice")
	is.NoErr(err) // the directory itself he may stat: / lets him search
	fi, err = f.stat(asBob, "/alice")
	is.NoErr(err)
	is.Equal(fi.Mode, uint32(0o700)) // with its attributes

	is.NoErr(f.remove(asAlice, "/alice/h", false)) // alice deletes
	is.NoErr(f.remove(asAlice, "/alice/d", true))  // recursively too
	names, err = f.list(asAlice, "/alice", true)
	is.NoErr(err)
	is.Equal(names, []string{"/alice/g"})
}

// TestPermissionsReadable: a 0644 file in a 0755 directory is readable by
// others, who may not overwrite, rename or delete it.
func TestPermissionsReadable(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.homeOfAlice()
	is.NoErr(f.chmod(asAlice, "/alice", 0o755)) // the owner may chmod
	is.NoErr(f.putAs(asAlice, "/alice/pub"))

	_, err := f.stat(asBob, "/alice/pub")
	is.NoErr(err)                         // bob stats it
	is.NoErr(f.read(asBob, "/alice/pub")) // reads it
	names, err := f.list(asBob, "/alice", false)
	is.NoErr(err) // lists the directory
	is.Equal(names, []string{"/alice/pub"})
	is.True(refused(f.copy(asBob, "/alice/pub", "/copy"))) // not into /, which is the superuser's
	is.NoErr(f.mkdir(asAdmin, "/bob", false))
	is.NoErr(f.chown(asAdmin, "/bob", "bob", ""))
	is.NoErr(f.copy(asBob, "/alice/pub", "/bob/copy"))         // copies it out, to where he may write
	is.Equal(f.attr("/bob/copy").Owner, "bob")                 // the copy is his
	is.True(refused(f.putAs(asBob, "/alice/pub")))             // but may not overwrite it
	is.True(refused(f.rename(asBob, "/alice/pub", "/x")))      // rename it
	is.True(refused(f.remove(asBob, "/alice/pub", false)))     // or delete it
	is.True(refused(f.copy(asBob, "/bob/copy", "/alice/pub"))) // nor copy over it

	is.NoErr(f.chmod(asAlice, "/alice/pub", 0o600))
	is.True(refused(f.read(asBob, "/alice/pub"))) // a 0600 file he may not read
	names, err = f.list(asBob, "/alice/pub", false)
	is.NoErr(err) // but ls of it is a stat
	is.Equal(names, []string{"/alice/pub"})
	_, err = f.stat(asBob, "/alice/pub")
	is.NoErr(err) // though he may stat it (search on the parents is enough)
}

// TestPermissionsSetAttr: chmod is the owner's, chown the superuser's,
// chgrp the owner's to a group they are in.
func TestPermissionsSetAttr(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.homeOfAlice()
	is.NoErr(f.putAs(asAlice, "/alice/f"))

	is.True(refused(f.chmod(asBob, "/alice", 0o777)))                // not the owner
	is.True(refused(f.chown(asAlice, "/alice/f", "bob", "")))        // only a superuser gives a file away
	is.NoErr(f.chown(asAlice, "/alice/f", "", "staff"))              // the owner changes the group to one of theirs
	is.True(refused(f.chown(asAlice, "/alice/f", "", "wheel")))      // not to another
	is.True(refused(f.chown(asAlice, "/alice/f", "alice", "wheel"))) // naming herself as owner changes nothing
	is.NoErr(f.chmod(asAlice, "/alice/f", 0o640))                    // chmod
	is.Equal(f.attr("/alice/f"), meta.Attr{Owner: "alice", Group: "staff", Mode: 0o640})
	is.NoErr(f.chown(asAdmin, "/alice/f", "bob", "wheel")) // the superuser does anything
	is.Equal(f.attr("/alice/f"), meta.Attr{Owner: "bob", Group: "wheel", Mode: 0o640})
	is.Equal(status.Code(f.chmod(asAlice, "/alice/f", 0o7777)), codes.InvalidArgument) // setuid is not a dfs bit
	is.Equal(status.Code(f.chmod(asAdmin, "/", 0o777)), codes.InvalidArgument)         // the root's attributes are fixed
	is.Equal(status.Code(f.chmod(asAdmin, "/nope", 0o777)), codes.NotFound)

	// A chown of a file alice may not reach is refused before anything
	// else.
	is.NoErr(f.chmod(asAdmin, "/alice", 0o700))
	is.True(refused(f.chmod(asBob, "/alice/f", 0o644))) // bob owns it, but may not search /alice
}

// TestPermissionsSticky: in a sticky directory (like /tmp) only an entry's
// owner (or the directory's, or a superuser) removes or renames it.
func TestPermissionsSticky(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	is.NoErr(f.mkdir(asAdmin, "/tmp", false))
	is.NoErr(f.chmod(asAdmin, "/tmp", 0o1777))
	is.NoErr(f.putAs(asAlice, "/tmp/a"))
	is.NoErr(f.putAs(asBob, "/tmp/b"))
	is.True(refused(f.remove(asBob, "/tmp/a", false)))    // not his
	is.True(refused(f.rename(asBob, "/tmp/a", "/tmp/c"))) // not his to rename
	is.True(refused(f.rename(asBob, "/tmp/b", "/tmp/a"))) // nor to replace
	is.NoErr(f.rename(asBob, "/tmp/b", "/tmp/c"))         // his own he renames
	is.NoErr(f.remove(asBob, "/tmp/c", false))            // and removes
	is.NoErr(f.remove(asAdmin, "/tmp/a", false))          // the superuser removes anything
}

// TestPermissionsRecursiveListing: a recursive listing leaves out what
// lies below a directory the caller may not list, across pages.
func TestPermissionsRecursiveListing(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.homeOfAlice()
	for _, p := range []string{"/alice/1", "/alice/2", "/alice/3", "/alice/4", "/alice/5"} {
		is.NoErr(f.putAs(asAlice, p))
	}
	is.NoErr(f.mkdir(asAdmin, "/pub", false))
	is.NoErr(f.putAs(asAdmin, "/pub/x"))
	is.NoErr(f.putAs(asAdmin, "/z"))
	names, err := f.list(asBob, "/", true)
	is.NoErr(err)
	is.Equal(names, []string{"/alice", "/pub", "/pub/x", "/z"}) // /alice is listed, not what it holds
	names, err = f.list(asAlice, "/", true)
	is.NoErr(err)
	is.Equal(len(names), 9)               // alice sees all
	is.True(refused(f.usage(asBob, "/"))) // a sum over what bob may not list is refused
	is.NoErr(f.usage(asBob, "/pub"))      // one over what he may is not
}

// TestPermissionsUnchecked: without an identity (plain text, in-process)
// nothing is checked and what is made has no owner: the defaults.
func TestPermissionsUnchecked(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.homeOfAlice()
	is.NoErr(f.putAs(asAlice, "/alice/f"))
	f.put("/alice/g", testChunk, 3) // f.ctx carries no identity
	e, err := f.store.Lookup(f.ctx, "/alice/g")
	is.NoErr(err)
	is.Equal(e.File.Attr, meta.Attr{})                                                 // no owner stored
	is.Equal(e.Attr(), meta.DefaultAttr(false))                                        // which reads as the default
	is.NoErr(f.term.namespace.remove(f.ctx, "/alice", removeOptions{recursive: true})) // nothing is checked

	// A store written before permissions: its entries read as the
	// superuser's, which the listing and stat answers carry.
	f.put("/old/f", testChunk, 3)
	resp, err := f.srv.ListFiles(f.ctx, &dfspb.ListFilesRequest{Path: "/old"})
	is.NoErr(err)
	is.Equal(resp.Entries[0].Owner, meta.DefaultOwner)
	is.Equal(resp.Entries[0].Mode, uint32(0o644))
	fi, err := f.stat(asBob, "/old")
	is.NoErr(err)
	is.Equal(fi.Owner, meta.DefaultOwner)
	is.Equal(fi.Mode, uint32(0o755))
	is.True(refused(f.putAs(asBob, "/old/g"))) // bob may not write the superuser's directory
	is.NoErr(f.read(asBob, "/old/f"))          // but may read its 0644 file
}

// TestUploadSessionIsTheOwners: only the user who opened an upload
// places its chunks, records their receipts, confirms or aborts it.
func TestUploadSessionIsTheOwners(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	o, err := f.term.uploads.begin(f.as(asAdmin), uploadRequest{path: "/f", size: testChunk, replication: 3})
	is.NoErr(err)
	_, err = f.term.uploads.confirm(f.as(asBob), confirmation{session: o.session, size: testChunk})
	is.Equal(rpc.KindOf(err), rpc.Permission) // bob may not confirm the superuser's upload
	_, err = f.term.uploads.allocate(f.as(asBob), o.session, 0, nil)
	is.Equal(rpc.KindOf(err), rpc.Permission) // nor get a plan (and write tokens) for its chunks
	_, err = f.term.uploads.receipts(f.as(asBob), o.session, nil)
	is.Equal(rpc.KindOf(err), rpc.Permission)                                        // nor record receipts in it
	is.Equal(rpc.KindOf(f.term.uploads.end(f.as(asBob), o.session)), rpc.Permission) // nor abort it
	is.NoErr(f.term.uploads.end(f.as(asAdmin), o.session))                           // its owner may
}

// TestUploadCommitChecksPermissionsAgain: an upload opened while a path
// was free cannot replace a file another user made there meanwhile.
func TestUploadCommitChecksPermissionsAgain(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	is.NoErr(f.mkdir(asAdmin, "/shared", false))
	is.NoErr(f.chmod(asAdmin, "/shared", 0o1777))
	g := *f.fixture
	g.ctx = f.as(asBob)
	o, err := g.term.uploads.begin(g.ctx, uploadRequest{path: "/shared/x", size: testChunk, replication: 3})
	is.NoErr(err) // bob may create /shared/x: it does not exist yet
	digest, frame := chunkData(o.plans[0].id, testChunk)
	r := receipt{index: 0, id: string(o.plans[0].id), size: testChunk, digest: digest, frameSize: frame}
	for _, n := range o.plans[0].nodes {
		g.storeCopy(n.ID, o.plans[0].id, testChunk, digest)
		r.nodes = append(r.nodes, n.ID)
	}
	is.NoErr(f.putAs(asAlice, "/shared/x")) // alice makes it first, 0644
	_, err = g.confirm(o.session, testChunk, []receipt{r})
	is.Equal(rpc.KindOf(err), rpc.Permission) // bob's upload may not replace alice's file
}

// readCounter is a metadata store that counts the reads of paths.
type readCounter struct {
	*metatest.Mem
	reads atomic.Int64
}

func (c *readCounter) Get(ctx context.Context, p rpc.Path) (*meta.File, error) {
	c.reads.Add(1)
	return c.Mem.Get(ctx, p)
}

func (c *readCounter) Lookup(ctx context.Context, p rpc.Path) (meta.Entry, error) {
	c.reads.Add(1)
	return c.Mem.Lookup(ctx, p)
}

func (c *readCounter) Walk(ctx context.Context, p rpc.Path) ([]meta.Entry, error) {
	c.reads.Add(1)
	return c.Mem.Walk(ctx, p)
}

// newCountingFixture is a permission fixture over a store that counts its
// reads, with /alice/a/b made (alice's home, 0700).
func newCountingFixture(t *testing.T) (*permFixture, *readCounter) {
	store := &readCounter{Mem: metatest.NewMem()}
	f := newPermFixtureOn(t, store)
	f.homeOfAlice()
	is.New(t).NoErr(f.mkdir(asAlice, "/alice/a/b", true))
	return f, store
}

// TestCheckedReadReadsTheStoreOnce: a get by a user who is checked reads
// the path and its ancestors in one read of the store, and the file it
// answers with is the one that read found (with etcd, each read is a
// round trip).
func TestCheckedReadReadsTheStoreOnce(t *testing.T) {
	is := is.New(t)
	f, store := newCountingFixture(t)
	is.NoErr(f.putAs(asAlice, "/alice/a/b/f"))

	before := store.reads.Load()
	resp, err := f.srv.DownloadFile(f.as(asAlice), &dfspb.DownloadFileRequest{Path: "/alice/a/b/f"})
	is.NoErr(err)
	is.Equal(store.reads.Load()-before, int64(1)) // was 6: a lookup of the root, of each ancestor and of the file, then the file again
	is.Equal(resp.GetFile().GetPath(), "/alice/a/b/f")
	is.Equal(len(resp.GetFile().GetChunks()), 1)

	before = store.reads.Load()
	is.True(refused(f.readOne(asBob, "/alice/a/b/f"))) // bob may not search /alice
	is.Equal(store.reads.Load()-before, int64(1))
}

// TestUploadOpensWithOneRead: opening an upload reads the path and its
// ancestors in one read of the store, for a caller who is checked and
// for one who is not (who has no permission check, only the conflict).
func TestUploadOpensWithOneRead(t *testing.T) {
	is := is.New(t)
	f, store := newCountingFixture(t)
	for _, ctx := range []context.Context{f.ctx, f.as(asAlice)} {
		before := store.reads.Load()
		_, err := f.term.uploads.begin(ctx, uploadRequest{path: "/alice/a/b/f", size: testChunk, replication: 3})
		is.NoErr(err)
		is.Equal(store.reads.Load()-before, int64(1)) // unchecked: was 4, a lookup of the path and a read of each parent
	}
}

// walkHook is a metadata store that runs a function once, after the
// next Walk has read.
type walkHook struct {
	*metatest.Mem
	after func()
}

func (h *walkHook) Walk(ctx context.Context, p rpc.Path) ([]meta.Entry, error) {
	es, err := h.Mem.Walk(ctx, p)
	if fn := h.after; fn != nil {
		h.after = nil
		fn()
	}
	return es, err
}

// TestCheckedReadCachesNoFileReplacedMeanwhile: a checked get of a large
// file answers with what its permission walk read; when a commit replaces
// the file between that walk and the answer, the version read is not put
// in the file cache, where later pages would find it.
func TestCheckedReadCachesNoFileReplacedMeanwhile(t *testing.T) {
	is := is.New(t)
	store := &walkHook{Mem: metatest.NewMem()}
	f := newPermFixtureOn(t, store)
	f.homeOfAlice()
	files := f.term.namespace.files
	commits := cacheCommitter{store: store.Mem, files: files}
	version := func(v uint64) *meta.File { // more chunks than one page: cached for the pages after the first
		big := metatest.NewFile("/alice/big", maxChunkPage+1, v)
		big.Attr = meta.Attr{Owner: "alice", Group: "staff", Mode: 0o644}
		return big
	}
	is.NoErr(commits.Commit(f.ctx, &meta.Txn{Path: "/alice/big", Put: version(1)}))

	store.after = func() { // a new version commits between the walk and the answer
		is.NoErr(commits.Commit(f.ctx, &meta.Txn{Path: "/alice/big", Expect: 1, Put: version(2)}))
	}
	f.readOne(asAlice, "/alice/big")        // fails: no datanode holds the chunks; the page was made all the same
	is.True(files.get("/alice/big") == nil) // version 1 is not cached

	f.readOne(asAlice, "/alice/big")
	cached := files.get("/alice/big")
	is.True(cached != nil) // a read no commit raced is cached
	is.Equal(cached.Version, uint64(2))
}

// TestDownloadFilesPages: DownloadFiles answers each file with a page of
// at most 8 chunks (fewer when a file asks for fewer), from the chunk it
// names; a call of no file or of more than 64 is Invalid.
func TestDownloadFilesPages(t *testing.T) {
	is := is.New(t)
	f := newPermFixture(t)
	f.put("/ten", 10*testChunk, 3)
	f.put("/one", testChunk, 3)
	resp, err := f.srv.DownloadFiles(f.ctx, &dfspb.DownloadFilesRequest{Files: []*dfspb.DownloadFileRequest{
		{Path: "/ten"}, {Path: "/ten", PageSize: 3}, {Path: "/ten", PageSize: 100}, {Path: "/one"}, {Path: "/ten", FirstChunk: 8}}})
	is.NoErr(err)
	for i, want := range []struct{ first, chunks, next uint32 }{{0, 8, 8}, {0, 3, 3}, {0, 8, 8}, {0, 1, 1}, {8, 2, 10}} {
		d := resp.Files[i].Download
		is.Equal(resp.Files[i].Code, uint32(0))
		is.Equal(uint32(len(d.File.Chunks)), want.chunks) // the page
		is.Equal(d.File.Chunks[0].Index, want.first)      // from the chunk asked for
		is.Equal(d.NextChunk, want.next)                  // and where the next one starts
	}
	is.True(f.term.namespace.files.get("/ten") == nil) // pages of many files do not fill the cache of large files
	_, err = f.srv.DownloadFile(f.ctx, &dfspb.DownloadFileRequest{Path: "/ten", PageSize: 3})
	is.NoErr(err)
	is.True(f.term.namespace.files.get("/ten") != nil) // a reader of one paging through it does
	for _, n := range []int{0, rpc.MaxDownloadFiles + 1} {
		_, err := f.srv.DownloadFiles(f.ctx, &dfspb.DownloadFilesRequest{Files: slices.Repeat([]*dfspb.DownloadFileRequest{{Path: "/one"}}, n)})
		is.Equal(status.Code(err), codes.InvalidArgument) // no file, or too many
		is.True(strings.Contains(err.Error(), "name 1 to 64"))
	}
}
