// Package datanodesim runs many simulated datanodes in one process, for
// measuring a real coordinator at scale.
//
// Each simulated node has its own node ID and its own gRPC server on a
// 127.0.0.1 port, and speaks the real protocol to the coordinator over its
// own connection: it registers, heartbeats every HeartbeatInterval, sends
// its full inventory in pages after every registration (as
// roles/datanode/report.go does: pages of 5000, the first one full, a
// failed page starting the inventory over after a backoff), registers
// again when the coordinator no longer knows it, and reports the chunks it
// is told to delete or to copy. It stores no bytes: StatChunks,
// VerifyChunk, BulkDeleteChunk and ReplicateChunk are answered from
// memory, and uploads and downloads are refused.
//
// The fleet holds Copies copies of each of Chunks chunks, placed round
// robin: copy j of chunk i is on node (i+j) mod Nodes. Chunk i's attributes
// come from Config.Chunk, so the fleet holds exactly what a synthetic
// namespace (meta.Synth) committed.
package datanodesim

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Chunk is a chunk as a datanode reports it.
type Chunk struct {
	ID        rpc.ChunkID
	Size      int64
	FrameSize int64
	Digest    []byte
}

// Config describes a fleet.
type Config struct {
	// Coordinator is the address of the coordinator.
	Coordinator string
	// Nodes is the number of simulated datanodes.
	Nodes int
	// Chunks is the number of chunks the fleet holds, Chunk(i) chunk i.
	Chunks int
	Chunk  func(i int) Chunk
	// Copies is the number of copies of each chunk (at most Nodes).
	Copies int
	// HeartbeatInterval is the pause between a node's heartbeats.
	HeartbeatInterval time.Duration
	// RPCTimeout bounds each call to the coordinator, as the datanode's
	// --rpc-timeout does.
	RPCTimeout time.Duration
	// Capacity is each node's disk size; its used space is what it holds.
	Capacity int64
	// Seed makes the node IDs: the same seed and index give the same ID.
	Seed string
}

// DefaultConfig returns a fleet of 100 nodes holding nothing, with the
// datanode's timeouts and a 1 s heartbeat.
func DefaultConfig() Config {
	return Config{
		Nodes: 100, Copies: 3, HeartbeatInterval: time.Second, RPCTimeout: 10 * time.Second,
		Capacity: 4 << 40, Seed: "dfs-datanodesim",
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Coordinator == "":
		return rpc.Errorf(rpc.Invalid, "datanodesim: no coordinator address")
	case c.Nodes < 1:
		return rpc.Errorf(rpc.Invalid, "datanodesim: %d nodes", c.Nodes)
	case c.Chunks < 0 || c.Chunks > 0 && c.Chunk == nil:
		return rpc.Errorf(rpc.Invalid, "datanodesim: %d chunks and no Chunk function", c.Chunks)
	case c.Copies < 1 || c.Copies > c.Nodes:
		return rpc.Errorf(rpc.Invalid, "datanodesim: %d copies on %d nodes", c.Copies, c.Nodes)
	case c.HeartbeatInterval <= 0 || c.RPCTimeout <= 0:
		return rpc.Errorf(rpc.Invalid, "datanodesim: heartbeat interval and rpc timeout must be positive")
	case c.Capacity <= 0:
		return rpc.Errorf(rpc.Invalid, "datanodesim: capacity must be positive")
	}
	return nil
}

// maxReport bounds the chunks of one ReportChunks call, as the datanode's.
const maxReport = 5000

// Fleet is a set of simulated datanodes.
type Fleet struct {
	cfg   Config
	log   zerolog.Logger
	clock clockwork.Clock
	nodes []*node
	// index maps a chunk to its number, for the calls that name chunks;
	// chunks are cfg.Chunk's answers, made once (a datanode sends its
	// inventory from memory: making each chunk's ID again for every page
	// sent would cost the simulator, on the coordinator's machine, more
	// than applying it costs the coordinator).
	index  map[chunkKey]int32
	chunks []Chunk

	mu      sync.Mutex
	beats   []time.Duration // heartbeat latencies since the last Reset
	reports []time.Duration // report call latencies since the last Reset
	stats   Stats
	samples int // latencies recorded past maxSamples
}

// chunkKey is a chunk ID in 20 bytes.
type chunkKey struct {
	hash  [16]byte
	index uint32
}

func keyOf(id rpc.ChunkID) (chunkKey, bool) {
	var k chunkKey
	if _, err := rpc.ParseChunkID(string(id)); err != nil {
		return k, false
	}
	if _, err := hex.Decode(k.hash[:], []byte(id.Hash())); err != nil {
		return k, false
	}
	k.index = id.Index()
	return k, true
}

// Stats counts what the fleet did since it started (counters) or since
// the last Reset (latencies).
type Stats struct {
	Registrations   int // successful registrations
	RegisterErrors  int
	Heartbeats      int
	HeartbeatErrors int
	// Inventories counts full inventories sent whole; InventoryRestarts
	// those started over after a failed page; TurnsRefused the first
	// pages the coordinator had no turn for yet (sent again when it said).
	Inventories       int
	InventoryRestarts int
	TurnsRefused      int
	ReportErrors      int
	// Current is how many nodes have sent their whole inventory since
	// they last registered.
	Current int
	// HeartbeatP50, HeartbeatP99 and HeartbeatMax are heartbeat round
	// trips; ReportP99 and ReportMax those of report pages.
	HeartbeatP50, HeartbeatP99, HeartbeatMax time.Duration
	ReportP99, ReportMax                     time.Duration
}

// New builds a fleet; it has no side effects until Run, except computing
// the chunk index (O(Chunks) time and about 150 bytes a chunk).
func New(cfg Config, log zerolog.Logger) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, log: log, clock: clockwork.NewRealClock(), index: make(map[chunkKey]int32, cfg.Chunks)}
	f.chunks = make([]Chunk, cfg.Chunks)
	for i := range cfg.Chunks {
		c := cfg.Chunk(i)
		k, ok := keyOf(c.ID)
		if !ok {
			return nil, rpc.Errorf(rpc.Invalid, "datanodesim: chunk %d has a bad ID %q", i, c.ID)
		}
		f.index[k] = int32(i)
		f.chunks[i] = c
	}
	for k := range cfg.Nodes {
		id := rpc.NodeID(uuid.NewSHA1(uuid.NameSpaceOID, []byte(cfg.Seed+"/"+strconv.Itoa(k))).String())
		f.nodes = append(f.nodes, newNode(f, k, id))
	}
	return f, nil
}

// IDs returns the node IDs in order.
func (f *Fleet) IDs() []rpc.NodeID {
	out := make([]rpc.NodeID, len(f.nodes))
	for i, n := range f.nodes {
		out[i] = n.id
	}
	return out
}

// lookup returns node's copy of chunk id, if node is in the fleet and
// holds one.
func (f *Fleet) lookup(node rpc.NodeID, id rpc.ChunkID) (Chunk, bool) {
	for _, n := range f.nodes {
		if n.id == node {
			return n.lookup(id)
		}
	}
	return Chunk{}, false
}

// Run starts every node's server and loops and blocks until ctx ends,
// then stops them. It returns an error only if a node could not listen.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	servers := make([]*grpc.Server, 0, len(f.nodes))
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	for _, n := range f.nodes {
		lis, err := rpc.Listen("127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("datanodesim: %w", err)
		}
		n.addr = lis.Addr().String()
		srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
		dfspb.RegisterDataNodeServer(srv, n)
		servers = append(servers, srv)
		wg.Go(func() { srv.Serve(lis) })
	}
	for _, n := range f.nodes {
		cc, err := rpc.Dial(f.cfg.Coordinator)
		if err != nil {
			return err
		}
		defer cc.Close()
		n.coord = dfspb.NewCoordinatorClient(cc)
		wg.Go(func() { n.heartbeatLoop(ctx) })
		wg.Go(func() { n.reportLoop(ctx) })
	}
	f.log.Info().Int("nodes", len(f.nodes)).Int("chunks", f.cfg.Chunks).Str("coordinator", f.cfg.Coordinator).Msg("simulated datanodes started")
	<-ctx.Done()
	return nil
}

// Stats returns the counters and the latencies since the last Reset.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	s := f.stats
	beats, reports := slices.Clone(f.beats), slices.Clone(f.reports)
	f.mu.Unlock()
	s.HeartbeatP50, s.HeartbeatP99, s.HeartbeatMax = quantile(beats, 0.50), quantile(beats, 0.99), quantile(beats, 1)
	s.ReportP99, s.ReportMax = quantile(reports, 0.99), quantile(reports, 1)
	for _, n := range f.nodes {
		if n.current() {
			s.Current++
		}
	}
	return s
}

// Reset forgets the latencies recorded so far.
func (f *Fleet) Reset() {
	f.mu.Lock()
	f.beats, f.reports = nil, nil
	f.mu.Unlock()
}

// maxSamples bounds the latencies kept; later ones replace earlier ones
// in turn.
const maxSamples = 1 << 20

func (f *Fleet) record(into *[]time.Duration, d time.Duration, count func(s *Stats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d >= 0 {
		if len(*into) < maxSamples {
			*into = append(*into, d)
		} else {
			(*into)[f.samples%maxSamples] = d
			f.samples++
		}
	}
	count(&f.stats)
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q * float64(len(ds)-1))
	return ds[i]
}
