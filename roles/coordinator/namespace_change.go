package coordinator

import (
	"context"
	"errors"

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

// copy makes dst a new file with src's bytes, sharing src's chunks: no
// chunk byte moves, and GC deletes a chunk only when no file references
// it. cond is asked of the file dst replaces, whose chunks go to GC. The
// new file is referenced before its commit and released only when the
// commit is known not to have been applied, so a chunk it shares is never
// deleted in between; the path locks of src and dst are held (and the tree
// lock shared, so no move takes src away), so src cannot go while its
// chunks are being shared.
func (ns *namespace) copy(ctx context.Context, src, dst rpc.Path, cond precondition) (*meta.File, error) {
	if src == dst {
		return nil, rpc.Errorf(rpc.Invalid, "cannot copy %s onto itself", src)
	}
	if err := ns.safe.check("copy files"); err != nil {
		return nil, err
	}
	if err := ns.perms.read(ctx, src); err != nil {
		return nil, err
	}
	c, err := ns.perms.create(ctx, dst)
	if err != nil {
		return nil, err
	}
	defer ns.paths.lock(src, dst)()
	for try := 0; ; try++ {
		from, err := ns.store.Lookup(ctx, src)
		if err != nil {
			return nil, err
		}
		if from.IsDir {
			return nil, rpc.Errorf(rpc.Invalid, "%s is a directory: copy copies files", src)
		}
		old, err := current(ctx, ns.store, dst)
		if err != nil {
			return nil, err
		}
		if err := cond.check(dst, old); err != nil {
			return nil, err
		}
		f := *from.File
		f.Path, f.Modified, f.Session = dst, ns.now(), rpc.NewSessionID()
		f.Version, f.Attr = 1, c.file
		txn := &meta.Txn{Path: dst, Put: &f, Parents: c.dir}
		if old != nil {
			f.Version, txn.Expect = old.Version+1, old.Version
			f.Attr = old.Attr // a replaced file's attributes stay
			txn.AddDeletions = ns.locs.deletionsOf(old)
		}
		if err := ns.refs.share(&f, maxShares); err != nil {
			return nil, err
		}
		err = ns.commits.Commit(ctx, txn)
		if err != nil && outcomeUnknown(err) && ns.moved(ctx, &f, dst) {
			// Reported failed, but applied: the copy stands, with its
			// references; the deletions are recorded again.
			ns.log.Warn().Err(err).Str("from", string(src)).Str("to", string(dst)).Msg("copy reported failed but applied; finishing it")
			err = ns.commits.Commit(ctx, &meta.Txn{AddDeletions: txn.AddDeletions})
			if err != nil {
				return nil, err // the copy is committed and referenced; its deletions wait for the next term
			}
		} else if err != nil {
			if !outcomeUnknown(err) {
				ns.refs.remove(&f)
			}
			// With the outcome still unknown the references stay: a chunk
			// kept too long is an orphan for GC, one deleted too soon is
			// data lost.
			if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
				continue
			}
			return nil, err
		}
		ns.dels.queue.file(&f)
		if old != nil {
			ns.dels.enqueue(txn.AddDeletions)
			ns.dels.unreference(ctx, old, txn.AddDeletions)
		}
		ns.log.Info().Str("from", string(src)).Str("to", string(dst)).Int("chunks", len(f.Chunks)).Msg("file copied")
		return &f, nil
	}
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
