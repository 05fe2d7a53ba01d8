package roles_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// storedChunks returns the IDs of every chunk on every datanode's disk.
func storedChunks(t *testing.T, c *roles.Cluster) []string {
	t.Helper()
	var out []string
	for _, n := range c.Nodes() {
		err := n.Node.Store().Walk(func(id rpc.ChunkID, _ int64) error {
			out = append(out, string(id))
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", n.Dir, err)
		}
	}
	slices.Sort(out)
	return out
}

// replicaIDs returns the chunk IDs of fi once per replica, as storedChunks
// would list them.
func replicaIDs(fi *client.FileInfo) []string {
	var out []string
	for _, ch := range fi.Chunks {
		for range ch.Replicas {
			out = append(out, ch.ID)
		}
	}
	slices.Sort(out)
	return out
}

// TestPutSurvivesDatanodeStop stops a datanode in the middle of a put,
// once it holds chunks of the put: the put still succeeds and the file
// reads back identical while the node stays down.
func TestPutSurvivesDatanodeStop(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 4)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	data := randomBytes(64*rolestest.ChunkSize + 999)

	stopped := -1
	r := &hookReader{r: bytes.NewReader(data), at: int64(len(data) / 4), hook: func() {
		// Stop a node that already holds chunks of this put, so it is
		// surely part of the placements in flight.
		stopped = 0
		for i, n := range c.Nodes() {
			if n.Node.Store().Usage().Chunks > 0 {
				stopped = i
				break
			}
		}
		c.StopNode(stopped)
	}}
	fi, err := cl.Put(ctx, "/fail/stop", r, int64(len(data)), nil)
	is.NoErr(err)                       // put succeeds although a datanode stopped
	is.True(stopped >= 0)               // a node was stopped mid-put
	is.Equal(fi.Size, int64(len(data))) // the whole file committed
	gone := string(c.Nodes()[stopped].Node.ID())
	for _, ch := range fi.Chunks {
		live := 0
		for _, r := range ch.Replicas {
			if r.Node != gone {
				live++
			}
		}
		// A copy the stopped node acknowledged but never reported is not
		// listed yet; the copies on live nodes always are.
		is.True(live >= 2) // every chunk on at least two live nodes
	}

	got, err := getBytes(ctx, cl, "/fail/stop")
	is.NoErr(err)                   // get with the node still down
	is.True(bytes.Equal(got, data)) // reads back identical

	// Back on its data dir, the node reports what it holds: every chunk
	// is listed with all three copies again. (A chunk repaired while it
	// was away has a surplus copy once it reports: the one on the
	// returning node is trimmed and deleted, so every chunk the node
	// still holds is listed on it.)
	back, err := c.RestartNode(stopped)
	is.NoErr(err) // restart the stopped node
	eventually(t, "every chunk listed with three replicas", func() bool {
		fi, err := cl.Stat(ctx, "/fail/stop")
		if err != nil {
			return false
		}
		for _, ch := range fi.Chunks {
			if len(ch.Replicas) != 3 {
				return false
			}
			listed := slices.ContainsFunc(ch.Replicas, func(r client.Replica) bool { return r.Node == gone })
			if !listed && back.Node.Store().Has(rpc.ChunkID(ch.ID)) {
				return false // its report (or the trim of its copy) is still to come
			}
		}
		return true
	})
	fi, err = cl.Stat(ctx, "/fail/stop")
	is.NoErr(err) // stat
	checkStat(t, c, fi, data, rolestest.ChunkSize, 3)
}

// TestPutRacesDatanodeStop stops a datanode from another goroutine while a
// put is in flight.
func TestPutRacesDatanodeStop(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 4)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Parallel = 2 })
	ctx := t.Context()
	data := randomBytes(40*rolestest.ChunkSize + 1)

	done := make(chan error, 1)
	go func() {
		_, err := cl.Put(ctx, "/fail/race", bytes.NewReader(data), int64(len(data)), nil)
		done <- err
	}()
	eventually(t, "the put stores its first chunks", func() bool {
		return c.Nodes()[3].Node.Store().Usage().Chunks > 0
	})
	is.NoErr(c.StopNode(3)) // stop a node holding chunks of the put
	is.NoErr(<-done)        // put succeeds

	got, err := getBytes(ctx, cl, "/fail/race")
	is.NoErr(err)                   // get with the node down
	is.True(bytes.Equal(got, data)) // reads back identical
}

// TestPutReplacesStoppedDatanode stops a datanode after the coordinator
// planned chunks on it but before any reached it: every chunk placed on it
// is placed again on the live nodes, the put succeeds, and no chunk names
// the stopped node as a replica.
func TestPutReplacesStoppedDatanode(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 4)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	data := randomBytes(24*rolestest.ChunkSize + 5)

	// The first Read happens after UploadFile planned the first chunks
	// (with four nodes and three copies each, the stopped node is in
	// nearly every plan) and before any chunk is sent.
	r := &hookReader{r: bytes.NewReader(data), at: 1, hook: func() { c.StopNode(1) }}
	fi, err := cl.Put(ctx, "/fail/replaced", r, int64(len(data)), nil)
	is.NoErr(err) // put succeeds on the three live nodes
	gone := string(c.Nodes()[1].Node.ID())
	for _, ch := range fi.Chunks {
		is.Equal(len(ch.Replicas), 3) // fully replicated
		for _, rep := range ch.Replicas {
			is.True(rep.Node != gone) // never on the stopped node
		}
	}
	got, err := getBytes(ctx, cl, "/fail/replaced")
	is.NoErr(err)                   // get
	is.True(bytes.Equal(got, data)) // reads back identical
}

// TestGetFallsBackOnCorruptReplica damages replicas on disk: a reader
// detects the bad bytes and reads another replica.
func TestGetFallsBackOnCorruptReplica(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	data := randomBytes(4*rolestest.ChunkSize + 10)
	fi, err := cl.Put(ctx, "/corrupt/some", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put

	// Damage two of the three replicas of every chunk: a data byte in the
	// first or a later frame, or the stored digests at the end of the file.
	for i, ch := range fi.Chunks {
		for j, r := range ch.Replicas[:2] {
			n := nodeByID(c, r.Node)
			switch (i + j) % 3 {
			case 0:
				testdisk.FlipByte(t, chunkFile(n, ch.ID), 0)
			case 1:
				testdisk.FlipByte(t, chunkFile(n, ch.ID), ch.Size-1)
			case 2:
				testdisk.FlipByte(t, chunkFile(n, ch.ID), ch.Size+5) // a frame digest
			}
		}
	}
	// The damaged replicas really serve bad chunks.
	ch := fi.Chunks[0]
	n := nodeByID(c, ch.Replicas[0].Node)
	dn := dfspb.NewDataNodeClient(testDial(t, n.Node.Addr()))
	err = readChunkDirect(ctx, dn, ch)
	is.True(err != nil) // a damaged replica fails verification

	got, err := getBytes(ctx, cl, "/corrupt/some")
	is.NoErr(err)                   // get falls back to the intact replicas
	is.True(bytes.Equal(got, data)) // and returns the right bytes
}

// TestGetVerifyFileDigest commits a file whose recorded SHA-256 is not
// the SHA-256 of its bytes (its chunks and their digests are sound): a
// get verifies every frame and chunk and returns the bytes, and a get
// with VerifyFileDigest (dfs get --verify-file) fails, naming the
// mismatch.
func TestGetVerifyFileDigest(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	data := randomBytes(3*rolestest.ChunkSize + 10)
	h := uploadByHand(t, c, "/digest/wrong", data)
	h.req.Sha256 = sha256Sum([]byte("other bytes"))
	_, err := h.cc.ConfirmUpload(ctx, h.req)
	is.NoErr(err) // the coordinator commits what the uploader says

	var out bytes.Buffer
	_, err = cl.Get(ctx, "/digest/wrong", &out, nil)
	is.NoErr(err)                           // every frame and chunk matches what was committed
	is.True(bytes.Equal(out.Bytes(), data)) // and those bytes come back

	out.Reset()
	_, err = cl.Get(ctx, "/digest/wrong", &out, &client.GetOptions{VerifyFileDigest: true})
	is.True(err != nil)                                         // the file digest check fails the get
	is.True(isKind(err, rpc.Internal))                          // as an integrity failure
	is.True(strings.Contains(err.Error(), "checksum mismatch")) // saying why

	// A sound file passes the check.
	_, err = cl.Put(ctx, "/digest/right", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put
	out.Reset()
	_, err = cl.Get(ctx, "/digest/right", &out, &client.GetOptions{VerifyFileDigest: true})
	is.NoErr(err)                           // the file digest matches
	is.True(bytes.Equal(out.Bytes(), data)) // and the bytes come back
}

// readChunkDirect downloads one chunk from a datanode and verifies it
// against the digest recorded at commit.
func readChunkDirect(ctx context.Context, dn dfspb.DataNodeClient, ch client.ChunkInfo) error {
	prep, err := dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: ch.ID})
	if err != nil {
		return rpc.FromStatus(err)
	}
	st, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{SessionId: prep.SessionId})
	if err != nil {
		return rpc.FromStatus(err)
	}
	exp := chunkstream.Expect{ChunkID: rpc.ChunkID(ch.ID), Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest}
	return chunkstream.ReceiveInto(st, exp, make([]byte, ch.Size))
}

// TestGetAllReplicasCorrupt damages every replica of one chunk: get fails
// with a clear error and never writes a byte that does not match.
func TestGetAllReplicasCorrupt(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Attempts = 2 })
	ctx := t.Context()
	data := randomBytes(3*rolestest.ChunkSize + 10)
	fi, err := cl.Put(ctx, "/corrupt/all", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put
	bad := fi.Chunks[1]
	for _, r := range bad.Replicas {
		testdisk.FlipByte(t, chunkFile(nodeByID(c, r.Node), bad.ID), rolestest.FrameSize+3)
	}

	var out bytes.Buffer
	_, err = cl.Get(ctx, "/corrupt/all", &out, nil)
	is.True(err != nil)                                // get fails
	is.True(isKind(err, rpc.Unavailable))              // no replica could serve the chunk
	is.True(strings.Contains(err.Error(), bad.ID))     // the error names the chunk
	is.True(strings.Contains(err.Error(), "checksum")) // and says why
	is.True(!strings.Contains(err.Error(), "\n"))      // on one line
	is.True(bytes.HasPrefix(data, out.Bytes()))        // every byte written is right
	is.True(int64(out.Len()) <= bad.Offset)            // nothing of the bad chunk was written
}

// TestPutCanceled cancels a put midway: no new version becomes visible,
// the earlier version stays intact, and the canceled upload's chunks are
// collected.
func TestPutCanceled(t *testing.T) {
	t.Parallel()
	// A chunk whose last frame was in flight when the put was canceled can
	// still be committed on some of its nodes after the abort; the GC
	// delay lets those commits land before the aborted upload's chunks
	// are deleted.
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.GCDelay = 2 * time.Second }))
	cl := rolestest.Client(t, c)
	ctx := t.Context()

	cancelMidway := func(path string, data []byte) error {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r := &hookReader{r: bytes.NewReader(data), at: 3 * rolestest.ChunkSize, hook: cancel}
		_, err := cl.Put(cctx, path, r, int64(len(data)), nil)
		return err
	}
	t.Run("new path", func(t *testing.T) {
		is := is.New(t)
		err := cancelMidway("/cancel/new", randomBytes(40*rolestest.ChunkSize))
		is.True(isKind(err, rpc.Canceled)) // put reports the cancellation
		_, err = cl.Stat(ctx, "/cancel/new")
		is.True(isKind(err, rpc.NotFound)) // nothing visible
		eventually(t, "canceled upload's chunks collected", func() bool {
			return len(storedChunks(t, c)) == 0
		})
	})
	t.Run("overwrite", func(t *testing.T) {
		is := is.New(t)
		v1 := randomBytes(2*rolestest.ChunkSize + 1)
		fi1, err := cl.Put(ctx, "/cancel/old", bytes.NewReader(v1), int64(len(v1)), nil)
		is.NoErr(err) // put v1
		err = cancelMidway("/cancel/old", randomBytes(40*rolestest.ChunkSize))
		is.True(isKind(err, rpc.Canceled)) // put of v2 reports the cancellation
		fi, err := cl.Stat(ctx, "/cancel/old")
		is.NoErr(err)                               // v1 still there
		is.Equal(fi.Version, fi1.Version)           // same version
		is.True(bytes.Equal(fi.SHA256, fi1.SHA256)) // same content
		got, err := getBytes(ctx, cl, "/cancel/old")
		is.NoErr(err)                 // get v1
		is.True(bytes.Equal(got, v1)) // intact
		eventually(t, "only v1's chunks left on disk", func() bool {
			return slices.Equal(storedChunks(t, c), replicaIDs(fi1))
		})
	})
}

// TestTooFewDatanodes pins the error when fewer datanodes are live than
// the replication factor.
func TestTooFewDatanodes(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter = 2*time.Second, 4*time.Second
	}))
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	data := randomBytes(rolestest.ChunkSize / 2)
	is.NoErr(c.StopNode(2)) // one of three nodes down

	// Before the coordinator notices, the put finds out by itself.
	_, err := cl.Put(ctx, "/few/a", bytes.NewReader(data), int64(len(data)), nil)
	is.True(isKind(err, rpc.FailedPrecondition))                   // not enough datanodes
	is.True(strings.Contains(err.Error(), "not enough datanodes")) // saying why

	cc := coordClient(t, c)
	id := string(c.Nodes()[2].Node.ID())
	eventually(t, "stopped node no longer healthy", func() bool {
		resp, err := cc.ListNodes(ctx, &dfspb.ListNodesRequest{})
		return err == nil && slices.ContainsFunc(resp.Nodes, func(n *dfspb.NodeStatus) bool {
			return n.NodeId == id && n.State != dfspb.NodeState_NODE_STATE_HEALTHY
		})
	})
	for _, size := range []int{0, len(data)} {
		_, err = cl.Put(ctx, "/few/b", bytes.NewReader(data[:size]), int64(size), nil)
		is.True(isKind(err, rpc.FailedPrecondition))                   // refused up front
		is.True(strings.Contains(err.Error(), "not enough datanodes")) // saying why
	}
	_, err = cl.Stat(ctx, "/few/b")
	is.True(isKind(err, rpc.NotFound)) // nothing visible

	// Two copies fit on the two live nodes.
	is.NoErr(c.WaitHealthy(2, waitFor)) // the two live nodes are healthy
	cl2 := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 2 })
	fi, err := cl2.Put(ctx, "/few/c", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // replication 2 on 2 live nodes
	checkStat(t, c, fi, data, rolestest.ChunkSize, 2)
}

// TestCoordinatorUnreachable pins that every client call fails promptly
// with Unavailable when nobody listens at the coordinator's address.
func TestCoordinatorUnreachable(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err) // find a free port
	addr := lis.Addr().String()
	lis.Close()

	cfg := client.DefaultConfig()
	cfg.Coordinators = []string{addr}
	cfg.RPCTimeout = time.Hour // a hang would show as ctx expiring, not as a per-call timeout
	log := rolestest.Logger(t)
	cfg.Logger = &log
	cl, err := client.New(t.Context(), cfg)
	is.NoErr(err) // client
	defer cl.Close()

	// Within a few seconds: the calls below must fail on their own, well
	// before this generous context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"put":   func() error { _, err := cl.Put(ctx, "/x", bytes.NewReader([]byte("x")), 1, nil); return err },
		"get":   func() error { _, err := cl.Get(ctx, "/x", io.Discard, nil); return err },
		"stat":  func() error { _, err := cl.Stat(ctx, "/x"); return err },
		"rm":    func() error { return cl.Remove(ctx, "/x") },
		"ls":    func() error { _, err := listAll(ctx, cl, "/", false); return err },
		"nodes": func() error { _, err := cl.Nodes(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		is.True(err != nil)                          // fails
		is.True(ctx.Err() == nil)                    // on its own, not by the test's deadline
		is.True(isKind(err, rpc.Unavailable))        // as Unavailable
		is.True(strings.Contains(err.Error(), addr)) // naming the address
		t.Logf("%s: %v", name, err)
	}
}

// TestBadInput pins that malformed requests get a clear error of the right
// kind and change nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	cc := coordClient(t, c)
	dn := nodeClient(t, c, 0)
	ctx := t.Context()

	t.Run("remote path missing", func(t *testing.T) {
		is := is.New(t)
		_, err := getBytes(ctx, cl, "/missing")
		is.True(isKind(err, rpc.NotFound))                 // get
		is.True(strings.Contains(err.Error(), "/missing")) // names the path
		_, err = cl.Stat(ctx, "/missing")
		is.True(isKind(err, rpc.NotFound))      // stat
		is.True(errors.Is(err, fs.ErrNotExist)) // as the standard library says it
		err = cl.Remove(ctx, "/missing")
		is.True(isKind(err, rpc.NotFound)) // rm
	})

	t.Run("invalid remote paths", func(t *testing.T) {
		for _, p := range []string{"relative/path", "/a/../b", "/..", "/a/./b", "/a\x00b", "/a//b", "/a/", "", "/", "/a/b/"} {
			is := is.New(t)
			_, err := cl.Put(ctx, p, bytes.NewReader([]byte("x")), 1, nil)
			is.True(isKind(err, rpc.Invalid)) // put refuses the path
			_, err = getBytes(ctx, cl, p)
			is.True(isKind(err, rpc.Invalid)) // get refuses the path
			_, err = cl.Stat(ctx, p)
			is.True(isKind(err, rpc.Invalid)) // stat refuses the path
			err = cl.Remove(ctx, p)
			is.True(isKind(err, rpc.Invalid)) // rm refuses the path
			// The coordinator checks on its own, whatever the client does.
			_, err = cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: p, Size: 1})
			is.Equal(statusKind(err), rpc.Invalid) // UploadFile
			_, err = cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: p})
			is.Equal(statusKind(err), rpc.Invalid) // DownloadFile
			_, err = cc.StatFile(ctx, &dfspb.StatFileRequest{Path: p})
			is.Equal(statusKind(err), rpc.Invalid) // StatFile
			_, err = cc.DeleteFile(ctx, &dfspb.DeleteFileRequest{Path: p})
			is.Equal(statusKind(err), rpc.Invalid) // DeleteFile
		}
		is := is.New(t)
		es, err := listAll(ctx, cl, "/", true)
		is.NoErr(err)        // ls -r /
		is.Equal(len(es), 0) // nothing was created
	})

	t.Run("input size differs from the size given", func(t *testing.T) {
		data := randomBytes(2*rolestest.ChunkSize + 9)
		for _, tc := range []struct {
			name string
			size int64
		}{
			{"input shorter", int64(len(data)) + 1},
			{"input longer", int64(len(data)) - 1},
			{"input longer than a whole number of chunks", rolestest.ChunkSize},
		} {
			t.Run(tc.name, func(t *testing.T) {
				is := is.New(t)
				_, err := cl.Put(ctx, "/size/mismatch", bytes.NewReader(data), tc.size, nil)
				is.True(isKind(err, rpc.Invalid)) // put refuses input that does not match its size
				_, err = cl.Stat(ctx, "/size/mismatch")
				is.True(isKind(err, rpc.NotFound)) // nothing visible
			})
		}
	})

	t.Run("path conflicts with a directory", func(t *testing.T) {
		is := is.New(t)
		_, err := cl.Put(ctx, "/conflict/file", bytes.NewReader([]byte("f")), 1, nil)
		is.NoErr(err) // a file
		_, err = cl.Put(ctx, "/conflict/file/below", bytes.NewReader([]byte("b")), 1, nil)
		is.True(isKind(err, rpc.Exists)) // no file below a file
		_, err = cl.Put(ctx, "/conflict", bytes.NewReader([]byte("d")), 1, nil)
		is.True(isKind(err, rpc.Exists)) // no file where a directory is
		es, err := listAll(ctx, cl, "/conflict", true)
		is.NoErr(err)                              // ls -r /conflict
		is.Equal(len(es), 1)                       // only the first file
		is.Equal(es[0].Path, "/conflict/file")     // intact
		is.NoErr(cl.Remove(ctx, "/conflict/file")) // clean up for the listing below
	})

	t.Run("chunk size out of range", func(t *testing.T) {
		is := is.New(t)
		for _, size := range []int64{rpc.MaxChunkSize + 1, 128 << 20, rpc.MinChunkSize - 1} {
			cfg := client.DefaultConfig()
			cfg.Coordinators = []string{c.Addr()}
			cfg.ChunkSize = size
			_, err := client.New(t.Context(), cfg)
			is.True(isKind(err, rpc.Invalid))                    // client refuses the chunk size
			is.True(strings.Contains(err.Error(), "chunk size")) // saying so
			_, err = cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/cs", Size: 1, ChunkSize: size})
			is.Equal(statusKind(err), rpc.Invalid) // coordinator refuses it too
		}
		_, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/cs", Size: 1, ChunkSize: rpc.MaxChunkSize})
		is.NoErr(err) // 64 MiB is allowed
	})

	t.Run("chunk ids that try to leave the data dir", func(t *testing.T) {
		for _, id := range []string{"../../etc/passwd", "a/b", "/etc/passwd", "..", "", strings.Repeat("0", 32) + "_0/../../x", strings.Repeat("0", 32) + "_0\x00"} {
			is := is.New(t)
			_, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: 1, FrameSize: rolestest.FrameSize})
			is.Equal(statusKind(err), rpc.Invalid) // PrepareChunkUpload
			_, err = dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: id})
			is.Equal(statusKind(err), rpc.Invalid) // PrepareChunkDownload
			ds, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{ChunkId: id, FrameDigests: true})
			if err == nil {
				_, err = ds.Recv()
			}
			is.Equal(statusKind(err), rpc.Invalid) // DownloadChunkStream naming the chunk
			_, err = dn.DeleteChunk(ctx, &dfspb.DeleteChunkRequest{ChunkId: id})
			is.Equal(statusKind(err), rpc.Invalid) // DeleteChunk
			_, err = dn.BulkDeleteChunk(ctx, &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{id}})
			is.Equal(statusKind(err), rpc.Invalid) // BulkDeleteChunk
			_, err = dn.StatChunks(ctx, &dfspb.StatChunksRequest{ChunkIds: []string{id}})
			is.Equal(statusKind(err), rpc.Invalid) // StatChunks

			// The same request inline, on the first frame of a stream.
			st, err := dn.UploadChunkStream(ctx)
			is.NoErr(err) // open stream
			f := cutFrames("", id, []byte("data"), rolestest.FrameSize)[0]
			f.Prepare = &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: 4, FrameSize: rolestest.FrameSize}
			st.Send(f)
			_, err = st.Recv()
			is.Equal(statusKind(err), rpc.Invalid) // UploadChunkStream with an inline prepare
		}
	})

	t.Run("unknown session ids", func(t *testing.T) {
		is := is.New(t)
		unknown := string(rpc.NewSessionID())
		for _, sid := range []string{unknown, "not-a-session", ""} {
			want := rpc.NotFound
			if sid != unknown {
				want = rpc.Invalid
			}
			st, err := dn.UploadChunkStream(ctx)
			is.NoErr(err) // open stream
			f := cutFrames(sid, string(rpc.NewChunkID("/x", rpc.NewSessionID(), 0, 0)), []byte("data"), rolestest.FrameSize)[0]
			st.Send(f)
			_, err = st.Recv()
			is.Equal(statusKind(err), want) // UploadChunkStream refuses the session (no session and no prepare: invalid)

			ds, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{SessionId: sid})
			if err == nil {
				_, err = ds.Recv()
			}
			is.Equal(statusKind(err), want) // DownloadChunkStream refuses the session

			_, err = cc.AllocateChunk(ctx, &dfspb.AllocateChunkRequest{SessionId: sid, Index: 0})
			is.Equal(statusKind(err), want) // AllocateChunk refuses the session
			_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: sid, Sha256: make([]byte, 32)})
			is.Equal(statusKind(err), want) // ConfirmUpload refuses the session
			_, err = cc.AbortUpload(ctx, &dfspb.AbortUploadRequest{SessionId: sid})
			is.Equal(statusKind(err), want) // AbortUpload refuses the session
		}
	})

	t.Run("sizes out of bounds", func(t *testing.T) {
		is := is.New(t)
		id := string(rpc.NewChunkID("/bounds", rpc.NewSessionID(), 0, 0))
		for _, req := range []*dfspb.PrepareChunkUploadRequest{
			{ChunkId: id, Size: 0, FrameSize: rolestest.FrameSize},
			{ChunkId: id, Size: -1, FrameSize: rolestest.FrameSize},
			{ChunkId: id, Size: rpc.MaxChunkSize + 1, FrameSize: rolestest.FrameSize},
			{ChunkId: id, Size: 1, FrameSize: 0},
			{ChunkId: id, Size: 1, FrameSize: rpc.MinFrameSize - 1},
			{ChunkId: id, Size: 1, FrameSize: rpc.MaxFrameSize + 1},
		} {
			_, err := dn.PrepareChunkUpload(ctx, req)
			is.Equal(statusKind(err), rpc.Invalid) // PrepareChunkUpload refuses the size
		}
		_, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/bounds", Size: -2})
		is.Equal(statusKind(err), rpc.Invalid) // UploadFile refuses a negative size
		_, err = cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/bounds", Size: 1, Replication: rpc.MaxReplication + 1})
		is.Equal(statusKind(err), rpc.Invalid) // UploadFile refuses the replication
		_, err = cc.ListFiles(ctx, &dfspb.ListFilesRequest{Path: "/", PageToken: "not a token!"})
		is.Equal(statusKind(err), rpc.Invalid) // ListFiles refuses a bad page token
		_, err = cc.ListFiles(ctx, &dfspb.ListFilesRequest{Path: "/", PageSize: 1 << 30})
		is.Equal(statusKind(err), rpc.Invalid) // ListFiles refuses a huge page
	})

	t.Run("frame digest mismatch", func(t *testing.T) {
		for _, replicated := range []bool{false, true} {
			is := is.New(t)
			data := randomBytes(2*rolestest.FrameSize + 5)
			id := string(rpc.NewChunkID("/digest", rpc.NewSessionID(), 0, 0))
			req := &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: int64(len(data)), FrameSize: rolestest.FrameSize}
			if replicated {
				for _, n := range c.Nodes()[1:] {
					req.Replicas = append(req.Replicas, &dfspb.NodeRef{NodeId: string(n.Node.ID()), Addr: n.Node.Addr()})
				}
			}
			for _, damage := range []string{"frame", "chunk", "offset", "oversized"} {
				prep, err := dn.PrepareChunkUpload(ctx, req)
				is.NoErr(err) // prepare
				frames := cutFrames(prep.SessionId, id, data, rolestest.FrameSize)
				switch damage {
				case "frame":
					frames[1].PartialChecksum = sha256Sum([]byte("something else"))
				case "chunk":
					frames[2].ChunkChecksum = sha256Sum([]byte("something else"))
				case "offset":
					frames[1].Offset++
				case "oversized":
					frames[0].Data = append(bytes.Clone(frames[0].Data), 0)
					frames[0].PartialChecksum = sha256Sum(frames[0].Data)
				}
				st, err := dn.UploadChunkStream(ctx)
				is.NoErr(err) // open stream
				for _, f := range frames {
					if st.Send(f) != nil {
						break
					}
				}
				st.CloseSend()
				for err == nil {
					var ack *dfspb.ChunkDataAck
					ack, err = st.Recv()
					is.True(ack == nil || !ack.IsFinal) // no final ack for a bad chunk
				}
				is.Equal(statusKind(err), rpc.Invalid) // refused as invalid
				if damage == "frame" || damage == "chunk" {
					is.True(strings.Contains(rpc.FromStatus(err).Error(), "checksum mismatch")) // saying which check failed
				}
				for _, n := range c.Nodes() {
					is.True(!n.Node.Store().Has(rpc.ChunkID(id))) // stored nowhere
				}
				eventually(t, "partial files removed", func() bool {
					for _, n := range c.Nodes() {
						if len(tmpFiles(t, n)) > 0 {
							return false
						}
					}
					return true
				})
			}
		}
	})
}

// hand is an upload driven RPC by RPC, as a client would.
type hand struct {
	t    *testing.T
	cc   dfspb.CoordinatorClient
	open *dfspb.UploadFileResponse
	req  *dfspb.ConfirmUploadRequest
}

// uploadByHand opens an upload of data at path and stores every chunk on
// its planned nodes, returning the confirm request a client would send.
func uploadByHand(t *testing.T, c *roles.Cluster, path string, data []byte) *hand {
	t.Helper()
	is := is.New(t)
	is.Helper()
	ctx := t.Context()
	cc := coordClient(t, c)
	open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: path, Size: int64(len(data))})
	is.NoErr(err) // UploadFile
	sum := sha256Sum(data)
	h := &hand{t: t, cc: cc, open: open, req: &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Size: int64(len(data)), Sha256: sum}}
	for i := 0; int64(i)*open.ChunkSize < int64(len(data)); i++ {
		var plan *dfspb.ChunkPlan
		if i < len(open.Chunks) {
			plan = open.Chunks[i]
		} else {
			resp, err := cc.AllocateChunk(ctx, &dfspb.AllocateChunkRequest{SessionId: open.SessionId, Index: uint32(i)})
			is.NoErr(err) // AllocateChunk
			plan = resp.Chunk
		}
		chunk := data[int64(i)*open.ChunkSize : min(int64(i+1)*open.ChunkSize, int64(len(data)))]
		h.req.Chunks = append(h.req.Chunks, storeByHand(t, plan, chunk))
	}
	h.req.ChunkCount = uint32(len(h.req.Chunks))
	return h
}

// storeByHand stores one chunk on its plan's primary, which forwards it
// to the replicas.
func storeByHand(t *testing.T, plan *dfspb.ChunkPlan, chunk []byte) *dfspb.ChunkReceipt {
	t.Helper()
	is := is.New(t)
	is.Helper()
	ctx := t.Context()
	dn := dfspb.NewDataNodeClient(testDial(t, plan.Primary.Addr))
	prep, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{
		ChunkId: plan.ChunkId, Size: int64(len(chunk)), FrameSize: rolestest.FrameSize, Replicas: plan.Replicas,
	})
	is.NoErr(err) // PrepareChunkUpload
	ack, digest, err := streamChunk(ctx, dn, prep.SessionId, plan.ChunkId, chunk, rolestest.FrameSize)
	is.NoErr(err)                  // UploadChunkStream
	is.Equal(len(ack.Replicas), 3) // the final ack names every node
	return &dfspb.ChunkReceipt{
		Index: plan.Index, ChunkId: plan.ChunkId, Size: int64(len(chunk)), Digest: digest,
		FrameSize: rolestest.FrameSize, NodeIds: ack.Replicas,
	}
}

// chunkIDs returns the chunk IDs of a confirm request.
func (h *hand) chunkIDs() []string {
	var out []string
	for _, r := range h.req.Chunks {
		out = append(out, r.ChunkId)
	}
	return out
}

// TestConfirmMismatch confirms uploads whose receipts disagree with what
// the datanodes stored: the coordinator refuses, the earlier version stays
// and the refused upload's chunks are collected.
func TestConfirmMismatch(t *testing.T) {
	t.Parallel()
	// A refused confirm waits this long for reports that match.
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.RPCTimeout = 2 * time.Second }))
	cl := rolestest.Client(t, c)
	ctx := t.Context()

	// An upload by hand, confirmed honestly, commits: the procedure the
	// bad confirms below use is sound.
	v1 := randomBytes(2*rolestest.ChunkSize + 3)
	h := uploadByHand(t, c, "/confirm/file", v1)
	resp, err := h.cc.ConfirmUpload(ctx, h.req)
	if err != nil {
		t.Fatalf("honest confirm: %v", err)
	}
	got, err := getBytes(ctx, cl, "/confirm/file")
	if err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("get after honest confirm: %v", err)
	}

	for _, tc := range []struct {
		name   string
		damage func(r *dfspb.ChunkReceipt)
	}{
		{"chunk digest", func(r *dfspb.ChunkReceipt) { r.Digest = sha256Sum([]byte("not the chunk")) }},
		{"frame size", func(r *dfspb.ChunkReceipt) { r.FrameSize = 2 * rolestest.FrameSize }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			v2 := randomBytes(3*rolestest.ChunkSize + 7)
			h := uploadByHand(t, c, "/confirm/file", v2)
			tc.damage(h.req.Chunks[1])
			_, err := h.cc.ConfirmUpload(ctx, h.req)
			is.Equal(statusKind(err), rpc.Invalid)                                          // confirm refused
			is.True(strings.Contains(rpc.FromStatus(err).Error(), h.req.Chunks[1].ChunkId)) // naming the chunk

			fi, err := cl.Stat(ctx, "/confirm/file")
			is.NoErr(err)                                     // the file is still there
			is.Equal(fi.Version, resp.File.Version)           // at the committed version
			is.True(bytes.Equal(fi.SHA256, resp.File.Sha256)) // with its content
			got, err := getBytes(ctx, cl, "/confirm/file")
			is.NoErr(err)                 // get
			is.True(bytes.Equal(got, v1)) // returns the committed version

			_, err = h.cc.ConfirmUpload(ctx, h.req)
			is.Equal(statusKind(err), rpc.NotFound) // a refused upload is over

			ids := h.chunkIDs()
			eventually(t, "refused upload's chunks collected", func() bool {
				return !slices.ContainsFunc(storedChunks(t, c), func(id string) bool { return slices.Contains(ids, id) })
			})
		})
	}
}

// TestDatanodeSessionExpiry pins that a streaming session that is
// prepared but never used, or that stalls mid-chunk, expires: its space
// reservation is returned and its partial file removed.
func TestDatanodeSessionExpiry(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	c := rolestest.Start(t, 3, rolestest.WithDatanode(func(cfg *datanode.Config) {
		cfg.SessionTimeout = timeout
		cfg.Capacity = 1 << 30 // free space is then exact: capacity - used - reserved
	}))
	node := c.Nodes()[0]
	dn := nodeClient(t, c, 0)
	ctx := t.Context()
	free := func() int64 { return node.Node.Store().Usage().Free }
	base := free()
	size := int64(2*rolestest.FrameSize + 1)

	t.Run("prepared, never streamed", func(t *testing.T) {
		is := is.New(t)
		id := string(rpc.NewChunkID("/exp", rpc.NewSessionID(), 0, 0))
		start := time.Now()
		prep, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: size, FrameSize: rolestest.FrameSize})
		is.NoErr(err) // prepare
		if reserved := free() < base; !reserved && time.Since(start) >= timeout {
			t.Skip("machine too slow to tell: the session expired before its reservation was checked")
		}
		is.True(free() < base) // space reserved
		eventually(t, "reservation returned", func() bool { return free() == base })
		_, _, err = streamChunk(ctx, dn, prep.SessionId, id, randomBytes(int(size)), rolestest.FrameSize)
		is.Equal(statusKind(err), rpc.NotFound)          // the session is gone
		is.True(!node.Node.Store().Has(rpc.ChunkID(id))) // nothing stored
	})

	t.Run("stalled mid-chunk", func(t *testing.T) {
		is := is.New(t)
		id := string(rpc.NewChunkID("/exp", rpc.NewSessionID(), 0, 0))
		prep, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: size, FrameSize: rolestest.FrameSize})
		is.NoErr(err) // prepare
		st, err := dn.UploadChunkStream(ctx)
		is.NoErr(err) // open stream
		frames := cutFrames(prep.SessionId, id, randomBytes(int(size)), rolestest.FrameSize)
		is.NoErr(st.Send(frames[0])) // first frame
		ack, err := st.Recv()
		acked := time.Now()
		is.NoErr(err)                                           // acked
		is.Equal(ack.BytesReceived, int64(rolestest.FrameSize)) // the frame arrived
		if n := len(tmpFiles(t, node)); n == 0 && time.Since(acked) >= timeout {
			t.Skip("machine too slow to tell: the stream expired before its partial file was checked")
		}
		is.Equal(len(tmpFiles(t, node)), 1) // a partial file exists
		// Send nothing more: the node cuts the stream.
		_, err = st.Recv()
		is.Equal(statusKind(err), rpc.DeadlineExceeded) // stream expired
		eventually(t, "partial file removed", func() bool { return len(tmpFiles(t, node)) == 0 })
		eventually(t, "reservation returned", func() bool { return free() == base })
		is.True(!node.Node.Store().Has(rpc.ChunkID(id))) // nothing stored
	})

	t.Run("download prepared, never read", func(t *testing.T) {
		is := is.New(t)
		id := string(rpc.NewChunkID("/exp", rpc.NewSessionID(), 0, 0))
		data := randomBytes(int(size))
		prep, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: id, Size: size, FrameSize: rolestest.FrameSize})
		is.NoErr(err) // prepare upload
		_, _, err = streamChunk(ctx, dn, prep.SessionId, id, data, rolestest.FrameSize)
		is.NoErr(err) // store a chunk
		dprep, err := dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: id})
		is.NoErr(err)                              // prepare download
		time.Sleep(timeout + 100*time.Millisecond) // let the session's time-to-live pass
		ds, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{SessionId: dprep.SessionId})
		if err == nil {
			_, err = ds.Recv()
		}
		is.Equal(statusKind(err), rpc.NotFound) // the session expired
	})
}

// TestCoordinatorSessionExpiry pins that an upload that never confirms
// expires after the session timeout and its stored chunks are collected.
func TestCoordinatorSessionExpiry(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const timeout = 3 * time.Second
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SessionTimeout = timeout }))
	ctx := t.Context()
	cc := coordClient(t, c)
	data := randomBytes(2 * rolestest.ChunkSize)
	open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/expire/file", Size: int64(len(data))})
	is.NoErr(err)                 // UploadFile
	is.Equal(len(open.Chunks), 2) // both chunks placed
	r := storeByHand(t, open.Chunks[0], data[:rolestest.ChunkSize])
	if time.Now().UnixMilli() >= open.ExpiresUnixMs {
		t.Skip("machine too slow: the chunk was stored after the session had expired")
	}
	for _, id := range r.NodeIds {
		is.True(nodeByID(c, id).Node.Store().Has(rpc.ChunkID(r.ChunkId))) // chunk stored on its nodes
	}

	eventually(t, "expired upload's chunk collected", func() bool {
		for _, id := range r.NodeIds {
			if nodeByID(c, id).Node.Store().Has(rpc.ChunkID(r.ChunkId)) {
				return false
			}
		}
		return true
	})
	_, err = cc.AllocateChunk(ctx, &dfspb.AllocateChunkRequest{SessionId: open.SessionId, Index: 1})
	is.Equal(statusKind(err), rpc.NotFound) // session gone
	_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Size: int64(len(data)), Sha256: sha256Sum(data)})
	is.Equal(statusKind(err), rpc.NotFound) // cannot confirm
	_, err = cc.StatFile(ctx, &dfspb.StatFileRequest{Path: "/expire/file"})
	is.Equal(statusKind(err), rpc.NotFound) // never visible
}

// TestHeartbeats pins membership: a stopped datanode turns suspect, then
// dead; restarted on its data dir it is the same node, healthy again; and
// heartbeat replies carry the changes a node has not seen.
func TestHeartbeats(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter = 2*time.Second, 4*time.Second
	}))
	ctx := t.Context()
	cc := coordClient(t, c)
	state := func(id string) (*dfspb.NodeStatus, uint64, int) {
		resp, err := cc.ListNodes(ctx, &dfspb.ListNodesRequest{})
		if err != nil {
			t.Fatalf("ListNodes: %v", err)
		}
		for _, n := range resp.Nodes {
			if n.NodeId == id {
				return n, resp.ClusterVersion, len(resp.Nodes)
			}
		}
		return nil, resp.ClusterVersion, len(resp.Nodes)
	}
	cl := rolestest.Client(t, c)
	data := randomBytes(3*rolestest.ChunkSize + 1)
	_, err := cl.Put(ctx, "/hb/file", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put a file: every node holds its chunks
	victim := c.Nodes()[2]
	id := string(victim.Node.ID())
	chunks := victim.Node.Store().Usage().Chunks
	is.Equal(chunks, int64(4)) // the victim holds a copy of every chunk
	eventually(t, "victim's chunk count reported", func() bool {
		st, _, _ := state(id)
		return st.ChunkCount == chunks
	})
	_, v0, _ := state(id)

	is.NoErr(c.StopNode(2)) // stop it
	var seen []dfspb.NodeState
	eventually(t, "stopped node dead", func() bool {
		st, _, _ := state(id)
		if len(seen) == 0 || seen[len(seen)-1] != st.State {
			seen = append(seen, st.State)
		}
		return st.State == dfspb.NodeState_NODE_STATE_DEAD
	})
	// A busy machine may have delayed a heartbeat before the stop; after
	// it the states only get worse.
	is.True(len(seen) >= 2)                                                                                              // it went through states
	is.Equal(seen[len(seen)-2:], []dfspb.NodeState{dfspb.NodeState_NODE_STATE_SUSPECT, dfspb.NodeState_NODE_STATE_DEAD}) // suspect, then dead
	got, err := getBytes(ctx, cl, "/hb/file")
	is.NoErr(err)                   // get with a replica on a dead node
	is.True(bytes.Equal(got, data)) // reads back identical

	n, err := c.RestartNode(2)
	is.NoErr(err)                                   // restart on the same data dir
	is.Equal(n.Node.Store().Usage().Chunks, chunks) // with its chunks
	is.Equal(string(n.Node.ID()), id)               // same node ID
	eventually(t, "restarted node healthy", func() bool {
		st, _, _ := state(id)
		return st.State == dfspb.NodeState_NODE_STATE_HEALTHY && st.Addr == n.Node.Addr()
	})
	st, _, count := state(id)
	is.Equal(count, 3)              // still three nodes, not four
	is.Equal(st.ChunkCount, chunks) // its chunks count again
	eventually(t, "every replica healthy again", func() bool {
		fi, err := cl.Stat(ctx, "/hb/file")
		if err != nil {
			return false
		}
		for _, ch := range fi.Chunks {
			for _, r := range ch.Replicas {
				if r.State != client.NodeHealthy {
					return false
				}
			}
		}
		return true
	})

	// A heartbeat that knows version v0 gets the changes since then. The
	// heartbeats come from a node registered here (a real one's would
	// present another incarnation).
	self := string(rpc.NewSessionID())
	reg, err := cc.RegisterDataNode(ctx, &dfspb.RegisterDataNodeRequest{NodeId: self, Addr: "127.0.0.1:1"})
	is.NoErr(err) // a fourth node registers
	hb := func(known uint64) *dfspb.HeartbeatResponse {
		resp, err := cc.DataNodeHeartbeat(ctx, &dfspb.HeartbeatRequest{NodeId: self, KnownVersion: known, Incarnation: reg.Incarnation})
		is.NoErr(err) // heartbeat
		return resp
	}
	resp := hb(v0)
	is.True(!resp.Full)             // incremental
	is.True(len(resp.Updates) >= 3) // at least suspect, dead, healthy
	for i, up := range resp.Updates {
		is.Equal(up.Version, v0+uint64(i)+1) // consecutive versions after v0
	}
	is.Equal(resp.Updates[len(resp.Updates)-1].Version, resp.ClusterVersion) // up to the current version
	var victimStates []dfspb.NodeState
	for _, up := range resp.Updates {
		if up.Node.NodeId == id {
			victimStates = append(victimStates, up.Node.State)
		}
	}
	is.True(len(victimStates) >= 3)                                                                                                                                          // the victim's changes
	is.Equal(victimStates[len(victimStates)-3:], []dfspb.NodeState{dfspb.NodeState_NODE_STATE_SUSPECT, dfspb.NodeState_NODE_STATE_DEAD, dfspb.NodeState_NODE_STATE_HEALTHY}) // in order

	cur := hb(resp.ClusterVersion)
	if cur.ClusterVersion == resp.ClusterVersion {
		is.True(!cur.Full)            // up to date: not full
		is.Equal(len(cur.Updates), 0) // and nothing new
	}
	ahead := hb(resp.ClusterVersion + 1000)
	is.True(ahead.Full)           // a version the coordinator never had gets the full list
	is.Equal(len(ahead.Nodes), 4) // of every node
	is.True(hb(0).Full)           // known version 0 asks for the full list

	_, err = cc.DataNodeHeartbeat(ctx, &dfspb.HeartbeatRequest{NodeId: string(rpc.NewSessionID())})
	is.Equal(statusKind(err), rpc.NotFound) // an unregistered node must register first
	_, err = cc.DataNodeHeartbeat(ctx, &dfspb.HeartbeatRequest{NodeId: "../x"})
	is.Equal(statusKind(err), rpc.Invalid) // a malformed node ID
}

// TestGCDelay pins that the chunks of a replaced version stay on the
// datanodes for the GC delay, so a reader that fetched the old chunk map
// just before the overwrite still reads it whole, and are deleted after.
func TestGCDelay(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const delay = 5 * time.Second
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.GCDelay = delay }))
	cl := rolestest.Client(t, c)
	cc := coordClient(t, c)
	ctx := t.Context()
	v1 := randomBytes(3*rolestest.ChunkSize + 1)
	_, err := cl.Put(ctx, "/gc/file", bytes.NewReader(v1), int64(len(v1)), nil)
	is.NoErr(err) // put v1
	old, err := cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: "/gc/file"})
	is.NoErr(err) // a reader fetches v1's chunk map

	v2 := randomBytes(rolestest.ChunkSize)
	start := time.Now() // v1's chunks are due for deletion no earlier than start+delay
	_, err = cl.Put(ctx, "/gc/file", bytes.NewReader(v2), int64(len(v2)), nil)
	is.NoErr(err) // v2 replaces v1
	for _, ch := range old.File.Chunks {
		for _, r := range ch.Replicas {
			dn := dfspb.NewDataNodeClient(testDial(t, r.Addr))
			err := readChunkDirect(ctx, dn, client.ChunkInfo{ID: ch.ChunkId, Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest})
			if err != nil && time.Since(start) >= delay {
				t.Skipf("machine too slow to tell: the GC delay had passed before the reads ended (%v)", err)
			}
			is.NoErr(err) // the reader still gets v1's chunks, intact
		}
	}
	eventually(t, "v1's chunks collected after the delay", func() bool {
		for _, ch := range old.File.Chunks {
			if slices.Contains(storedChunks(t, c), ch.ChunkId) {
				return false
			}
		}
		return true
	})
}

// TestGetWhenEveryReplicaIsDead pins the error of a read whose chunk has
// no live replica left.
func TestGetWhenEveryReplicaIsDead(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter = 2*time.Second, 4*time.Second
	}))
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 1; cfg.Attempts = 1 })
	ctx := t.Context()
	fi, err := cl.Put(ctx, "/dead/file", bytes.NewReader([]byte("one copy")), 8, nil)
	is.NoErr(err) // put one copy
	holder := fi.Chunks[0].Replicas[0].Node
	for i, n := range c.Nodes() {
		if string(n.Node.ID()) == holder {
			is.NoErr(c.StopNode(i)) // stop the only node that holds it
		}
	}
	cc := coordClient(t, c)
	eventually(t, "holder dead", func() bool {
		resp, err := cc.ListNodes(ctx, &dfspb.ListNodesRequest{})
		return err == nil && slices.ContainsFunc(resp.Nodes, func(n *dfspb.NodeStatus) bool {
			return n.NodeId == holder && n.State == dfspb.NodeState_NODE_STATE_DEAD
		})
	})
	var out bytes.Buffer
	_, err = cl.Get(ctx, "/dead/file", &out, nil)
	is.True(err != nil)                                                          // get fails
	is.True(isKind(err, rpc.FailedPrecondition) || isKind(err, rpc.Unavailable)) // as not readable now
	is.True(strings.Contains(err.Error(), fi.Chunks[0].ID))                      // naming the chunk
	is.True(!strings.Contains(err.Error(), "unreachable"))                       // not blaming the coordinator, which answered
	is.Equal(out.Len(), 0)                                                       // nothing written
}

// TestMaxUploads: beyond --max-uploads open uploads, a put is refused
// with a clear error and nothing is created; once an open upload is
// aborted the put goes through.
func TestMaxUploads(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.MaxUploads = 2 }))
	cl := rolestest.Client(t, c)
	cc := coordClient(t, c)
	var sessions []string
	for i := range 2 {
		resp, err := cc.UploadFile(t.Context(), &dfspb.UploadFileRequest{Path: fmt.Sprintf("/open/%d", i), Size: 10})
		is.NoErr(err) // up to the limit
		sessions = append(sessions, resp.SessionId)
	}
	data := randomBytes(1000)
	_, err := cl.Put(t.Context(), "/refused", bytes.NewReader(data), int64(len(data)), nil)
	is.True(isKind(err, rpc.ResourceExhausted))                                         // refused
	is.True(strings.Contains(err.Error(), "2 uploads open, at most 2 (--max-uploads)")) // saying why
	_, err = cl.Stat(t.Context(), "/refused")
	is.True(isKind(err, rpc.NotFound)) // nothing created

	_, err = cc.AbortUpload(t.Context(), &dfspb.AbortUploadRequest{SessionId: sessions[0]})
	is.NoErr(err)
	_, err = cl.Put(t.Context(), "/refused", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // room again
	checkFiles(t, cl, map[string][]byte{"/refused": data})
}
