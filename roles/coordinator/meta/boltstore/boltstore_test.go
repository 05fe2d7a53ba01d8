package boltstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

func testOptions(t testing.TB) Options {
	o := DefaultOptions()
	o.Log = zerolog.New(zerolog.NewTestWriter(t))
	return o
}

func TestConformance(t *testing.T) {
	metatest.Run(t, func(t *testing.T) (meta.Store, func() meta.Store) {
		path := filepath.Join(t.TempDir(), "meta.db")
		s, err := Open(path, testOptions(t))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		cur := s
		reopen := func() meta.Store {
			if err := cur.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			next, err := Open(path, testOptions(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			cur = next
			return next
		}
		return s, reopen
	})
}

func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "meta.db"), DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Init(context.Background(), uuid.NewString(), nil); err != nil {
		b.Fatal(err)
	}
	return s
}

// writeTxns returns the ID of the last committed write transaction: bolt
// counts them, so a difference is the number of write transactions (each
// one fsynced) in between.
func writeTxns(tb testing.TB, s *Store) int {
	id := 0
	if err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		tb.Fatal(err)
	}
	return id
}

// BenchmarkCommit commits small files (one chunk) from 1 and 16 parallel
// clients and reports durable commits per second and commits per write
// transaction (each write transaction is one pair of fdatasyncs).
func BenchmarkCommit(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := openBench(b)
			ctx := context.Background()
			var n, failed atomic.Int64
			commit := func() {
				i := n.Add(1)
				f := metatest.NewFile(fmt.Sprintf("/bench/%03d/%d", i%500, i), 1, 1)
				if err := s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f}); err != nil {
					failed.Add(1)
				}
			}
			before := writeTxns(b, s)
			b.ResetTimer()
			if clients == 1 {
				for range b.N {
					commit()
				}
			} else {
				// RunParallel runs parallelism*GOMAXPROCS goroutines.
				b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						commit()
					}
				})
			}
			b.StopTimer()
			if failed.Load() > 0 {
				b.Fatalf("%d commits failed", failed.Load())
			}
			txns := writeTxns(b, s) - before
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
			b.ReportMetric(float64(b.N)/float64(max(txns, 1)), "commits/txn")
		})
	}
}

// BenchmarkGet reads random files of a store of 10,000 from 16 clients.
func BenchmarkGet(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	const files = 10000
	var paths []rpc.Path
	for i := 0; i < files; i += 500 {
		var wg sync.WaitGroup
		for j := i; j < i+500; j++ {
			f := metatest.NewFile(fmt.Sprintf("/get/%03d/%d", j%100, j), 2, 1)
			paths = append(paths, f.Path)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		for pb.Next() {
			if _, err := s.Get(ctx, paths[r.IntN(len(paths))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
}
