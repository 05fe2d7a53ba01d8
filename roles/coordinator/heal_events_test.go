package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// putMany commits n one-chunk files of replication repl and returns
// their chunks.
func (f *fixture) putMany(n, repl int) []meta.Chunk {
	f.t.Helper()
	out := make([]meta.Chunk, n)
	for i := range n {
		out[i] = onlyChunk(f.t, f.put(fmt.Sprintf("/f%04d", i), testChunk, repl))
	}
	return out
}

// ticks returns how many assessments a tick makes.
func (f *fixture) tick() int64 {
	before := f.term.heal.assessed.Load()
	f.term.heal.scan(f.ctx)
	return f.term.heal.assessed.Load() - before
}

// kill lets node miss heartbeats until it is dead; the other nodes
// register again meanwhile, so they stay healthy.
func (f *fixture) kill(node rpc.NodeID) {
	f.t.Helper()
	f.clock.Advance(f.c.cfg.DeadAfter)
	for i, id := range f.ids {
		if id == node {
			continue
		}
		if _, err := f.term.membership.register(f.ctx, registration{node: id, addr: f.addrs[i], usage: usage{capacity: 1 << 40, free: 1 << 40}}); err != nil {
			f.t.Fatalf("register %s: %v", id, err)
		}
	}
	f.term.nodes.tick(f.clock.Now())
	if _, st, _ := f.term.nodes.lookup(node); st != placement.Dead {
		f.t.Fatalf("%s is %s, want dead", node, st)
	}
}

// repairAll makes every copy Needs asks for, through the replicator, as
// the repair controller would.
func (f *fixture) repairAll() int {
	f.t.Helper()
	r := &replicator{datanodes: f.dn, locs: f.term.locs, refs: f.term.refs, dels: f.term.uploads.dels, checker: f.term.membership, log: f.c.log}
	copied := 0
	for _, n := range f.term.heal.Needs() {
		holders := map[rpc.NodeID]bool{}
		for _, h := range n.Holders {
			holders[h] = true
		}
		for _, c := range f.term.nodes.candidates() {
			if holders[c.ID] || c.State != placement.Healthy {
				continue
			}
			if err := r.Copy(f.ctx, repair.Task{Need: n, Source: n.Sources[0], Target: c}); err != nil {
				f.t.Fatalf("copy %s: %v", n.Chunk, err)
			}
			copied++
			break
		}
	}
	return copied
}

// slowPass makes the paced pass take a very long time: a tick looks at
// one chunk of it.
func slowPass(c *Config) { c.ScanInterval = 1000 * time.Hour }

// TestHealDeadNode: the chunks of a node that dies are assessed at the
// next tick, and no others (beyond the paced pass's one), then repaired;
// once the copies land, the chunks are whole again.
func TestHealDeadNode(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 8, nil, slowPass)
	chunks := f.putMany(40, 3)
	is.Equal(f.tick(), int64(1)) // nothing to repair: the first tick is a slice of the pass
	is.Equal(f.tick(), int64(1)) // then, idle, one a tick

	victim := f.ids[0]
	on := 0
	for _, ch := range chunks {
		if f.dn.Has(f.addrOf(victim), ch.ID) {
			on++
		}
	}
	is.True(on > 0 && on < len(chunks)) // the victim holds some chunks only
	f.kill(victim)
	n := f.tick()
	is.True(n >= int64(on) && n <= int64(on)+1)     // only its chunks (and the paced one)
	is.Equal(f.term.heal.stats().under, int64(on))  // all short
	is.Equal(f.term.heal.stats().missing, int64(0)) // none lost
	is.Equal(len(f.term.heal.Needs()), on)          // all queued for repair
	is.Equal(f.term.heal.Needs()[0].Missing, 1)     // each one copy short
	is.Equal(f.repairAll(), on)                     // repair copies them
	f.tick()
	is.Equal(f.term.heal.stats().under, int64(0)) // whole again
	is.Equal(len(f.term.heal.Needs()), 0)         // nothing left to repair
	is.True(f.tick() <= 1)                        // and idle again
}

// TestHealBadReplicaReport: a reader's report of a bad copy, once its
// node confirms it, has the chunk repaired and then the bad copy deleted,
// without a full pass.
func TestHealBadReplicaReport(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 5, nil, slowPass)
	chunks := f.putMany(10, 3)
	f.tick()
	ch := chunks[3]
	bad := f.term.locs.nodes(ch.ID)[0]
	f.dn.Corrupt(f.addrOf(bad), ch.ID)
	corrupt, missing, err := f.term.admin.badReplica(f.ctx, ch.ID, bad, "checksum mismatch", false)
	is.NoErr(err)
	is.True(corrupt && !missing) // the node confirms it

	is.True(f.tick() <= 2)                          // the chunk (and the paced one)
	is.Equal(f.term.heal.stats().corrupt, int64(1)) // counted corrupt
	is.Equal(f.term.heal.stats().under, int64(1))   // and short
	d := meta.Deletion{Node: bad, Chunk: ch.ID}
	is.True(!f.deletions()[d]) // kept while the chunk is short
	is.Equal(f.repairAll(), 1) // repaired
	f.tick()
	is.True(f.deletions()[d])                       // then the bad copy goes
	is.True(f.term.gc.Queued(bad, ch.ID))           // now
	is.Equal(f.term.heal.stats().under, int64(0))   // the chunk is whole
	f.tick()                                        // the deletion settled
	is.Equal(f.term.heal.stats().corrupt, int64(0)) // no corrupt copy counts
	is.True(f.tick() <= 1)                          // idle again
}

// TestHealPacedPassFindsSilentLoss: a copy dropped from the locations
// without any event is found by the paced pass within its period, and
// so is a copy of a chunk no file references (an orphan).
func TestHealPacedPassFindsSilentLoss(t *testing.T) {
	is := is.New(t)
	const ticks = 10
	f := newFixture(t, 4, nil, func(c *Config) { c.ScanInterval = ticks * c.RepairInterval; c.OrphanGrace = time.Minute })
	chunks := f.putMany(20, 3)
	f.tick()

	lost := chunks[7]
	holder := f.term.locs.nodes(lost.ID)[0]
	is.True(f.term.locs.lost(holder, lost.ID)) // behind the queue's back
	stray := rpc.NewChunkID("/gone", rpc.NewSessionID(), 0, 0)
	digest, _ := chunkData(stray, testChunk)
	f.term.locs.report(f.ids[1], inventoryPage{}, []reportedCopy{{id: stray, size: testChunk, frameSize: testChunk, digest: digest}}, nil, nil,
		func(rpc.ChunkID) bool { return false }) // an orphan no event announced

	found := 0
	for i := 1; i <= ticks && found == 0; i++ {
		is.True(f.tick() <= 2) // a slice a tick: 20 chunks in 10 ticks
		if f.term.heal.stats().under == 1 {
			found = i
		}
	}
	is.True(found > 0)                    // found within the period
	is.Equal(len(f.term.heal.Needs()), 1) // and queued for repair
	is.Equal(f.term.heal.Needs()[0].Chunk, lost.ID)

	for range ticks {
		f.tick() // the orphan is seen within a period too
	}
	is.Equal(len(f.deletions()), 0) // within the grace: kept
	f.clock.Advance(time.Minute)
	f.tick()
	is.True(f.deletions()[meta.Deletion{Node: f.ids[1], Chunk: stray}]) // then deleted
}

// TestHealFirstTickFindsShortChunks: when the chunk index's counters say
// some chunk is short as the first tick begins (after a restart, copies
// not reported), that tick walks every chunk to find it, and queues it
// for repair; with no short chunk it does not (TestHealIdle).
func TestHealFirstTickFindsShortChunks(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil, slowPass)
	chunks := f.putMany(20, 3)
	short := chunks[7]
	var holder rpc.NodeID
	for _, id := range f.ids {
		if f.dn.Has(f.addrOf(id), short.ID) {
			holder = id
			break
		}
	}
	f.report(holder, chunkReport{removed: []rpc.ChunkID{short.ID}}) // before the first tick: not marked
	is.Equal(f.tick(), int64(len(chunks)))                          // the first tick: every chunk
	needs := f.term.heal.Needs()
	is.Equal(len(needs), 1) // the short one found
	is.Equal(needs[0].Chunk, short.ID)
}

// TestHealIdle: with many healthy chunks and no events, a tick assesses
// only its slice of the paced pass, and a whole pass assesses every chunk
// once.
func TestHealIdle(t *testing.T) {
	is := is.New(t)
	const ticks, n = 50, 200
	f := newFixture(t, 4, nil, func(c *Config) { c.ScanInterval = ticks * c.RepairInterval })
	f.putMany(n, 3)
	is.Equal(f.tick(), int64(n/ticks)) // the first tick: a slice too, nothing needing repair
	var sum int64
	for range ticks {
		got := f.tick()
		is.Equal(got, int64(n/ticks)) // a slice a tick
		sum += got
	}
	is.Equal(sum, int64(n)) // a pass: every chunk once
	st := f.term.heal.stats()
	is.Equal(st.chunks, int64(n)) // counted
	is.Equal(st.under, int64(0))  // all healthy
	is.Equal(f.term.heal.queue.len(), 0)
}

// TestHealDrainByEvent: a node set draining has its chunks assessed at
// the next tick, and only those: they are short, the node is still
// needed; once they are copied elsewhere it is decommissioned.
func TestHealDrainByEvent(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 6, nil, slowPass)
	chunks := f.putMany(30, 3)
	f.tick()
	node := f.ids[2]
	on := 0
	for _, ch := range chunks {
		if f.dn.Has(f.addrOf(node), ch.ID) {
			on++
		}
	}
	_, err := f.term.admin.decommission(f.ctx, node, false)
	is.NoErr(err)
	n := f.tick()
	is.True(n >= int64(on) && n <= int64(on)+1)    // its chunks (and the paced one)
	is.Equal(f.term.heal.stats().under, int64(on)) // all short
	st, _ := f.term.admin.nodeStatus(node)
	is.True(!st.decommissioned) // still needed
	is.Equal(f.repairAll(), on) // copied elsewhere
	f.tick()
	st, _ = f.term.admin.nodeStatus(node)
	is.True(st.decommissioned)                    // safe to remove
	is.Equal(f.term.heal.stats().under, int64(0)) // nothing short
}

// TestHealPassStopsWithItsTerm: a pass over every chunk (the first one
// after safe mode, seconds of CPU at 10M chunks) stops when the term's
// context ends, so that shutdown does not wait for it.
func TestHealPassStopsWithItsTerm(t *testing.T) {
	is := is.New(t)
	f := newFixture(t, 4, nil)
	f.putMany(200, 3)
	ended, cancel := context.WithCancel(f.ctx)
	cancel()
	before := f.term.heal.assessed.Load()
	f.term.heal.scan(ended)
	is.Equal(f.term.heal.assessed.Load()-before, int64(0)) // no chunk assessed once the term is over
}
