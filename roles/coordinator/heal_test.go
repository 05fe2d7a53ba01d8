package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// onlyChunk returns the one chunk of f.
func onlyChunk(t *testing.T, f *meta.File) meta.Chunk {
	t.Helper()
	if len(f.Chunks) != 1 {
		t.Fatalf("%s has %d chunks, want 1", f.Path, len(f.Chunks))
	}
	return f.Chunks[0]
}

// spare returns a registered node that holds no copy of id.
func (f *fixture) spare(id rpc.ChunkID) rpc.NodeID {
	f.t.Helper()
	for _, n := range f.ids {
		if !f.dn.Has(f.addrOf(n), id) {
			return n
		}
	}
	f.t.Fatalf("every node holds %s", id)
	return ""
}

// TestScanTrimsSurplus: a chunk with a copy more than its replication
// loses one at the next scan; the deletion is recorded and queued, and
// the copy no longer counts.
func TestScanTrimsSurplus(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 2))
	f.storeCopy(f.spare(ch.ID), ch.ID, ch.Size, ch.Digest) // a node came back with a copy
	is.Equal(len(f.term.locs.nodes(ch.ID)), 3)

	f.term.heal.scan(f.ctx)
	is.Equal(len(f.term.locs.nodes(ch.ID)), 2) // back to its replication
	dels := f.deletions()
	is.Equal(len(dels), 1) // one copy to delete
	for d := range dels {
		is.Equal(d.Chunk, ch.ID)                 // of the chunk
		is.True(f.term.gc.Queued(d.Node, ch.ID)) // queued for GC
	}
	is.Equal(f.term.heal.stats().under, int64(0)) // nothing under-replicated
}

// TestScanRecallsTrimmedCopy: when a chunk falls short, a copy whose
// deletion is still queued is taken back rather than copied anew.
func TestScanRecallsTrimmedCopy(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 2))
	f.storeCopy(f.spare(ch.ID), ch.ID, ch.Size, ch.Digest)
	f.term.heal.scan(f.ctx) // trims one
	is.Equal(len(f.deletions()), 1)

	lost := f.term.locs.nodes(ch.ID)[0]
	f.report(lost, chunkReport{removed: []rpc.ChunkID{ch.ID}}) // a counted copy is lost
	f.term.heal.scan(f.ctx)
	is.Equal(len(f.deletions()), 0)               // the trimmed copy's deletion is called off
	is.Equal(len(f.term.locs.nodes(ch.ID)), 2)    // and it counts again
	is.Equal(f.term.heal.stats().under, int64(0)) // the chunk is whole
}

// TestScanShortAndMissing: a chunk with fewer copies than its
// replication is under-replicated and handed to repair with its sources;
// one without any copy is missing, and repair gets nothing for it.
func TestScanShortAndMissing(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 3))
	holders := f.term.locs.nodes(ch.ID)
	f.report(holders[0], chunkReport{removed: []rpc.ChunkID{ch.ID}})
	f.term.heal.scan(f.ctx)
	st := f.term.heal.stats()
	is.Equal(st.under, int64(1))   // under-replicated
	is.Equal(st.missing, int64(0)) // not missing
	needs := f.term.heal.Needs()
	is.Equal(len(needs), 1)                                                // repair is asked for it
	is.Equal(needs[0].Chunk, ch.ID)                                        // this chunk
	is.Equal(needs[0].Missing, 1)                                          // one copy
	is.Equal(len(needs[0].Sources), 2)                                     // from either good copy
	is.True(strings.Contains(f.c.Events()[0].Message, "under-replicated")) // and says so

	for _, n := range holders[1:] {
		f.report(n, chunkReport{removed: []rpc.ChunkID{ch.ID}})
	}
	f.term.heal.scan(f.ctx)
	st = f.term.heal.stats()
	is.Equal(st.missing, int64(1))        // no copy left
	is.Equal(len(f.term.heal.Needs()), 0) // nothing to copy from
}

// TestScanDeletesBadCopyOnceReplaced: a corrupt copy stays while its
// chunk is short (a reader cannot use it, but it takes no room from a
// new copy), and is deleted, without waiting for --gc-delay, once the
// chunk has its copies again.
func TestScanDeletesBadCopyOnceReplaced(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 3))
	bad := f.term.locs.nodes(ch.ID)[0]
	f.report(bad, chunkReport{corrupt: []rpc.ChunkID{ch.ID}})
	f.term.heal.scan(f.ctx)
	is.Equal(f.term.heal.stats().corrupt, int64(1)) // counted corrupt
	is.Equal(len(f.deletions()), 0)                 // kept while the chunk is short

	f.storeCopy(f.spare(ch.ID), ch.ID, ch.Size, ch.Digest) // repaired
	f.term.heal.scan(f.ctx)
	is.True(f.deletions()[meta.Deletion{Node: bad, Chunk: ch.ID}]) // the bad copy goes
	is.True(f.term.gc.Queued(bad, ch.ID))                          // now
	is.Equal(f.term.heal.stats().under, int64(0))
}

// TestOrphans: a reported chunk nothing needs is deleted once it was seen
// for --orphan-grace; the chunks of an open upload are not, nor, after a
// takeover, those its ID says an open upload placed. (The grace is below
// the session timeout: an upload idle for longer has expired.)
func TestOrphans(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 3, nil, func(c *Config) { c.OrphanGrace = time.Minute })
	node := f.ids[0]
	stray := rpc.NewChunkID("/gone", rpc.NewSessionID(), 0, 0)
	digest, _ := chunkData(stray, testChunk)
	f.storeCopy(node, stray, testChunk, digest)
	id, rs := f.upload("/open", 2*testChunk, 3) // placed and recorded (two chunks), not confirmed

	f.term.heal.scan(f.ctx)
	is.Equal(len(f.deletions()), 0) // first seen: kept
	f.clock.Advance(f.c.cfg.OrphanGrace - time.Second)
	f.term.heal.scan(f.ctx)
	is.Equal(len(f.deletions()), 0) // within the grace: kept
	f.clock.Advance(time.Second)
	f.term.heal.scan(f.ctx)
	is.Equal(f.deletions(), map[meta.Deletion]bool{{Node: node, Chunk: stray}: true}) // the orphan alone goes

	// A new term knows the open upload by its record only; the chunk it
	// placed in the term before is recognized by its ID.
	f.restart()
	open := rpc.ChunkID(rs[0].id)
	f.storeCopy(node, open, rs[0].size, rs[0].digest)
	f.term.heal.scan(f.ctx)
	f.clock.Advance(f.c.cfg.OrphanGrace)
	f.term.heal.scan(f.ctx)
	is.True(!f.deletions()[meta.Deletion{Node: node, Chunk: open}]) // the open upload's chunk stays
	is.NoErr(f.term.uploads.end(t.Context(), id))                   // until the upload ends
	is.True(f.deletions()[meta.Deletion{Node: node, Chunk: open}])  // and collects it
}

// restart replaces the term by a new one over the same store, as a
// coordinator that took over, and registers the same datanodes with it.
func (f *fixture) restart() {
	f.t.Helper()
	var err error
	if f.term, err = f.c.newTerm(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	if err := f.term.load(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	ids, addrs := f.ids, f.addrs
	f.ids, f.addrs = nil, nil
	for i := range ids {
		f.addNode(string(ids[i]), addrs[i])
	}
}

// TestDrain: a draining node's copies stop counting, so its chunks are
// repaired elsewhere (from it, when need be, but from other nodes
// first); once nothing depends on it, it is decommissioned, and its copy
// is not trimmed meanwhile.
func TestDrain(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	ch := onlyChunk(t, f.put("/a", testChunk, 3))
	drained := f.term.locs.nodes(ch.ID)[0]
	st, err := f.term.admin.decommission(f.ctx, drained, false)
	is.NoErr(err)
	is.True(st.draining) // draining
	drains, err := f.store.Drains(f.ctx)
	is.NoErr(err)
	is.Equal(drains, []rpc.NodeID{drained}) // durably

	f.term.heal.scan(f.ctx)
	st, _ = f.term.admin.nodeStatus(drained)
	is.True(!st.decommissioned) // its copy is still needed
	needs := f.term.heal.Needs()
	is.Equal(len(needs), 1) // the chunk is short
	is.Equal(len(needs[0].Sources), 3)
	is.True(needs[0].Sources[2].ID == drained) // the draining node is the last source

	target := f.spare(ch.ID)
	r := &replicator{datanodes: f.dn, locs: f.term.locs, refs: f.term.refs, dels: f.term.uploads.dels, checker: f.term.membership, log: f.c.log}
	is.NoErr(r.Copy(f.ctx, repair.Task{Need: needs[0], Source: needs[0].Sources[0],
		Target: placement.Node{ID: target, Addr: f.addrOf(target)}})) // repair copies it
	is.True(f.dn.Has(f.addrOf(target), ch.ID)) // to the target

	f.term.heal.scan(f.ctx)
	st, _ = f.term.admin.nodeStatus(drained)
	is.True(st.decommissioned)      // safe to remove now
	is.Equal(len(f.deletions()), 0) // and its copy is not trimmed
	st, err = f.term.admin.decommission(f.ctx, drained, true)
	is.NoErr(err)
	is.True(!st.draining && !st.decommissioned) // canceled
}
