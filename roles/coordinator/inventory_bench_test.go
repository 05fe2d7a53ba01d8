package coordinator

import (
	"fmt"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// BenchmarkInventory measures applying full inventories as a restarted
// coordinator does: n one-chunk files of 3 copies referenced, 100
// datanodes each sending its whole inventory in pages of 5,000 (an empty
// first page, then the chunks); each page is decoded from its wire bytes
// (proto.Unmarshal, then the server's conversion) and applied through
// membership.report, so the figure per copy is what the inventories of a
// restart cost the coordinator's CPU, gRPC's framing aside. Run with
//
//	go test -run '^$' -bench BenchmarkInventory -benchtime 3x ./roles/coordinator/
func BenchmarkInventory(b *testing.B) {
	for _, n := range []int{1_000_000} {
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			ctx := b.Context()
			const nodes, page = 100, 5000
			t, ids, perNode := benchLoaded(b, ctx, nodes, n)
			wire := make([][][]byte, nodes)
			for i, copies := range perNode {
				first, _ := proto.Marshal(&dfspb.ReportChunksRequest{NodeId: string(ids[i]), Full: true, Page: 1})
				wire[i] = append(wire[i], first)
				for k := 0; k < len(copies); k += page {
					req := &dfspb.ReportChunksRequest{NodeId: string(ids[i]), Page: uint32(2 + k/page), Last: k+page >= len(copies)}
					for _, c := range copies[k:min(k+page, len(copies))] {
						req.Added = append(req.Added, &dfspb.ChunkStat{ChunkId: string(c.id), Present: true, Size: c.size, FrameSize: c.frameSize, Digest: c.digest})
					}
					buf, _ := proto.Marshal(req)
					wire[i] = append(wire[i], buf)
				}
			}
			perNode = nil
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime(b)
			for range b.N {
				for i := range nodes {
					for _, buf := range wire[i] {
						req := &dfspb.ReportChunksRequest{}
						if err := proto.Unmarshal(buf, req); err != nil {
							b.Fatal(err)
						}
						r, err := reportOf(req)
						if err != nil {
							b.Fatal(err)
						}
						if err := t.membership.report(ctx, ids[i], r); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			cpu := (cpuTime(b) - start) / 3 / 1 // 3 copies a chunk
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/copy")
		})
	}
}
