package coordinator

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

var benchChunks = flag.Int("index.chunks", 100_000, "one-chunk files BenchmarkChunkIndex loads")

// benchFile returns the i-th one-chunk file as a put commits it.
func benchFile(i int) *meta.File {
	p := rpc.Path(fmt.Sprintf("/bench/%08d", i))
	id := rpc.NewChunkID(p, "s", 1, 0)
	d := sha256.Sum256([]byte(id))
	return &meta.File{Path: p, Replication: 3, Chunks: []meta.Chunk{{ID: id, Size: 1 << 20, FrameSize: 64 << 10, Digest: d[:]}}}
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// footprint returns what the index's parts take, in bytes: the entry
// pages, the open-addressing table, and the per-node lists (what they
// hold room for).
func (ix *chunkIndex) footprint() (entries, table, lists int) {
	entries = len(ix.pages) * pageSize * int(unsafe.Sizeof(entry{}))
	table = len(ix.table) * 4
	for _, nc := range ix.holders {
		lists += cap(nc.slots.packed) + cap(nc.slots.tail)*4
	}
	return entries, table, lists
}

// BenchmarkChunkIndex loads -index.chunks one-chunk files with 3 copies
// each (on 100 nodes, reported in pages of 1,000, after every file was
// committed, as after a restart) and reports the live heap per chunk (and
// what the entries, the table and the per-node lists take of it), the
// time per report page and per lookup. Files and pages are made as they
// are applied, so the heap measured is the index's:
//
//	go test -run '^$' -bench ChunkIndex -benchtime 1x ./roles/coordinator/ -index.chunks 1000000
//	go test -run '^$' -bench ChunkIndex -benchtime 1x ./roles/coordinator/ -index.chunks 10000000 # ~1 GB, a minute
func BenchmarkChunkIndex(b *testing.B) {
	n := *benchChunks
	const nodes, page, copies, stride = 100, 1000, 3, 37
	ids := make([]rpc.NodeID, nodes)
	for i := range ids {
		ids[i] = rpc.NodeID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
	}
	// Copy k of chunk i is on node (i + k*stride) % nodes.
	pagesOf := func(node int, fn func([]reportedCopy)) {
		p := make([]reportedCopy, 0, page)
		for k := range copies {
			for i := ((node-k*stride)%nodes + nodes) % nodes; i < n; i += nodes {
				ch := benchFile(i).Chunks[0]
				p = append(p, reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest})
				if len(p) == page {
					fn(p)
					p = p[:0]
				}
			}
		}
		if len(p) > 0 {
			fn(p)
		}
	}
	sample := make([]meta.Chunk, min(n, 100_000)) // the lookups timed
	for j := range sample {
		sample[j] = benchFile(j * (n / len(sample))).Chunks[0]
	}
	var first []reportedCopy
	pagesOf(0, func(p []reportedCopy) {
		if first == nil {
			first = append([]reportedCopy(nil), p...)
		}
	})
	notQueued := func(rpc.ChunkID) bool { return false }
	for range b.N {
		before := heapInuse()
		ix := newChunkIndex()
		locs, refs := ix, ix.refs()
		for i := range n {
			refs.add(benchFile(i))
		}
		var applying time.Duration
		npages := 0
		for node := range nodes {
			pagesOf(node, func(p []reportedCopy) {
				start := time.Now()
				locs.report(ids[node], inventoryPage{}, p, nil, nil, notQueued)
				applying += time.Since(start)
				npages++
			})
		}
		perPage := applying / time.Duration(npages)
		after := heapInuse()
		start := time.Now()
		good := 0
		for _, ch := range sample {
			g, _ := locs.check(ch)
			good += len(g)
		}
		perLookup := time.Since(start) / time.Duration(len(sample))
		if good != copies*len(sample) {
			b.Fatalf("%d good copies, want %d", good, copies*len(sample))
		}
		start = time.Now()
		missing, under, total := locs.counts()
		counts := time.Since(start)
		if missing+under != 0 || total != n {
			b.Fatalf("counts %d missing, %d under, %d total; want 0, 0, %d", missing, under, total, n)
		}
		entries, table, lists := ix.footprint()
		start = time.Now()
		locs.report(ids[0], inventoryPage{first: true, last: true}, first, nil, nil, notQueued)
		fullPage := time.Since(start)
		b.ReportMetric(float64(after-before)/float64(n), "heap-B/chunk")
		b.ReportMetric(float64(entries)/float64(n), "entries-B/chunk")
		b.ReportMetric(float64(table)/float64(n), "table-B/chunk")
		b.ReportMetric(float64(lists)/float64(n), "lists-B/chunk")
		b.ReportMetric(float64(perPage.Nanoseconds()), "ns/page")
		b.ReportMetric(float64(perLookup.Nanoseconds()), "ns/lookup")
		b.ReportMetric(float64(fullPage.Nanoseconds()), "ns/full-first-page")
		b.ReportMetric(float64(counts.Nanoseconds()), "ns/counts")
		runtime.KeepAlive(locs)
		runtime.KeepAlive(refs)
	}
}
