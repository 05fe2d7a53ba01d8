package coordinator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// metrics are the coordinator's counters and histograms; the gauges are
// read from its state on each scrape (stateCollector).
type metrics struct {
	rpc            *prometheus.HistogramVec
	committedBytes prometheus.Counter
	filesCommitted prometheus.Counter
	filesDeleted   prometheus.Counter
	readBytes      prometheus.Counter
}

// rpcBuckets span 1 ms to about 30 s.
var rpcBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// newMetrics creates the coordinator's metrics and registers them, and a
// collector of c's state, on reg.
func newMetrics(reg prometheus.Registerer, c *Coordinator) (*metrics, error) {
	m := &metrics{
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dfs_coordinator_rpc_duration_seconds", Help: "Time the coordinator took to serve a gRPC call, by method and gRPC code.",
			Buckets: rpcBuckets,
		}, []string{"method", "code"}),
		committedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_coordinator_committed_bytes_total", Help: "Bytes of the files clients committed (put), counted once per file whatever its replication.",
		}),
		filesCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_coordinator_files_committed_total", Help: "Files committed (new files and new versions).",
		}),
		filesDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_coordinator_files_deleted_total", Help: "Files deleted.",
		}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_coordinator_read_bytes_total", Help: "Bytes of the files whose chunk maps readers fetched (what clients read when they read each file whole).",
		}),
	}
	for _, col := range []prometheus.Collector{m.rpc, m.committedBytes, m.filesCommitted, m.filesDeleted, m.readBytes, &stateCollector{c: c}} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records one finished gRPC call; it is the coordinator's
// rpc.CallObserver.
func (m *metrics) observe(method string, code codes.Code, took time.Duration) {
	m.rpc.WithLabelValues(rpc.ShortMethod(method), code.String()).Observe(took.Seconds())
}

// stateCollector reads the coordinator's state on each scrape.
type stateCollector struct{ c *Coordinator }

var _ prometheus.Collector = (*stateCollector)(nil)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descLeader       = desc("dfs_coordinator_leader", "1 while this coordinator leads, 0 while it starts or stands by.")
	descSafeMode     = desc("dfs_coordinator_safe_mode", "1 while the leading coordinator waits in safe mode for the datanodes' chunk reports.")
	descLoading      = desc("dfs_coordinator_loading", "1 while the leading coordinator loads the committed files from its metadata store (in safe mode meanwhile; dfs_coordinator_files counts those loaded so far).")
	descWritable     = desc("dfs_coordinator_writable", "1 while the leader's cluster can take writes (out of safe mode, at least the replication factor of placeable datanodes), as /readyz says.")
	descNodes        = desc("dfs_coordinator_nodes", "Datanodes by state (healthy, suspect, dead).", "state")
	descDraining     = desc("dfs_coordinator_draining_nodes", "Datanodes being decommissioned (draining), decommissioned ones included.")
	descCapacity     = desc("dfs_coordinator_capacity_bytes", "Capacity of the datanodes that are not dead, as of their last heartbeats.")
	descUsed         = desc("dfs_coordinator_used_bytes", "Bytes stored on the datanodes that are not dead, as of their last heartbeats.")
	descFree         = desc("dfs_coordinator_free_bytes", "Bytes the datanodes that are not dead can still accept, as of their last heartbeats.")
	descFiles        = desc("dfs_coordinator_files", "Committed files.")
	descChunks       = desc("dfs_coordinator_chunks", "Chunks the committed files reference.")
	descSessions     = desc("dfs_coordinator_upload_sessions", "Open upload (metadata) sessions.")
	descUnder        = desc("dfs_coordinator_under_replicated_chunks", "Chunks with fewer good copies on live nodes than their replication, as of the last health scan.")
	descMissing      = desc("dfs_coordinator_missing_chunks", "Chunks without any good copy on a live node, as of the last health scan.")
	descCorrupt      = desc("dfs_coordinator_corrupt_copies", "Chunk copies the datanodes found corrupt and that are not deleted yet, as of the last health scan.")
	descRepairing    = desc("dfs_coordinator_repairs_in_progress", "Chunk copies (re-replications) running now.")
	descRepairs      = desc("dfs_coordinator_repairs_total", "Chunk copies (re-replications) completed since this coordinator began leading.")
	descRepairFails  = desc("dfs_coordinator_repairs_failed_total", "Chunk copies (re-replications) that failed since this coordinator began leading.")
	descRepairBytes  = desc("dfs_coordinator_repaired_bytes_total", "Bytes re-replicated since this coordinator began leading.")
	descPendingDels  = desc("dfs_coordinator_pending_deletions", "Chunk copies waiting to be deleted from the datanodes (garbage collection).")
	descDeleted      = desc("dfs_coordinator_deleted_chunks_total", "Chunk copies the datanodes deleted for garbage collection since this coordinator began leading.")
	descReclaimed    = desc("dfs_coordinator_reclaimed_bytes_total", "Bytes freed on the datanodes by garbage collection since this coordinator began leading.")
	descInventories  = desc("dfs_coordinator_inventories", "Datanodes' full chunk inventories being applied (applying: holding one of --max-inventories turns) or waiting for a turn (waiting).", "state")
	descOrphans      = desc("dfs_coordinator_orphan_copies_total", "Orphan chunk copies (referenced by no file or upload) scheduled for deletion since this coordinator began leading.")
	stateDescriptors = []*prometheus.Desc{descLeader, descSafeMode, descLoading, descWritable, descNodes, descDraining, descCapacity, descUsed, descFree,
		descFiles, descChunks, descSessions, descUnder, descMissing, descCorrupt, descRepairing, descRepairs, descRepairFails,
		descRepairBytes, descPendingDels, descDeleted, descReclaimed, descOrphans, descInventories}
)

// Describe implements prometheus.Collector.
func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range stateDescriptors {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A coordinator that does not
// lead reports only the leader and safe-mode gauges.
func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	snap := s.c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descLeader, b2f(snap.Leading))
	gauge(descSafeMode, b2f(snap.SafeMode))
	if !snap.Leading {
		return
	}
	gauge(descLoading, b2f(snap.Loading))
	gauge(descWritable, b2f(snap.Readiness.Writable))
	states := map[placement.State]int{}
	draining := 0
	for _, n := range snap.Nodes {
		states[n.state]++
		if n.draining {
			draining++
		}
	}
	gauge(descNodes, float64(states[placement.Healthy]), "healthy")
	gauge(descNodes, float64(states[placement.Suspect]), "suspect")
	gauge(descNodes, float64(states[placement.Dead]), "dead")
	gauge(descDraining, float64(draining))
	gauge(descCapacity, float64(snap.Capacity))
	gauge(descUsed, float64(snap.Used))
	gauge(descFree, float64(snap.Free))
	gauge(descFiles, float64(snap.Files))
	gauge(descChunks, float64(snap.Chunks))
	gauge(descSessions, float64(snap.UploadSessions))
	gauge(descInventories, float64(snap.InventoriesApplying), "applying")
	gauge(descInventories, float64(snap.InventoriesWaiting), "waiting")
	h := snap.Health
	gauge(descUnder, float64(h.UnderReplicated))
	gauge(descMissing, float64(h.Missing))
	gauge(descCorrupt, float64(h.CorruptCopies))
	gauge(descRepairing, float64(h.RepairsInProgress))
	counter(descRepairs, h.RepairsDone)
	counter(descRepairFails, snap.RepairsFailed)
	counter(descRepairBytes, h.BytesRepaired)
	gauge(descPendingDels, float64(h.PendingDeletions))
	counter(descDeleted, h.ChunksDeleted)
	counter(descReclaimed, h.BytesReclaimed)
	counter(descOrphans, h.OrphansDeleted)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observers returns the coordinator's gRPC call observers.
func (c *Coordinator) observers() []rpc.CallObserver {
	return []rpc.CallObserver{c.metrics.observe}
}
