package roles_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// BenchmarkRepair measures re-replication (issue 4): four datanodes in
// this process, DFS_BENCH_REPAIR_SIZE bytes (default 1 GiB) put in files
// of up to 64 MiB with the default 8 MiB chunks and three copies, then the
// datanode holding the most chunks (about three quarters of the data) is
// stopped. ns/op is the time from the stop to every chunk having three
// copies on live nodes again; the metrics split it into the time until the
// node is declared dead (--dead-after 2s here) and the repair proper, and
// give the repair's rate: the stopped node's chunk bytes over the time
// from dead to fully replicated. The repair runs with the default
// concurrency (8 copies cluster-wide, 2 per node) and repair interval
// (1s), uncapped and with the default 100 MiB/s cap.
//
//	go test -run '^$' -bench BenchmarkRepair -benchtime 1x -count 3 ./roles/
//
// Setting up puts the whole size first (seconds per GiB); only the repair
// is timed.
func BenchmarkRepair(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("DFS_BENCH_REPAIR_SIZE"); s != "" {
		n, err := rpc.ParseBytes(s)
		if err != nil || n <= 0 {
			b.Fatalf("DFS_BENCH_REPAIR_SIZE=%q: want a size like 256MiB", s)
		}
		size = n
	} else if testing.Short() {
		size = 64 << 20
	}
	for _, bc := range []struct {
		name      string
		bandwidth int64
	}{{"uncapped", 0}, {"cap=100MiB", 100 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			var toDead, repair, total time.Duration
			var bytes, copies, chunks, copied int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				r := setupRepair(b, size, bc.bandwidth)
				b.StartTimer()
				res := r.run(b)
				b.StopTimer()
				r.close()
				toDead += res.toDead
				repair += res.repair
				total += res.toDead + res.repair
				bytes += res.bytes
				chunks += res.chunks
				copies += res.copies
				copied += res.copied
			}
			n := float64(b.N)
			b.ReportMetric(toDead.Seconds()/n, "s-to-dead")
			b.ReportMetric(repair.Seconds()/n, "s-dead-to-replicated")
			b.ReportMetric(total.Seconds()/n, "s-stop-to-replicated")
			b.ReportMetric(float64(bytes)/1e6/repair.Seconds(), "MB/s")
			b.ReportMetric(float64(bytes)/n/(1<<20), "MiB-lost")
			b.ReportMetric(float64(copies)/float64(chunks), "copies/chunk-lost")
			b.ReportMetric(float64(copied)/float64(bytes), "bytes-copied/bytes-lost")
		})
	}
}

// repairBench is one cluster ready to lose a node.
type repairBench struct {
	c      *roles.Cluster
	cl     *client.Client
	cancel func()
	dir    string
	paths  []string
}

type repairResult struct {
	toDead, repair time.Duration
	bytes, chunks  int64 // what the stopped node held
	copies, copied int64 // repairs done and bytes copied
}

func setupRepair(b *testing.B, size, bandwidth int64) *repairBench {
	b.Helper()
	dir, err := os.MkdirTemp("", "dfs-bench-repair-")
	if err != nil {
		b.Fatal(err)
	}
	cfg := roles.DefaultClusterConfig(dir)
	cfg.Nodes = 4
	cfg.Log = zerolog.Nop()
	cfg.Coordinator.SuspectAfter, cfg.Coordinator.DeadAfter = time.Second, 2*time.Second
	cfg.Coordinator.RepairBandwidth = bandwidth
	cfg.Datanode.HeartbeatInterval = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	c, err := roles.StartCluster(ctx, cfg)
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		b.Fatal(err)
	}
	ccfg := client.DefaultConfig()
	cl, err := c.Client(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	r := &repairBench{c: c, cl: cl, cancel: cancel, dir: dir}
	const file = 64 << 20
	for i := 0; int64(i)*file < size; i++ {
		n := min(file, size-int64(i)*file)
		p := fmt.Sprintf("/bench/repair/%03d", i)
		if _, err := cl.Put(ctx, p, roles.NewPatternReader(n), n, nil); err != nil {
			r.close()
			b.Fatalf("put %s: %v", p, err)
		}
		r.paths = append(r.paths, p)
	}
	// Every copy reported before the clock starts.
	if !r.poll(b, time.Minute, func() bool { return r.replicated(b, nil) }) {
		r.close()
		b.Fatal("copies not all reported after the puts")
	}
	return r
}

func (r *repairBench) close() {
	r.cl.Close()
	r.c.Close()
	r.cancel()
	os.RemoveAll(r.dir)
}

// poll checks cond every 10ms until it holds or timeout passes.
func (r *repairBench) poll(b *testing.B, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// replicated reports whether every chunk has at least three copies on
// healthy nodes outside down, as the coordinator's chunk map says.
func (r *repairBench) replicated(b *testing.B, down nodeSet) bool {
	for _, p := range r.paths {
		fi, err := r.cl.Stat(context.Background(), p)
		if err != nil {
			b.Fatalf("stat %s: %v", p, err)
		}
		for _, ch := range fi.Chunks {
			if len(healthyReplicas(ch, down)) < 3 {
				return false
			}
		}
	}
	return true
}

// run stops the node holding the most chunks and waits until it is dead,
// then until every chunk has three live copies again.
func (r *repairBench) run(b *testing.B) repairResult {
	var res repairResult
	victim := mostLoaded(r.c, nil)
	var vn *roles.ClusterNode
	for _, n := range r.c.Nodes() {
		if string(n.Node.ID()) == victim {
			vn = n
		}
	}
	u := vn.Node.Store().Usage()
	for _, id := range vn.Node.Store().IDs() {
		m, err := vn.Node.Store().Stat(id)
		if err == nil {
			res.bytes += m.Size
		}
	}
	res.chunks = u.Chunks
	before := r.health(b)

	start := time.Now()
	if err := vn.Stop(); err != nil {
		b.Fatalf("stop: %v", err)
	}
	if !r.poll(b, time.Minute, func() bool {
		for _, n := range r.health(b).Nodes {
			if n.NodeId == victim {
				return n.State == dfspb.NodeState_NODE_STATE_DEAD
			}
		}
		return false
	}) {
		b.Fatal("the stopped node was not declared dead within a minute")
	}
	dead := time.Now()
	if !r.poll(b, 30*time.Minute, func() bool { return r.replicated(b, nodeSet{victim: true}) }) {
		b.Fatal("not fully replicated within 30 minutes")
	}
	done := time.Now()
	res.toDead, res.repair = dead.Sub(start), done.Sub(dead)
	after := r.health(b)
	res.copies = after.Health.RepairsDone - before.Health.RepairsDone
	res.copied = after.Health.BytesRepaired - before.Health.BytesRepaired
	return res
}

func (r *repairBench) health(b *testing.B) *dfspb.ListNodesResponse {
	resp, err := r.c.Coordinator().Server().ListNodes(context.Background(), &dfspb.ListNodesRequest{})
	if err != nil {
		b.Fatalf("ListNodes: %v", err)
	}
	return resp
}
