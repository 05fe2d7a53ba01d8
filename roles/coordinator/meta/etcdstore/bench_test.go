package etcdstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

const benchWorkers = 16

// runParallel runs b.N calls of fn on benchWorkers goroutines and reports
// the rate as unit.
func runParallel(b *testing.B, unit string, fn func(i int) error) {
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for w := 0; w < benchWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := fn(int(i)); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), unit)
	// Client and server share the process: this is the CPU both spend.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime returns the CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchStore(b *testing.B, members int) *Store {
	c := etcdtest.StartCluster(b, members)
	s := open(b, c.Endpoints(), Options{})
	if err := s.Init(testCtx(b), "bench", nil); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkCommit measures durable commits of new small files (one chunk)
// from 16 concurrent committers.
func BenchmarkCommit(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s := benchStore(b, members)
			files := make([]*meta.File, b.N)
			for i := range files {
				files[i] = metatest.NewFile(fmt.Sprintf("/bench/%02d/%08d", i%benchWorkers, i), 1, 1)
			}
			ctx := testCtx(b)
			runParallel(b, "commits/s", func(i int) error {
				f := files[i]
				return s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f})
			})
		})
	}
}

// BenchmarkGet measures lookups of existing files from 16 concurrent
// readers.
func BenchmarkGet(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s := benchStore(b, members)
			ctx := testCtx(b)
			const n = 1000
			var paths []rpc.Path
			for i := 0; i < n; i++ {
				f := metatest.NewFile(fmt.Sprintf("/bench/%02d/%08d", i%benchWorkers, i), 1, 1)
				if err := s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f}); err != nil {
					b.Fatal(err)
				}
				paths = append(paths, f.Path)
			}
			runParallel(b, "gets/s", func(i int) error {
				_, err := s.Get(ctx, paths[(i*7919)%n])
				return err
			})
		})
	}
}
