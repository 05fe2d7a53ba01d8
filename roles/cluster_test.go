package roles_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// checkStat checks a file's metadata against its bytes: size, SHA-256,
// chunk layout, and replication (want replicas per chunk, each on a
// distinct node of the cluster).
func checkStat(t *testing.T, c *roles.Cluster, fi *client.FileInfo, data []byte, chunkSize int64, want int) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	sum := sha256.Sum256(data)
	is.Equal(fi.Size, int64(len(data)))     // stat size
	is.True(bytes.Equal(fi.SHA256, sum[:])) // stat sha256 is the file's SHA-256
	is.Equal(fi.ChunkSize, chunkSize)       // stat chunk size
	is.Equal(fi.Replication, uint32(want))  // stat replication
	nchunks := (int64(len(data)) + chunkSize - 1) / chunkSize
	is.Equal(int64(len(fi.Chunks)), nchunks) // one chunk per chunk size
	var off int64
	for i, ch := range fi.Chunks {
		is.Equal(ch.Index, uint32(i))                           // chunk index
		is.Equal(ch.Offset, off)                                // chunk offset
		is.Equal(ch.Size, min(chunkSize, int64(len(data))-off)) // chunk size
		is.Equal(len(ch.Replicas), want)                        // replicas per chunk
		seen := map[string]bool{}
		for _, r := range ch.Replicas {
			is.True(!seen[r.Node])                // replicas on distinct nodes
			is.True(nodeByID(c, r.Node) != nil)   // replica on a cluster node
			is.Equal(r.State, client.NodeHealthy) // replica healthy
			seen[r.Node] = true
		}
		off += ch.Size
	}
	is.Equal(off, int64(len(data))) // chunks cover the file
}

// TestRoundTrip puts, gets, stats, lists and removes files around the
// chunk boundaries, with the size known up front and unknown (stdin).
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	sizes := []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"one chunk", rolestest.ChunkSize},
		{"one chunk plus one byte", rolestest.ChunkSize + 1},
		{"several chunks", 3*rolestest.ChunkSize + 100},
	}
	for _, sz := range sizes {
		for _, known := range []bool{true, false} {
			name := sz.name
			if !known {
				name += " size unknown"
			}
			t.Run(name, func(t *testing.T) {
				is := is.New(t)
				data := randomBytes(sz.n)
				path := fmt.Sprintf("/rt/%d-%v", sz.n, known)
				size := int64(sz.n)
				var r io.Reader = bytes.NewReader(data)
				if !known {
					size = -1
					r = onlyReader{bytes.NewReader(data)}
				}
				fi, err := cl.Put(ctx, path, r, size, nil)
				is.NoErr(err)                   // put
				is.Equal(fi.Version, uint64(1)) // first version
				checkStat(t, c, fi, data, rolestest.ChunkSize, 3)

				got, err := getBytes(ctx, cl, path)
				is.NoErr(err)                   // get
				is.True(bytes.Equal(got, data)) // get returns the bytes put

				st, err := cl.Stat(ctx, path)
				is.NoErr(err) // stat
				checkStat(t, c, st, data, rolestest.ChunkSize, 3)

				entries, err := listAll(ctx, cl, "/rt", false)
				is.NoErr(err) // ls
				var found *client.DirEntry
				for _, e := range entries {
					if e.Path == path {
						found = &e
					}
				}
				is.True(found != nil)                          // ls shows the file
				is.True(!found.IsDir)                          // as a file
				is.Equal(found.Size, int64(sz.n))              // with its size
				is.Equal(found.Chunks, uint32(len(st.Chunks))) // and chunk count
				is.Equal(found.Replication, uint32(3))         // and replication

				is.NoErr(cl.Remove(ctx, path)) // rm
				_, err = cl.Stat(ctx, path)
				is.True(isKind(err, rpc.NotFound)) // stat after rm: not found
				_, err = getBytes(ctx, cl, path)
				is.True(isKind(err, rpc.NotFound)) // get after rm: not found
				err = cl.Remove(ctx, path)
				is.True(isKind(err, rpc.NotFound)) // second rm: not found
			})
		}
	}
}

// TestRoundTripLarge puts and gets about 100 MiB in the default 8 MiB
// chunks and 1 MiB frames.
func TestRoundTripLarge(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	if testing.Short() {
		t.Skip("100 MiB round trip skipped in -short mode")
	}
	c := rolestest.Start(t, 3)
	const chunk = 8 << 20
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.ChunkSize = chunk; cfg.FrameSize = 1 << 20 })
	ctx := t.Context()
	data := randomBytes(100<<20 + 12345)
	fi, err := cl.Put(ctx, "/large/file", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put 100 MiB
	checkStat(t, c, fi, data, chunk, 3)

	w := &compareWriter{want: data}
	_, err = cl.Get(ctx, "/large/file", w, nil)
	is.NoErr(err)              // get 100 MiB, byte for byte
	is.Equal(w.off, len(data)) // every byte came back

	is.NoErr(cl.Remove(ctx, "/large/file")) // rm
	eventually(t, "datanodes empty after rm", func() bool {
		return !slices.ContainsFunc(usedBytes(c), func(u int64) bool { return u != 0 })
	})
}

// TestOverwrite pins atomic replacement: readers see the old or the new
// version, never a mix; the old version's chunks are collected only after
// the new one commits; rm gives back every byte on the datanodes.
func TestOverwrite(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	before := usedBytes(c)

	v1 := randomBytes(5*rolestest.ChunkSize + 17)
	fi1, err := cl.Put(ctx, "/ow/file", bytes.NewReader(v1), int64(len(v1)), nil)
	is.NoErr(err) // put v1
	var oldIDs []string
	for _, ch := range fi1.Chunks {
		oldIDs = append(oldIDs, ch.ID)
	}

	// A reader runs while v2 replaces v1: each read that succeeds returns
	// v1 or v2 whole.
	v2 := randomBytes(3*rolestest.ChunkSize + 5)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var mixed, reads int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			got, err := getBytes(ctx, cl, "/ow/file")
			mu.Lock()
			if err == nil {
				reads++
				if !bytes.Equal(got, v1) && !bytes.Equal(got, v2) {
					mixed++
				}
			}
			mu.Unlock()
		}
	}()
	fi2, err := cl.Put(ctx, "/ow/file", bytes.NewReader(v2), int64(len(v2)), nil)
	is.NoErr(err) // put v2 over v1
	got, err := getBytes(ctx, cl, "/ow/file")
	close(stop)
	wg.Wait()
	is.NoErr(err)                 // get after overwrite
	is.True(bytes.Equal(got, v2)) // get returns v2
	t.Logf("%d reads during the overwrite", reads)
	is.Equal(mixed, 0)               // no reader saw a mix of versions
	is.Equal(fi2.Version, uint64(2)) // version 2
	checkStat(t, c, fi2, v2, rolestest.ChunkSize, 3)
	for _, ch := range fi2.Chunks {
		is.True(!slices.Contains(oldIDs, ch.ID)) // new version has new chunk IDs
	}

	// The old version's chunks leave every datanode's disk.
	eventually(t, "v1 chunks collected", func() bool {
		for _, n := range c.Nodes() {
			for _, id := range oldIDs {
				if n.Node.Store().Has(rpc.ChunkID(id)) {
					return false
				}
			}
		}
		return true
	})
	for _, ch := range fi2.Chunks {
		for _, r := range ch.Replicas {
			is.True(nodeByID(c, r.Node).Node.Store().Has(rpc.ChunkID(ch.ID))) // v2 chunks stay
		}
	}

	is.NoErr(cl.Remove(ctx, "/ow/file")) // rm
	eventually(t, "disk usage back to what it was before the puts", func() bool {
		return slices.Equal(usedBytes(c), before)
	})
	for _, n := range c.Nodes() {
		is.Equal(n.Node.Store().Usage().Chunks, int64(0)) // no chunk left
	}
}

// TestList pins ls: one level with directories implied by deeper paths,
// recursive listings of files only, listing a file, and paging.
func TestList(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	files := []string{"/ls/a", "/ls/c", "/ls/d/x", "/ls/d/y/z", "/ls/e/f/g", "/top"}
	for _, p := range files {
		_, err := cl.Put(ctx, p, bytes.NewReader([]byte(p)), int64(len(p)), nil)
		if err != nil {
			t.Fatalf("put %s: %v", p, err)
		}
	}
	type row struct {
		path string
		dir  bool
	}
	rows := func(es []client.DirEntry) []row {
		var out []row
		for _, e := range es {
			out = append(out, row{e.Path, e.IsDir})
		}
		return out
	}
	t.Run("one level", func(t *testing.T) {
		is := is.New(t)
		es, err := listAll(ctx, cl, "/ls", false)
		is.NoErr(err)                                                                                   // ls /ls
		is.Equal(rows(es), []row{{"/ls/a", false}, {"/ls/c", false}, {"/ls/d", true}, {"/ls/e", true}}) // files and implied dirs
		for _, e := range es {
			if !e.IsDir {
				is.Equal(e.Size, int64(len(e.Path))) // file entries carry their size
				is.Equal(e.Chunks, uint32(1))        // and chunk count
			}
		}
		root, err := listAll(ctx, cl, "/", false)
		is.NoErr(err)                                               // ls /
		is.Equal(rows(root), []row{{"/ls", true}, {"/top", false}}) // root level
		slash, err := listAll(ctx, cl, "/ls/", false)
		is.NoErr(err)                   // ls with a trailing slash
		is.Equal(rows(slash), rows(es)) // same as without
		deep, err := listAll(ctx, cl, "/ls/d", false)
		is.NoErr(err)                                                      // ls /ls/d
		is.Equal(rows(deep), []row{{"/ls/d/x", false}, {"/ls/d/y", true}}) // one level below
	})
	t.Run("recursive", func(t *testing.T) {
		is := is.New(t)
		es, err := listAll(ctx, cl, "/ls", true)
		is.NoErr(err) // ls -r /ls
		is.Equal(rows(es), []row{{"/ls/a", false}, {"/ls/c", false}, {"/ls/d", true}, {"/ls/d/x", false}, {"/ls/d/y", true}, {"/ls/d/y/z", false},
			{"/ls/e", true}, {"/ls/e/f", true}, {"/ls/e/f/g", false}}) // every file and directory below, each directory first
		all, err := listAll(ctx, cl, "/", true)
		is.NoErr(err) // ls -r /
		n := 0
		for _, e := range all {
			if !e.IsDir {
				n++
			}
		}
		is.Equal(n, len(files)) // every file
	})
	t.Run("a file", func(t *testing.T) {
		is := is.New(t)
		es, err := listAll(ctx, cl, "/ls/a", false)
		is.NoErr(err)                               // ls of a file
		is.Equal(rows(es), []row{{"/ls/a", false}}) // lists the file itself
	})
	t.Run("missing and invalid", func(t *testing.T) {
		is := is.New(t)
		_, err := listAll(ctx, cl, "/nope", false)
		is.True(isKind(err, rpc.NotFound)) // ls of a missing dir
		_, err = listAll(ctx, cl, "/ls/../etc", false)
		is.True(isKind(err, rpc.Invalid)) // ls of an escaping path
		_, err = listAll(ctx, cl, "ls", false)
		is.True(isKind(err, rpc.Invalid)) // ls of a relative path
	})
}

// listPages reads a listing page by page with ListFiles.
func listPages(ctx context.Context, cc dfspb.CoordinatorClient, dir string, recursive bool, size uint32) ([]string, int, error) {
	var out []string
	token, pages := "", 0
	for {
		resp, err := cc.ListFiles(ctx, &dfspb.ListFilesRequest{Path: dir, Recursive: recursive, PageSize: size, PageToken: token})
		if err != nil {
			return nil, pages, err
		}
		pages++
		if size > 0 && len(resp.Entries) > int(size) {
			return nil, pages, fmt.Errorf("page of %d entries, asked for %d", len(resp.Entries), size)
		}
		for _, e := range resp.Entries {
			p := e.Path
			if e.IsDir {
				p += "/"
			}
			out = append(out, p)
		}
		if resp.NextPageToken == "" {
			return out, pages, nil
		}
		if pages > 10000 {
			return nil, pages, fmt.Errorf("paging does not end")
		}
		token = resp.NextPageToken
	}
}

// TestListPaging pins that reading a listing page by page, at any page
// size, yields exactly the one-page listing: every entry once, in order.
func TestListPaging(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3, rolestest.WithLogLevel(zerolog.WarnLevel)) // no line per file
	cl := rolestest.Client(t, c)
	cc := coordClient(t, c)
	ctx := t.Context()
	put := func(paths ...string) {
		for _, p := range paths {
			if _, err := cl.Put(ctx, p, bytes.NewReader(nil), 0, nil); err != nil {
				t.Fatalf("put %s: %v", p, err)
			}
		}
	}
	check := func(t *testing.T, dir string) {
		for _, recursive := range []bool{false, true} {
			want, _, err := listPages(ctx, cc, dir, recursive, 10000)
			if err != nil {
				t.Fatalf("list %s: %v", dir, err)
			}
			for _, size := range []uint32{1, 2, 3, 5} {
				is := is.New(t)
				got, pages, err := listPages(ctx, cc, dir, recursive, size)
				is.NoErr(err)                                       // paged listing
				is.Equal(got, want)                                 // pages add up to the whole listing
				is.True(pages >= (len(want)+int(size)-1)/int(size)) // in pages of at most size entries
			}
		}
	}
	t.Run("files and directories", func(t *testing.T) {
		put("/pg/a", "/pg/b/1", "/pg/b/2", "/pg/b/3", "/pg/c", "/pg/d/e/f", "/pg/d/g", "/pg/h")
		check(t, "/pg")
	})
	t.Run("file sorting between a directory and its children", func(t *testing.T) {
		put("/q/a", "/q/b.txt", "/q/b/x", "/q/b/y", "/q/c")
		check(t, "/q")
	})
	t.Run("more than one default page", func(t *testing.T) {
		is := is.New(t)
		// The SDK reads every page of the coordinator's default size
		// (1000 entries).
		const n = 1001
		// Empty files straight through the coordinator: nothing to store.
		empty := sha256.Sum256(nil)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		const workers = 32 // concurrent commits share the metadata store's fsyncs
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: fmt.Sprintf("/many/f%04d", i)})
					if err == nil {
						_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Sha256: empty[:]})
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			is.NoErr(err) // create an empty file
		}
		es, err := listAll(ctx, cl, "/many", false)
		is.NoErr(err)        // ls over two pages
		is.Equal(len(es), n) // every file once
		for i, e := range es {
			is.Equal(e.Path, fmt.Sprintf("/many/f%04d", i)) // in order
		}
		_, pages, err := listPages(ctx, cc, "/many", false, 0)
		is.NoErr(err)      // ListFiles with the default page size
		is.Equal(pages, 2) // 1001 entries take two default pages
	})
}
