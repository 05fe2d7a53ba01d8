package coordinator

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

var benchChunks = flag.Int("index.chunks", 100_000, "one-chunk files BenchmarkChunkIndex loads")

// benchFiles returns n one-chunk files as puts commit them.
func benchFiles(n int) []*meta.File {
	out := make([]*meta.File, n)
	for i := range out {
		p := rpc.Path(fmt.Sprintf("/bench/%08d", i))
		id := rpc.NewChunkID(p, "s", 1, 0)
		d := sha256.Sum256([]byte(id))
		out[i] = &meta.File{Path: p, Replication: 3, Chunks: []meta.Chunk{{ID: id, Size: 1 << 20, FrameSize: 64 << 10, Digest: d[:]}}}
	}
	return out
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkChunkIndex loads -index.chunks one-chunk files with 3 copies
// each (on 100 nodes, reported in pages of 1,000) and reports the live
// heap per chunk, the time per report page and per lookup.
//
//	go test -run '^$' -bench ChunkIndex -benchtime 1x ./roles/coordinator/ -index.chunks 1000000
func BenchmarkChunkIndex(b *testing.B) {
	n := *benchChunks
	files := benchFiles(n)
	const nodes, page = 100, 1000
	ids := make([]rpc.NodeID, nodes)
	for i := range ids {
		ids[i] = rpc.NodeID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
	}
	pages := make([][][]reportedCopy, nodes) // per node, its pages
	for i, f := range files {
		ch := f.Chunks[0]
		for k := range 3 {
			node := (i + k*37) % nodes
			ps := pages[node]
			if len(ps) == 0 || len(ps[len(ps)-1]) == page {
				ps = append(ps, make([]reportedCopy, 0, page))
			}
			ps[len(ps)-1] = append(ps[len(ps)-1], reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest})
			pages[node] = ps
		}
	}
	notQueued := func(rpc.ChunkID) bool { return false }
	for range b.N {
		before := heapInuse()
		ix := newChunkIndex()
		locs, refs := ix, ix.refs()
		for _, f := range files {
			refs.add(f)
		}
		start := time.Now()
		npages := 0
		for node, ps := range pages {
			for _, p := range ps {
				locs.report(ids[node], inventoryPage{}, p, nil, nil, notQueued)
				npages++
			}
		}
		perPage := time.Since(start) / time.Duration(npages)
		after := heapInuse()
		start = time.Now()
		good := 0
		for _, f := range files {
			g, _ := locs.check(f.Chunks[0])
			good += len(g)
		}
		perLookup := time.Since(start) / time.Duration(n)
		if good != 3*n {
			b.Fatalf("%d good copies, want %d", good, 3*n)
		}
		start = time.Now()
		missing, under, total := locs.counts()
		counts := time.Since(start)
		if missing+under != 0 || total != n {
			b.Fatalf("counts %d missing, %d under, %d total; want 0, 0, %d", missing, under, total, n)
		}
		start = time.Now()
		locs.report(ids[0], inventoryPage{first: true, last: true}, pages[0][0], nil, nil, notQueued)
		fullPage := time.Since(start)
		b.ReportMetric(float64(after-before)/float64(n), "heap-B/chunk")
		b.ReportMetric(float64(perPage.Nanoseconds()), "ns/page")
		b.ReportMetric(float64(perLookup.Nanoseconds()), "ns/lookup")
		b.ReportMetric(float64(fullPage.Nanoseconds()), "ns/full-first-page")
		b.ReportMetric(float64(counts.Nanoseconds()), "ns/counts")
		runtime.KeepAlive(locs)
		runtime.KeepAlive(refs)
	}
}
