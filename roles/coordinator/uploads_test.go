package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// TestUploadCommit: a confirmed upload is the path's version 1, its
// session ends, its chunks are referenced; a second upload of the path
// replaces it and has the old version's copies deleted.
func TestUploadCommit(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	first := f.put("/a", 3*testChunk-7, 3)
	is.Equal(first.Version, uint64(1))                 // the first version
	is.Equal(len(first.Chunks), 3)                     // of three chunks
	is.Equal(first.Chunks[2].Size, int64(testChunk-7)) // the last one short
	is.Equal(f.term.uploads.open(), 0)                 // the session ended
	got, err := f.store.Get(f.ctx, "/a")
	is.NoErr(err)
	is.Equal(got.Session, first.Session) // committed durably
	for _, ch := range first.Chunks {
		is.True(f.term.refs.has(ch.ID))            // referenced
		is.Equal(len(f.term.locs.nodes(ch.ID)), 3) // on three nodes
	}
	uploads, err := f.store.Uploads(f.ctx)
	is.NoErr(err)
	is.Equal(len(uploads), 0) // no session left in the store

	second := f.put("/a", testChunk, 2)
	is.Equal(second.Version, uint64(2)) // replaces the first
	dels := f.deletions()
	for _, ch := range first.Chunks {
		is.True(!f.term.refs.has(ch.ID)) // the old chunks are no longer referenced
		for _, n := range f.term.locs.nodes(ch.ID) {
			is.True(dels[meta.Deletion{Node: n, Chunk: ch.ID}]) // and every copy of them is to be deleted
			is.True(f.term.gc.Queued(n, ch.ID))                 // by GC
		}
	}
	for _, ch := range second.Chunks {
		for _, n := range f.term.locs.nodes(ch.ID) {
			is.True(!dels[meta.Deletion{Node: n, Chunk: ch.ID}]) // the new ones stay
		}
	}
}

// TestConfirmMissingReceipts: a confirm of chunks the coordinator has no
// receipt for asks for them, and keeps the session open.
func TestConfirmMissingReceipts(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	id, rs := f.upload("/a", 2*testChunk, 3)
	c, err := f.confirm(id, 2*testChunk, rs[1:])
	is.NoErr(err)
	is.True(c.missing)                  // receipts missing
	is.Equal(c.firstMissing, uint32(0)) // from chunk 0
	is.Equal(f.term.uploads.open(), 1)  // the session is still open
	c, err = f.confirm(id, 2*testChunk, rs[:1])
	is.NoErr(err)
	is.True(!c.missing)                 // all there now
	is.Equal(c.file.Version, uint64(1)) // committed
}

// TestConfirmRefusesMismatch: a copy whose digest differs from the receipt
// fails the confirm (Invalid) and ends the upload: its chunks are to be
// deleted.
func TestConfirmRefusesMismatch(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	id, rs := f.upload("/a", testChunk, 3)
	bad := rs[0]
	f.storeCopy(bad.nodes[1], rpc.ChunkID(bad.id), bad.size, make([]byte, rpc.DigestSize)) // another digest
	_, err := f.confirm(id, testChunk, rs)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // refused
	is.Equal(f.term.uploads.open(), 0)     // the upload ended
	_, err = f.store.Get(f.ctx, "/a")
	is.Equal(rpc.KindOf(err), rpc.NotFound) // nothing committed
	dels := f.deletions()
	for _, n := range bad.nodes {
		is.True(dels[meta.Deletion{Node: n, Chunk: rpc.ChunkID(bad.id)}]) // its copies are collected
	}
}

// TestConfirmWaitsForReports: a chunk no datanode reported fails the
// confirm after --rpc-timeout (FailedPrecondition) and ends the upload; a
// client that gives up first leaves the session open to confirm again.
func TestConfirmWaitsForReports(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.RPCTimeout = 200 * time.Millisecond })
	o, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/a", size: testChunk})
	is.NoErr(err)
	p := o.plans[0]
	digest, frame := chunkData(p.id, testChunk)
	r := receipt{id: string(p.id), size: testChunk, digest: digest, frameSize: frame}
	for _, n := range p.nodes {
		r.nodes = append(r.nodes, n.ID)
	}

	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	sum := [32]byte{}
	_, err = f.term.uploads.confirm(ctx, confirmation{session: o.session, size: testChunk, sha256: sum[:], chunks: 1, receipts: []receipt{r}})
	is.True(err != nil)                // the client gave up
	is.Equal(f.term.uploads.open(), 1) // the session stays open

	_, err = f.confirm(o.session, testChunk, nil)
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // no report within --rpc-timeout
	is.Equal(f.term.uploads.open(), 0)                // the upload ended
}

// TestAbortUpload: an aborted upload's placed chunks are to be deleted on
// every node they were placed on; its session is gone.
func TestAbortUpload(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil)
	o, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/a", size: 2 * testChunk})
	is.NoErr(err)
	is.Equal(len(o.plans), 2) // both chunks planned up front
	is.NoErr(f.term.uploads.end(t.Context(), o.session))
	dels := f.deletions()
	for _, p := range o.plans {
		for _, n := range p.nodes {
			is.True(dels[meta.Deletion{Node: n.ID, Chunk: p.id}]) // every placement is collected
		}
	}
	ups, err := f.store.Uploads(f.ctx)
	is.NoErr(err)
	is.Equal(len(ups), 0)                                                          // the recorded session is gone
	is.Equal(rpc.KindOf(f.term.uploads.end(t.Context(), o.session)), rpc.NotFound) // ended once
}

// faultyStore is a store whose commits of a path can be made to fail.
type faultyStore struct {
	*metatest.Mem
	// fail, when set, decides each commit of a path: apply it first
	// (the outcome was lost) or not, and the error to return.
	fail    func(n int) (apply bool, err error)
	commits atomic.Int32 // commits of a path
}

func (s *faultyStore) Commit(ctx context.Context, txn *meta.Txn) error {
	if txn.Path == "" || s.fail == nil {
		return s.Mem.Commit(ctx, txn)
	}
	apply, err := s.fail(int(s.commits.Add(1)))
	if apply || err == nil {
		if cerr := s.Mem.Commit(ctx, txn); cerr != nil {
			return cerr
		}
	}
	return err
}

// TestCommitOutcomeUnknown: a commit reported failed but applied is
// found applied and finished (the confirm succeeds, once); one that was
// not applied leaves the session open, and a second confirm commits.
func TestCommitOutcomeUnknown(t *testing.T) {
	is := is.New(t)
	s := &faultyStore{Mem: metatest.NewMem()}
	f := newFixture(t, 3, s)
	lost := rpc.Errorf(rpc.Unavailable, "store reply lost")

	s.fail = func(int) (bool, error) { return true, lost } // applied, reported failed
	id, rs := f.upload("/a", testChunk, 3)
	c, err := f.confirm(id, testChunk, rs)
	is.NoErr(err)                                 // found applied: the confirm succeeds
	is.Equal(c.file.Session, id)                  // with this upload's version
	is.Equal(c.file.Version, uint64(1))           // committed once
	is.Equal(int(s.commits.Load()), 1)            // and not committed again
	is.True(f.term.refs.has(c.file.Chunks[0].ID)) // its chunks referenced

	s.commits.Store(0)
	s.fail = func(n int) (bool, error) { // not applied the first time
		if n == 1 {
			return false, lost
		}
		return false, nil
	}
	id, rs = f.upload("/b", testChunk, 3)
	_, err = f.confirm(id, testChunk, rs)
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the store is unavailable
	is.Equal(f.term.uploads.open(), 1)         // the session is open again
	c, err = f.confirm(id, testChunk, nil)
	is.NoErr(err)                       // a second confirm commits
	is.Equal(c.file.Version, uint64(1)) // the first version of /b
}

// TestCommitRetriesOnlyConflicts: a commit that lost a race to another
// commit of the path (meta.ErrConflict) is built again on the new version;
// a store failing otherwise, even with FailedPrecondition (closed, not
// initialized), fails the confirm at once instead of retrying.
func TestCommitRetriesOnlyConflicts(t *testing.T) {
	is := is.New(t)
	s := &faultyStore{Mem: metatest.NewMem()}
	f := newFixture(t, 3, s)

	s.fail = func(int) (bool, error) { return false, rpc.Errorf(rpc.FailedPrecondition, "store closed") }
	id, rs := f.upload("/a", testChunk, 3)
	_, err := f.confirm(id, testChunk, rs)
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // the store's error
	is.True(!errors.Is(err, meta.ErrConflict))        // not a conflict
	is.Equal(int(s.commits.Load()), 1)                // tried once, not retried

	s.commits.Store(0)
	s.fail = func(n int) (bool, error) {
		if n == 1 {
			return false, rpc.Errorf(rpc.Other, "lost the race (%w)", meta.ErrConflict)
		}
		return false, nil
	}
	id, rs = f.upload("/b", testChunk, 3)
	c, err := f.confirm(id, testChunk, rs)
	is.NoErr(err)                      // committed after the conflict
	is.Equal(int(s.commits.Load()), 2) // on the second try
	is.Equal(c.file.Version, uint64(1))
}

// TestUploadRefusedBeforeAnyByte: an upload to a path that is a directory,
// or below a file, is refused with Exists as it opens, before any chunk
// is placed; a new file beside them opens. The same without a caller and
// with one (a superuser: the permission check still reads the path and
// its ancestors, and the conflict is decided from what it read).
func TestUploadRefusedBeforeAnyByte(t *testing.T) {
	for _, caller := range []string{"none", "admin"} {
		t.Run(caller, func(t *testing.T) {
			is := is.New(t)
			f := newFixture(t, 3, nil)
			f.put("/d/x", testChunk, 3)
			f.put("/file", testChunk, 3)
			is.NoErr(f.store.Commit(f.ctx, &meta.Txn{Path: "/empty", Mkdir: &meta.Dir{Path: "/empty", Modified: time.Unix(1, 0)}}))
			ctx := f.ctx
			if caller == "admin" {
				ctx = auth.NewContext(ctx, asAdmin)
			}
			for _, p := range []rpc.Path{"/d", "/empty", "/file/below", "/file/below/deeper"} {
				_, err := f.term.uploads.begin(ctx, uploadRequest{path: p, size: testChunk})
				is.Equal(rpc.KindOf(err), rpc.Exists) // refused at once
			}
			is.Equal(f.term.uploads.sessions.Len(), 0) // no session opened, nothing placed
			_, err := f.term.uploads.begin(ctx, uploadRequest{path: "/d/y", size: testChunk})
			is.NoErr(err) // a new file beside them opens
			_, err = f.term.uploads.begin(ctx, uploadRequest{path: "/file", size: testChunk})
			is.NoErr(err) // and so does a new version of a file
		})
	}
}

// TestOneChunkUploadOneCommit: the upload of a file of one chunk is
// recorded by its commit alone, one txn; a file of two chunks records its
// session when it is placed, then commits.
func TestOneChunkUploadOneCommit(t *testing.T) {
	is := is.New(t)
	var txns []*meta.Txn
	s := &hookStore{Mem: metatest.NewMem(), before: func(txn *meta.Txn) { txns = append(txns, txn) }}
	f := newFixture(t, 3, s)
	txns = nil

	id, rs := f.upload("/one", testChunk-1, 3)
	is.Equal(len(txns), 0) // nothing written as it opens
	ups, err := f.store.Uploads(f.ctx)
	is.NoErr(err)
	is.Equal(len(ups), 0) // no session recorded
	c, err := f.confirm(id, testChunk-1, rs)
	is.NoErr(err)
	is.Equal(c.file.Version, uint64(1)) // committed
	is.Equal(len(txns), 1)              // in one txn
	is.Equal(txns[0].Path, rpc.Path("/one"))
	is.Equal(len(txns[0].DeleteUploads), 0) // which has no session record to delete

	txns = nil
	f.put("/two", 2*testChunk, 3)
	is.Equal(len(txns), 2)                  // a file of two chunks: its session, then the commit
	is.Equal(len(txns[0].PutUploads), 1)    // the session recorded as it opens
	is.Equal(len(txns[1].DeleteUploads), 1) // and deleted by the commit
}

// TestSessionRecordOutcomeUnknown: a session whose record was written but
// reported failed (the store's reply was lost) is deleted from the store
// when the session ends, like one recorded as it should be.
func TestSessionRecordOutcomeUnknown(t *testing.T) {
	is := is.New(t)
	var lose atomic.Bool
	s := &hookStore{Mem: metatest.NewMem(), after: func(txn *meta.Txn) error {
		if len(txn.PutUploads) > 0 && lose.CompareAndSwap(true, false) {
			return rpc.Errorf(rpc.Unavailable, "store reply lost")
		}
		return nil
	}}
	f := newFixture(t, 3, s)
	o, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/unknown-size", size: -1, replication: 3})
	is.NoErr(err) // a session of unknown size, recorded at its first placement
	lose.Store(true)
	_, err = f.term.uploads.allocate(f.ctx, o.session, 0, nil)
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the record's outcome is unknown
	ups, err := f.store.Uploads(f.ctx)
	is.NoErr(err)
	is.Equal(len(ups), 1) // though it was written
	is.NoErr(f.term.uploads.end(f.ctx, o.session))
	ups, err = f.store.Uploads(f.ctx)
	is.NoErr(err)
	is.Equal(len(ups), 0) // the end of the session deletes it
}

// TestOneChunkUploadAcrossRestart: a coordinator that restarted (or took
// over) between the opening of a one-chunk upload and its confirm does not
// know the session: the confirm fails with NotFound, nothing is
// committed, and the chunk sent is collected as an orphan once the grace
// has passed.
func TestOneChunkUploadAcrossRestart(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.OrphanGrace = time.Minute })
	id, rs := f.upload("/one", testChunk, 3)
	f.restart()
	for _, n := range rs[0].nodes {
		f.storeCopy(n, rpc.ChunkID(rs[0].id), rs[0].size, rs[0].digest) // the nodes report the chunk again
	}
	_, err := f.confirm(id, testChunk, rs)
	is.Equal(rpc.KindOf(err), rpc.NotFound) // the session is unknown
	_, err = f.store.Get(f.ctx, "/one")
	is.Equal(rpc.KindOf(err), rpc.NotFound) // nothing committed

	f.term.heal.scan(f.ctx)
	is.Equal(len(f.deletions()), 0) // first seen: kept for the grace
	f.clock.Advance(f.c.cfg.OrphanGrace)
	f.term.heal.scan(f.ctx)
	dels := f.deletions()
	for _, n := range rs[0].nodes {
		is.True(dels[meta.Deletion{Node: n, Chunk: rpc.ChunkID(rs[0].id)}]) // every copy is collected as an orphan
	}

	// The client puts the file again in a new session, which commits.
	f.put("/one", testChunk, 3)
	got, err := f.store.Get(f.ctx, "/one")
	is.NoErr(err)
	is.True(got.Session != id) // committed by the new session
}

// TestSmallFileReservesItsSize: placing a file smaller than a chunk
// reserves its size on each node until the node's next report, not a
// whole chunk size, so a burst of small puts does not make nodes look
// full long before they are.
func TestSmallFileReservesItsSize(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 0, nil)
	for i := range 3 {
		f.addNodeFree(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i+1), fmt.Sprintf("127.0.0.1:%d", 7001+i), 2*testChunk)
	}
	const small = 4 << 10
	fit := int(2 * testChunk / small)
	for i := range fit {
		_, err := f.term.uploads.begin(f.ctx, uploadRequest{path: rpc.Path(fmt.Sprintf("/small/%d", i)), size: small, replication: 3})
		is.NoErr(err) // as many small files as fit in two chunk sizes, not two
	}
	for _, n := range f.term.uploads.nodes.candidates() {
		is.Equal(n.Free, int64(0)) // each reserved its own size
	}
	_, err := f.term.uploads.begin(f.ctx, uploadRequest{path: "/small/more", size: small, replication: 3})
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // and then the nodes are full until they report
}
