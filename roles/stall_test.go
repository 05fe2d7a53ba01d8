package roles_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// freezer is a TCP proxy in front of a datanode that can be frozen: it
// then still accepts connections, but passes no byte either way, so to
// its peers the node looks paused (SIGSTOP): connections open, nothing
// answers. Its heartbeats, which do not pass the proxy, go on, so the
// coordinator still counts it healthy, as it did a paused node for
// --suspect-after.
type freezer struct {
	lis net.Listener

	mu     sync.Mutex
	target string
	frozen bool
	closed bool
	thaw   *sync.Cond
	conns  []net.Conn
}

func newFreezer(t *testing.T) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{lis: lis}
	f.thaw = sync.NewCond(&f.mu)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

// front is a roles.Cluster.AddNodeWith hook: the node advertises the proxy,
// which forwards to where the node listens.
func (f *freezer) front(cfg *datanode.Config, bound string) {
	f.mu.Lock()
	f.target = bound
	f.mu.Unlock()
	cfg.Advertise = f.lis.Addr().String()
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

func (f *freezer) close() {
	f.lis.Close()
	f.mu.Lock()
	f.closed = true
	for _, c := range f.conns {
		c.Close()
	}
	f.thaw.Broadcast()
	f.mu.Unlock()
}

func (f *freezer) accept() {
	for {
		in, err := f.lis.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		target := f.target
		f.mu.Unlock()
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		f.conns = append(f.conns, in, out)
		f.mu.Unlock()
		go f.pipe(in, out)
		go f.pipe(out, in)
	}
}

// pipe copies src to dst, holding each read while the proxy is frozen.
func (f *freezer) pipe(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			for f.frozen && !f.closed {
				f.thaw.Wait()
			}
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stallBound bounds each operation of the tests below that meets a
// stalled node. It is generous against the 1s progress timeout they
// configure, and shorter than what ended such a stall before progress
// deadlines (the transport's keepalive, 10s of silence plus a 5s ping
// timeout, at every attempt that met the node); the node stays paused
// for longer than the bound, until the test ends.
const stallBound = 12 * time.Second

// failingNodes returns the IDs of the nodes the coordinator places last
// after reports of failed streams.
func failingNodes(t *testing.T, c *roles.Cluster) map[string]bool {
	t.Helper()
	resp, err := c.Coordinator().Server().ListNodes(t.Context(), &dfspb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range resp.Nodes {
		if n.FailingUntilUnixMs > 0 {
			out[n.NodeId] = true
		}
	}
	return out
}

// TestPausedDatanode: a datanode that stops answering mid-stream (paused)
// while its heartbeats go on costs a put and a get about one progress
// timeout, not the whole pause: the put places the chunks elsewhere (as
// primary the node is blamed by the client, as replica by the primary,
// which keeps its client's stream alive meanwhile), the get reads other
// replicas, and the coordinator, told by the client, places new chunks on
// the node last, and on no other node.
func TestPausedDatanode(t *testing.T) {
	is := is.New(t)
	const progress = time.Second
	// The others are small, so most-free placement makes the node to
	// pause the primary of every chunk: the client is streaming to it, on
	// an established connection, when it pauses.
	c := rolestest.Start(t, 3, rolestest.WithDatanode(func(d *datanode.Config) { d.ProgressTimeout = progress; d.Capacity = 1 << 30 }))
	fz := newFreezer(t)
	paused, err := c.AddNodeWith(func(cfg *datanode.Config, bound string) {
		fz.front(cfg, bound)
		cfg.Capacity = 0 // the whole filesystem
	})
	is.NoErr(err)
	is.NoErr(c.WaitHealthy(4, waitFor))
	tune := func(cfg *client.Config) { cfg.ProgressTimeout = progress }
	cl := rolestest.Client(t, c, tune)

	before := randomBytes(6 * rolestest.ChunkSize)
	fi, err := cl.Put(t.Context(), "/before", bytes.NewReader(before), int64(len(before)), nil)
	is.NoErr(err) // stored while every node answers
	held := 0
	for _, ch := range fi.Chunks {
		for _, r := range ch.Replicas {
			if r.Node == string(paused.Node.ID()) {
				held++
			}
		}
	}
	is.True(held > 0) // the node to pause holds copies that reads will meet

	fz.freeze()
	data := randomBytes(8 * rolestest.ChunkSize)
	ctx, cancel := context.WithTimeout(t.Context(), stallBound)
	defer cancel()
	fi, err = cl.Put(ctx, "/during", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // the put fails over within the bound, the node still paused
	for _, ch := range fi.Chunks {
		for _, r := range ch.Replicas {
			is.True(r.Node != string(paused.Node.ID())) // no committed copy on the paused node
		}
	}
	eventually(t, "the paused node is reported failing", func() bool { return failingNodes(t, c)[string(paused.Node.ID())] })
	is.Equal(len(failingNodes(t, c)), 1) // and only it: no healthy primary was blamed for a stalled replica

	// As a replica the paused node is blamed by its primary, which keeps
	// its sender's stream alive meanwhile, so the sender does not blame
	// the primary.
	sctx, wd := chunkstream.NewWatchdog(ctx, nil, progress, "primary")
	defer wd.Stop()
	st, err := nodeClient(t, c, 0).UploadChunkStream(sctx)
	is.NoErr(err)
	id := rpc.NewChunkID("/manual", rpc.NewSessionID(), 0, 0)
	chunk := randomBytes(rolestest.ChunkSize)
	prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: int64(len(chunk)), FrameSize: rolestest.FrameSize,
		Replicas: []*dfspb.NodeRef{{NodeId: string(paused.Node.ID()), Addr: paused.Node.Addr()}}}
	_, _, err = chunkstream.SendChunk(sctx, st, "", prep, id, chunk, rolestest.FrameSize, chunkstream.DefaultWindow)
	is.True(err != nil)                                                  // the chunk fails
	is.Equal(rpc.FailedNodesOf(err), []string{string(paused.Node.ID())}) // the primary names the stalled replica
	is.NoErr(wd.Err())                                                   // and its sender's deadline did not fire

	// A client that has not met the paused node reads the earlier file.
	reader := rolestest.Client(t, c, tune)
	gctx, gcancel := context.WithTimeout(t.Context(), stallBound)
	defer gcancel()
	got, err := getBytes(gctx, reader, "/before")
	is.NoErr(err)                     // the get reads other replicas within the bound
	is.True(bytes.Equal(got, before)) // byte for byte
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// plannedNodes opens an upload of chunks chunks directly and returns the
// nodes its placements name, then aborts it.
func plannedNodes(t *testing.T, cc dfspb.CoordinatorClient, chunks int) map[string]bool {
	t.Helper()
	resp, err := cc.UploadFile(t.Context(), &dfspb.UploadFileRequest{Path: "/planned", Size: int64(chunks) * rolestest.ChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.AbortUpload(t.Context(), &dfspb.AbortUploadRequest{SessionId: resp.SessionId})
	out := map[string]bool{}
	for _, p := range resp.Chunks {
		out[p.Primary.NodeId] = true
		for _, r := range p.Replicas {
			out[r.NodeId] = true
		}
	}
	return out
}

// TestUnreachableDatanodeAvoided: a datanode that heartbeats but
// advertises an address nobody answers at stays healthy, but once a
// client's put has met it (and placed its chunks elsewhere), the client's
// report has the coordinator place new chunks elsewhere while other nodes
// qualify.
func TestUnreachableDatanodeAvoided(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 3)
	closed := closedAddr(t)
	bad, err := c.AddNodeWith(func(cfg *datanode.Config, _ string) { cfg.Advertise = closed })
	is.NoErr(err)
	is.NoErr(c.WaitHealthy(4, waitFor))
	cl := rolestest.Client(t, c)

	data := randomBytes(8 * rolestest.ChunkSize)
	_, err = cl.Put(t.Context(), "/first", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // the first put places around the unreachable node
	eventually(t, "the unreachable node is reported failing", func() bool { return failingNodes(t, c)[string(bad.Node.ID())] })

	cc := coordClient(t, c)
	for range 8 {
		is.True(!plannedNodes(t, cc, 4)[string(bad.Node.ID())]) // later placements avoid it
	}
	got := randomBytes(4 * rolestest.ChunkSize)
	_, err = cl.Put(t.Context(), "/second", bytes.NewReader(got), int64(len(got)), nil)
	is.NoErr(err) // and puts go on
}

// TestReadOnlyDatanode: a datanode whose data dir stops taking writes
// reports it; the coordinator places nothing on it and `dfs nodes` shows
// why, while it still serves the chunks it holds; once its disk takes
// writes again it gets new chunks again.
func TestReadOnlyDatanode(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 4)
	cl := rolestest.Client(t, c)
	data := randomBytes(6 * rolestest.ChunkSize)
	fi, err := cl.Put(t.Context(), "/kept", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err)
	// The node to break: the primary holder of the first chunk.
	ro := nodeByID(c, fi.Chunks[0].Replicas[0].Node)
	is.True(ro != nil)
	id := string(ro.Node.ID())

	// The tests run as root, so a read-only mode does not stop writes: a
	// non-empty directory where the probe writes its file fails it as a
	// read-only filesystem would.
	probe := filepath.Join(ro.Dir, chunkstore.ProbeFile)
	// (The probe's own file may be there for a moment: try again.)
	eventually(t, "the probe's path is made a directory", func() bool { return os.MkdirAll(filepath.Join(probe, "x"), 0o700) == nil })
	diskError := func() string {
		resp, err := c.Coordinator().Server().ListNodes(t.Context(), &dfspb.ListNodesRequest{})
		is.NoErr(err)
		for _, n := range resp.Nodes {
			if n.NodeId == id {
				return n.DiskError
			}
		}
		return ""
	}
	eventually(t, "ListNodes (dfs nodes) shows the node's disk error", func() bool { return diskError() != "" })

	cc := coordClient(t, c)
	for range 8 {
		is.True(!plannedNodes(t, cc, 4)[id]) // no new chunk is placed on it
	}
	got, err := getBytes(t.Context(), cl, "/kept")
	is.NoErr(err)                   // reads work
	is.True(bytes.Equal(got, data)) // byte for byte
	dn := nodeClient(t, c, nodeIndex(t, c, id))
	_, err = dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: fi.Chunks[0].ID})
	is.NoErr(err) // the read-only node itself still serves its copy

	is.NoErr(os.RemoveAll(probe))
	eventually(t, "the node reports its disk writable", func() bool { return diskError() == "" })
	eventually(t, "a placement names the node again", func() bool { return plannedNodes(t, cc, 4)[id] })
}
