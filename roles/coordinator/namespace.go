package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

const (
	defaultPageSize = 1000
	maxPageSize     = 10000
)

// maxChunkPage is the most chunks one page of a chunk map carries, and
// the default page size: a page of the largest chunk entries (every
// replica of rpc.MaxReplication, each with an address of rpc.MaxAddrLen)
// stays well below rpc.MaxMessageSize, so a file of any allowed size is
// described in pages (TestChunkPageFits).
const maxChunkPage = 500

// namespace is the coordinator's part that reads and removes committed
// files: stat, download (the chunk map in pages, with each chunk's
// replicas), delete and list.
type namespace struct {
	log     zerolog.Logger
	store   meta.Namespace
	commits meta.Committer
	files   *fileCache
	// paths serializes the commits of each path (shared with uploads).
	paths   *pathLocks
	locs    *locations
	nodes   *registry
	safe    *safeMode
	dels    *collector
	metrics *metrics
	refs    *refIndex
	clock   clockwork.Clock
	perms   perms
	// maxChunks is the most chunks a file may have (a concatenation too).
	maxChunks int
}

// now is the time a change records (UTC).
func (ns *namespace) now() time.Time { return ns.clock.Now().UTC() }

// replica is a node holding a good copy of a chunk, as readers see it.
type replica struct {
	node  rpc.NodeID
	addr  string
	state placement.State
}

// filePage is a committed file with a page of its chunk map: the chunks
// from first on, each with its replicas, and the index of the page after.
type filePage struct {
	file     *meta.File
	first    int
	replicas [][]replica // of chunks first, first+1...
	next     uint32
}

// pageRequest asks for a page of a file's chunk map: size chunks (0: the
// default) from first on. A page after the first names the version and
// session it reads.
type pageRequest struct {
	path    rpc.Path
	first   uint32
	size    uint32
	version uint64
	session rpc.SessionID
	// uncached keeps a file whose map takes more than this page out of
	// the cache of large files (see pageOf): the small first pages of
	// DownloadFiles would otherwise put every file of a few pages there.
	uncached bool
}

// page returns f with chunks first to end-1 of its chunk map, each with
// its current replicas: the nodes that reported a copy matching the
// commit.
func (ns *namespace) page(f *meta.File, first, end int) filePage {
	p := filePage{file: f, first: first, next: uint32(end), replicas: make([][]replica, 0, end-first)}
	for i := first; i < end; i++ {
		good, _ := ns.locs.check(f.Chunks[i])
		var rs []replica
		for _, nid := range good {
			addr, state, ok := ns.nodes.lookup(nid)
			if !ok {
				continue
			}
			rs = append(rs, replica{node: nid, addr: addr, state: state})
		}
		p.replicas = append(p.replicas, rs)
	}
	return p
}

// stat returns the page of a file's chunk map that req asks for, to a
// caller who may reach the file (perms.stat). A request for a page after
// the first names the version it reads: when the path no longer holds
// it, the file was replaced or deleted since the first page, and the
// reader is told so (FailedPrecondition).
func (ns *namespace) stat(ctx context.Context, req pageRequest) (filePage, error) {
	if err := ns.perms.stat(ctx, req.path); err != nil {
		return filePage{}, err
	}
	return ns.statPage(ctx, req)
}

// statPage is stat without the permission check.
func (ns *namespace) statPage(ctx context.Context, req pageRequest) (filePage, error) {
	return ns.pageOf(ctx, req, nil, 0)
}

// pageOf is statPage, with read the file at req.path as the permission
// check just read it (nil: none did) and gen the file cache's generation
// before that read.
func (ns *namespace) pageOf(ctx context.Context, req pageRequest, read *meta.File, gen uint64) (filePage, error) {
	// A page after the first of a large file comes from the cache when it
	// holds the version being read.
	f := ns.files.get(req.path)
	cached := true
	if req.version == 0 || f == nil || f.Version != req.version || f.Session != req.session {
		cached = false
		var err error
		if f = read; f == nil {
			gen = ns.files.generation()
			f, err = ns.store.Get(ctx, req.path)
		}
		if req.version != 0 && (rpc.KindOf(err) == rpc.NotFound || (err == nil && (f.Version != req.version || f.Session != req.session))) {
			return filePage{}, changedError(req.path)
		}
		if err != nil {
			return filePage{}, err
		}
	}
	n := uint32(len(f.Chunks))
	if req.first > n {
		return filePage{}, rpc.Errorf(rpc.Invalid, "first chunk %d is beyond the %d chunks of %s", req.first, n, f.Path)
	}
	size := req.size
	if size == 0 || size > maxChunkPage {
		size = maxChunkPage
	}
	end := req.first + min(size, n-req.first)
	if end < n && !cached && !req.uncached {
		ns.files.put(f, gen) // more pages follow
	}
	return ns.page(f, int(req.first), int(end)), nil
}

// outcomeUnknown reports whether a failed commit may have been applied
// all the same: the store did not answer, or failed after its change
// (etcd's later deletion batches). A refusal (not found, exists, a
// conflict, invalid, no space) applied nothing.
func outcomeUnknown(err error) bool {
	switch rpc.KindOf(err) {
	case rpc.Unavailable, rpc.DeadlineExceeded, rpc.Canceled, rpc.Internal, rpc.Other:
		return !errors.Is(err, meta.ErrConflict)
	}
	return false
}

// changedError says a file changed between two pages of its chunk map.
func changedError(p rpc.Path) error {
	return rpc.Errorf(rpc.FailedPrecondition, "%s changed while it was being read; read it again", p)
}

// download returns a page of a committed file's chunk map for reading,
// to a caller who may read it (perms.read). A chunk of the page without a
// live replica fails it.
func (ns *namespace) download(ctx context.Context, req pageRequest) (filePage, error) {
	gen := ns.files.generation()
	read, err := ns.perms.readFile(ctx, req.path)
	if err != nil {
		return filePage{}, err
	}
	p, err := ns.pageOf(ctx, req, read, gen)
	if err != nil {
		return filePage{}, err
	}
	for i, rs := range p.replicas {
		if anyLive(rs) {
			continue
		}
		index := p.first + i
		if on, status := ns.safe.Status(); on {
			return filePage{}, rpc.NotServingError("", 500*time.Millisecond, "coordinator in safe mode (%s): chunk %d of %s not located yet", status, index, p.file.Path)
		}
		return filePage{}, rpc.Errorf(rpc.FailedPrecondition, "%s: chunk %d (%s) has no live replica", p.file.Path, index, p.file.Chunks[index].ID)
	}
	if req.first == 0 {
		ns.metrics.readBytes.Add(float64(p.file.Size))
	}
	return p, nil
}

func anyLive(rs []replica) bool {
	for _, r := range rs {
		if r.state != placement.Dead {
			return true
		}
	}
	return false
}

// deleted reports whether the path of f, just deleted by a commit
// reported failed, no longer holds f.
func (ns *namespace) deleted(ctx context.Context, f *meta.File) bool {
	cur, err := ns.store.Get(ctx, f.Path)
	return rpc.KindOf(err) == rpc.NotFound || (err == nil && (cur.Version != f.Version || cur.Session != f.Session))
}

// removeFile deletes the file at p durably (the caller checked the
// permissions) (at version, unless 0); GC
// deletes its chunks on the datanodes.
func (ns *namespace) removeFile(ctx context.Context, p rpc.Path, version uint64) error {
	if err := ns.safe.check("delete files"); err != nil {
		return err
	}
	defer ns.paths.lock(p)()
	for try := 0; ; try++ {
		f, err := ns.store.Get(ctx, p)
		if err != nil {
			return err
		}
		if err := (precondition{version: version}).check(p, f); err != nil {
			return err
		}
		txn := &meta.Txn{Path: p, Expect: f.Version, Delete: true, AddDeletions: ns.locs.deletionsOf(f)}
		err = ns.commits.Commit(ctx, txn)
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue
		}
		if err != nil && outcomeUnknown(err) && ns.deleted(ctx, f) {
			// Reported failed, but applied: no other commit of the
			// path can have run meanwhile. Its deletions are recorded
			// again (with etcd, some may not have been).
			ns.log.Warn().Err(err).Str("path", string(p)).Msg("delete reported failed but applied; finishing it")
			txn = &meta.Txn{AddDeletions: txn.AddDeletions}
			err = ns.commits.Commit(ctx, txn)
		}
		if err != nil {
			return err
		}
		ns.dels.enqueue(txn.AddDeletions)
		ns.dels.unreference(ctx, f, txn.AddDeletions)
		ns.log.Info().Str("path", string(p)).Int("chunks", len(f.Chunks)).Msg("file deleted")
		ns.metrics.filesDeleted.Inc()
		return nil
	}
}

// listFor is list for the caller in ctx, who must be allowed to list dir
// (perms.list); a recursive listing leaves out what lies below a
// directory the caller may not list (the directory itself is listed).
// It returns the listing key to resume after, "" when nothing follows.
// A page is empty only when nothing follows.
func (ns *namespace) listFor(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, string, error) {
	if err := ns.perms.list(ctx, dir); err != nil {
		return nil, "", err
	}
	l := ns.perms.lister(ctx, dir)
	// Each round moves after forward; ctx bounds the rounds.
	for {
		page, more, err := ns.list(ctx, dir, recursive, after, limit)
		if err != nil {
			return nil, "", err
		}
		out, next := page[:0], ""
		for _, e := range page {
			top := rpc.Path("")
			if recursive {
				if top, err = l.hidden(ctx, e); err != nil {
					return nil, "", err
				}
			}
			if top != "" {
				next, more = pastTree(top), true
				break
			}
			out, next = append(out, e), meta.ListKey(e)
		}
		if !more {
			return out, "", nil
		}
		if len(out) > 0 {
			return out, next, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		after = next
	}
}

// list returns up to limit entries below dir (one level, or all with
// recursive) after the key after, and whether more follow.
func (ns *namespace) list(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, bool, error) {
	entries, err := ns.store.List(ctx, dir, recursive, after, limit+1)
	if err != nil {
		return nil, false, err
	}
	if len(entries) > limit {
		return entries[:limit], true, nil
	}
	return entries, false, nil
}
