package roles_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// Benchmarks run a whole cluster in this process, so their figures include
// every party's CPU on one machine; `dfs bench --dev` runs the datanodes as
// processes and is the figure docs/benchmarks.md quotes.

// benchCluster starts a cluster for a benchmark, with TLS when
// BENCH_SECURE=1 (its client is then the superuser).
func benchCluster(b *testing.B) *client.Client {
	b.Helper()
	cfg := roles.DefaultClusterConfig(b.TempDir())
	cfg.Secure = os.Getenv("BENCH_SECURE") == "1"
	c := rolestest.StartWith(b, cfg)
	ccfg := client.DefaultConfig()
	if p, err := strconv.Atoi(os.Getenv("BENCH_PARALLEL")); err == nil {
		ccfg.Parallel = p
	}
	cl, err := c.Client(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return cl
}

func BenchmarkPut64MiB(b *testing.B) {
	cl := benchCluster(b)
	const size = 64 << 20
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := cl.Put(context.Background(), "/bench/large", roles.NewPatternReader(size), size, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet64MiB(b *testing.B) {
	cl := benchCluster(b)
	const size = 64 << 20
	if _, err := cl.Put(context.Background(), "/bench/large", roles.NewPatternReader(size), size, nil); err != nil {
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

// BenchmarkGetSmall4KiB gets 4 KiB files of one chunk each, 16 at a
// time (as `dfs bench` does: SetParallelism(8) on 2 cores), each file once
// per lap of the set.
func BenchmarkGetSmall4KiB(b *testing.B) {
	cl := benchCluster(b)
	data := make([]byte, 4<<10)
	const files = 256
	for i := range files {
		if _, err := cl.Put(context.Background(), fmt.Sprintf("/bench/small/%d", i), bytes.NewReader(data), int64(len(data)), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(data)))
	b.SetParallelism(16 / runtime.GOMAXPROCS(0))
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) % files
			if _, err := cl.Get(context.Background(), fmt.Sprintf("/bench/small/%d", i), io.Discard, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMetadata times durable metadata commits (a put of an empty file:
// UploadFile + ConfirmUpload) and lookups (StatFile) through the gRPC API
// with 16 concurrent clients, on each metadata store.
func BenchmarkMetadata(b *testing.B) {
	stores := map[string]func(b *testing.B) func() (meta.Store, error){
		"bolt": func(b *testing.B) func() (meta.Store, error) { return nil },
		"etcd": func(b *testing.B) func() (meta.Store, error) {
			endpoints := etcdtest.Start(b)
			return func() (meta.Store, error) {
				return etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: endpoints, Prefix: "/bench/"})
			}
		},
	}
	for _, name := range []string{"bolt", "etcd"} {
		b.Run(name, func(b *testing.B) {
			cfg := roles.DefaultClusterConfig(b.TempDir())
			cfg.OpenStore = stores[name](b)
			c := rolestest.StartWith(b, cfg)
			ctx := b.Context()
			cl, err := c.Client(client.DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cl.Close() })
			const clients = 16
			var n atomic.Int64
			b.Run("commit", func(b *testing.B) {
				b.SetParallelism(clients / runtime.GOMAXPROCS(0))
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := cl.Put(ctx, fmt.Sprintf("/m/%08d", n.Add(1)), bytes.NewReader(nil), 0, nil); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
			})
			b.Run("lookup", func(b *testing.B) {
				b.SetParallelism(clients / runtime.GOMAXPROCS(0))
				var i atomic.Int64
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := cl.Stat(ctx, fmt.Sprintf("/m/%08d", 1+i.Add(1)%n.Load())); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
			})
		})
	}
}

// BenchmarkReaderRead64MiB reads a 64 MiB file in order through a Reader
// in 32 KiB Reads (as io.Copy to a writer without ReadFrom would, were
// Reader not an io.WriterTo), to compare with BenchmarkGet64MiB.
func BenchmarkReaderRead64MiB(b *testing.B) {
	cl := benchCluster(b)
	const size = 64 << 20
	if _, err := cl.Put(context.Background(), "/bench/large", roles.NewPatternReader(size), size, nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		r, err := cl.Open(context.Background(), "/bench/large")
		if err != nil {
			b.Fatal(err)
		}
		for err == nil {
			_, err = r.Read(buf)
		}
		r.Close()
		if err != io.EOF {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadAt64KiB reads 64 KiB at random offsets of a 128 MiB file in
// 64 KiB frames through one Reader, 16 reads in flight (dfs bench's
// ranged-read figure, in one process).
func BenchmarkReadAt64KiB(b *testing.B) {
	c := rolestest.StartWith(b, roles.DefaultClusterConfig(b.TempDir()))
	ccfg := client.DefaultConfig()
	ccfg.FrameSize = 64 << 10
	cl, err := c.Client(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	const size, read = 128 << 20, 64 << 10
	if _, err := cl.Put(b.Context(), "/bench/range", roles.NewPatternReader(size), size, nil); err != nil {
		b.Fatal(err)
	}
	r, err := cl.Open(b.Context(), "/bench/range")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.SetBytes(read)
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, read)
		for pb.Next() {
			if _, err := r.ReadAt(buf, rand.Int64N(size-read)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
