package coordinator

import (
	"context"
	"strings"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Decommission starts (or, with cancel, stops) draining a datanode. The
// mark is durable: a restarted or newly elected coordinator keeps
// draining. Draining nodes get no new chunks, their copies stop counting
// toward replication (so repairs copy them elsewhere), and ListNodes shows
// the node as decommissioned once nothing depends on it.
func (c *Coordinator) Decommission(ctx context.Context, req *dfspb.DecommissionRequest) (*dfspb.DecommissionResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	_, ok := t.nodeStatus(id)
	if !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "datanode %s is not a member of this cluster", id))
	}
	txn := &meta.Txn{Drain: []rpc.NodeID{id}}
	if req.Cancel {
		txn = &meta.Txn{Undrain: []rpc.NodeID{id}}
	}
	if err := t.commit(ctx, txn); err != nil {
		return nil, rpc.ToStatus(err)
	}
	t.nodes.setDraining(id, !req.Cancel)
	if req.Cancel {
		t.health.mu.Lock()
		delete(t.health.decommissioned, id)
		t.health.mu.Unlock()
		t.log.Info().Str("node_id", string(id)).Msg("decommission canceled")
		c.events.add("decommission", "decommission of datanode %s canceled", id.Short())
	} else {
		t.log.Info().Str("node_id", string(id)).Msg("decommissioning: draining the node")
		c.events.add("decommission", "decommissioning datanode %s: draining it", id.Short())
	}
	status, _ := t.nodeStatus(id)
	return &dfspb.DecommissionResponse{Node: status}, nil
}

// nodeStatus returns one node's status with its health.
func (t *term) nodeStatus(id rpc.NodeID) (*dfspb.NodeStatus, bool) {
	_, all := t.nodes.list()
	for _, n := range all {
		if n.NodeId == string(id) {
			t.decorate(n)
			return n, true
		}
	}
	return nil, false
}

// decorate adds the health scan's view of a node.
func (t *term) decorate(n *dfspb.NodeStatus) {
	t.health.mu.Lock()
	defer t.health.mu.Unlock()
	n.Decommissioned = n.Draining && t.health.decommissioned[rpc.NodeID(n.NodeId)]
	n.CorruptChunks = t.health.corruptOn[rpc.NodeID(n.NodeId)]
}

// ReportBadReplica has the datanode verify a copy a reader found bad or
// missing; a copy it confirms corrupt is reported by the datanode and
// replaced, and one it does not hold is no longer counted, so the repair
// makes it again.
func (c *Coordinator) ReportBadReplica(ctx context.Context, req *dfspb.ReportBadReplicaRequest) (*dfspb.ReportBadReplicaResponse, error) {
	t, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	cid, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	nid, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if _, _, ok := t.nodes.lookup(nid); !ok {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "datanode %s is not a member", nid))
	}
	t.log.Warn().Str("chunk_id", string(cid)).Str("node_id", string(nid)).Bool("missing", req.Missing).
		Str("reason", truncate(req.Reason, 200)).Msg("a reader reports a bad replica; verifying")
	corrupt, missing, err := t.checkCopy(ctx, nid, cid, "a reader")
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ReportBadReplicaResponse{Corrupt: corrupt, Missing: missing}, nil
}

// checkCopy has node verify its copy of chunk cid (VerifyChunk, within
// --rpc-timeout) after who found it bad or missing. A corrupt copy is
// counted corrupt at once (the node's own report follows). A copy the
// node does not hold is dropped from the locations, so the repair makes
// it again, but only while a committed file still references the chunk:
// a chunk whose file was removed or replaced is meant to go, and its
// absence says nothing. missing reports a copy the node does not hold
// although a file needs it (dropped now, or before by the node's report).
func (t *term) checkCopy(ctx context.Context, node rpc.NodeID, cid rpc.ChunkID, who string) (corrupt, missing bool, err error) {
	addr, _, ok := t.nodes.lookup(node)
	if !ok {
		return false, false, rpc.Errorf(rpc.NotFound, "datanode %s is not a member", node)
	}
	cc, err := t.c.pool.Get(addr)
	if err != nil {
		return false, false, err
	}
	// Only a copy listed before the node answers may be dropped for its
	// answer: one counted meanwhile (a repair copy landing there) is new.
	_, listed := t.locs.copies(cid)[node]
	vctx, cancel := context.WithTimeout(ctx, t.c.cfg.RPCTimeout)
	defer cancel()
	resp, err := dfspb.NewDataNodeClient(cc).VerifyChunk(vctx, &dfspb.VerifyChunkRequest{ChunkId: string(cid)})
	if err != nil {
		return false, false, rpc.FromStatus(err)
	}
	switch {
	case resp.Corrupt:
		t.locs.report(node, false, nil, nil, []rpc.ChunkID{cid}, t.queuedOn(node))
		return true, false, nil
	case resp.Present || !t.refs.has(cid):
		return false, false, nil
	}
	if listed && t.locs.lost(node, cid) { // else dropped already, by the node's own report
		t.log.Warn().Str("chunk_id", string(cid)).Str("node_id", string(node)).Str("found_by", who).
			Msg("a copy is missing from its datanode; no longer counted, to be made again")
		t.c.events.add("missing", "datanode %s lost its copy of chunk %s (found by %s)", node.Short(), cid, who)
	}
	return false, true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Fsck streams every file below a path that has a chunk with a problem,
// then a summary.
func (c *Coordinator) Fsck(req *dfspb.FsckRequest, stream dfspb.Coordinator_FsckServer) error {
	ctx := stream.Context()
	t, err := c.leader(ctx)
	if err != nil {
		return err
	}
	dir, err := rpc.ParseDir(req.Path)
	if err != nil {
		return rpc.ToStatus(err)
	}
	nodes := t.nodes.infos()
	sum := &dfspb.FsckSummary{}
	check := func(f *meta.File) error {
		sum.Files++
		sum.Chunks += int64(len(f.Chunks))
		ff := &dfspb.FsckFile{Path: string(f.Path), Size: f.Size}
		for i, ch := range f.Chunks {
			fc := &dfspb.FsckChunk{Index: uint32(i), ChunkId: string(ch.ID), Replication: f.Replication, Repairing: t.repair.Repairing(ch.ID)}
			readable := false
			for n, m := range t.locs.copies(ch.ID) {
				info := nodes[n]
				switch {
				case !m.matches(ch):
					fc.CorruptNodes = append(fc.CorruptNodes, string(n))
				case !info.live():
					fc.DeadNodes = append(fc.DeadNodes, string(n))
				default:
					readable = true
					if !info.draining {
						fc.Live++
					}
				}
			}
			if !readable {
				ff.Unreadable = true
			}
			if !readable || fc.Live < f.Replication || len(fc.CorruptNodes) > 0 {
				ff.Chunks = append(ff.Chunks, fc)
			}
		}
		switch {
		case ff.Unreadable:
			sum.UnreadableFiles++
		case len(ff.Chunks) > 0:
			sum.UnderReplicatedFiles++
		default:
			sum.HealthyFiles++
			return nil
		}
		return stream.Send(&dfspb.FsckReport{Report: &dfspb.FsckReport_File{File: ff}})
	}
	if f, err := t.store.Get(ctx, dir); err == nil && dir != "/" {
		err = check(f)
		if err != nil {
			return rpc.ToStatus(err)
		}
	} else {
		prefix := string(dir) + "/"
		if dir == "/" {
			prefix = "/"
		}
		err := t.store.Files(ctx, func(f *meta.File) error {
			if !strings.HasPrefix(string(f.Path), prefix) {
				return nil
			}
			return check(f)
		})
		if err != nil {
			return rpc.ToStatus(err)
		}
	}
	sum.Health = t.clusterHealth()
	return stream.Send(&dfspb.FsckReport{Report: &dfspb.FsckReport_Summary{Summary: sum}})
}
