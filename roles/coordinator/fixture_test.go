package coordinator

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/testlog"
	"github.com/dfs-project/dfs/roles/coordinator/coordinatortest"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

var _ Datanodes = (*coordinatortest.Nodes)(nil)

// testChunk is the chunk size of the fixture's uploads.
const testChunk = rpc.MinChunkSize

// fixture is one leadership term of a coordinator over an in-memory store
// and in-memory datanodes, without gRPC and with its loops not started:
// tests drive the parts, and the fake clock, themselves.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	clock *clockwork.FakeClock
	store meta.Store
	dn    *coordinatortest.Nodes
	c     *Coordinator
	term  *term
	ids   []rpc.NodeID
	addrs []string
}

// newFixture starts a term with n registered datanodes; opts adjust the
// configuration; store, when not nil, replaces a new in-memory store.
func newFixture(t *testing.T, n int, store meta.Store, opts ...func(*Config)) *fixture {
	t.Helper()
	is := is.New(t)
	ctx := t.Context()
	if store == nil {
		store = metatest.NewMem()
	}
	if store.ClusterID() == "" {
		is.NoErr(store.Init(ctx, "test-cluster", nil)) // a new cluster
	}
	cfg := DefaultConfig()
	cfg.ChunkSize = testChunk
	for _, o := range opts {
		o(&cfg)
	}
	f := &fixture{t: t, ctx: ctx, clock: clockwork.NewFakeClock(), store: store, dn: coordinatortest.New()}
	var err error
	f.c, err = New(cfg, Deps{Log: testlog.New(t), Clock: f.clock, Store: store, Datanodes: f.dn})
	is.NoErr(err)
	f.term, err = f.c.newTerm(ctx)
	is.NoErr(err)              // the term reads the store
	is.NoErr(f.term.load(ctx)) // and loads its files
	for i := range n {
		f.addNode(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i+1), fmt.Sprintf("127.0.0.1:%d", 7001+i))
	}
	return f
}

// addNode starts a datanode and registers it, with 1 TiB free.
func (f *fixture) addNode(id, addr string) { f.addNodeFree(id, addr, 1<<40) }

// addNodeFree starts a datanode and registers it with free bytes free.
func (f *fixture) addNodeFree(id, addr string, free int64) {
	f.t.Helper()
	nid := rpc.NodeID(id)
	f.dn.Add(nid, addr)
	_, err := f.term.membership.register(f.ctx, registration{node: nid, addr: addr, usage: usage{capacity: 1 << 40, free: free}})
	if err != nil {
		f.t.Fatalf("register %s: %v", id, err)
	}
	f.ids = append(f.ids, nid)
	f.addrs = append(f.addrs, addr)
}

// addrOf returns the address of node id.
func (f *fixture) addrOf(id rpc.NodeID) string {
	for i, n := range f.ids {
		if n == id {
			return f.addrs[i]
		}
	}
	f.t.Fatalf("no node %s", id)
	return ""
}

// chunkData is a chunk's bytes as the fixture makes them: its digest and
// frame size are what a datanode would report.
func chunkData(id rpc.ChunkID, size int64) (digest []byte, frameSize int64) {
	d := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, size)))
	return d[:], size
}

// store has node hold a copy of ch and report it.
func (f *fixture) storeCopy(node rpc.NodeID, id rpc.ChunkID, size int64, digest []byte) {
	f.t.Helper()
	f.dn.Put(f.addrOf(node), id, coordinatortest.Copy{Size: size, FrameSize: size, Digest: digest})
	f.report(node, chunkReport{added: []reportedCopy{{id: id, size: size, frameSize: size, digest: digest}}})
}

// report applies a datanode's chunk report.
func (f *fixture) report(node rpc.NodeID, r chunkReport) {
	f.t.Helper()
	if err := f.term.membership.report(f.ctx, node, r); err != nil {
		f.t.Fatalf("report from %s: %v", node, err)
	}
}

// upload opens a session for path and stores each chunk of a file of
// size bytes on its planned nodes, which report it; it returns the
// session and the receipts, to confirm. The file's checksum is a stand-in:
// the coordinator only checks its length.
func (f *fixture) upload(path string, size int64, repl int) (rpc.SessionID, []receipt) {
	f.t.Helper()
	o, err := f.term.uploads.begin(f.ctx, uploadRequest{path: rpc.Path(path), size: size, replication: repl})
	if err != nil {
		f.t.Fatalf("begin %s: %v", path, err)
	}
	n := int((size + testChunk - 1) / testChunk)
	var rs []receipt
	for i := range n {
		p := plan{}
		if i < len(o.plans) {
			p = o.plans[i]
		} else if p, err = f.term.uploads.allocate(f.ctx, o.session, uint32(i), nil); err != nil {
			f.t.Fatalf("allocate chunk %d of %s: %v", i, path, err)
		}
		csize := min(testChunk, size-int64(i)*testChunk)
		digest, frame := chunkData(p.id, csize)
		r := receipt{index: uint32(i), id: string(p.id), size: csize, digest: digest, frameSize: frame}
		for _, node := range p.nodes {
			f.storeCopy(node.ID, p.id, csize, digest)
			r.nodes = append(r.nodes, node.ID)
		}
		rs = append(rs, r)
	}
	return o.session, rs
}

// put uploads and commits a file.
func (f *fixture) put(path string, size int64, repl int) *meta.File {
	f.t.Helper()
	id, rs := f.upload(path, size, repl)
	c, err := f.confirm(id, size, rs)
	if err != nil {
		f.t.Fatalf("confirm %s: %v", path, err)
	}
	return c.file
}

// confirm confirms a session with the given receipts.
func (f *fixture) confirm(id rpc.SessionID, size int64, rs []receipt) (confirmed, error) {
	sum := sha256.Sum256(nil)
	return f.term.uploads.confirm(f.ctx, confirmation{session: id, size: size, sha256: sum[:],
		chunks: uint32((size + testChunk - 1) / testChunk), receipts: rs})
}

// confirmWith confirms a session with preconditions.
func (f *fixture) confirmWith(id rpc.SessionID, size int64, rs []receipt, cond precondition) (confirmed, error) {
	sum := sha256.Sum256(nil)
	return f.term.uploads.confirm(f.ctx, confirmation{session: id, size: size, sha256: sum[:],
		chunks: uint32((size + testChunk - 1) / testChunk), receipts: rs, cond: cond})
}

// deletions returns the deletions the store records, as a set.
func (f *fixture) deletions() map[meta.Deletion]bool {
	f.t.Helper()
	dels, err := f.store.Deletions(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[meta.Deletion]bool{}
	for _, d := range dels {
		out[d] = true
	}
	return out
}
