package datanode

import (
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Chunk operations timed by dfs_datanode_chunk_op_duration_seconds.
const (
	opUpload    = "upload"    // a chunk received in an upload stream (and forwarded, on a primary)
	opDownload  = "download"  // a chunk sent in a download stream, or read for a ReadChunks reply
	opReplicate = "replicate" // a chunk copied from another node for a repair
	opDelete    = "delete"    // a chunk deleted
	opVerify    = "verify"    // a chunk re-read and checked on request (VerifyChunk)
)

// metrics are a datanode's counters, gauges and histograms; disk usage
// and registration are read on each scrape (stateCollector).
type metrics struct {
	clock      clockwork.Clock // times the chunk operations
	rpc        *prometheus.HistogramVec
	ops        *prometheus.HistogramVec
	streams    *prometheus.GaugeVec
	received   prometheus.Counter
	forwarded  prometheus.Counter
	sent       prometheus.Counter
	replicated prometheus.Counter
	scrubbed   prometheus.Counter
	corrupt    prometheus.Counter
	lost       prometheus.Counter
}

// buckets span 1 ms to about 30 s.
var buckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// newMetrics creates the node's metrics and registers them, and a
// collector of n's state, on reg.
func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		clock: n.clock,
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dfs_datanode_rpc_duration_seconds", Help: "Time the datanode took to serve a gRPC call (a stream from its start to its end), by method and gRPC code.",
			Buckets: buckets,
		}, []string{"method", "code"}),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dfs_datanode_chunk_op_duration_seconds", Help: "Time of one chunk operation (upload, download, replicate, delete, verify), by result (ok, error).",
			Buckets: buckets,
		}, []string{"op", "result"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dfs_datanode_streams", Help: "Chunk streams running now: upload (receiving; each chunk of a WriteChunks call counts as one until answered), download (sending), replicate (copying for a repair).",
		}, []string{"op"}),
		received:   counter("dfs_datanode_chunk_bytes_received_total", "Chunk bytes received in upload streams and WriteChunks calls, from clients (as primary) and from primaries (as replica)."),
		forwarded:  counter("dfs_datanode_chunk_bytes_forwarded_total", "Chunk bytes a primary forwarded to its replicas (counted once per replica)."),
		sent:       counter("dfs_datanode_chunk_bytes_sent_total", "Chunk bytes sent in download streams and ReadChunks replies, to readers and to nodes copying a chunk for a repair."),
		replicated: counter("dfs_datanode_chunk_bytes_replicated_total", "Chunk bytes copied to this node from other nodes for repairs (ReplicateChunk)."),
		scrubbed:   counter("dfs_datanode_scrubbed_bytes_total", "Bytes the scrubber re-read and checked."),
		corrupt:    counter("dfs_datanode_corrupt_chunks_found_total", "Stored chunks found corrupt (by the scrubber, a read or a verification)."),
		lost:       counter("dfs_datanode_lost_chunks_found_total", "Stored chunks whose file was found missing from disk (by the scrubber, a read, a verification or the disk check), not deleted by the node."),
	}
	for _, op := range []string{opUpload, opDownload, opReplicate} {
		m.streams.WithLabelValues(op) // show zeros before the first stream
	}
	for _, col := range []prometheus.Collector{m.rpc, m.ops, m.streams, m.received, m.forwarded, m.sent, m.replicated,
		m.scrubbed, m.corrupt, m.lost, &stateCollector{n: n}} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records one finished gRPC call; it is the node's
// rpc.CallObserver.
func (m *metrics) observe(method string, code codes.Code, took time.Duration) {
	m.rpc.WithLabelValues(rpc.ShortMethod(method), code.String()).Observe(took.Seconds())
}

// op starts timing one chunk operation; the returned func records it with
// the operation's error.
func (m *metrics) op(op string) func(error) {
	start := m.clock.Now()
	return func(err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.ops.WithLabelValues(op, result).Observe(m.clock.Since(start).Seconds())
	}
}

// stream counts a running stream until the returned func is called.
func (m *metrics) stream(op string) func() {
	g := m.streams.WithLabelValues(op)
	g.Inc()
	return g.Dec
}

// countingSender counts the chunk bytes sent through a FrameSender.
type countingSender struct {
	chunkstream.FrameSender
	bytes prometheus.Counter
}

var _ chunkstream.SharedSender = countingSender{}

func (s countingSender) Send(f *dfspb.ChunkDataStream) error {
	err := s.FrameSender.Send(f)
	if err == nil {
		s.bytes.Add(float64(len(f.Data)))
	}
	return err
}

// SendShared sends f through the gRPC stream's SendMsg, which writes its
// data without a copy (rpc.SharedFrame), or copies it with Send on a
// stream without one.
func (s countingSender) SendShared(f rpc.SharedFrame) error {
	ms, ok := s.FrameSender.(interface{ SendMsg(any) error })
	if !ok {
		return s.Send(f.Frame)
	}
	err := ms.SendMsg(f)
	if err == nil {
		s.bytes.Add(float64(len(f.Frame.Data)))
	}
	return err
}

// stateCollector reads the node's disk usage and registration on each
// scrape.
type stateCollector struct{ n *Node }

var _ prometheus.Collector = (*stateCollector)(nil)

func desc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

var (
	descRegistered = desc("dfs_datanode_registered", "1 while the node is registered with a coordinator and its last heartbeat got through.")
	descCapacity   = desc("dfs_datanode_capacity_bytes", "Most bytes the node stores: --capacity, or the filesystem's size.")
	descUsed       = desc("dfs_datanode_used_bytes", "Bytes the stored chunks take on disk (data, digests and footers).")
	descFree       = desc("dfs_datanode_free_bytes", "Bytes the node can still accept: capacity left after stored and reserved bytes, bounded by the filesystem's free space less a reserve.")
	descChunks     = desc("dfs_datanode_chunks", "Chunks stored.")
	descCorrupt    = desc("dfs_datanode_corrupt_chunks", "Chunks found corrupt that are kept out of service until the coordinator has them deleted.")
	descUploads    = desc("dfs_datanode_prepared_upload_sessions", "Upload sessions prepared (space reserved) and not yet streamed.")
	descFrameBytes = desc("dfs_datanode_frame_bytes", "Bytes of chunk frames upload and repair streams hold in memory now (at most --frame-budget).")
	descFrameHigh  = desc("dfs_datanode_frame_bytes_high_water", "The most bytes of chunk frames held in memory at once since the node started.")
	descPeerConns  = desc("dfs_datanode_peer_connections", "Connections held to other datanodes and the coordinators (at most --max-peer-conns).")
)

// Describe implements prometheus.Collector.
func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRegistered, descCapacity, descUsed, descFree, descChunks, descCorrupt, descUploads, descPeerConns, descFrameBytes, descFrameHigh} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Before the node has opened its
// store only registration is reported.
func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	registered := 0.0
	if s.n.Readiness() == nil {
		registered = 1
	}
	gauge(descRegistered, registered)
	gauge(descPeerConns, float64(s.n.PeerConns()))
	inUse, high := s.n.FrameBytes()
	gauge(descFrameBytes, float64(inUse))
	gauge(descFrameHigh, float64(high))
	store := s.n.openedStore()
	if store == nil {
		return
	}
	u := store.Usage()
	gauge(descCapacity, float64(u.Capacity))
	gauge(descUsed, float64(u.Used))
	gauge(descFree, float64(u.Free))
	gauge(descChunks, float64(u.Chunks))
	gauge(descCorrupt, float64(len(store.Corrupt())))
	gauge(descUploads, float64(s.n.uploads.Len()))
}
