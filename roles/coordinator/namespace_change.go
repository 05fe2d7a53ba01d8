package coordinator

import (
	"context"
	"errors"
	"slices"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// The namespace's changes other than uploads: directories, renames,
// server-side copies, recursive removal, and the usage of a subtree.

// dirInstead returns the directory a request for the first page of a
// file's chunk map named, when err says there is no file there; else nil.
func (ns *namespace) dirInstead(ctx context.Context, req pageRequest, err error) *meta.Dir {
	if rpc.KindOf(err) != rpc.NotFound || req.version != 0 || req.first != 0 {
		return nil
	}
	e, lerr := ns.store.Lookup(ctx, req.path)
	if lerr != nil || !e.IsDir {
		return nil
	}
	return e.Dir
}

// removeOptions say what remove may remove: with recursive, a directory
// and everything below it; version, when not 0, is the version a file
// must be at.
type removeOptions struct {
	recursive bool
	version   uint64
}

// remove deletes what p names: a file, an empty directory, or with
// recursive a directory and everything below it. A recursive removal is
// not atomic: the files go one by one (each durably, its chunks to GC),
// then each directory once it is empty; a failure stops it with what was
// removed so far gone. The root is refused, recursive or not (as HDFS
// does): emptying a whole cluster takes removing what is below it.
func (ns *namespace) remove(ctx context.Context, p rpc.Path, opts removeOptions) error {
	if err := ns.perms.remove(ctx, p); err != nil {
		return err
	}
	e, err := ns.store.Lookup(ctx, p)
	if err != nil {
		return err
	}
	switch {
	case !e.IsDir:
		return ns.removeFile(ctx, p, opts.version)
	case opts.version != 0:
		return rpc.Errorf(rpc.Invalid, "%s is a directory, which has no version", p)
	case p == "/":
		return rpc.Errorf(rpc.Invalid, "the root directory cannot be removed, nor emptied at one stroke: remove what is below it")
	case opts.recursive:
		return ns.removeAll(ctx, e)
	}
	return ns.rmdir(ctx, p)
}

// rmdir removes the empty directory p.
func (ns *namespace) rmdir(ctx context.Context, p rpc.Path) error {
	defer ns.paths.lock(p)()
	if err := ns.commits.Commit(ctx, &meta.Txn{Path: p, Rmdir: true}); err != nil {
		return err
	}
	ns.log.Info().Str("path", string(p)).Msg("directory removed")
	return nil
}

// removeAll removes everything below the directory d, a page of one
// level at a time (bounded memory whatever the tree holds, recursion as
// deep as the tree), then d itself unless it is the root. The caller must
// be allowed to list and change every directory it empties
// (perms.removeTree): a refusal stops it with what was removed so far
// gone.
func (ns *namespace) removeAll(ctx context.Context, d meta.Entry) error {
	dir := d.Path
	if err := ns.perms.removeTree(ctx, d); err != nil {
		return err
	}
	after := ""
	for {
		page, more, err := ns.list(ctx, dir, false, after, defaultPageSize)
		if rpc.KindOf(err) == rpc.NotFound {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			switch {
			case e.IsDir:
				err = ns.removeAll(ctx, e)
			case e.Path == dir:
				return rpc.Errorf(rpc.FailedPrecondition, "%s became a file while it was being removed", dir)
			default:
				err = ns.removeFile(ctx, e.Path, 0)
			}
			if err != nil && rpc.KindOf(err) != rpc.NotFound {
				return err
			}
		}
		if !more {
			break
		}
		after = meta.ListKey(page[len(page)-1])
	}
	if dir == "/" {
		return nil
	}
	err := ns.rmdir(ctx, dir)
	if rpc.KindOf(err) == rpc.NotFound {
		return nil
	}
	return err
}

// mkdir creates the directory p; with parents, its missing ancestors
// too, and an existing directory is no error.
func (ns *namespace) mkdir(ctx context.Context, p rpc.Path, parents bool) error {
	if p == "/" {
		if parents {
			return nil
		}
		return rpc.Errorf(rpc.Exists, "/ already exists")
	}
	c, err := ns.perms.create(ctx, p)
	if err != nil {
		return err
	}
	defer ns.paths.lock(p)()
	txn := &meta.Txn{Path: p, Mkdir: &meta.Dir{Path: p, Modified: ns.now(), Attr: c.dir}, MkdirParents: parents, Parents: c.dir}
	if err := ns.commits.Commit(ctx, txn); err != nil {
		return err
	}
	ns.log.Info().Str("path", string(p)).Msg("directory created")
	return nil
}

// rename moves the file or directory src to dst in one commit (see
// meta.Move). A file replaces a file at dst unless noReplace; the
// replaced file's chunks go to GC. A file's rename holds the path locks
// of src and dst; a directory's holds the tree lock, so no change of a
// path below it runs meanwhile (each reads its path, then commits on what
// it read). A path below src whose upload's commit has an unknown outcome
// is refused as Unavailable until that upload ends.
func (ns *namespace) rename(ctx context.Context, src, dst rpc.Path, noReplace bool) error {
	if src == "/" || dst == "/" {
		return rpc.Errorf(rpc.Invalid, "the root directory cannot be renamed, nor replaced")
	}
	if dst.IsBelow(src) && dst != src {
		return rpc.Errorf(rpc.Invalid, "cannot move %s into itself (%s)", src, dst)
	}
	c, err := ns.perms.rename(ctx, src, dst)
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		from, err := ns.store.Lookup(ctx, src)
		if err != nil {
			return err
		}
		err = ns.renameLocked(ctx, from.IsDir, src, dst, noReplace, c.dir)
		if (errors.Is(err, meta.ErrConflict) || errors.Is(err, errKindChanged)) && try < maxCommitRetries {
			continue
		}
		return err
	}
}

// errKindChanged: the path a rename moves became a file or a directory
// between the look that chose the locks and the locked look.
var errKindChanged = errors.New("changed between file and directory")

// renameLocked is rename under the locks that moving a file (dir false)
// or a directory takes; parents are the attributes of the directories
// the move creates.
func (ns *namespace) renameLocked(ctx context.Context, dir bool, src, dst rpc.Path, noReplace bool, parents meta.Attr) error {
	if dir {
		defer ns.paths.lockTree()()
	} else {
		defer ns.paths.lock(src, dst)()
	}
	if p := ns.paths.unsettledBelow(src); p != "" {
		return rpc.Errorf(rpc.Unavailable, "cannot move %s yet: the outcome of a commit of %s is not known; retry shortly", src, p)
	}
	from, err := ns.store.Lookup(ctx, src)
	if err != nil {
		return err
	}
	if from.IsDir != dir {
		return errKindChanged
	}
	txn := &meta.Txn{Path: src, Move: &meta.Move{To: dst, Modified: ns.now()}, Parents: parents}
	if from.File != nil {
		txn.Expect = from.File.Version
	}
	var replaced *meta.File
	if src != dst {
		to, err := ns.store.Lookup(ctx, dst)
		switch {
		case err == nil && to.IsDir:
			return rpc.Errorf(rpc.Exists, "%s: a directory is there", dst)
		case err == nil && (noReplace || from.IsDir):
			return rpc.Errorf(rpc.Exists, "%s already exists", dst)
		case err == nil:
			if err := ns.safe.check("replace files"); err != nil {
				return err
			}
			replaced = to.File
			txn.Move.Replace = replaced.Version
			txn.AddDeletions = ns.locs.deletionsOf(replaced)
		case rpc.KindOf(err) != rpc.NotFound:
			return err
		}
	}
	err = ns.commits.Commit(ctx, txn)
	if err != nil && outcomeUnknown(err) && replaced != nil && ns.moved(ctx, from.File, dst) {
		// Reported failed, but applied: the replaced file's deletions
		// are recorded again (with etcd, some may not have been).
		ns.log.Warn().Err(err).Str("from", string(src)).Str("to", string(dst)).Msg("rename reported failed but applied; finishing it")
		err = ns.commits.Commit(ctx, &meta.Txn{AddDeletions: txn.AddDeletions})
	}
	if err != nil {
		return err
	}
	if replaced != nil {
		ns.dels.enqueue(txn.AddDeletions)
		ns.dels.unreference(ctx, replaced, txn.AddDeletions)
	}
	ns.log.Info().Str("from", string(src)).Str("to", string(dst)).Bool("dir", from.IsDir).Msg("renamed")
	return nil
}

// moved reports whether dst holds f (same version and session), after a
// move of f reported failed.
func (ns *namespace) moved(ctx context.Context, f *meta.File, dst rpc.Path) bool {
	cur, err := ns.store.Get(ctx, dst)
	return err == nil && cur.Version == f.Version && cur.Session == f.Session
}

// maxShares bounds how many files may share a chunk (the chunk index
// counts its references in 16 bits).
const maxShares = 1<<16 - 2

// copy makes dst a new file with src's bytes and metadata, sharing src's
// chunks (see compose).
func (ns *namespace) copy(ctx context.Context, src, dst rpc.Path, cond precondition) (*meta.File, error) {
	return ns.compose(ctx, composition{srcs: []rpc.Path{src}, dst: dst, cond: cond, keepMetadata: true})
}

// composition is what compose makes: dst from the chunks of srcs, in
// order, with metadata (or, with keepMetadata, the one source's).
type composition struct {
	srcs         []rpc.Path
	dst          rpc.Path
	cond         precondition
	metadata     map[string]string
	keepMetadata bool
	// srcVersion, when not 0, is the version the one source must be at.
	srcVersion uint64
}

// maxConcatSources bounds the sources of one concatenation (S3's most
// parts of a multipart upload).
const maxConcatSources = 10000

// check refuses a composition that names no source, too many, or dst
// among them, or bad metadata.
func (c composition) check() error {
	switch {
	case len(c.srcs) == 0:
		return rpc.Errorf(rpc.Invalid, "no file to copy from")
	case len(c.srcs) > maxConcatSources:
		return rpc.Errorf(rpc.Invalid, "%d files to concatenate: at most %d", len(c.srcs), maxConcatSources)
	case slices.Contains(c.srcs, c.dst) && (len(c.srcs) > 1 || c.keepMetadata):
		// A file copied onto itself with new metadata is a new version
		// of it with the same bytes (S3's CopyObject of an object onto
		// itself, to replace its metadata); nothing else is.
		return rpc.Errorf(rpc.Invalid, "cannot copy %s onto itself", c.dst)
	}
	return meta.CheckMetadata(c.metadata)
}

// compose makes c.dst a new file with the bytes of c.srcs one after the
// other, sharing their chunks: no chunk byte moves, and GC deletes a
// chunk only when no file references it. c.cond is asked of the file dst
// replaces, whose chunks go to GC. The new file is referenced before its
// commit and released only when the commit is known not to have been
// applied, so a chunk it shares is never deleted in between; the path
// locks of the sources and dst are held (and the tree lock shared, so no
// move takes a source away), so no source can go while its chunks are
// being shared.
//
// A file's chunks all have one size but the last (readers find a byte's
// chunk by dividing), so every source but the last must be whole chunks
// of the first chunk's size (an S3 multipart upload of equal parts, each
// written as chunks of a size that divides it). A copy of one file keeps
// its digest; a concatenation of several has none (no SHA-256 of the
// whole can be made from its parts'): its chunk and frame digests verify
// its bytes.
func (ns *namespace) compose(ctx context.Context, c composition) (*meta.File, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if err := ns.safe.check("copy files"); err != nil {
		return nil, err
	}
	for _, src := range c.srcs {
		if err := ns.perms.read(ctx, src); err != nil {
			return nil, err
		}
	}
	cr, err := ns.perms.create(ctx, c.dst)
	if err != nil {
		return nil, err
	}
	defer ns.paths.lock(append(slices.Clone(c.srcs), c.dst)...)()
	for try := 0; ; try++ {
		f, err := ns.joined(ctx, c)
		if err != nil {
			return nil, err
		}
		old, err := current(ctx, ns.store, c.dst)
		if err != nil {
			return nil, err
		}
		if err := c.cond.check(c.dst, old); err != nil {
			return nil, err
		}
		f.Path, f.Modified, f.Session = c.dst, ns.now(), rpc.NewSessionID()
		f.Version, f.Attr = 1, cr.file
		txn := &meta.Txn{Path: c.dst, Put: f, Parents: cr.dir}
		if old != nil {
			f.Version, txn.Expect = old.Version+1, old.Version
			f.Attr = old.Attr // a replaced file's attributes stay
		}
		if err := ns.refs.share(f, maxShares); err != nil {
			return nil, err
		}
		if old != nil {
			// After the new file's references: a chunk the replaced file
			// shares with it (a copy onto itself shares them all) is not
			// deleted.
			txn.AddDeletions = ns.locs.deletionsOf(old)
		}
		err = ns.commits.Commit(ctx, txn)
		if err != nil && outcomeUnknown(err) && ns.moved(ctx, f, c.dst) {
			// Reported failed, but applied: the copy stands, with its
			// references; the deletions are recorded again.
			ns.log.Warn().Err(err).Strs("from", paths(c.srcs)).Str("to", string(c.dst)).Msg("copy reported failed but applied; finishing it")
			err = ns.commits.Commit(ctx, &meta.Txn{AddDeletions: txn.AddDeletions})
			if err != nil {
				return nil, err // the copy is committed and referenced; its deletions wait for the next term
			}
		} else if err != nil {
			if !outcomeUnknown(err) {
				ns.refs.remove(f)
			}
			// With the outcome still unknown the references stay: a chunk
			// kept too long is an orphan for GC, one deleted too soon is
			// data lost.
			if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
				continue
			}
			return nil, err
		}
		ns.dels.queue.file(f)
		if old != nil {
			ns.dels.enqueue(txn.AddDeletions)
			ns.dels.unreference(ctx, old, txn.AddDeletions)
		}
		ns.log.Info().Strs("from", paths(c.srcs)).Str("to", string(c.dst)).Int("chunks", len(f.Chunks)).Msg("file copied")
		return f, nil
	}
}

// joined returns the file c makes, but for its path, time, session,
// version and attributes: the sources' chunks one after the other, at
// the highest of their replications.
func (ns *namespace) joined(ctx context.Context, c composition) (*meta.File, error) {
	var f *meta.File
	for _, src := range c.srcs {
		from, err := ns.store.Lookup(ctx, src)
		if err != nil {
			return nil, err
		}
		if from.IsDir {
			return nil, rpc.Errorf(rpc.Invalid, "%s is a directory: copy copies files", src)
		}
		if c.srcVersion != 0 && from.File.Version != c.srcVersion {
			return nil, rpc.Errorf(rpc.FailedPrecondition, "%s is at version %d, not %d", src, from.File.Version, c.srcVersion)
		}
		if f == nil {
			g := *from.File
			g.Chunks = slices.Clone(g.Chunks)
			f = &g
			continue
		}
		if err := ns.appendable(f, from.File); err != nil {
			return nil, err
		}
		f.Chunks = append(f.Chunks, from.File.Chunks...)
		f.Size += from.File.Size
		f.Replication = max(f.Replication, from.File.Replication)
	}
	if len(c.srcs) > 1 {
		f.SHA256 = nil
		switch {
		case len(f.Chunks) > 1:
			f.ChunkSize = f.Chunks[0].Size
		case len(f.Chunks) == 1:
			f.ChunkSize = max(f.ChunkSize, f.Chunks[0].Size)
		}
	}
	if !c.keepMetadata {
		f.Metadata = c.metadata
	}
	return f, nil
}

// appendable says why next's chunks cannot follow f's, if they cannot:
// f's chunks must all be of one size (a valid chunk size), and so must
// next's but its last, the same size, and its last no larger (it may end
// the file); the chunks together within the most a file may have.
func (ns *namespace) appendable(f, next *meta.File) error {
	if len(next.Chunks) == 0 {
		return nil
	}
	if len(f.Chunks)+len(next.Chunks) > ns.maxChunks {
		return rpc.Errorf(rpc.Invalid, "the concatenation would have more than %d chunks", ns.maxChunks)
	}
	if len(f.Chunks) == 0 {
		return nil
	}
	size := f.Chunks[0].Size
	whole := func(chunks []meta.Chunk) bool {
		return !slices.ContainsFunc(chunks, func(ch meta.Chunk) bool { return ch.Size != size })
	}
	if rpc.CheckChunkSize(size) != nil || !whole(f.Chunks) || !whole(next.Chunks[:len(next.Chunks)-1]) ||
		next.Chunks[len(next.Chunks)-1].Size > size {
		return rpc.Errorf(rpc.Invalid, "cannot concatenate %s: every file but the last must be whole chunks of one size (%s, the first chunk's)", next.Path, rpc.FormatBytes(size))
	}
	return nil
}

// paths returns ps as strings.
func paths(ps []rpc.Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}

// treeUsage is what a subtree holds.
type treeUsage struct {
	bytes, files, dirs int64
}

// usage sums the files and bytes below p (p itself when it is a file),
// walking the store a page at a time: bounded memory, time in proportion
// to the subtree. The caller must be allowed to list p and every
// directory below it (as HDFS's content summary asks): one it may not
// list fails the sum with rpc.Permission.
func (ns *namespace) usage(ctx context.Context, p rpc.Path) (treeUsage, error) {
	if err := ns.perms.list(ctx, p); err != nil {
		return treeUsage{}, err
	}
	l := ns.perms.lister(ctx, p)
	var u treeUsage
	after := ""
	for {
		page, more, err := ns.list(ctx, p, true, after, maxPageSize)
		if err != nil {
			return treeUsage{}, err
		}
		for _, e := range page {
			if top, err := l.hidden(ctx, e); err != nil || top != "" {
				if err == nil {
					err = rpc.Errorf(rpc.Permission, "permission denied: %s may not list %s, below %s", l.id.User, top, p)
				}
				return treeUsage{}, err
			}
			if e.IsDir {
				u.dirs++
				continue
			}
			u.files++
			u.bytes += e.File.Size
		}
		if !more {
			return u, nil
		}
		if err := ctx.Err(); err != nil {
			return treeUsage{}, err
		}
		after = meta.ListKey(page[len(page)-1])
	}
}

// setAttr changes what set asks of the attributes of the file or
// directory p (perms.setAttr says who may) and returns them as they are
// after.
func (ns *namespace) setAttr(ctx context.Context, p rpc.Path, set attrChange) (meta.Attr, error) {
	defer ns.paths.lock(p)()
	e, err := ns.store.Lookup(ctx, p)
	if err != nil {
		return meta.Attr{}, err
	}
	cur := e.Attr()
	next := cur
	if set.owner != "" {
		next.Owner = set.owner
	}
	if set.group != "" {
		next.Group = set.group
	}
	if set.mode != nil {
		next.Mode = *set.mode
	}
	if err := meta.CheckAttr(&next); err != nil {
		return meta.Attr{}, err
	}
	if err := ns.perms.setAttr(ctx, p, e.IsDir, cur, next); err != nil {
		return meta.Attr{}, err
	}
	if next == cur && (e.IsDir && e.Dir.Attr == next || !e.IsDir && e.File.Attr == next) {
		return next, nil
	}
	if err := ns.commits.Commit(ctx, &meta.Txn{Path: p, SetAttr: &next}); err != nil {
		return meta.Attr{}, err
	}
	ns.log.Info().Str("path", string(p)).Str("owner", next.Owner).Str("group", next.Group).Str("mode", auth.FormatMode(next.Mode, e.IsDir)).Msg("attributes changed")
	return next, nil
}

// attrChange is what a SetAttr changes: an empty owner or group, or a nil
// mode, stays.
type attrChange struct {
	owner, group string
	mode         *uint32
}
