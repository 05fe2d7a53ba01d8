package coordinator

import (
	"context"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
)

var (
	benchLoadFiles = flag.Int("load.files", 100_000, "one-chunk files BenchmarkLoad loads")
	benchLoadDB    = flag.String("load.db", "", "bolt store BenchmarkLoad loads, restored from a synthetic namespace of -load.files files when missing (default: a new one in a temporary directory)")
)

// BenchmarkLoad reads a bolt store of -load.files one-chunk files into a
// new chunk index, as a new term does, and reports the wall and CPU time
// per file of: the walk alone (reading and decoding, no index) through
// Files (files) and through FileChunks (chunks); the load as it was
// before FileChunks and the pipeline, whole files added one at a time
// (before); the term's load (index); and the same without the pipeline,
// walk and index on one goroutine (serial).
//
//	go test -run '^$' -bench Load -benchtime 3x ./roles/coordinator/ -load.files 1000000 -load.db /tmp/load-1m.db
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	path := *benchLoadDB
	if path == "" {
		path = b.TempDir() + "/metadata.db"
	}
	_, statErr := os.Stat(path)
	st, err := boltstore.Open(path, boltstore.Options{Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if os.IsNotExist(statErr) || st.ClusterID() == "" {
		synth, err := meta.NewSynth(*benchLoadFiles, 4096, 8<<20, 1<<20, 3, time.Unix(1_700_000_000, 0))
		if err != nil {
			b.Fatal(err)
		}
		err = st.InitEach(ctx, "7a1f3c52-1d0e-4f5b-9a8c-2b6d4e8f0a13", func(put func(meta.Record) error) error { return synth.Snapshot(ctx, put) })
		if err != nil {
			b.Fatal(err)
		}
	}
	walk := func(name string, each func(func()) error) {
		b.Run(name, func(b *testing.B) {
			files := 0
			cpu0 := cpuTime(b)
			for b.Loop() {
				files = 0
				if err := each(func() { files++ }); err != nil {
					b.Fatal(err)
				}
			}
			reportPerFile(b, files, cpuTime(b)-cpu0)
		})
	}
	walk("files", func(count func()) error {
		return st.Files(ctx, func(*meta.File) error { count(); return nil })
	})
	walk("chunks", func(count func()) error {
		return st.FileChunks(ctx, func(*meta.FileChunks) error { count(); return nil })
	})
	b.Run("before", func(b *testing.B) { // the load before ChunkLoader and the pipeline: whole files, added one by one
		files := 0
		cpu0 := cpuTime(b)
		for b.Loop() {
			ix := newChunkIndex()
			files = 0
			err := st.Files(ctx, func(f *meta.File) error { files++; ix.refs().add(f); return nil })
			if err != nil {
				b.Fatal(err)
			}
		}
		reportPerFile(b, files, cpuTime(b)-cpu0)
	})
	b.Run("index", func(b *testing.B) {
		files := 0
		cpu0 := cpuTime(b)
		for b.Loop() {
			ix := newChunkIndex()
			n, _, err := loadFiles(ctx, st, ix.refs(), nil)
			if err != nil {
				b.Fatal(err)
			}
			files = n
		}
		reportPerFile(b, files, cpuTime(b)-cpu0)
	})
	b.Run("serial", func(b *testing.B) {
		files := 0 // (the last partial batch is left out)
		cpu0 := cpuTime(b)
		for b.Loop() {
			ix := newChunkIndex()
			var batch fileBatch
			files = 0
			err := walkFiles(ctx, st, func(repl uint32, chunks []meta.Chunk) error {
				batch.add(repl, chunks)
				if len(batch.files) == loadBatch {
					batch.seal()
					ix.refs().addAll(batch.files)
					files += len(batch.files)
					batch.reset()
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		reportPerFile(b, files, cpuTime(b)-cpu0)
	})
}

// reportPerFile reports the wall and CPU time per file of b's runs over
// files files each: on a shared machine the CPU time is the steadier
// figure, the wall time what a restart waits.
func reportPerFile(b *testing.B, files int, cpu time.Duration) {
	n := float64(b.N * files)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/file")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/file")
}
