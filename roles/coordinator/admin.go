package coordinator

import (
	"context"
	"io"
	"strings"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// admin is the coordinator's part for operators: decommissioning, fsck,
// replicas readers report bad, and the cluster's state as ListNodes, the
// status page and the metrics show it.
type admin struct {
	cfg     Config
	log     zerolog.Logger
	store   meta.Namespace // fsck reads one file
	loader  meta.Loader    // or every file
	commits meta.Committer
	nodes   *registry
	locs    *locations
	heal    *heal
	repair  *repair.Controller
	gc      *gc.Collector
	deleter *chunkDeleter
	safe    *safeMode
	// checker has a datanode verify a copy.
	checker interface {
		checkCopy(ctx context.Context, node rpc.NodeID, cid rpc.ChunkID, who string) (corrupt, missing bool, err error)
	}
	events *events
	policy placement.Policy
}

// decommission starts (or, with cancel, stops) draining a datanode. The
// mark is durable: a restarted or newly elected coordinator keeps
// draining. Draining nodes get no new chunks, their copies stop counting
// toward replication (so repairs copy them elsewhere), and ListNodes shows
// the node as decommissioned once nothing depends on it.
func (a *admin) decommission(ctx context.Context, id rpc.NodeID, cancel bool) (nodeStatus, error) {
	if _, ok := a.nodeStatus(id); !ok {
		return nodeStatus{}, rpc.Errorf(rpc.NotFound, "datanode %s is not a member of this cluster", id)
	}
	txn := &meta.Txn{Drain: []rpc.NodeID{id}}
	if cancel {
		txn = &meta.Txn{Undrain: []rpc.NodeID{id}}
	}
	if err := a.commits.Commit(ctx, txn); err != nil {
		return nodeStatus{}, err
	}
	a.nodes.setDraining(id, !cancel)
	if cancel {
		a.heal.undrained(id)
		a.log.Info().Str("node_id", string(id)).Msg("decommission canceled")
		a.events.add("decommission", "decommission of datanode %s canceled", id.Short())
	} else {
		a.log.Info().Str("node_id", string(id)).Msg("decommissioning: draining the node")
		a.events.add("decommission", "decommissioning datanode %s: draining it", id.Short())
	}
	st, _ := a.nodeStatus(id)
	return st, nil
}

// nodeStatus returns one node's status with its health.
func (a *admin) nodeStatus(id rpc.NodeID) (nodeStatus, bool) {
	_, all := a.nodes.list()
	for _, n := range all {
		if n.id == id {
			return a.decorate(n), true
		}
	}
	return nodeStatus{}, false
}

// decorate adds the health scan's view of a node.
func (a *admin) decorate(n nodeStatus) nodeStatus {
	decommissioned, corrupt := a.heal.marks(n.id)
	n.decommissioned = n.draining && decommissioned
	n.corruptChunks = corrupt
	return n
}

// badReplica has the datanode verify a copy a reader found bad or
// missing; a copy it confirms corrupt is reported by the datanode and
// replaced, and one it does not hold is no longer counted, so the repair
// makes it again.
func (a *admin) badReplica(ctx context.Context, cid rpc.ChunkID, nid rpc.NodeID, reason string, missing bool) (bool, bool, error) {
	if _, _, ok := a.nodes.lookup(nid); !ok {
		return false, false, rpc.Errorf(rpc.NotFound, "datanode %s is not a member", nid)
	}
	a.log.Warn().Str("chunk_id", string(cid)).Str("node_id", string(nid)).Bool("missing", missing).
		Str("reason", truncate(reason, 200)).Msg("a reader reports a bad replica; verifying")
	return a.checker.checkCopy(ctx, nid, cid, "a reader")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// fsckChunk is a chunk with a problem: its good copies on live nodes
// that count (live), and the nodes with a corrupt or a dead copy.
type fsckChunk struct {
	index       uint32
	id          rpc.ChunkID
	replication uint32
	live        uint32
	corrupt     []rpc.NodeID
	dead        []rpc.NodeID
	repairing   bool
}

// fsckFile is a file with a problem, and its chunks that have one.
type fsckFile struct {
	path       rpc.Path
	size       int64
	unreadable bool
	chunks     []fsckChunk
}

// fsckSummary counts what fsck found, with the cluster's health.
type fsckSummary struct {
	files, chunks, healthy, under, unreadable int64
	health                                    clusterHealth
}

// fsck calls emit with every file below dir that has a chunk with a
// problem, then returns the summary. An error from emit ends it.
func (a *admin) fsck(ctx context.Context, dir rpc.Path, emit func(fsckFile) error) (fsckSummary, error) {
	nodes := a.nodes.infos()
	var sum fsckSummary
	check := func(f *meta.File) error {
		ff := a.checkFile(f, nodes)
		sum.files++
		sum.chunks += int64(len(f.Chunks))
		switch {
		case ff.unreadable:
			sum.unreadable++
		case len(ff.chunks) > 0:
			sum.under++
		default:
			sum.healthy++
			return nil
		}
		return emit(ff)
	}
	if f, err := a.store.Get(ctx, dir); err == nil && dir != "/" {
		if err := check(f); err != nil {
			return fsckSummary{}, err
		}
	} else {
		prefix := string(dir) + "/"
		if dir == "/" {
			prefix = "/"
		}
		err := a.loader.Files(ctx, func(f *meta.File) error {
			if !strings.HasPrefix(string(f.Path), prefix) {
				return nil
			}
			return check(f)
		})
		if err != nil {
			return fsckSummary{}, err
		}
	}
	sum.health = a.health()
	return sum, nil
}

// checkFile returns f's chunks with a problem: without a readable copy,
// with fewer counted copies than their replication, or with corrupt ones.
func (a *admin) checkFile(f *meta.File, nodes map[rpc.NodeID]nodeInfo) fsckFile {
	ff := fsckFile{path: f.Path, size: f.Size}
	for i, ch := range f.Chunks {
		fc := fsckChunk{index: uint32(i), id: ch.ID, replication: f.Replication, repairing: a.repair.Repairing(ch.ID)}
		readable := false
		for n, m := range a.locs.copies(ch.ID) {
			info := nodes[n]
			switch {
			case !m.matches(ch):
				fc.corrupt = append(fc.corrupt, n)
			case !info.live():
				fc.dead = append(fc.dead, n)
			default:
				readable = true
				if !info.draining {
					fc.live++
				}
			}
		}
		if !readable {
			ff.unreadable = true
		}
		if !readable || fc.live < f.Replication || len(fc.corrupt) > 0 {
			ff.chunks = append(ff.chunks, fc)
		}
	}
	return ff
}

// clusterHealth is the replication and collection state of the cluster,
// as ListNodes, fsck, the status page and the metrics show it.
type clusterHealth struct {
	Chunks, UnderReplicated, Missing, CorruptCopies int64
	RepairsInProgress, RepairsDone, BytesRepaired   int64
	PendingDeletions, ChunksDeleted, BytesReclaimed int64
	OrphansDeleted                                  int64
}

// health returns the cluster's health now.
func (a *admin) health() clusterHealth {
	rs := a.repair.Stats()
	hs := a.heal.stats()
	deleted, freed := a.deleter.stats()
	return clusterHealth{
		Chunks: hs.chunks, UnderReplicated: hs.under, Missing: hs.missing, CorruptCopies: hs.corrupt,
		RepairsInProgress: int64(rs.InProgress), RepairsDone: rs.Done, BytesRepaired: rs.BytesCopied,
		PendingDeletions: int64(a.gc.Pending()), ChunksDeleted: deleted, BytesReclaimed: freed,
		OrphansDeleted: hs.orphans,
	}
}

// readiness says whether the cluster can take writes, and if not why.
type readiness struct {
	Writable       bool
	Reason         string
	PlaceableNodes int
	Replication    int
}

// readiness says whether the term can take writes: out of safe mode, with
// at least the default replication of datanodes that placement would
// choose for a new chunk (its candidates: registered, not draining;
// healthy, with room for a chunk of the default size).
func (a *admin) readiness() readiness {
	r := readiness{Replication: a.cfg.Replication}
	cands := a.nodes.candidates()
	for _, n := range cands {
		if n.State == placement.Healthy && n.Free >= a.cfg.ChunkSize {
			r.PlaceableNodes++
		}
	}
	if on, status := a.safe.Status(); on {
		r.Reason = "coordinator in safe mode: " + status
		return r
	}
	if _, err := placement.Place(a.policy, cands, a.cfg.Replication, a.cfg.ChunkSize, nil); err != nil {
		r.Reason = "cannot take writes: " + err.Error()
		return r
	}
	r.Writable = true
	return r
}

// clusterView is the cluster as ListNodes shows it.
type clusterView struct {
	version        uint64
	nodes          []nodeStatus // with the health scan's marks
	safeMode       bool
	safeModeStatus string
	health         clusterHealth
	readiness      readiness
}

// view returns the cluster as ListNodes shows it.
func (a *admin) view() clusterView {
	v := clusterView{}
	v.version, v.nodes = a.nodes.list()
	for i, n := range v.nodes {
		v.nodes[i] = a.decorate(n)
	}
	v.safeMode, v.safeModeStatus = a.safe.Status()
	v.health = a.health()
	v.readiness = a.readiness()
	return v
}

// backup writes a consistent snapshot of the metadata to w, then
// flushes w if it can (a Flush() error method), and returns how many
// records it wrote.
func (c *Coordinator) backup(ctx context.Context, w io.Writer) (uint64, error) {
	n, err := meta.Backup(ctx, c.store, w, meta.BackupInfo{ClusterID: c.store.ClusterID(), Created: c.clock.Now(), Store: c.name})
	if f, ok := w.(interface{ Flush() error }); ok && err == nil {
		err = f.Flush()
	}
	if err != nil {
		return 0, rpc.Errorf(rpc.Internal, "backup: %w", err)
	}
	c.log.Info().Uint64("records", n).Msg("backup streamed")
	return n, nil
}
