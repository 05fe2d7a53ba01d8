package roles_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// rpcCalls counts the calls of a coordinator method that ended OK.
func rpcCalls(t *testing.T, c *roles.Cluster, method string) uint64 {
	t.Helper()
	return rpcCallsWithCode(t, c, method, "OK")
}

// TestLargestFile pins that every file the chunk limit allows is
// writable and readable: with --max-file-chunks at 120 and pages of 7
// chunks and receipt batches of 9, a file of exactly 120 chunks is put,
// read and statted byte for byte, its chunk map and receipts crossing many
// page boundaries; one chunk more is refused before any chunk reaches a
// datanode (size known) or before the chunk beyond the limit is sent
// (stdin).
func TestLargestFile(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const limit, page, batch = 120, 7, 9
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.MaxFileChunks = limit }))
	cl := rolestest.Client(t, c, func(cfg *client.Config) {
		cfg.Replication = 2
		cfg.PageSize = page
		cfg.ReceiptBatch = batch
	})
	ctx := t.Context()

	// The coordinator tells the limit and places no chunk past it.
	cc := coordClient(t, c)
	open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/large/byhand", Size: -1})
	is.NoErr(err)                           // an upload of unknown size opens
	is.Equal(open.MaxChunks, uint32(limit)) // saying how many chunks it may have
	_, err = cc.AllocateChunk(ctx, &dfspb.AllocateChunkRequest{SessionId: open.SessionId, Index: limit})
	is.Equal(statusKind(err), rpc.Invalid) // the chunk past the limit is not placed
	var receipts []*dfspb.ChunkReceipt
	for i := range 1001 {
		receipts = append(receipts, &dfspb.ChunkReceipt{Index: uint32(i)})
	}
	_, err = cc.UploadReceipts(ctx, &dfspb.UploadReceiptsRequest{SessionId: open.SessionId, Chunks: receipts})
	is.Equal(statusKind(err), rpc.Invalid) // nor a batch of receipts over 1000 taken
	_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Size: overLimit(limit), Sha256: make([]byte, 32), ChunkCount: limit + 1})
	is.Equal(statusKind(err), rpc.Invalid) // nor a file of more chunks confirmed

	// One chunk over the limit, size known: refused up front.
	over := overLimit(limit)
	_, err = cl.Put(ctx, "/large/over", io.LimitReader(zeros{}, over), over, nil)
	is.True(err != nil)                                         // a file over the limit is refused
	is.Equal(rpc.KindOf(err), rpc.Invalid)                      // as invalid
	is.True(strings.Contains(err.Error(), "--max-file-chunks")) // naming the limit
	is.Equal(len(storedChunks(t, c)), 0)                        // before any chunk reached a datanode
	is.Equal(rpcCalls(t, c, "AllocateChunk"), uint64(0))        // or was placed

	// From stdin: the put stops before the chunk beyond the limit.
	_, err = cl.Put(ctx, "/large/over", onlyReader{io.LimitReader(zeros{}, over)}, -1, nil)
	is.Equal(rpc.KindOf(err), rpc.Invalid)                      // an input over the limit is refused
	is.True(strings.Contains(err.Error(), "--max-file-chunks")) // naming the limit
	is.Equal(rpcCalls(t, c, "AllocateChunk"), uint64(limit))    // the chunk beyond the limit was never placed
	_, err = cl.Stat(ctx, "/large/over")
	is.True(errors.Is(err, rpc.NotFound)) // and nothing was committed

	// Exactly the limit: written, read and described whole.
	data := randomBytes(limit*rolestest.ChunkSize - 100)
	fi, err := cl.Put(ctx, "/large/max", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err)                                            // a file of the largest chunk count is put
	is.Equal(fi.ChunkCount, uint32(limit))                   // with every chunk
	checkStat(t, c, fi, data, rolestest.ChunkSize, 2)        // and its whole chunk map
	is.True(rpcCalls(t, c, "UploadReceipts") >= limit/batch) // receipts went in batches
	w := &compareWriter{want: data}
	_, err = cl.Get(ctx, "/large/max", w, nil)
	is.NoErr(err)                                                                         // get
	is.Equal(w.off, len(data))                                                            // returns every byte
	is.True(rpcCalls(t, c, "DownloadFiles")+rpcCalls(t, c, "DownloadFile") >= limit/page) // reading the chunk map in pages
	st, err := cl.Stat(ctx, "/large/max")
	is.NoErr(err) // stat
	checkStat(t, c, st, data, rolestest.ChunkSize, 2)
}

// over returns the size of a file one byte longer than limit test chunks.
func overLimit(limit int) int64 { return int64(limit)*rolestest.ChunkSize + 1 }

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestSlowUploadKeepsSession pins that a live upload keeps its metadata
// session alive: with a session timeout of 1.5s, a put whose input
// trickles in over more than three timeouts (8 KiB every 200ms, 5s in
// all) commits.
func TestSlowUploadKeepsSession(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SessionTimeout = 1500 * time.Millisecond }))
	cl := rolestest.Client(t, c)
	data := randomBytes(3*rolestest.ChunkSize + 10)
	slow := &slowReader{r: bytes.NewReader(data), every: 200 * time.Millisecond, n: 8 << 10}
	fi, err := cl.Put(t.Context(), "/slow/file", slow, int64(len(data)), nil)
	is.NoErr(err) // the slow put commits
	checkStat(t, c, fi, data, rolestest.ChunkSize, 3)
	got, err := getBytes(t.Context(), cl, "/slow/file")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // get returns what was put
}

// slowReader returns at most n bytes per Read, after a pause of every.
type slowReader struct {
	r     io.Reader
	every time.Duration
	n     int
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.every)
	return s.r.Read(p[:min(len(p), s.n)])
}

// writeHook calls hook once, before the first write, then writes to w.
type writeHook struct {
	w    io.Writer
	hook func()
	done bool
}

func (h *writeHook) Write(p []byte) (int, error) {
	if !h.done {
		h.done = true
		h.hook()
	}
	return h.w.Write(p)
}

// TestGetLosesRaceWithOverwrite pins what a reader is told when the file
// it reads is replaced and the old version's chunks deleted under it: not
// that a chunk is missing, but that the file changed (FailedPrecondition),
// so it knows to read it again.
func TestGetLosesRaceWithOverwrite(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 2) // GC deletes at once (no --gc-delay)
	cl := rolestest.Client(t, c, func(cfg *client.Config) {
		cfg.Replication = 2
		cfg.Parallel = 1 // the next chunk is fetched only once the first is written
		cfg.Attempts = 2
	})
	ctx := t.Context()
	v1 := randomBytes(4 * rolestest.ChunkSize)
	fi1, err := cl.Put(ctx, "/race/file", bytes.NewReader(v1), int64(len(v1)), nil)
	is.NoErr(err) // put v1

	v2 := randomBytes(rolestest.ChunkSize)
	w := &writeHook{w: io.Discard, hook: func() {
		_, err := cl.Put(ctx, "/race/file", bytes.NewReader(v2), int64(len(v2)), nil)
		is.NoErr(err) // v2 replaces v1 while v1 is being read
		eventually(t, "v1's chunks deleted", func() bool {
			for _, n := range c.Nodes() {
				for _, ch := range fi1.Chunks {
					if n.Node.Store().Has(rpc.ChunkID(ch.ID)) {
						return false
					}
				}
			}
			return true
		})
	}}
	_, err = cl.Get(ctx, "/race/file", w, nil)
	is.True(err != nil)                                                       // the read of v1 fails
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition)                         // as a precondition a caller can test
	is.True(strings.Contains(err.Error(), "changed while it was being read")) // saying the file changed
	got, err := getBytes(ctx, cl, "/race/file")
	is.NoErr(err)                 // reading it again
	is.True(bytes.Equal(got, v2)) // returns the new version
}

// TestPutAcrossCoordinatorRestart pins that receipts recorded before a
// coordinator restart are not lost to the upload: the restarted
// coordinator knows the session (from the store) but none of its
// receipts, so the confirm asks for them and the client sends them again.
func TestPutAcrossCoordinatorRestart(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SafeModeTimeout = 0 }))
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.ReceiptBatch = 1 })
	data := randomBytes(8*rolestest.ChunkSize + 3)
	r := &hookReader{r: bytes.NewReader(data), at: 5 * rolestest.ChunkSize, hook: func() {
		eventually(t, "receipts recorded", func() bool { return rpcCalls(t, c, "UploadReceipts") >= 2 })
		restartCoordinator(t, c)
		// The client's connection may still hold the refusal from while it
		// was down: wait until it reaches the new one.
		eventually(t, "the client reaches the restarted coordinator", func() bool {
			_, err := cl.Nodes(t.Context())
			return err == nil
		})
	}}
	fi, err := cl.Put(t.Context(), "/restart/file", r, int64(len(data)), nil)
	is.NoErr(err) // the put commits across the restart
	checkStat(t, c, fi, data, rolestest.ChunkSize, 3)
	got, err := getBytes(t.Context(), cl, "/restart/file")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // get returns what was put
}

// takesWrites waits until cl reaches a coordinator that takes writes:
// after a restart with safe mode off, that is once enough datanodes have
// registered again for a placement.
func takesWrites(t *testing.T, cl *client.Client) {
	t.Helper()
	eventually(t, "the client reaches a coordinator that takes writes", func() bool {
		st, err := cl.Nodes(t.Context())
		return err == nil && st.WritesRefused == ""
	})
}

// TestOneChunkPutAcrossCoordinatorRestart pins the put of a file of one
// chunk across a coordinator restart between UploadFile and the confirm:
// its session was never recorded (the commit is its one durable write),
// so the restarted coordinator does not know it; the client puts the file
// again from its buffer, and the put succeeds, once.
func TestOneChunkPutAcrossCoordinatorRestart(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SafeModeTimeout = 0 }))
	cl := rolestest.Client(t, c)
	data := randomBytes(rolestest.ChunkSize / 3)
	// The input is read after UploadFile answered and before the chunk is
	// sent.
	r := &hookReader{r: bytes.NewReader(data), at: 1, hook: func() {
		restartCoordinator(t, c)
		takesWrites(t, cl)
	}}
	fi, err := cl.Put(t.Context(), "/restart/small", r, int64(len(data)), nil)
	is.NoErr(err)                                     // the put commits across the restart
	is.Equal(fi.Version, uint64(1))                   // once
	is.Equal(rpcCalls(t, c, "UploadFile"), uint64(1)) // in a session opened again with the restarted coordinator
	got, err := getBytes(t.Context(), cl, "/restart/small")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // get returns what was put

	// The same through a Writer of a known size (as the S3 gateway
	// writes), the restart between Create and Close.
	w, err := cl.Create(t.Context(), "/restart/written", &client.CreateOptions{Size: int64(len(data))})
	is.NoErr(err) // the upload opens
	restartCoordinator(t, c)
	takesWrites(t, cl)
	_, err = w.Write(data)
	is.NoErr(err)
	is.NoErr(w.Close()) // commits across the restart
	got, err = getBytes(t.Context(), cl, "/restart/written")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // get returns what was written
}

// TestChunkMapPagesPinVersion pins the paging of chunk maps: a page after
// the first names the version it continues, and once the path holds
// another version (replaced, or deleted and put again, which starts again
// at version 1) the page is refused with FailedPrecondition.
func TestChunkMapPagesPinVersion(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	cc := coordClient(t, c)
	ctx := t.Context()
	put := func() {
		data := randomBytes(3 * rolestest.ChunkSize)
		_, err := cl.Put(ctx, "/pages/file", bytes.NewReader(data), int64(len(data)), nil)
		is.NoErr(err) // put
	}
	put()
	first, err := cc.StatFile(ctx, &dfspb.StatFileRequest{Path: "/pages/file", PageSize: 1})
	is.NoErr(err)                              // first page
	is.Equal(len(first.File.Chunks), 1)        // of one chunk
	is.Equal(first.NextChunk, uint32(1))       // continuing at chunk 1
	is.Equal(first.File.ChunkCount, uint32(3)) // of three
	v1 := first.File
	next, err := cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: "/pages/file", FirstChunk: 1, PageSize: 5, Version: v1.Version, SessionId: v1.SessionId})
	is.NoErr(err)                                  // a later page of the same version
	is.Equal(len(next.File.Chunks), 2)             // holds the rest
	is.Equal(next.File.Chunks[0].Index, uint32(1)) // from chunk 1
	is.Equal(next.NextChunk, uint32(3))            // and says it is the last
	_, err = cc.StatFile(ctx, &dfspb.StatFileRequest{Path: "/pages/file", FirstChunk: 4})
	is.Equal(statusKind(err), rpc.Invalid) // a page past the end is refused

	stale := func() {
		t.Helper()
		_, err := cc.StatFile(ctx, &dfspb.StatFileRequest{Path: "/pages/file", FirstChunk: 2, Version: v1.Version, SessionId: v1.SessionId})
		is.Equal(statusKind(err), rpc.FailedPrecondition) // a page of the old version is refused
		is.True(strings.Contains(rpc.FromStatus(err).Error(), "changed while it was being read"))
		_, err = cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: "/pages/file", FirstChunk: 2, Version: v1.Version, SessionId: v1.SessionId})
		is.Equal(statusKind(err), rpc.FailedPrecondition) // by DownloadFile too
	}
	is.NoErr(cl.Remove(ctx, "/pages/file"))
	stale() // deleted
	put()   // version 1 again, of another upload
	stale() // deleted and put again
	put()
	stale() // replaced
}
