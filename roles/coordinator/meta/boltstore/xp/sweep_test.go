package xp

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
)

func BenchmarkSweep(b *testing.B) {
	for _, d := range []time.Duration{100 * time.Microsecond, 300 * time.Microsecond, 1 * time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond} {
		for _, clients := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("delay=%v/clients=%d", d, clients), func(b *testing.B) {
				o := boltstore.DefaultOptions()
				o.BatchDelay = d
				s, err := boltstore.Open(filepath.Join(b.TempDir(), "m.db"), o)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				s.Init(ctx, uuid.NewString(), nil)
				var n atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for c := 0; c < clients; c++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := n.Add(1)
							if i > int64(b.N) {
								return
							}
							f := metatest.NewFile(fmt.Sprintf("/bench/%03d/%d", i%500, i), 1, 1)
							if err := s.Commit(ctx, &meta.Txn{Path: f.Path, Put: f}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
			})
		}
	}
}
