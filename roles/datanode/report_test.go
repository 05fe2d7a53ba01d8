package datanode

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
)

// memInventory is an in-memory inventory for the reporter.
type memInventory struct {
	mu      sync.Mutex
	chunks  map[rpc.ChunkID]chunkstore.Meta
	corrupt []rpc.ChunkID
}

var _ inventory = (*memInventory)(nil)

func (m *memInventory) Inventory() map[rpc.ChunkID]chunkstore.Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.chunks)
}

func (m *memInventory) Corrupt() []rpc.ChunkID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.corrupt)
}

func (m *memInventory) IsCorrupt(id rpc.ChunkID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.corrupt, id)
}

// quarantine moves a chunk from the inventory to the corrupt list, as the
// store does.
func (m *memInventory) quarantine(id rpc.ChunkID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.chunks, id)
	m.corrupt = append(m.corrupt, id)
}

// remove deletes a chunk, as the store does.
func (m *memInventory) remove(id rpc.ChunkID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.chunks, id)
	m.corrupt = slices.DeleteFunc(m.corrupt, func(c rpc.ChunkID) bool { return c == id })
}

func ids(stats []storedChunk) []string {
	var out []string
	for _, s := range stats {
		out = append(out, string(s.id))
	}
	return out
}

func TestReporterCorrupt(t *testing.T) {
	meta := chunkstore.Meta{Size: 10, FrameSize: testFrame, Digest: make([]byte, 32)}
	a, b := chunkID(t, 1), chunkID(t, 2)

	t.Run("reported once", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{a: meta}}
		r := newReporter(inv, clockwork.NewFakeClock())
		r.stored(a, meta)
		inv.quarantine(a)
		r.corrupted(a)
		r.corrupted(a)
		p := r.take()
		is.Equal(p.corrupt, []string{string(a)}) // a corrupt chunk is reported once
		is.Equal(len(p.added), 0)                // and no longer as stored
		is.True(r.take().empty())                // nothing more to say
	})

	t.Run("retried", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}}
		r := newReporter(inv, clockwork.NewFakeClock())
		inv.corrupt = []rpc.ChunkID{a, b}
		r.corrupted(a)
		r.corrupted(b)
		p := r.take()
		is.Equal(p.corrupt, []string{string(a), string(b)})
		inv.remove(b)
		r.deleted(b)
		r.putBack(p) // the report failed
		p = r.take()
		is.Equal(p.corrupt, []string{string(a)}) // a failed report is retried
		is.Equal(p.removed, []string{string(b)}) // except for a chunk deleted since
	})

	t.Run("deleted before reported", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}, corrupt: []rpc.ChunkID{a}}
		r := newReporter(inv, clockwork.NewFakeClock())
		r.corrupted(a)
		inv.remove(a)
		r.deleted(a)
		p := r.take()
		is.Equal(len(p.corrupt), 0)              // a deleted chunk is not reported corrupt
		is.Equal(p.removed, []string{string(a)}) // but removed
	})

	t.Run("deleted while found corrupt", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}}
		r := newReporter(inv, clockwork.NewFakeClock())
		r.corrupted(a)            // the store no longer lists it: deleted meanwhile
		is.True(r.take().empty()) // so it is not reported corrupt
	})

	t.Run("full report", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{a: meta}, corrupt: []rpc.ChunkID{b}}
		r := newReporter(inv, clockwork.NewFakeClock())
		r.corrupted(b)
		r.requestFull()
		p := r.take()
		is.True(p.full)                          // a full report
		is.Equal(len(p.added)+len(p.corrupt), 0) // whose first page asks for a turn
		p = r.take()
		is.Equal(ids(p.added), []string{string(a)}) // then the inventory
		is.Equal(p.corrupt, []string{string(b)})    // and the corrupt list
		is.True(p.last)                             //
		is.True(r.take().empty())                   // which subsumes the queued change
	})

	t.Run("full report pages", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}}
		for i := range maxReport + 10 {
			inv.corrupt = append(inv.corrupt, rpc.ChunkID(fmt.Sprintf("%032x_%d", 0xcd, i)))
		}
		inv.chunks[a] = meta
		r := newReporter(inv, clockwork.NewFakeClock())
		r.requestFull()
		is.True(r.take().full) // the first page starts the full report
		p1 := r.take()
		is.Equal(len(p1.corrupt), maxReport) // filled with corrupt chunks
		is.Equal(len(p1.added), 0)           // bounded
		p2 := r.take()
		is.True(!p2.full && p2.page)                 // the next page continues it
		is.Equal(len(p2.corrupt), 10)                // with the rest
		is.Equal(ids(p2.added), []string{string(a)}) // and the inventory
		r.putBack(p2)                                // a failed page
		is.True(r.take().full)                       // starts the full report over
	})
}

// TestReporterRemovals: a deletion is always reported, even of a chunk
// whose stored report was queued again; and the pages of a full report
// read before a deletion do not list the deleted chunk.
func TestReporterRemovals(t *testing.T) {
	meta := chunkstore.Meta{Size: 10, FrameSize: testFrame, Digest: make([]byte, 32)}

	t.Run("stored report queued again", func(t *testing.T) {
		is := is.New(t)
		a := chunkID(t, 1)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{a: meta}}
		r := newReporter(inv, clockwork.NewFakeClock())
		r.stored(a, meta)
		is.Equal(ids(r.take().added), []string{string(a)}) // reported stored
		r.stored(a, meta)                                  // queued again (a repair found it here)
		inv.remove(a)
		r.deleted(a)
		p := r.take()
		is.Equal(len(p.added), 0)                // not stored any more
		is.Equal(p.removed, []string{string(a)}) // and the coordinator is told
	})

	t.Run("deleted during a full report", func(t *testing.T) {
		is := is.New(t)
		inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}}
		for i := range maxReport + 10 {
			inv.chunks[rpc.NewChunkID("/f", "s", 0, uint32(i))] = meta
		}
		all := slices.Sorted(maps.Keys(inv.chunks))
		late := all[len(all)-1] // on the second page
		r := newReporter(inv, clockwork.NewFakeClock())
		r.requestFull()
		is.True(r.take().full) // the first page asks for a turn
		first := r.take()
		is.Equal(len(first.added), maxReport) // the next is full
		inv.remove(late)
		r.deleted(late)
		second := r.take()
		is.Equal(len(second.added), 9)                             // the rest, less the deleted chunk
		is.True(!slices.Contains(ids(second.added), string(late))) //
		is.Equal(r.take().removed, []string{string(late)})         // whose removal follows
	})
}

// TestReporterEmptyLastPage: a full report whose last page lost all its
// chunks (deleted after the inventory was read) still sends that page,
// empty and marked last: it ends the inventory on the coordinator.
func TestReporterEmptyLastPage(t *testing.T) {
	is := is.New(t)
	meta := chunkstore.Meta{Size: 10, FrameSize: testFrame, Digest: make([]byte, 32)}
	a := chunkID(t, 1)
	inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{a: meta}}
	r := newReporter(inv, clockwork.NewFakeClock())
	r.requestFull()
	is.True(r.take().full) // the first page, asking for a turn
	inv.remove(a)
	r.deleted(a) // the only chunk goes before its page is sent
	p := r.take()
	is.True(p.page && p.last) // the last page
	is.Equal(len(p.added), 0) // with nothing in it
	is.True(!p.empty())       // is sent all the same
	is.Equal(r.take().removed, []string{string(a)})
}

// TestReporterDeferredFull: the pages of a full report are numbered and
// the last says so; a page the coordinator had no turn for puts the full
// report off until the time it named, and queued changes are sent
// meanwhile.
func TestReporterDeferredFull(t *testing.T) {
	is := is.New(t)
	meta := chunkstore.Meta{Size: 10, FrameSize: testFrame, Digest: make([]byte, 32)}
	inv := &memInventory{chunks: map[rpc.ChunkID]chunkstore.Meta{}}
	for i := range maxReport + 1 {
		inv.chunks[rpc.NewChunkID("/f", "s", 0, uint32(i))] = meta
	}
	clock := clockwork.NewFakeClock()
	r := newReporter(inv, clock)
	r.requestFull()
	p := r.take()
	is.True(p.full && p.page)                    // the first page
	is.Equal(p.number, uint32(1))                // numbered 1
	is.Equal(len(p.added), 0)                    // asks for a turn, with no chunks
	is.True(!p.last)                             // more to come
	r.deferFull(p, clock.Now().Add(time.Second)) // no turn: again in a second

	late := rpc.NewChunkID("/g", "s", 0, 0)
	inv.chunks[late] = meta
	r.stored(late, meta)
	q := r.take()
	is.True(!q.page)                               // not the full report yet
	is.Equal(ids(q.added), []string{string(late)}) // but the queued change
	is.True(r.take().empty())                      // nothing else before the time

	clock.Advance(time.Second)
	p = r.take()
	is.True(p.full)               // the full report starts over
	is.Equal(p.number, uint32(1)) // from page 1
	p = r.take()
	is.Equal(p.number, uint32(2))     // then page 2
	is.Equal(len(p.added), maxReport) // full
	p = r.take()
	is.Equal(p.number, uint32(3)) // then page 3
	is.True(p.last && !p.full)    // the last
	is.Equal(len(p.added), 2)     // with the rest, the late chunk too
	is.True(r.take().empty())     // done
}

// TestReportWaitsItsTurn: a datanode whose inventory the coordinator has
// no turn for waits as long as told and sends it again, without counting
// it a failure or registering again; its pages arrive numbered, the last
// marked.
func TestReportWaitsItsTurn(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	coord.RefuseInventories(2, 300*time.Millisecond)
	n := startNode(t, coord)
	eventually(t, "the inventory applied", func() bool { return coord.FullReports(n.ID()) == 1 })
	refused := coord.Refused()
	is.Equal(len(refused), 2)                                   // refused twice
	is.True(refused[1].Sub(refused[0]) >= 250*time.Millisecond) // the node waited as told between them
	is.Equal(coord.Registrations(), 1)                          // and did not register again
	pages := coord.InventoryPages()
	is.Equal(len(pages), 1)                                       // an empty store: one page
	is.True(pages[0].Full && pages[0].Page == 1 && pages[0].Last) // numbered 1, and the last
}
