package boltstore

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// MaxMoveEntries bounds the entries (the directory itself, and every file
// and directory below it) that one Move of a directory rewrites: they are
// all rewritten in one write transaction, which bolt holds in memory until
// it commits. A larger move is refused with rpc.ResourceExhausted.
const MaxMoveEntries = 100_000

// fileVersion returns the version of the file at p, 0 when there is none.
func fileVersion(files *bolt.Bucket, p rpc.Path) (uint64, error) {
	k := []byte(p)
	v := files.Get(k)
	if v == nil {
		return 0, nil
	}
	f, err := decodeFile(k, v)
	if err != nil {
		return 0, err
	}
	return f.Version, nil
}

// isDir reports whether p is a directory (the root always is).
func isDir(files *bolt.Bucket, p rpc.Path) bool {
	return p == "/" || files.Get(dirKey(p)) != nil
}

// missingParents returns the ancestors of p that are not directories,
// nearest first, or rpc.Exists when one is a file. Every directory's
// ancestors are directories, so the walk stops at the first one.
func missingParents(files *bolt.Bucket, p rpc.Path) ([]rpc.Path, error) {
	var missing []rpc.Path
	for d := p.Dir(); !isDir(files, d); d = d.Dir() {
		if files.Get([]byte(d)) != nil {
			return nil, rpc.Errorf(rpc.Exists, "%s: parent %s is a file", p, d)
		}
		missing = append(missing, d)
	}
	return missing, nil
}

// putDirs stores the directories ds that txn creates (nil: an upgrade or
// restore, whose directories get the zero Attr), made at mod.
func putDirs(files *bolt.Bucket, txn *meta.Txn, ds []rpc.Path, mod time.Time) error {
	for _, d := range ds {
		v, err := encodeDir(&meta.Dir{Path: d, Modified: mod, Attr: meta.CreatedAttr(txn, d)})
		if err != nil {
			return err
		}
		if err := files.Put(dirKey(d), v); err != nil {
			return err
		}
	}
	return nil
}

// txnModified is the time of the directories txn creates.
func txnModified(txn *meta.Txn) time.Time {
	switch {
	case txn.Put != nil:
		return txn.Put.Modified
	case txn.Mkdir != nil:
		return txn.Mkdir.Modified
	case txn.Move != nil:
		return txn.Move.Modified
	}
	return time.Time{}
}

// checkMkdir runs a Mkdir's checks; cur is the version of the file at
// its path. It returns the directories to create.
func checkMkdir(files *bolt.Bucket, txn *meta.Txn, cur uint64) ([]rpc.Path, error) {
	p := txn.Path
	switch {
	case cur != 0:
		return nil, rpc.Errorf(rpc.Exists, "mkdir %s: a file exists there", p)
	case isDir(files, p) && !txn.MkdirParents:
		return nil, rpc.Errorf(rpc.Exists, "mkdir %s: the directory exists", p)
	case isDir(files, p):
		return nil, nil
	}
	missing, err := missingParents(files, p)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 && !txn.MkdirParents {
		return nil, rpc.Errorf(rpc.NotFound, "mkdir %s: the parent directory %s does not exist", p, p.Dir())
	}
	return append(missing, p), nil
}

// checkSetAttr runs a SetAttr's checks; cur is the version of the file
// at p.
func checkSetAttr(files *bolt.Bucket, p rpc.Path, cur uint64) error {
	if cur == 0 && !isDir(files, p) {
		return rpc.Errorf(rpc.NotFound, "setattr %s: no such file or directory", p)
	}
	return nil
}

// setAttr replaces the attributes of the file or directory p;
// checkSetAttr has passed.
func setAttr(files *bolt.Bucket, p rpc.Path, a meta.Attr) error {
	if v := files.Get([]byte(p)); v != nil {
		f, err := decodeFile([]byte(p), v)
		if err != nil {
			return err
		}
		f.Attr = a
		nv, err := encodeFile(f)
		if err != nil {
			return err
		}
		return files.Put([]byte(p), nv)
	}
	k := dirKey(p)
	d, err := decodeDir(k, files.Get(k))
	if err != nil {
		return err
	}
	d.Attr = a
	nv, err := encodeDir(d)
	if err != nil {
		return err
	}
	return files.Put(k, nv)
}

// checkRmdir runs a Rmdir's checks; cur is the version of the file at p.
func checkRmdir(files *bolt.Bucket, p rpc.Path, cur uint64) error {
	switch {
	case cur != 0:
		return rpc.Errorf(rpc.Invalid, "rmdir %s: a file, not a directory", p)
	case !isDir(files, p):
		return rpc.Errorf(rpc.NotFound, "rmdir %s: no such directory", p)
	}
	prefix := dirKey(p)
	c := files.Cursor()
	c.Seek(prefix)
	if k, _ := c.Next(); k != nil && bytes.HasPrefix(k, prefix) {
		return rpc.Errorf(rpc.Other, "rmdir %s: %w", p, meta.ErrNotEmpty)
	}
	return nil
}

// checkMove runs a Move's checks; cur is the version of the file at the
// txn's path, maxMove the bound on the entries it rewrites
// (MaxMoveEntries). It returns the directories to create.
func checkMove(files *bolt.Bucket, txn *meta.Txn, cur uint64, maxMove int) ([]rpc.Path, error) {
	p, to := txn.Path, txn.Move.To
	dir := isDir(files, p)
	if same, err := meta.CheckMoveSource(txn, cur, dir); same || err != nil {
		return nil, err
	}
	dst, err := fileVersion(files, to)
	if err != nil {
		return nil, err
	}
	if err := meta.CheckMoveTarget(txn, dir, dst, isDir(files, to)); err != nil {
		return nil, err
	}
	if dir {
		n := 0
		prefix := dirKey(p)
		c := files.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if n++; n > maxMove {
				return nil, rpc.Errorf(rpc.ResourceExhausted,
					"move %s: the directory and what it holds are more than %d entries, more than one move may rewrite; move its subdirectories one by one", p, maxMove)
			}
		}
	}
	return missingParents(files, to)
}

// move renames the file or directory p, with everything below it, to to;
// checkMove has passed.
func move(files *bolt.Bucket, p, to rpc.Path) error {
	if v := files.Get([]byte(p)); v != nil {
		f, err := decodeFile([]byte(p), v)
		if err != nil {
			return err
		}
		f.Path = to
		nv, err := encodeFile(f)
		if err != nil {
			return err
		}
		if err := files.Delete([]byte(p)); err != nil {
			return err
		}
		return files.Put([]byte(to), nv)
	}
	// Read the subtree first: a bolt cursor must not walk a bucket that
	// changes under it.
	type rec struct{ k, v []byte }
	var recs []rec
	prefix := dirKey(p)
	c := files.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		recs = append(recs, rec{bytes.Clone(k), v})
	}
	var moved []rec
	for _, r := range recs {
		e, err := decodeEntry(r.k, r.v)
		if err != nil {
			return err
		}
		np := to + e.Path[len(p):]
		var nv []byte
		if e.IsDir {
			e.Dir.Path = np
			nv, err = encodeDir(e.Dir)
		} else {
			e.File.Path = np
			nv, err = encodeFile(e.File)
		}
		if err != nil {
			return err
		}
		nk := []byte(np)
		if e.IsDir {
			nk = dirKey(np)
		}
		moved = append(moved, rec{nk, nv})
	}
	for _, r := range recs {
		if err := files.Delete(r.k); err != nil {
			return err
		}
	}
	for _, r := range moved {
		if err := files.Put(r.k, r.v); err != nil {
			return err
		}
	}
	return nil
}
