package coordinator

import (
	"context"
	"errors"

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
// removed so far gone. The root itself is never removed: removing "/"
// recursively empties it.
func (ns *namespace) remove(ctx context.Context, p rpc.Path, opts removeOptions) error {
	e, err := ns.store.Lookup(ctx, p)
	if err != nil {
		return err
	}
	switch {
	case !e.IsDir:
		return ns.removeFile(ctx, p, opts.version)
	case opts.version != 0:
		return rpc.Errorf(rpc.Invalid, "%s is a directory, which has no version", p)
	case opts.recursive:
		return ns.removeAll(ctx, p)
	case p == "/":
		return rpc.Errorf(rpc.Invalid, "the root directory cannot be removed")
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

// removeAll removes everything below the directory dir, a page of one
// level at a time (bounded memory whatever the tree holds, recursion as
// deep as the tree), then dir itself unless it is the root.
func (ns *namespace) removeAll(ctx context.Context, dir rpc.Path) error {
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
				err = ns.removeAll(ctx, e.Path)
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
	defer ns.paths.lock(p)()
	txn := &meta.Txn{Path: p, Mkdir: &meta.Dir{Path: p, Modified: ns.now()}, MkdirParents: parents}
	if err := ns.commits.Commit(ctx, txn); err != nil {
		return err
	}
	ns.log.Info().Str("path", string(p)).Msg("directory created")
	return nil
}

// lockPaths locks the paths a change names, in order, so that two
// changes naming the same two paths cannot deadlock; a path named twice is
// locked once.
func (ns *namespace) lockPaths(a, b rpc.Path) (unlock func()) {
	if a == b {
		return ns.paths.lock(a)
	}
	if b < a {
		a, b = b, a
	}
	ua := ns.paths.lock(a)
	ub := ns.paths.lock(b)
	return func() { ub(); ua() }
}

// rename moves the file or directory src to dst in one commit (see
// meta.Move). A file replaces a file at dst unless noReplace; the
// replaced file's chunks go to GC.
func (ns *namespace) rename(ctx context.Context, src, dst rpc.Path, noReplace bool) error {
	if src == "/" || dst == "/" {
		return rpc.Errorf(rpc.Invalid, "the root directory cannot be renamed, nor replaced")
	}
	if dst.IsBelow(src) {
		return rpc.Errorf(rpc.Invalid, "cannot move %s into itself (%s)", src, dst)
	}
	defer ns.lockPaths(src, dst)()
	for try := 0; ; try++ {
		from, err := ns.store.Lookup(ctx, src)
		if err != nil {
			return err
		}
		txn := &meta.Txn{Path: src, Move: &meta.Move{To: dst, Modified: ns.now()}}
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
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue
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
}

// maxShares bounds how many files may share a chunk (the chunk index
// counts its references in 16 bits).
const maxShares = 1<<16 - 2

// copy makes dst a new file with src's bytes, sharing src's chunks: no
// chunk byte moves, and GC deletes a chunk only when no file references
// it. cond is asked of the file dst replaces, whose chunks go to GC. The
// new file is referenced before its commit and released if the commit
// fails, so a chunk it shares is never deleted in between; src's path is
// locked meanwhile, so src cannot go while its chunks are being shared.
func (ns *namespace) copy(ctx context.Context, src, dst rpc.Path, cond precondition) (*meta.File, error) {
	if src == dst {
		return nil, rpc.Errorf(rpc.Invalid, "cannot copy %s onto itself", src)
	}
	if err := ns.safe.check("copy files"); err != nil {
		return nil, err
	}
	defer ns.lockPaths(src, dst)()
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
		f.Version = 1
		txn := &meta.Txn{Path: dst, Put: &f}
		if old != nil {
			f.Version, txn.Expect = old.Version+1, old.Version
			txn.AddDeletions = ns.locs.deletionsOf(old)
		}
		if err := ns.refs.share(&f, maxShares); err != nil {
			return nil, err
		}
		err = ns.commits.Commit(ctx, txn)
		if err != nil {
			ns.refs.remove(&f)
		}
		if errors.Is(err, meta.ErrConflict) && try < maxCommitRetries {
			continue
		}
		if err != nil {
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
// to the subtree.
func (ns *namespace) usage(ctx context.Context, p rpc.Path) (treeUsage, error) {
	var u treeUsage
	after := ""
	for {
		page, more, err := ns.list(ctx, p, true, after, maxPageSize)
		if err != nil {
			return treeUsage{}, err
		}
		for _, e := range page {
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
