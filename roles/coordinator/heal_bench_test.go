package coordinator

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator/coordinatortest"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// BenchmarkHealIdle measures one tick of the health scan on an idle
// cluster: n healthy one-chunk files of 3 copies over 30 datanodes,
// loaded straight into the term's indexes, no event between ticks. The
// scan ticks every --repair-interval (1 s), so the time of a tick over
// 1 s is the share of a core an idle coordinator spends on it: reported
// from the wall time of a tick (%core-wall) and from the process's CPU
// time, GC included (%core-cpu), which a busy machine inflates less. Run
// with
//
//	go test -run '^$' -bench BenchmarkHealIdle -benchtime 20x ./roles/coordinator/
func BenchmarkHealIdle(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			ctx := b.Context()
			t := benchTerm(b, ctx, 30, n)
			t.heal.scan(ctx) // the first pass: every chunk
			runtime.GC()     // the loading's garbage is not the ticks'
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime(b)
			for range b.N {
				t.heal.scan(ctx)
			}
			wall, cpu := time.Since(start)/time.Duration(b.N), (cpuTime(b)-cpu0)/time.Duration(b.N)
			b.ReportMetric(100*wall.Seconds(), "%core-wall")
			b.ReportMetric(100*cpu.Seconds(), "%core-cpu")
		})
	}
}

// benchTerm builds a term with nodes registered datanodes and files
// healthy one-chunk files of 3 copies, loaded into its indexes directly.
func benchTerm(b *testing.B, ctx context.Context, nodes, files int) *term {
	b.Helper()
	t, ids, perNode := benchLoaded(b, ctx, nodes, files)
	never := func(rpc.ChunkID) bool { return false }
	for i, copies := range perNode {
		t.locs.report(ids[i], inventoryPage{first: true, last: true}, copies, nil, nil, never)
	}
	return t
}

// benchLoaded builds a term with nodes registered datanodes and files
// one-chunk files of 3 copies referenced, no copy reported yet: a term
// just started, and the copies each node holds.
func benchLoaded(b *testing.B, ctx context.Context, nodes, files int) (*term, []rpc.NodeID, [][]reportedCopy) {
	b.Helper()
	store := metatest.NewMem()
	if err := store.Init(ctx, "bench-cluster", nil); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ChunkSize = testChunk
	c, err := New(cfg, Deps{Log: zerolog.Nop(), Clock: clockwork.NewFakeClock(), Store: store, Datanodes: coordinatortest.New()})
	if err != nil {
		b.Fatal(err)
	}
	t, err := c.newTerm(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := t.load(ctx); err != nil {
		b.Fatal(err)
	}
	ids := make([]rpc.NodeID, nodes)
	for i := range ids {
		ids[i] = rpc.NodeID(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i+1))
		if _, err := t.membership.register(ctx, registration{node: ids[i], addr: fmt.Sprintf("127.0.0.1:%d", 7001+i),
			usage: usage{capacity: 1 << 50, free: 1 << 50}}); err != nil {
			b.Fatal(err)
		}
	}
	perNode := make([][]reportedCopy, nodes)
	session := rpc.NewSessionID()
	for i := range files {
		path := rpc.Path(fmt.Sprintf("/bench/%08d", i))
		id := rpc.NewChunkID(path, session, 0, 0)
		digest := sha256.Sum256([]byte(id))
		ch := meta.Chunk{ID: id, Size: testChunk, FrameSize: testChunk, Digest: digest[:]}
		t.refs.add(&meta.File{Path: path, Replication: 3, Size: testChunk, Chunks: []meta.Chunk{ch}})
		for k := range 3 {
			n := (i + k) % nodes
			perNode[n] = append(perNode[n], reportedCopy{id: id, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest})
		}
	}
	return t, ids, perNode
}

// cpuTime returns the CPU time the process used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
