package client

import (
	"io/fs"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// The SDK's own types. The wire's protobuf messages stay behind the SDK's
// edge: the unexported from* functions below convert them.

// FileInfo describes a file, or a directory (IsDir, with only Path,
// Modified, Owner, Group and Mode set), as the coordinator holds it.
type FileInfo struct {
	// Path is the absolute path.
	Path string
	// IsDir is true for a directory.
	IsDir bool
	// Size is the file's length in bytes.
	Size int64
	// SHA256 is the digest of the whole file.
	SHA256 []byte
	// ChunkSize is the size of every chunk but the last.
	ChunkSize int64
	// Replication is how many copies of each chunk the cluster keeps.
	Replication uint32
	// Modified is when this version was committed (UTC, to the
	// millisecond).
	Modified time.Time
	// Version grows with each commit to the path; conditional calls
	// (CreateOptions.IfVersion, CopyOptions.IfVersion) name it.
	Version uint64
	// ChunkCount is the number of chunks of the file.
	ChunkCount uint32
	// Chunks is the chunk map with the replicas' locations, when the call
	// read it (Stat, Put, Get); len(Chunks) < ChunkCount when only part of
	// it was read.
	Chunks []ChunkInfo
	// Session is the ID of the upload session that committed this
	// version.
	Session string
	// Owner and Group own the file or directory; Mode holds its
	// permission bits (Mode.Perm()), fs.ModeSticky, and fs.ModeDir for a
	// directory. A coordinator older than permissions sends none: Owner
	// is then "".
	Owner, Group string
	Mode         fs.FileMode
	// Metadata is what the writer stored with the file (see
	// CreateOptions.Metadata); nil for none and for directories.
	Metadata map[string]string
}

// ChunkInfo is one chunk of a file and where its copies are.
type ChunkInfo struct {
	// Index is the chunk's place in the file, from 0.
	Index uint32
	// ID names the chunk on the datanodes.
	ID string
	// Offset is where the chunk starts in the file.
	Offset int64
	// Size is the chunk's length in bytes.
	Size int64
	// Digest is the chunk's SHA-256.
	Digest []byte
	// FrameSize is the size of each frame of the chunk's stream.
	FrameSize int64
	// Replicas are the datanodes that hold a copy.
	Replicas []Replica
}

// Replica is one copy of a chunk.
type Replica struct {
	// Node is the datanode's ID.
	Node string
	// Addr is the datanode's address.
	Addr string
	// State is the datanode's state as the coordinator sees it.
	State NodeState
}

// NodeState is a datanode's state as the coordinator sees it.
type NodeState string

// The datanode states.
const (
	// NodeHealthy is a datanode that sends heartbeats.
	NodeHealthy NodeState = "healthy"
	// NodeSuspect is a datanode whose heartbeats stopped lately.
	NodeSuspect NodeState = "suspect"
	// NodeDead is a datanode whose heartbeats stopped long ago; its
	// chunks are copied elsewhere.
	NodeDead NodeState = "dead"
)

// DirEntry is one entry of a listing: a file or a directory.
type DirEntry struct {
	// Path is the entry's absolute path; a directory's has no trailing
	// slash.
	Path string
	// IsDir is true for a directory.
	IsDir bool
	// Size, Chunks and Replication describe a file; they are zero for a
	// directory. Modified (UTC, to the millisecond) is when the file's
	// version was committed, or when the directory was made.
	Size        int64
	Chunks      uint32
	Replication uint32
	Modified    time.Time
	// Owner, Group and Mode are as FileInfo's.
	Owner, Group string
	Mode         fs.FileMode
	// Metadata is the file's, as FileInfo's, in a listing asked for it
	// (ListOptions.Metadata).
	Metadata map[string]string
}

// NodeStatus is one datanode as the coordinator sees it.
type NodeStatus struct {
	// ID is the datanode's ID; Addr its address.
	ID   string
	Addr string
	// State is healthy, suspect or dead.
	State NodeState
	// Capacity, Used and Free are the node's disk space in bytes.
	Capacity, Used, Free int64
	// Chunks is how many chunks the node holds.
	Chunks int64
	// LastHeartbeat is when the node was last heard from (UTC).
	LastHeartbeat time.Time
	// Draining is set while the node is being decommissioned;
	// Decommissioned once none of its chunks needs it any more.
	Draining, Decommissioned bool
	// CorruptChunks is how many of its copies failed a check.
	CorruptChunks int64
	// ConflictAddr is another address a registration with this node's ID
	// came from lately, refused because the node was alive here.
	ConflictAddr string
	// DiskError is why the node takes no new chunks (its disk is not
	// writable), or "".
	DiskError string
	// FailingUntil, when not zero, is until when the coordinator places
	// new chunks on the node last, after reports of failed streams.
	FailingUntil time.Time
}

// ClusterStatus is what Nodes returns: the datanodes, and the state of
// the coordinator that answered.
type ClusterStatus struct {
	// Nodes are the datanodes.
	Nodes []NodeStatus
	// Leader is the address of the coordinator that answered.
	Leader string
	// SafeMode is set while the coordinator waits for the datanodes to
	// report the chunks; SafeModeStatus says how far it got.
	SafeMode       bool
	SafeModeStatus string
	// WritesRefused, when not "", says why the cluster refuses new files
	// (too few datanodes to place a chunk's copies, say).
	WritesRefused string
	// Health sums the chunks' state, when the coordinator reports it.
	Health *Health
}

// Health sums the state of the cluster's chunks and of its repairs.
type Health struct {
	// Chunks is the number of chunks; UnderReplicated those with fewer
	// live copies than their replication, Missing those with none.
	Chunks, UnderReplicated, Missing int64
	// CorruptCopies is the number of copies that failed a check.
	CorruptCopies int64
	// RepairsInProgress and RepairsDone count copies made to restore the
	// replication; BytesRepaired their bytes.
	RepairsInProgress, RepairsDone, BytesRepaired int64
	// PendingDeletions, ChunksDeleted and BytesReclaimed count the
	// deletion of chunks no file uses; OrphansDeleted those no file ever
	// committed.
	PendingDeletions, ChunksDeleted, BytesReclaimed, OrphansDeleted int64
}

// FsckFile is a file that fsck found a problem with.
type FsckFile struct {
	// Path and Size are the file's.
	Path string
	Size int64
	// Unreadable is set when a chunk has no live intact copy.
	Unreadable bool
	// Chunks are the file's chunks with a problem.
	Chunks []FsckChunk
}

// FsckChunk is a chunk with fewer live copies than its replication.
type FsckChunk struct {
	// Index is the chunk's place in the file; ID its name.
	Index uint32
	ID    string
	// Replication is the copies wanted; Live those on live nodes.
	Replication, Live uint32
	// CorruptNodes and DeadNodes hold the bad copies.
	CorruptNodes, DeadNodes []string
	// Repairing is set while a copy is being made.
	Repairing bool
}

// FsckSummary sums an fsck.
type FsckSummary struct {
	// Files and Chunks are how many were checked.
	Files, Chunks int64
	// HealthyFiles, UnderReplicatedFiles and UnreadableFiles split them.
	HealthyFiles, UnderReplicatedFiles, UnreadableFiles int64
	// Health is the cluster's, when the coordinator reports it.
	Health *Health
}

// Usage is what lies below a path: the bytes and files, and the
// directories.
type Usage struct {
	Bytes, Files, Dirs int64
}

// fromFileInfo converts a file's metadata from the wire.
func fromFileInfo(p *dfspb.FileInfo) *FileInfo {
	if p == nil {
		return nil
	}
	fi := &FileInfo{
		Path: p.Path, IsDir: p.IsDir, Size: p.Size, SHA256: p.Sha256, ChunkSize: p.ChunkSize, Replication: p.Replication,
		Modified: time.UnixMilli(p.ModifiedUnixMs).UTC(), Version: p.Version, ChunkCount: p.ChunkCount, Session: p.SessionId,
		Owner: p.Owner, Group: p.Group, Mode: fromMode(p.Mode, p.IsDir), Metadata: p.Metadata,
	}
	if len(p.Chunks) > 0 {
		fi.Chunks = make([]ChunkInfo, 0, len(p.Chunks))
	}
	for _, ch := range p.Chunks {
		ci := ChunkInfo{Index: ch.Index, ID: ch.ChunkId, Offset: ch.Offset, Size: ch.Size, Digest: ch.Digest, FrameSize: ch.FrameSize}
		for _, r := range ch.Replicas {
			ci.Replicas = append(ci.Replicas, Replica{Node: r.NodeId, Addr: r.Addr, State: fromNodeState(r.State)})
		}
		fi.Chunks = append(fi.Chunks, ci)
	}
	return fi
}

// fromNodeState converts a node state from the wire.
func fromNodeState(s dfspb.NodeState) NodeState {
	return NodeState(stateFromProto(s).String())
}

// modeSticky is the sticky bit on the wire (POSIX's).
const modeSticky = 0o1000

// fromMode converts a wire mode (POSIX permission bits and the sticky
// bit) to an fs.FileMode.
func fromMode(m uint32, dir bool) fs.FileMode {
	mode := fs.FileMode(m) & fs.ModePerm
	if m&modeSticky != 0 {
		mode |= fs.ModeSticky
	}
	if dir {
		mode |= fs.ModeDir
	}
	return mode
}

// toMode converts an fs.FileMode to the wire's mode: its permission bits
// and sticky bit; any other bit but fs.ModeDir is refused.
func toMode(mode fs.FileMode) (uint32, error) {
	if mode&^(fs.ModePerm|fs.ModeSticky|fs.ModeDir) != 0 {
		return 0, rpc.Errorf(rpc.Invalid, "mode %s: dfs keeps only the permission bits and the sticky bit", mode)
	}
	m := uint32(mode.Perm())
	if mode&fs.ModeSticky != 0 {
		m |= modeSticky
	}
	return m, nil
}

// fromNodeStatus converts one datanode's status from the wire.
func fromNodeStatus(n *dfspb.NodeStatus) NodeStatus {
	s := NodeStatus{
		ID: n.NodeId, Addr: n.Addr, State: fromNodeState(n.State), Capacity: n.Capacity, Used: n.Used, Free: n.Free,
		Chunks: n.ChunkCount, LastHeartbeat: time.UnixMilli(n.LastHeartbeatUnixMs).UTC(), Draining: n.Draining,
		Decommissioned: n.Decommissioned, CorruptChunks: n.CorruptChunks, ConflictAddr: n.ConflictAddr, DiskError: n.DiskError,
	}
	if n.FailingUntilUnixMs > 0 {
		s.FailingUntil = time.UnixMilli(n.FailingUntilUnixMs).UTC()
	}
	return s
}

// fromListNodes converts ListNodes' answer.
func fromListNodes(r *dfspb.ListNodesResponse) *ClusterStatus {
	cs := &ClusterStatus{Leader: r.Leader, SafeMode: r.SafeMode, SafeModeStatus: r.SafeModeStatus, Health: fromHealth(r.Health)}
	if rd := r.Readiness; rd != nil && !rd.Writable {
		cs.WritesRefused = rd.Reason
		if cs.WritesRefused == "" {
			cs.WritesRefused = "no reason given"
		}
	}
	cs.Nodes = make([]NodeStatus, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		cs.Nodes = append(cs.Nodes, fromNodeStatus(n))
	}
	return cs
}

// fromHealth converts the cluster's health from the wire; nil stays nil.
func fromHealth(h *dfspb.ClusterHealth) *Health {
	if h == nil {
		return nil
	}
	return &Health{
		Chunks: h.Chunks, UnderReplicated: h.UnderReplicated, Missing: h.Missing, CorruptCopies: h.CorruptCopies,
		RepairsInProgress: h.RepairsInProgress, RepairsDone: h.RepairsDone, BytesRepaired: h.BytesRepaired,
		PendingDeletions: h.PendingDeletions, ChunksDeleted: h.ChunksDeleted, BytesReclaimed: h.BytesReclaimed, OrphansDeleted: h.OrphansDeleted,
	}
}

// fromFsckFile converts one file of an fsck from the wire.
func fromFsckFile(f *dfspb.FsckFile) FsckFile {
	out := FsckFile{Path: f.Path, Size: f.Size, Unreadable: f.Unreadable}
	for _, c := range f.Chunks {
		out.Chunks = append(out.Chunks, FsckChunk{Index: c.Index, ID: c.ChunkId, Replication: c.Replication, Live: c.Live,
			CorruptNodes: c.CorruptNodes, DeadNodes: c.DeadNodes, Repairing: c.Repairing})
	}
	return out
}

// fromFsckSummary converts an fsck's summary from the wire.
func fromFsckSummary(s *dfspb.FsckSummary) *FsckSummary {
	return &FsckSummary{Files: s.Files, Chunks: s.Chunks, HealthyFiles: s.HealthyFiles, UnderReplicatedFiles: s.UnderReplicatedFiles,
		UnreadableFiles: s.UnreadableFiles, Health: fromHealth(s.Health)}
}

// Token is a bearer token CreateToken made.
type Token struct {
	// Token is what its holder presents (Config.Token, DFS_TOKEN).
	Token string
	// User and Groups are who the holder is.
	User   string
	Groups []string
	// Expires is when the token ends.
	Expires time.Time
	// ID names the token in the coordinator's log.
	ID string
}
