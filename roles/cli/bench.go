package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/freeport"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// BenchResult is what `dfs bench` measures.
type BenchResult struct {
	LargeBytes        int64   `json:"large_bytes"`
	PutMBps           float64 `json:"put_mb_per_s"`
	GetMBps           float64 `json:"get_mb_per_s"`
	SmallFiles        int     `json:"small_files"`
	SmallBytes        int64   `json:"small_file_bytes"`
	SmallParallel     int     `json:"small_parallel"`
	SmallPutsPerSec   float64 `json:"small_puts_per_s"`
	SmallGetsPerSec   float64 `json:"small_gets_per_s"`
	RangeReads        int     `json:"range_reads,omitempty"`
	RangeFileBytes    int64   `json:"range_file_bytes,omitempty"`
	RangeReadBytes    int64   `json:"range_read_bytes,omitempty"`
	RangeFrameBytes   int64   `json:"range_frame_bytes,omitempty"`
	RangeParallel     int     `json:"range_parallel,omitempty"`
	RangeReadsPerSec  float64 `json:"range_reads_per_s,omitempty"`
	TreeFiles         int     `json:"recursive_files,omitempty"`
	TreeFileBytes     int64   `json:"recursive_file_bytes,omitempty"`
	TreeTransfers     int     `json:"recursive_transfers,omitempty"`
	TreePutsPerSec    float64 `json:"recursive_put_files_per_s,omitempty"`
	TreeGetsPerSec    float64 `json:"recursive_get_files_per_s,omitempty"`
	MetaOps           int     `json:"meta_ops,omitempty"`
	MetaParallel      int     `json:"meta_parallel,omitempty"`
	MetaCommitsPerSec float64 `json:"meta_commits_per_s,omitempty"`
	MetaLookupsPerSec float64 `json:"meta_lookups_per_s,omitempty"`
	// CPU seconds per GiB of the large put and get, in the client (this
	// process) and, with --dev, the cluster's processes together.
	PutClientCPUPerGiB  float64 `json:"put_client_cpu_s_per_gib"`
	PutClusterCPUPerGiB float64 `json:"put_cluster_cpu_s_per_gib,omitempty"`
	GetClientCPUPerGiB  float64 `json:"get_client_cpu_s_per_gib"`
	GetClusterCPUPerGiB float64 `json:"get_cluster_cpu_s_per_gib,omitempty"`
	// CPU milliseconds per small put and get, likewise.
	SmallPutClientCPUms  float64 `json:"small_put_client_cpu_ms"`
	SmallPutClusterCPUms float64 `json:"small_put_cluster_cpu_ms,omitempty"`
	SmallGetClientCPUms  float64 `json:"small_get_client_cpu_ms"`
	SmallGetClusterCPUms float64 `json:"small_get_cluster_cpu_ms,omitempty"`
	// DatanodePutPeakRSS is each datanode's peak resident set during the
	// large put (--dev); DatanodePeakRSS over the whole run.
	DatanodePutPeakRSS []int64 `json:"datanode_put_peak_rss_bytes,omitempty"`
	// DatanodePutPeakAnon is the private part of it: heap, stacks and
	// buffers, without the executable's shared pages (sampled).
	DatanodePutPeakAnon []int64 `json:"datanode_put_peak_anon_bytes,omitempty"`
	DatanodePeakRSS     []int64 `json:"datanode_peak_rss_bytes,omitempty"`
	Nodes               int     `json:"nodes,omitempty"`
	Replication         int     `json:"replication,omitempty"`
	// ServerGOMAXPROCS is the GOMAXPROCS each server process of --dev
	// ran with (its share of the cores; see startDevProcs).
	ServerGOMAXPROCS int `json:"server_gomaxprocs,omitempty"`
	// S3 is what --s3 measured through a gateway.
	S3 *S3BenchResult `json:"s3,omitempty"`
}

func (a *app) benchCommand() *cli.Command {
	cfg := client.DefaultConfig()
	dev, nodes, asJSON, withS3 := false, 3, false, false
	s3res := &S3BenchResult{PartBytes: 16 << 20, PartsInFlight: 4}
	res := &BenchResult{LargeBytes: 1 << 30, SmallFiles: 1000, SmallBytes: 4 << 10, SmallParallel: 16, MetaParallel: 16,
		RangeReads: 10000, RangeFileBytes: 1 << 30, RangeReadBytes: 64 << 10, RangeFrameBytes: 64 << 10, RangeParallel: 16,
		TreeFiles: 1000, TreeFileBytes: 64 << 10, TreeTransfers: benchTransfers}
	return &cli.Command{
		Name: "bench", Usage: "measure put/get throughput and small-file ops/s against a cluster", Category: "client",
		Subcommands: []*cli.Command{a.benchScaleCommand()},
		Flags: []cli.Flag{
			addrsFlag("coordinator", &cfg.Coordinators, env("COORDINATOR"), "coordinator address, or a comma-separated list of addresses"),
			&cli.BoolFlag{Name: "dev", Destination: &dev, EnvVars: env("BENCH_DEV"), Usage: "start a cluster of datanode processes for the run (in a temp dir), each process with an equal share of the cores (GOMAXPROCS)"},
			&cli.IntFlag{Name: "nodes", Value: nodes, Destination: &nodes, EnvVars: env("BENCH_NODES"), Usage: "datanodes to start with --dev"},
			&cli.GenericFlag{Name: "size", Value: byteSize(&res.LargeBytes), EnvVars: env("BENCH_SIZE"), Usage: "size of the large file"},
			&cli.IntFlag{Name: "files", Value: res.SmallFiles, Destination: &res.SmallFiles, EnvVars: env("BENCH_FILES"), Usage: "number of small files"},
			&cli.GenericFlag{Name: "file-size", Value: byteSize(&res.SmallBytes), EnvVars: env("BENCH_FILE_SIZE"), Usage: "size of each small file"},
			&cli.IntFlag{Name: "small-parallel", Value: res.SmallParallel, Destination: &res.SmallParallel, EnvVars: env("BENCH_SMALL_PARALLEL"), Usage: "small files in flight at once"},
			&cli.IntFlag{Name: "parallel", Value: cfg.Parallel, Destination: &cfg.Parallel, EnvVars: env("PARALLEL"), Usage: "chunks in flight for the large file"},
			&cli.IntFlag{Name: "range-reads", Value: res.RangeReads, Destination: &res.RangeReads, EnvVars: env("BENCH_RANGE_READS"), Usage: "random ranged reads to time; 0 skips"},
			&cli.GenericFlag{Name: "range-file-size", Value: byteSize(&res.RangeFileBytes), EnvVars: env("BENCH_RANGE_FILE_SIZE"), Usage: "size of the file read at random"},
			&cli.GenericFlag{Name: "range-frame-size", Value: byteSize(&res.RangeFrameBytes), EnvVars: env("BENCH_RANGE_FRAME_SIZE"), Usage: "frame size of the file read at random (a read moves and verifies whole frames)"},
			&cli.GenericFlag{Name: "range-size", Value: byteSize(&res.RangeReadBytes), EnvVars: env("BENCH_RANGE_SIZE"), Usage: "size of each ranged read"},
			&cli.IntFlag{Name: "range-parallel", Value: res.RangeParallel, Destination: &res.RangeParallel, EnvVars: env("BENCH_RANGE_PARALLEL"), Usage: "ranged reads in flight at once"},
			&cli.IntFlag{Name: "recursive-files", Value: res.TreeFiles, Destination: &res.TreeFiles, EnvVars: env("BENCH_RECURSIVE_FILES"), Usage: "files of the recursive put and get (put -r, get -r); 0 skips"},
			&cli.GenericFlag{Name: "recursive-file-size", Value: byteSize(&res.TreeFileBytes), EnvVars: env("BENCH_RECURSIVE_FILE_SIZE"), Usage: "size of each file of the recursive put and get"},
			transfersFlag(&res.TreeTransfers),
			&cli.IntFlag{Name: "meta-ops", Value: res.MetaOps, Destination: &res.MetaOps, EnvVars: env("BENCH_META_OPS"), Usage: "metadata commits (empty files) and lookups to time; 0 skips"},
			&cli.IntFlag{Name: "meta-parallel", Value: res.MetaParallel, Destination: &res.MetaParallel, EnvVars: env("BENCH_META_PARALLEL"), Usage: "metadata operations in flight at once"},
			&cli.BoolFlag{Name: "s3", Destination: &withS3, EnvVars: env("BENCH_S3"), Usage: "with --dev, also time the large file and the small files through an S3 gateway process (aws-sdk-go-v2)"},
			&cli.GenericFlag{Name: "s3-part-size", Value: byteSize(&s3res.PartBytes), EnvVars: env("BENCH_S3_PART_SIZE"), Usage: "part size of the S3 multipart put"},
			&cli.IntFlag{Name: "s3-parts-in-flight", Value: s3res.PartsInFlight, Destination: &s3res.PartsInFlight, EnvVars: env("BENCH_S3_PARTS_IN_FLIGHT"), Usage: "parts of the S3 multipart put sent at once"},
			&cli.BoolFlag{Name: "json", Destination: &asJSON, EnvVars: env("JSON"), Usage: "print the figures as one JSON object"},
		},
		Action: func(c *cli.Context) error {
			ctx := c.Context
			stdio := a.stdio
			if withS3 && !dev {
				return rpc.Errorf(rpc.Invalid, "--s3 needs --dev: the bench starts the gateway process itself")
			}
			if withS3 && (s3res.PartBytes < 5<<20 || s3res.PartBytes > rpc.MaxChunkSize || s3res.PartsInFlight < 1) {
				return rpc.Errorf(rpc.Invalid, "--s3-part-size must be between 5 MiB and %s, --s3-parts-in-flight at least 1", rpc.FormatBytes(rpc.MaxChunkSize))
			}
			var procs *devProcs
			if dev {
				var err error
				if procs, err = startDevProcs(ctx, nodes, !a.sec.insecure, stdio.Err); err != nil {
					return err
				}
				defer procs.stop()
				cfg.Coordinators = []string{procs.coordAddr}
				if procs.pki != nil {
					f := procs.pki.Files(auth.DefaultSuperuser)
					cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = f.CA, f.Cert, f.Key
				}
				res.Nodes, res.Replication, res.ServerGOMAXPROCS = nodes, min(3, nodes), procs.gomaxprocs
			} else if err := a.sec.client(&cfg); err != nil {
				return err
			}
			cfg.Logger = &a.log
			cl, err := client.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer cl.Close()
			if procs != nil {
				if err := procs.waitNodes(ctx, cl, nodes); err != nil {
					return err
				}
				if procs.pki != nil {
					// Measure as an ordinary user, whom every permission
					// check applies to (a superuser skips them): the
					// superuser gives the user /bench.
					if withS3 {
						// The gateway keeps multipart parts there, for
						// every user (as dfs dev sets it up).
						if err := cl.MkdirAll(ctx, "/.s3/multipart"); err != nil {
							return err
						}
						if err := cl.Chmod(ctx, "/.s3/multipart", 0o777|fs.ModeSticky); err != nil {
							return err
						}
					}
					if cl, err = procs.asUser(ctx, cl, &cfg, "bench", "/bench"); err != nil {
						return err
					}
					defer cl.Close()
				}
			}
			rangeCl := cl
			if res.RangeReads > 0 && res.RangeFrameBytes != cfg.FrameSize {
				rcfg := cfg
				rcfg.FrameSize = res.RangeFrameBytes
				if rangeCl, err = client.New(ctx, rcfg); err != nil {
					return err
				}
				defer rangeCl.Close()
			}
			if err := runBench(ctx, cl, rangeCl, procs, res, stdio.Err, asJSON); err != nil {
				return err
			}
			if withS3 {
				user := ""
				if procs.pki != nil {
					user = "bench"
				}
				g, err := procs.startS3Gateway(ctx, user, stdio.Err)
				if err != nil {
					return err
				}
				defer g.stop()
				say := func(format string, args ...any) {
					if !asJSON {
						fmt.Fprintf(stdio.Err, format+"\n", args...)
					}
				}
				if err := runS3Bench(ctx, g, res, s3res, say); err != nil {
					return err
				}
				res.S3 = s3res
			}
			if procs != nil {
				res.DatanodePeakRSS = procs.peakRSS()
			}
			if asJSON {
				return json.NewEncoder(stdio.Out).Encode(res)
			}
			if res.LargeBytes > 0 {
				fmt.Fprintf(stdio.Out, "large file %s: put %.1f MB/s, get %.1f MB/s\n", rpc.FormatBytes(res.LargeBytes), res.PutMBps, res.GetMBps)
				fmt.Fprintf(stdio.Out, "  CPU s/GiB: put %s, get %s\n",
					cpuFigures(res.PutClientCPUPerGiB, res.PutClusterCPUPerGiB, procs != nil), cpuFigures(res.GetClientCPUPerGiB, res.GetClusterCPUPerGiB, procs != nil))
			}
			if res.SmallFiles > 0 {
				fmt.Fprintf(stdio.Out, "%d x %s files (%d in flight): %.0f puts/s, %.0f gets/s\n", res.SmallFiles, rpc.FormatBytes(res.SmallBytes), res.SmallParallel, res.SmallPutsPerSec, res.SmallGetsPerSec)
				fmt.Fprintf(stdio.Out, "  CPU ms per file: put %s, get %s\n",
					cpuFigures(res.SmallPutClientCPUms, res.SmallPutClusterCPUms, procs != nil), cpuFigures(res.SmallGetClientCPUms, res.SmallGetClusterCPUms, procs != nil))
			}
			if res.RangeReads > 0 {
				fmt.Fprintf(stdio.Out, "%s reads at random from a %s file in %s frames (%d in flight): %.0f reads/s\n",
					rpc.FormatBytes(res.RangeReadBytes), rpc.FormatBytes(res.RangeFileBytes), rpc.FormatBytes(res.RangeFrameBytes), res.RangeParallel, res.RangeReadsPerSec)
			}
			if res.TreeFiles > 0 {
				fmt.Fprintf(stdio.Out, "recursive, %d x %s files (%d in flight): put -r %.0f files/s, get -r %.0f files/s\n",
					res.TreeFiles, rpc.FormatBytes(res.TreeFileBytes), res.TreeTransfers, res.TreePutsPerSec, res.TreeGetsPerSec)
			}
			if res.MetaOps > 0 {
				fmt.Fprintf(stdio.Out, "metadata, %d in flight: %.0f commits/s, %.0f lookups/s\n", res.MetaParallel, res.MetaCommitsPerSec, res.MetaLookupsPerSec)
			}
			if res.S3 != nil {
				printS3Bench(stdio.Out, res)
			}
			for i, rss := range res.DatanodePeakRSS {
				fmt.Fprintf(stdio.Out, "datanode %d peak RSS: %s", i, rpc.FormatBytes(rss))
				if i < len(res.DatanodePutPeakRSS) {
					fmt.Fprintf(stdio.Out, " (during the large put: %s, of which private %s)", rpc.FormatBytes(res.DatanodePutPeakRSS[i]), rpc.FormatBytes(res.DatanodePutPeakAnon[i]))
				}
				fmt.Fprintln(stdio.Out)
			}
			return nil
		},
	}
}

// runBench runs the benchmarks res asks for with cl, the ranged reads
// with rangeCl (whose frame size is res.RangeFrameBytes), and records the
// figures in res.
// procs, when set, is the cluster the bench started: its CPU and the
// datanodes' peak memory during the large put are measured too.
func runBench(ctx context.Context, cl, rangeCl *client.Client, procs *devProcs, res *BenchResult, logw io.Writer, quiet bool) error {
	say := func(format string, args ...any) {
		if !quiet {
			fmt.Fprintf(logw, format+"\n", args...)
		}
	}
	const mb = 1e6
	if procs != nil {
		say("cluster: a coordinator and %d datanodes, each process with GOMAXPROCS=%d", res.Nodes, procs.gomaxprocs)
	}
	// What is read goes to /dev/null, opened as a file: a get costs what
	// dfs get to a local file costs, but the disk.
	sink, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer sink.Close()
	if res.LargeBytes > 0 {
		say("putting %s...", rpc.FormatBytes(res.LargeBytes))
		var anon chan []int64
		stop := make(chan struct{})
		if procs != nil {
			procs.resetPeakRSS()
			anon = make(chan []int64, 1)
			go func() { anon <- procs.sampleAnon(stop) }()
		}
		cpu, start := cpuNow(procs), time.Now()
		_, err := cl.Put(ctx, "/bench/large", roles.NewPatternReader(res.LargeBytes), res.LargeBytes, nil)
		close(stop)
		if anon != nil {
			res.DatanodePutPeakAnon = <-anon
		}
		if err != nil {
			return err
		}
		res.PutMBps = float64(res.LargeBytes) / mb / time.Since(start).Seconds()
		used := cpuNow(procs).sub(cpu)
		res.PutClientCPUPerGiB, res.PutClusterCPUPerGiB = perGiB(used.client, res.LargeBytes), perGiB(used.cluster, res.LargeBytes)
		if procs != nil {
			res.DatanodePutPeakRSS = procs.peakRSS()
		}
		say("getting %s...", rpc.FormatBytes(res.LargeBytes))
		cpu, start = cpuNow(procs), time.Now()
		if _, err := cl.Get(ctx, "/bench/large", sink, nil); err != nil {
			return err
		}
		res.GetMBps = float64(res.LargeBytes) / mb / time.Since(start).Seconds()
		used = cpuNow(procs).sub(cpu)
		res.GetClientCPUPerGiB, res.GetClusterCPUPerGiB = perGiB(used.client, res.LargeBytes), perGiB(used.cluster, res.LargeBytes)
	}
	if res.RangeReads > 0 {
		if err := benchRanges(ctx, rangeCl, res, say); err != nil {
			return err
		}
	}
	if res.LargeBytes > 0 {
		if err := cl.Remove(ctx, "/bench/large"); err != nil {
			return err
		}
	}
	if res.SmallFiles > 0 {
		data := make([]byte, res.SmallBytes)
		roles.NewPatternReader(res.SmallBytes).Read(data)
		say("putting %d small files...", res.SmallFiles)
		cpu := cpuNow(procs)
		elapsed, err := parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			_, err := cl.Put(ctx, fmt.Sprintf("/bench/small/%06d", i), bytes.NewReader(data), int64(len(data)), nil)
			return err
		})
		if err != nil {
			return err
		}
		res.SmallPutsPerSec = float64(res.SmallFiles) / elapsed.Seconds()
		used := cpuNow(procs).sub(cpu)
		res.SmallPutClientCPUms, res.SmallPutClusterCPUms = perOp(used.client, res.SmallFiles), perOp(used.cluster, res.SmallFiles)
		say("getting %d small files...", res.SmallFiles)
		cpu = cpuNow(procs)
		elapsed, err = parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			_, err := cl.Get(ctx, fmt.Sprintf("/bench/small/%06d", i), sink, nil)
			return err
		})
		if err != nil {
			return err
		}
		res.SmallGetsPerSec = float64(res.SmallFiles) / elapsed.Seconds()
		used = cpuNow(procs).sub(cpu)
		res.SmallGetClientCPUms, res.SmallGetClusterCPUms = perOp(used.client, res.SmallFiles), perOp(used.cluster, res.SmallFiles)
		_, err = parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			return cl.Remove(ctx, fmt.Sprintf("/bench/small/%06d", i))
		})
		if err != nil {
			return err
		}
	}
	if res.TreeFiles > 0 {
		if err := benchTree(ctx, cl, res, say); err != nil {
			return err
		}
	}
	if res.MetaOps > 0 {
		say("committing %d empty files...", res.MetaOps)
		elapsed, err := parallel(ctx, res.MetaOps, res.MetaParallel, func(i int) error {
			_, err := cl.Put(ctx, fmt.Sprintf("/bench/meta/%07d", i), bytes.NewReader(nil), 0, nil)
			return err
		})
		if err != nil {
			return err
		}
		res.MetaCommitsPerSec = float64(res.MetaOps) / elapsed.Seconds()
		say("looking up %d files...", res.MetaOps)
		elapsed, err = parallel(ctx, res.MetaOps, res.MetaParallel, func(i int) error {
			_, err := cl.Stat(ctx, fmt.Sprintf("/bench/meta/%07d", i))
			return err
		})
		if err != nil {
			return err
		}
		res.MetaLookupsPerSec = float64(res.MetaOps) / elapsed.Seconds()
		_, err = parallel(ctx, res.MetaOps, res.MetaParallel, func(i int) error {
			return cl.Remove(ctx, fmt.Sprintf("/bench/meta/%07d", i))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// benchRanges times res.RangeReads reads of res.RangeReadBytes at random
// offsets of a file of res.RangeFileBytes, res.RangeParallel at once,
// through one Reader. The file, /bench/range, is written with cl's frame
// size for the run and deleted after it.
func benchRanges(ctx context.Context, cl *client.Client, res *BenchResult, say func(string, ...any)) error {
	if res.RangeReadBytes <= 0 || res.RangeFileBytes <= 0 || res.RangeParallel < 1 {
		return rpc.Errorf(rpc.Invalid, "ranged reads need a positive --range-size, --range-file-size and --range-parallel")
	}
	const path = "/bench/range"
	say("putting %s in frames of %s...", rpc.FormatBytes(res.RangeFileBytes), rpc.FormatBytes(res.RangeFrameBytes))
	if _, err := cl.Put(ctx, path, roles.NewPatternReader(res.RangeFileBytes), res.RangeFileBytes, nil); err != nil {
		return err
	}
	if err := timeRanges(ctx, cl, path, res, say); err != nil {
		return err
	}
	return cl.Remove(ctx, path)
}

// timeRanges times the ranged reads of path for benchRanges.
func timeRanges(ctx context.Context, cl *client.Client, path string, res *BenchResult, say func(string, ...any)) error {
	r, err := cl.Open(ctx, path)
	if err != nil {
		return err
	}
	defer r.Close()
	say("reading %d ranges of %s at random...", res.RangeReads, rpc.FormatBytes(res.RangeReadBytes))
	bufs := sync.Pool{New: func() any { return make([]byte, res.RangeReadBytes) }}
	span := max(res.RangeFileBytes-res.RangeReadBytes, 0) + 1
	elapsed, err := parallel(ctx, res.RangeReads, res.RangeParallel, func(int) error {
		buf := bufs.Get().([]byte)
		defer bufs.Put(buf)
		_, err := r.ReadAt(buf, rand.Int64N(span))
		if err == io.EOF {
			err = nil // a read longer than the file
		}
		return err
	})
	if err != nil {
		return err
	}
	res.RangeReadsPerSec = float64(res.RangeReads) / elapsed.Seconds()
	return nil
}

// parallel runs fn(0..n-1) on p workers and returns the wall time and the
// first error.
func parallel(ctx context.Context, n, p int, fn func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range max(p, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// devProcs is a cluster of child processes of this binary.
type devProcs struct {
	dir       string
	release   func() // removes dir
	coordAddr string
	cmds      []*exec.Cmd
	pki       *roles.LocalPKI // with TLS
	// gomaxprocs is each server process's share of the cores, given to
	// it as GOMAXPROCS (see serverShare).
	gomaxprocs int
}

// child returns a process of exe with args that the bench starts, with
// env added to the bench's own and its stderr to logw. A bench that dies
// without stopping it (kill -9, or its output closed: `dfs bench --dev |
// head`) takes it along.
func child(exe string, args []string, logw io.Writer, env ...string) *exec.Cmd {
	cmd := exec.Command(exe, args...)
	// The last of two values of a variable is the one the process gets.
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd
}

// command returns a server process of exe with args (see child), with
// GOMAXPROCS its share of the cores.
func (d *devProcs) command(exe string, args []string, logw io.Writer) *exec.Cmd {
	return child(exe, args, logw, "GOMAXPROCS="+strconv.Itoa(d.gomaxprocs))
}

// serverShare is the GOMAXPROCS of each of servers processes that share
// this machine with the bench: an equal share of the cores the bench
// may use (its own GOMAXPROCS, which follows a container's CPU limit),
// at least 1; or the GOMAXPROCS the bench was started with, which every
// process then gets too. A Go runtime sizes itself to every core of the
// machine; several on the same cores, each waking idle threads to look
// for work whenever a goroutine becomes ready, spent a quarter of the
// cluster's CPU per small put on that (docs/benchmarks.md). Processes of
// their own machines, or in containers with CPU limits, have their share
// already.
func serverShare(servers int) int {
	if g, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && g > 0 {
		return g
	}
	return max(1, runtime.GOMAXPROCS(0)/max(servers, 1))
}

// freeAddr returns a loopback address for a server the bench starts as a
// process (and may restart there): below the ephemeral range, so no
// outgoing connection or :0 listener takes it meanwhile (see freeport).
func freeAddr() (string, error) {
	ports, err := freeport.Free(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), nil
}

// startDevProcs starts a coordinator and nodes datanodes as processes of
// this executable in a temp dir: with TLS (a CA and certificates in the
// dir, devProcs.pki) when secure, else in plain text. Each gets an equal
// share of the cores. (An S3 gateway, started later, is a client of the
// cluster as the bench is, and keeps every core the bench has.)
func startDevProcs(ctx context.Context, nodes int, secure bool, logw io.Writer) (*devProcs, error) {
	if nodes < 1 || nodes > 16 {
		return nil, rpc.Errorf(rpc.Invalid, "--nodes must be between 1 and 16")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, release, err := benchDir("dfs-bench-*")
	if err != nil {
		return nil, err
	}
	d := &devProcs{dir: dir, release: release, gomaxprocs: serverShare(nodes + 1)}
	tlsArgs := func(string) []string { return []string{"--insecure"} }
	if secure {
		if d.pki, err = roles.OpenLocalPKI(filepath.Join(dir, "tls")); err != nil {
			d.stop()
			return nil, err
		}
		tlsArgs = func(name string) []string {
			f := d.pki.Files(name)
			return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
		}
	}
	start := func(args ...string) error {
		args = append(append([]string{"--log-level", "warn"}, tlsArgs(args[0])...), args...)
		cmd := d.command(exe, args, logw)
		if err := cmd.Start(); err != nil {
			return err
		}
		d.cmds = append(d.cmds, cmd)
		return nil
	}
	if d.coordAddr, err = freeAddr(); err != nil {
		d.stop()
		return nil, err
	}
	if err := start("coordinator", "--listen", d.coordAddr, "--data-dir", filepath.Join(dir, "coordinator"),
		"--replication", strconv.Itoa(min(3, nodes))); err != nil {
		d.stop()
		return nil, err
	}
	for i := range nodes {
		addr, err := freeAddr()
		if err != nil {
			d.stop()
			return nil, err
		}
		if err := start("datanode", "--listen", addr, "--coordinator", d.coordAddr,
			"--data-dir", filepath.Join(dir, fmt.Sprintf("datanode-%d", i)), "--heartbeat-interval", "1s"); err != nil {
			d.stop()
			return nil, err
		}
	}
	return d, nil
}

// asUser makes dir (with its parents) with the superuser's client su,
// gives it to user, and returns a client of cfg's cluster that is user
// (with a client certificate issued for them); su is closed.
func (d *devProcs) asUser(ctx context.Context, su *client.Client, cfg *client.Config, user, dir string) (*client.Client, error) {
	defer su.Close()
	if err := su.MkdirAll(ctx, dir); err != nil {
		return nil, err
	}
	if err := su.Chown(ctx, dir, user, ""); err != nil {
		return nil, err
	}
	f, err := d.pki.User(user)
	if err != nil {
		return nil, err
	}
	cfg.TLSCert, cfg.TLSKey = f.Cert, f.Key
	return client.New(ctx, *cfg)
}

func (d *devProcs) waitNodes(ctx context.Context, cl *client.Client, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := cl.Nodes(ctx); err == nil {
			healthy := 0
			for _, n := range resp.Nodes {
				if n.State == client.NodeHealthy {
					healthy++
				}
			}
			if healthy >= want {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return rpc.Errorf(rpc.Unavailable, "bench: %d datanodes did not come up within 30s", want)
}

// peakRSS reads each datanode's high-water resident set (VmHWM).
func (d *devProcs) peakRSS() []int64 {
	var out []int64
	for _, cmd := range d.cmds[1:] {
		if rss := vmHWM(cmd.Process.Pid); rss > 0 {
			out = append(out, rss)
		}
	}
	return out
}

// vmHWM reads the high-water resident set of process pid (VmHWM), or 0.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (d *devProcs) stop() {
	for i := len(d.cmds) - 1; i >= 0; i-- {
		d.cmds[i].Process.Signal(os.Interrupt)
	}
	for _, cmd := range d.cmds {
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	d.release()
}
