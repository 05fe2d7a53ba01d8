package roles

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/dfs-project/dfs/roles/client"
)

// Benchmarks run a whole cluster in this process, so their figures include
// every party's CPU on one machine; `dfs bench --dev` runs the datanodes as
// processes and is the figure docs/benchmarks.md quotes.

func benchCluster(b *testing.B) *client.Client {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := StartCluster(ctx, DefaultClusterConfig(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	ccfg := client.DefaultConfig()
	if p, err := strconv.Atoi(os.Getenv("BENCH_PARALLEL")); err == nil {
		ccfg.Parallel = p
	}
	cl, err := c.Client(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close(); c.Close(); cancel() })
	return cl
}

func BenchmarkPut64MiB(b *testing.B) {
	cl := benchCluster(b)
	const size = 64 << 20
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := cl.Put(context.Background(), "/bench/large", newPatternReader(size), size, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet64MiB(b *testing.B) {
	cl := benchCluster(b)
	const size = 64 << 20
	if _, err := cl.Put(context.Background(), "/bench/large", newPatternReader(size), size, nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := cl.Get(context.Background(), "/bench/large", io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutSmall4KiB(b *testing.B) {
	cl := benchCluster(b)
	data := make([]byte, 4<<10)
	b.SetBytes(int64(len(data)))
	b.SetParallelism(4)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := cl.Put(context.Background(), fmt.Sprintf("/bench/small/%d", i), bytes.NewReader(data), int64(len(data)), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
