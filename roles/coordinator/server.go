package coordinator

import (
	"context"
	"encoding/base64"
	"io"
	"math"
	"time"

	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// server is the coordinator's gRPC adapter, and the only code of the
// coordinator that sees wire types: each method checks that this
// coordinator leads, decodes the request into rpc and meta types once,
// calls the term's part that owns the behaviour, encodes the reply, and
// turns an error into a gRPC status (rpc.ToStatus).
type server struct {
	dfspb.UnimplementedCoordinatorServer
	c *Coordinator
}

var _ dfspb.CoordinatorServer = (*server)(nil)

// Server returns the coordinator's gRPC service, for in-process callers
// such as tests; Run serves the same one.
func (c *Coordinator) Server() dfspb.CoordinatorServer { return &server{c: c} }

// term returns the leading term, or the not-serving status a standby
// answers with.
func (s *server) term(ctx context.Context) (*term, error) {
	t, err := s.c.leader(ctx)
	return t, rpc.ToStatus(err)
}

func (s *server) UploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	p, err := rpc.ParsePath(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	cond, err := preconditionOf(req.IfNotExist, req.IfVersion)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	o, err := t.uploads.begin(ctx, uploadRequest{path: p, size: req.Size, chunkSize: req.ChunkSize, replication: int(req.Replication), cond: cond})
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp := &dfspb.UploadFileResponse{SessionId: string(o.session), ChunkSize: o.chunkSize, Replication: uint32(o.replication),
		MaxChunks: uint32(o.maxChunks), SessionTimeoutMs: o.timeout.Milliseconds(), ExpiresUnixMs: o.expires.UnixMilli()}
	for _, p := range o.plans {
		resp.Chunks = append(resp.Chunks, planToPB(p, s.c.chunkKeys))
	}
	return resp, nil
}

func (s *server) AllocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	p, err := t.uploads.allocate(ctx, id, req.Index, req.ExcludeNodeIds)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.AllocateChunkResponse{Chunk: planToPB(p, s.c.chunkKeys)}, nil
}

func (s *server) UploadReceipts(ctx context.Context, req *dfspb.UploadReceiptsRequest) (*dfspb.UploadReceiptsResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	expires, err := t.uploads.receipts(ctx, id, receiptsFromPB(req.Chunks))
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.UploadReceiptsResponse{ExpiresUnixMs: expires.UnixMilli()}, nil
}

func (s *server) ConfirmUpload(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	cond, err := preconditionOf(req.IfNotExist, req.IfVersion)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	c, err := t.uploads.confirm(ctx, confirmation{session: id, size: req.Size, sha256: req.Sha256, chunks: req.ChunkCount,
		receipts: receiptsFromPB(req.Chunks), cond: cond, metadata: req.Metadata})
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if c.missing {
		return &dfspb.ConfirmUploadResponse{MissingReceipts: true, FirstMissing: c.firstMissing}, nil
	}
	return &dfspb.ConfirmUploadResponse{File: pageToPB(t.namespace.page(c.file, 0, min(len(c.file.Chunks), maxChunkPage)), s.c.chunkKeys)}, nil
}

func (s *server) AbortUpload(ctx context.Context, req *dfspb.AbortUploadRequest) (*dfspb.AbortUploadResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.uploads.end(ctx, id); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.AbortUploadResponse{}, nil
}

func (s *server) DownloadFile(ctx context.Context, req *dfspb.DownloadFileRequest) (*dfspb.DownloadFileResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.download(ctx, t, req, req.PageSize, false)
	return resp, rpc.ToStatus(err)
}

// DownloadFiles answers each file as DownloadFile would, with pages of at
// most rpc.MaxDownloadFilesPage chunks, which do not put a file in the
// cache of large files. A file the coordinator cannot serve yet (safe
// mode) is answered not_serving: the client asks for it again with
// DownloadFile, which waits as for any NotServing answer, while the
// other files of the call are read.
func (s *server) DownloadFiles(ctx context.Context, req *dfspb.DownloadFilesRequest) (*dfspb.DownloadFilesResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Files) == 0 || len(req.Files) > rpc.MaxDownloadFiles {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "DownloadFiles names %d files; name 1 to %d", len(req.Files), rpc.MaxDownloadFiles))
	}
	resp := &dfspb.DownloadFilesResponse{Files: make([]*dfspb.FileDownload, len(req.Files))}
	for i, f := range req.Files {
		size := f.PageSize
		if size == 0 || size > rpc.MaxDownloadFilesPage {
			size = rpc.MaxDownloadFilesPage
		}
		d, err := s.download(ctx, t, f, size, true)
		if err != nil {
			code, msg := rpc.CodeOf(err)
			_, notServing := rpc.NotServingOf(err)
			resp.Files[i] = &dfspb.FileDownload{Code: code, Message: msg, NotServing: notServing}
			continue
		}
		resp.Files[i] = &dfspb.FileDownload{Download: d}
	}
	return resp, nil
}

// download is DownloadFile of t's namespace, with pages of size chunks,
// and for DownloadFiles (many) pages that do not fill the cache.
func (s *server) download(ctx context.Context, t *term, req *dfspb.DownloadFileRequest, size uint32, many bool) (*dfspb.DownloadFileResponse, error) {
	pr, err := pageRequestOf(req.Path, req.FirstChunk, size, req.Version, req.SessionId)
	if err != nil {
		return nil, err
	}
	pr.uncached = many
	p, err := t.namespace.download(ctx, pr)
	if d := t.namespace.dirInstead(ctx, pr, err); d != nil {
		err = rpc.Errorf(rpc.Invalid, "%s is a directory", d.Path)
	}
	if err != nil {
		return nil, err
	}
	return &dfspb.DownloadFileResponse{File: pageToPB(p, s.c.chunkKeys), NextChunk: p.next}, nil
}

func (s *server) StatFile(ctx context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	pr, err := pageRequestOf(req.Path, req.FirstChunk, req.PageSize, req.Version, req.SessionId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	p, err := t.namespace.stat(ctx, pr)
	if d := t.namespace.dirInstead(ctx, pr, err); d != nil {
		a := meta.Entry{Path: d.Path, IsDir: true, Dir: d}.Attr()
		return &dfspb.StatFileResponse{File: &dfspb.FileInfo{Path: string(d.Path), IsDir: true, ModifiedUnixMs: d.Modified.UnixMilli(),
			Owner: a.Owner, Group: a.Group, Mode: a.Mode}}, nil
	}
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	// Stat needs only search permission on the parents; the read tokens
	// its chunk map carries go only to a caller who may read the file.
	keys := s.c.chunkKeys
	if s.c.perms().read(ctx, p.file.Path) != nil {
		keys = nil
	}
	return &dfspb.StatFileResponse{File: pageToPB(p, keys), NextChunk: p.next}, nil
}

func (s *server) DeleteFile(ctx context.Context, req *dfspb.DeleteFileRequest) (*dfspb.DeleteFileResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	p, err := rpc.ParsePath(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.namespace.remove(ctx, p, removeOptions{recursive: req.Recursive, version: req.IfVersion}); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.DeleteFileResponse{}, nil
}

func (s *server) Mkdir(ctx context.Context, req *dfspb.MkdirRequest) (*dfspb.MkdirResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	p, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.namespace.mkdir(ctx, p, req.Parents); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.MkdirResponse{}, nil
}

func (s *server) Rename(ctx context.Context, req *dfspb.RenameRequest) (*dfspb.RenameResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	src, dst, err := parsePair(req.Src, req.Dst)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.namespace.rename(ctx, src, dst, req.NoReplace); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.RenameResponse{}, nil
}

func (s *server) CopyFile(ctx context.Context, req *dfspb.CopyFileRequest) (*dfspb.CopyFileResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	src, dst, err := parsePair(req.Src, req.Dst)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	cond, err := preconditionOf(req.IfNotExist, req.IfVersion)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	f, err := t.namespace.compose(ctx, composition{srcs: []rpc.Path{src}, dst: dst, cond: cond,
		metadata: req.Metadata, keepMetadata: !req.ReplaceMetadata, srcVersion: req.SrcVersion})
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	fi := pageToPB(filePage{file: f}, nil)
	return &dfspb.CopyFileResponse{File: fi}, nil
}

func (s *server) ConcatFiles(ctx context.Context, req *dfspb.ConcatFilesRequest) (*dfspb.ConcatFilesResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Srcs) > maxConcatSources {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d files to concatenate: at most %d", len(req.Srcs), maxConcatSources))
	}
	dst, err := rpc.ParsePath(req.Dst)
	if err != nil {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Other, "destination: %w", err))
	}
	srcs := make([]rpc.Path, len(req.Srcs))
	for i, src := range req.Srcs {
		if srcs[i], err = rpc.ParsePath(src); err != nil {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Other, "source %d: %w", i+1, err))
		}
	}
	cond, err := preconditionOf(req.IfNotExist, req.IfVersion)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	f, err := t.namespace.compose(ctx, composition{srcs: srcs, dst: dst, cond: cond, metadata: req.Metadata})
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ConcatFilesResponse{File: pageToPB(filePage{file: f}, nil)}, nil
}

func (s *server) Usage(ctx context.Context, req *dfspb.UsageRequest) (*dfspb.UsageResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	p, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := t.namespace.usage(ctx, p)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.UsageResponse{Bytes: u.bytes, Files: u.files, Dirs: u.dirs}, nil
}

func (s *server) SetAttr(ctx context.Context, req *dfspb.SetAttrRequest) (*dfspb.SetAttrResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	p, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	set := attrChange{owner: req.Owner, group: req.Group}
	if req.SetMode {
		set.mode = &req.Mode
	}
	a, err := t.namespace.setAttr(ctx, p, set)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.SetAttrResponse{Owner: a.Owner, Group: a.Group, Mode: a.Mode}, nil
}

// parsePair parses the source and destination paths of a rename or copy.
func parsePair(src, dst string) (rpc.Path, rpc.Path, error) {
	s, err := rpc.ParsePath(src)
	if err != nil {
		return "", "", rpc.Errorf(rpc.Other, "source: %w", err)
	}
	d, err := rpc.ParsePath(dst)
	if err != nil {
		return "", "", rpc.Errorf(rpc.Other, "destination: %w", err)
	}
	return s, d, nil
}

// preconditionOf reads a write's preconditions; asking for both is
// contradictory.
func preconditionOf(notExist bool, version uint64) (precondition, error) {
	if notExist && version != 0 {
		return precondition{}, rpc.Errorf(rpc.Invalid, "if_not_exist and if_version %d contradict each other", version)
	}
	return precondition{notExist: notExist, version: version}, nil
}

func (s *server) ListFiles(ctx context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := rpc.ParseDir(req.Path)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	limit := int(req.PageSize)
	if limit == 0 {
		limit = defaultPageSize
	}
	if limit > maxPageSize {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "page size %d above the maximum %d", limit, maxPageSize))
	}
	after := ""
	if req.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.PageToken)
		// A token is a listing key: a path, with a trailing slash for a
		// directory, or past a directory's subtree (pastTree: two more).
		if err != nil || len(b) == 0 || b[0] != '/' || len(b) > rpc.MaxPathLen+2 {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "invalid page token"))
		}
		after = string(b)
	} else if req.StartAfter != "" {
		if req.StartAfter[0] != '/' || len(req.StartAfter) > rpc.MaxPathLen+1 {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "start_after %q is not a path", req.StartAfter))
		}
		after = req.StartAfter
	}
	entries, next, err := t.namespace.listFor(ctx, dir, req.Recursive, after, limit)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp := &dfspb.ListFilesResponse{}
	if next != "" {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	for _, e := range entries {
		a := e.Attr()
		le := &dfspb.ListEntry{Path: string(e.Path), IsDir: e.IsDir, Owner: a.Owner, Group: a.Group, Mode: a.Mode}
		if e.Dir != nil {
			le.ModifiedUnixMs = e.Dir.Modified.UnixMilli()
		}
		if e.File != nil {
			le.Size, le.ModifiedUnixMs = e.File.Size, e.File.Modified.UnixMilli()
			le.Chunks, le.Replication = uint32(len(e.File.Chunks)), e.File.Replication
			if req.WithMetadata {
				le.Metadata = e.File.Metadata
			}
		}
		resp.Entries = append(resp.Entries, le)
	}
	return resp, nil
}

func (s *server) RegisterDataNode(ctx context.Context, req *dfspb.RegisterDataNodeRequest) (*dfspb.RegisterDataNodeResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	// The registration takes from the --register-rate budget before any
	// check, so that a flood of bad registrations is turned away as
	// cheaply as good ones.
	if err := t.membership.admit(); err != nil {
		return nil, rpc.ToStatus(err)
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := checkAddr(req.Addr); err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := checkUsage(req.Capacity, req.Used, req.Free, req.ChunkCount)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	r, err := t.membership.register(ctx, registration{node: id, addr: req.Addr, cluster: req.ClusterId, usage: u, cert: certName(ctx)})
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	keys, err := s.c.chunkKeys.handout()
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.RegisterDataNodeResponse{ClusterVersion: r.version, ClusterId: r.cluster, Incarnation: r.incarnation, ChunkKeys: keys}, nil
}

func (s *server) DataNodeHeartbeat(ctx context.Context, req *dfspb.HeartbeatRequest) (*dfspb.HeartbeatResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u, err := checkUsage(req.Capacity, req.Used, req.Free, req.ChunkCount)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	u.diskErr = boundReason(req.DiskError)
	if err := t.membership.speaksFor(id, certName(ctx)); err != nil {
		return nil, rpc.ToStatus(err)
	}
	ch, err := t.membership.heartbeat(id, req.Incarnation, u, req.KnownVersion)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	keys, err := s.c.chunkKeys.handout()
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp := &dfspb.HeartbeatResponse{ClusterVersion: ch.version, Full: ch.full, ChunkKeys: keys}
	for _, u := range ch.updates {
		resp.Updates = append(resp.Updates, &dfspb.NodeUpdate{Version: u.version, Node: nodeToPB(u.node)})
	}
	for _, n := range ch.nodes {
		resp.Nodes = append(resp.Nodes, nodeToPB(n))
	}
	return resp, nil
}

func (s *server) ReportChunks(ctx context.Context, req *dfspb.ReportChunksRequest) (*dfspb.ReportChunksResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	// An unknown node hears NotFound, which makes it register again,
	// whatever else is wrong with its report.
	if err := t.membership.known(id); err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.membership.speaksFor(id, certName(ctx)); err != nil {
		return nil, rpc.ToStatus(err)
	}
	if n := len(req.Added) + len(req.Removed) + len(req.Corrupt); n > maxReport {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d chunks in one report, at most %d", n, maxReport))
	}
	r, err := reportOf(req)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := t.membership.report(ctx, id, r); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ReportChunksResponse{}, nil
}

// reportOf decodes a chunk report.
func reportOf(req *dfspb.ReportChunksRequest) (chunkReport, error) {
	r := chunkReport{full: req.Full, page: req.Page, last: req.Last, added: make([]reportedCopy, len(req.Added))}
	for i, a := range req.Added {
		cid, err := rpc.ParseChunkID(a.ChunkId)
		if err != nil {
			return chunkReport{}, err
		}
		r.added[i] = reportedCopy{id: cid, size: a.Size, frameSize: a.FrameSize, digest: a.Digest}
	}
	var err error
	if r.removed, err = parseChunkIDs(req.Removed); err != nil {
		return chunkReport{}, err
	}
	if r.corrupt, err = parseChunkIDs(req.Corrupt); err != nil {
		return chunkReport{}, err
	}
	return r, nil
}

func (s *server) ReportNodeFailure(ctx context.Context, req *dfspb.ReportNodeFailureRequest) (*dfspb.ReportNodeFailureResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.NodeIds) > maxReportedNodes {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d node ids in one report, at most %d", len(req.NodeIds), maxReportedNodes))
	}
	ids := make([]rpc.NodeID, 0, len(req.NodeIds))
	for _, s := range req.NodeIds {
		id, err := rpc.ParseNodeID(s)
		if err != nil {
			return nil, rpc.ToStatus(err)
		}
		ids = append(ids, id)
	}
	if err := t.membership.nodeFailure(ids, req.Reason); err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ReportNodeFailureResponse{}, nil
}

func (s *server) ListNodes(ctx context.Context, req *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	v := t.admin.view()
	resp := &dfspb.ListNodesResponse{ClusterVersion: v.version, SafeMode: v.safeMode, SafeModeStatus: v.safeModeStatus,
		ClusterId: s.c.store.ClusterID(), Leader: s.c.addr, Health: healthToPB(v.health), Readiness: readinessToPB(v.readiness)}
	for _, n := range v.nodes {
		resp.Nodes = append(resp.Nodes, nodeToPB(n))
	}
	return resp, nil
}

func (s *server) Decommission(ctx context.Context, req *dfspb.DecommissionRequest) (*dfspb.DecommissionResponse, error) {
	t, err := s.term(ctx)
	if err != nil {
		return nil, err
	}
	id, err := rpc.ParseNodeID(req.NodeId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	st, err := t.admin.decommission(ctx, id, req.Cancel)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.DecommissionResponse{Node: nodeToPB(st)}, nil
}

func (s *server) ReportBadReplica(ctx context.Context, req *dfspb.ReportBadReplicaRequest) (*dfspb.ReportBadReplicaResponse, error) {
	t, err := s.term(ctx)
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
	corrupt, missing, err := t.admin.badReplica(ctx, cid, nid, req.Reason, req.Missing)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.ReportBadReplicaResponse{Corrupt: corrupt, Missing: missing}, nil
}

func (s *server) Fsck(req *dfspb.FsckRequest, stream dfspb.Coordinator_FsckServer) error {
	ctx := stream.Context()
	t, err := s.term(ctx)
	if err != nil {
		return err
	}
	dir, err := rpc.ParseDir(req.Path)
	if err != nil {
		return rpc.ToStatus(err)
	}
	sum, err := t.admin.fsck(ctx, dir, func(f fsckFile) error {
		return stream.Send(&dfspb.FsckReport{Report: &dfspb.FsckReport_File{File: fsckFileToPB(f)}})
	})
	if err != nil {
		return rpc.ToStatus(err)
	}
	return stream.Send(&dfspb.FsckReport{Report: &dfspb.FsckReport_Summary{Summary: &dfspb.FsckSummary{
		Files: sum.files, Chunks: sum.chunks, HealthyFiles: sum.healthy, UnderReplicatedFiles: sum.under,
		UnreadableFiles: sum.unreadable, Health: healthToPB(sum.health),
	}}})
}

func (s *server) Backup(req *dfspb.BackupRequest, stream dfspb.Coordinator_BackupServer) error {
	if _, err := s.term(stream.Context()); err != nil {
		return err
	}
	_, err := s.c.backup(stream.Context(), &streamWriter{stream: stream})
	return rpc.ToStatus(err)
}

// streamWriter cuts a byte stream into BackupChunk messages.
type streamWriter struct {
	stream dfspb.Coordinator_BackupServer
	buf    []byte
}

var _ io.Writer = (*streamWriter)(nil)

func (w *streamWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= 1<<20 {
		if err := w.stream.Send(&dfspb.BackupChunk{Data: w.buf[:1<<20]}); err != nil {
			return 0, err
		}
		w.buf = append([]byte(nil), w.buf[1<<20:]...)
	}
	return len(p), nil
}

// Flush sends what Write holds back.
func (w *streamWriter) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	return w.stream.Send(&dfspb.BackupChunk{Data: w.buf})
}

// pageRequestOf decodes a request for a page of a chunk map.
func pageRequestOf(path string, first, size uint32, version uint64, session string) (pageRequest, error) {
	p, err := rpc.ParsePath(path)
	if err != nil {
		return pageRequest{}, err
	}
	return pageRequest{path: p, first: first, size: size, version: version, session: rpc.SessionID(session)}, nil
}

func parseChunkIDs(ss []string) ([]rpc.ChunkID, error) {
	out := make([]rpc.ChunkID, len(ss))
	for i, s := range ss {
		id, err := rpc.ParseChunkID(s)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

func receiptsFromPB(rs []*dfspb.ChunkReceipt) []receipt {
	out := make([]receipt, len(rs))
	for i, r := range rs {
		out[i] = receipt{index: r.Index, id: r.ChunkId, size: r.Size, digest: r.Digest, frameSize: r.FrameSize,
			nodes: make([]rpc.NodeID, len(r.NodeIds))}
		for j, n := range r.NodeIds {
			out[i].nodes[j] = rpc.NodeID(n)
		}
	}
	return out
}

// planToPB encodes a chunk's plan with, from keys (nil: none), its write
// token naming every node of the plan.
func planToPB(p plan, keys *chunkKeys) *dfspb.ChunkPlan {
	out := &dfspb.ChunkPlan{Index: p.index, ChunkId: string(p.id)}
	nodes := make([]rpc.NodeID, len(p.nodes))
	for i, n := range p.nodes {
		nodes[i] = n.ID
		ref := &dfspb.NodeRef{NodeId: string(n.ID), Addr: n.Addr}
		if i == 0 {
			out.Primary = ref
		} else {
			out.Replicas = append(out.Replicas, ref)
		}
	}
	out.Token = keys.mint(p.id, chunktoken.Write, nodes...)
	return out
}

// pageToPB encodes a page of a file's chunk map with, from keys (nil:
// none), each chunk's read token naming the nodes listed for it.
func pageToPB(p filePage, keys *chunkKeys) *dfspb.FileInfo {
	f := p.file
	a := f.Attr.Or(false)
	fi := &dfspb.FileInfo{
		Path: string(f.Path), Size: f.Size, Sha256: f.SHA256, ChunkSize: f.ChunkSize,
		Replication: f.Replication, ModifiedUnixMs: f.Modified.UnixMilli(), Version: f.Version,
		SessionId: string(f.Session), ChunkCount: uint32(len(f.Chunks)),
		Owner: a.Owner, Group: a.Group, Mode: a.Mode, Metadata: f.Metadata,
		Chunks: make([]*dfspb.ChunkInfo, 0, len(p.replicas)),
	}
	for j, rs := range p.replicas {
		i := p.first + j
		ch := f.Chunks[i]
		ci := &dfspb.ChunkInfo{
			Index: uint32(i), ChunkId: string(ch.ID), Offset: int64(i) * f.ChunkSize,
			Size: ch.Size, Digest: ch.Digest, FrameSize: ch.FrameSize,
		}
		nodes := make([]rpc.NodeID, len(rs))
		for k, r := range rs {
			ci.Replicas = append(ci.Replicas, &dfspb.ReplicaInfo{NodeId: string(r.node), Addr: r.addr, State: stateToPB(r.state)})
			nodes[k] = r.node
		}
		if len(nodes) > 0 && len(nodes) <= chunktoken.MaxNodes {
			ci.Token = keys.mint(ch.ID, chunktoken.Read, nodes...)
		}
		fi.Chunks = append(fi.Chunks, ci)
	}
	return fi
}

func stateToPB(s placement.State) dfspb.NodeState {
	switch s {
	case placement.Healthy:
		return dfspb.NodeState_NODE_STATE_HEALTHY
	case placement.Suspect:
		return dfspb.NodeState_NODE_STATE_SUSPECT
	case placement.Dead:
		return dfspb.NodeState_NODE_STATE_DEAD
	}
	return dfspb.NodeState_NODE_STATE_UNSPECIFIED
}

func nodeToPB(n nodeStatus) *dfspb.NodeStatus {
	st := &dfspb.NodeStatus{
		NodeId: string(n.id), Addr: n.addr, State: stateToPB(n.state),
		Capacity: n.capacity, Used: n.used, Free: n.free, ChunkCount: n.chunks,
		LastHeartbeatUnixMs: n.lastHeartbeat.UnixMilli(), ConflictAddr: n.conflictAddr, DiskError: n.diskErr,
		Draining: n.draining, Decommissioned: n.decommissioned, CorruptChunks: n.corruptChunks, Forgotten: n.forgotten,
	}
	if !n.failingUntil.IsZero() {
		st.FailingUntilUnixMs = n.failingUntil.UnixMilli()
	}
	return st
}

func healthToPB(h clusterHealth) *dfspb.ClusterHealth {
	return &dfspb.ClusterHealth{
		Chunks: h.Chunks, UnderReplicated: h.UnderReplicated, Missing: h.Missing, CorruptCopies: h.CorruptCopies,
		RepairsInProgress: h.RepairsInProgress, RepairsDone: h.RepairsDone, BytesRepaired: h.BytesRepaired,
		PendingDeletions: h.PendingDeletions, ChunksDeleted: h.ChunksDeleted, BytesReclaimed: h.BytesReclaimed,
		OrphansDeleted: h.OrphansDeleted,
	}
}

func readinessToPB(r readiness) *dfspb.ReadinessStatus {
	return &dfspb.ReadinessStatus{Writable: r.Writable, Reason: r.Reason, PlaceableNodes: int32(r.PlaceableNodes), Replication: int32(r.Replication)}
}

func fsckFileToPB(f fsckFile) *dfspb.FsckFile {
	out := &dfspb.FsckFile{Path: string(f.path), Size: f.size, Unreadable: f.unreadable}
	for _, c := range f.chunks {
		fc := &dfspb.FsckChunk{Index: c.index, ChunkId: string(c.id), Replication: c.replication, Live: c.live, Repairing: c.repairing}
		for _, n := range c.corrupt {
			fc.CorruptNodes = append(fc.CorruptNodes, string(n))
		}
		for _, n := range c.dead {
			fc.DeadNodes = append(fc.DeadNodes, string(n))
		}
		out.Chunks = append(out.Chunks, fc)
	}
	return out
}

func (s *server) CreateToken(ctx context.Context, req *dfspb.CreateTokenRequest) (*dfspb.CreateTokenResponse, error) {
	if req.TtlMs < 0 || req.TtlMs > int64(math.MaxInt64/time.Millisecond) {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "create token: lifetime of %d ms is out of range", req.TtlMs))
	}
	t, err := s.c.createToken(ctx, req.User, req.Groups, time.Duration(req.TtlMs)*time.Millisecond)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.CreateTokenResponse{Token: t.token, ExpiresUnixMs: t.expires.UnixMilli(), Id: t.id}, nil
}
