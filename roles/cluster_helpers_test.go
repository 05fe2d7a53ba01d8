package roles_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// waitFor is the deadline of every polling loop.
const waitFor = rolestest.WaitFor

// coordClient dials the cluster's coordinator directly.
func coordClient(t *testing.T, c *roles.Cluster) dfspb.CoordinatorClient {
	t.Helper()
	return dfspb.NewCoordinatorClient(testDial(t, c.Addr()))
}

// nodeClient dials datanode i directly.
func nodeClient(t *testing.T, c *roles.Cluster, i int) dfspb.DataNodeClient {
	t.Helper()
	return dfspb.NewDataNodeClient(testDial(t, c.Nodes()[i].Node.Addr()))
}

func testDial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := rpc.Dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// onlyReader hides every method but Read, so nothing can learn the size.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// compareWriter checks what is written against want, without keeping a
// second copy of a large file.
type compareWriter struct {
	want []byte
	off  int
}

func (w *compareWriter) Write(p []byte) (int, error) {
	end := w.off + len(p)
	if end > len(w.want) || !bytes.Equal(p, w.want[w.off:end]) {
		return 0, fmt.Errorf("bytes %d to %d differ from what was put", w.off, end)
	}
	w.off = end
	return len(p), nil
}

// hookReader calls hook once, synchronously, when the bytes read first
// reach at.
type hookReader struct {
	r    io.Reader
	at   int64
	n    int64
	hook func()
	once sync.Once
}

func (h *hookReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += int64(n)
	if h.n >= h.at {
		h.once.Do(h.hook)
	}
	return n, err
}

// getBytes reads a whole file.
func getBytes(ctx context.Context, cl *client.Client, path string) ([]byte, error) {
	var buf bytes.Buffer
	_, err := cl.Get(ctx, path, &buf, nil)
	return buf.Bytes(), err
}

// listAll returns the whole listing of dir (see client.List).
func listAll(ctx context.Context, cl *client.Client, dir string, recursive bool) ([]client.DirEntry, error) {
	var out []client.DirEntry
	for e, err := range cl.List(ctx, dir, &client.ListOptions{Recursive: recursive}) {
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// eventually polls cond every 20ms until it returns true, failing the
// test after the generous waitFor deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %s for: %s", waitFor, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// usedBytes returns every datanode's stored bytes.
func usedBytes(c *roles.Cluster) []int64 {
	var out []int64
	for _, n := range c.Nodes() {
		out = append(out, n.Node.Store().Usage().Used)
	}
	return out
}

// chunkFile returns where datanode n keeps chunk id on disk.
func chunkFile(n *roles.ClusterNode, id string) string {
	return n.Node.Store().ChunkPath(rpc.ChunkID(id))
}

// nodeByID returns the cluster node with the given ID.
func nodeByID(c *roles.Cluster, id string) *roles.ClusterNode {
	for _, n := range c.Nodes() {
		if string(n.Node.ID()) == id {
			return n
		}
	}
	return nil
}

// tmpFiles lists a datanode's temporary files: chunks being written.
func tmpFiles(t *testing.T, n *roles.ClusterNode) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(n.Dir, "chunks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tmp") {
			out = append(out, filepath.Base(p))
		}
		return err
	})
	if err != nil {
		t.Fatalf("walk chunks: %v", err)
	}
	return out
}

// statusKind is the rpc kind of a raw gRPC error.
func statusKind(err error) rpc.Kind { return rpc.KindOf(rpc.FromStatus(err)) }

// isKind reports whether err (a raw gRPC or an SDK error) has kind k.
func isKind(err error, k rpc.Kind) bool {
	return err != nil && errors.Is(rpc.FromStatus(err), k)
}

// streamChunk uploads data as chunk id through a prepared session by hand:
// frames of frameSize with correct digests, the final one with the chunk
// digest. It returns the final ack.
func streamChunk(ctx context.Context, dn dfspb.DataNodeClient, session, id string, data []byte, frameSize int) (*dfspb.ChunkDataAck, []byte, error) {
	st, err := dn.UploadChunkStream(ctx)
	if err != nil {
		return nil, nil, err
	}
	frames := cutFrames(session, id, data, frameSize)
	for _, f := range frames {
		if err := st.Send(f); err != nil {
			break // the cause comes from Recv
		}
	}
	st.CloseSend()
	for {
		ack, err := st.Recv()
		if err != nil {
			return nil, nil, err
		}
		if ack.IsFinal {
			return ack, frames[len(frames)-1].ChunkChecksum, nil
		}
	}
}

// cutFrames cuts data into upload frames with correct digests.
func cutFrames(session, id string, data []byte, frameSize int) []*dfspb.ChunkDataStream {
	frames, _ := chunkstream.Frames(rpc.ChunkID(id), data, frameSize)
	for _, f := range frames {
		f.SessionId = session
	}
	return frames
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
