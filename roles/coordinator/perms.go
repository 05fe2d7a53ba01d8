package coordinator

import (
	"context"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// perms decides whether the caller of a namespace call may make it, by
// the owner, group and mode of the paths the call touches, as HDFS does
// (the table is in docs/security.md):
//
//   - every ancestor of a path needs search (x) to reach it;
//   - reading a file needs r on it; listing a directory r and x;
//   - creating a file or directory needs w and x on the nearest existing
//     ancestor (the parent, or the first of the parents a put or mkdir -p
//     creates); overwriting a file needs w on it;
//   - removing or renaming needs w and x on the parent, and with the
//     parent's sticky bit set, owning the entry or the parent;
//   - chmod is for the owner, chown for a superuser, chgrp for the owner
//     to a group they are in.
//
// A call without an identity in its context (a coordinator running in
// plain text, or an in-process caller) is not checked, and what it
// creates has no owner (meta.DefaultAttr). A superuser is not checked
// either; what they create is theirs. The checks read the path and its
// ancestors in one Walk of the store, only when a caller is checked.
type perms struct {
	store      meta.Namespace
	superusers auth.Superusers
}

// perms returns the coordinator's permission checks.
func (c *Coordinator) perms() perms {
	return perms{store: c.store, superusers: c.cfg.Superusers}
}

// caller returns who calls, whether a caller is known, and whether it is
// to be checked (known and not a superuser).
func (pm perms) caller(ctx context.Context) (id auth.Identity, known, checked bool) {
	id, known = auth.FromContext(ctx)
	return id, known, known && !pm.superusers.Has(id)
}

// verbs name an access in a refusal.
var verbs = map[auth.Access]string{
	auth.Read: "read", auth.Write: "write", auth.Exec: "search", auth.Read | auth.Exec: "list",
	auth.Write | auth.Exec: "change", auth.Read | auth.Write | auth.Exec: "remove everything in",
}

// allow returns nil if id may have want on e, else the refusal naming
// the path and what was missing.
func allow(id auth.Identity, e meta.Entry, want auth.Access) error {
	a := e.Attr()
	if auth.Allowed(id, a.Owner, a.Group, a.Mode, want) {
		return nil
	}
	return denied(id, verbs[want], e.Path, a, e.IsDir)
}

// denied is the refusal of id's verb on p, whose attributes are a.
func denied(id auth.Identity, verb string, p rpc.Path, a meta.Attr, dir bool) error {
	return rpc.Errorf(rpc.Permission, "permission denied: %s may not %s %s (owner %s, group %s, mode %s)",
		id.User, verb, p, a.Owner, a.Group, auth.FormatMode(a.Mode, dir))
}

// resolved is what walk found of a path.
type resolved struct {
	// near is the nearest existing ancestor directory of the path (the
	// parent, when it exists).
	near meta.Entry
	// target is what the path names, nil when nothing (or an ancestor is
	// a file: the call fails on its own).
	target *meta.Entry
	// fileAbove is the ancestor that is a file, if one is.
	fileAbove rpc.Path
}

// conflict refuses an upload to p that its commit would refuse (p is a
// directory, or lies below a file), from what a walk of p found.
func (r resolved) conflict(p rpc.Path) error {
	switch {
	case r.target != nil && r.target.IsDir:
		return rpc.Errorf(rpc.Exists, "%s is a directory", p)
	case r.fileAbove != "":
		return rpc.Errorf(rpc.Exists, "%s: parent %s is a file", p, r.fileAbove)
	}
	return nil
}

// parentExists reports whether the path's parent is a directory.
func (r resolved) parentExists(p rpc.Path) bool { return r.near.Path == p.Dir() }

// walk reads p's ancestors from the root down and what p names, in one
// read of the store; with check, each ancestor must let id search it (x).
func (pm perms) walk(ctx context.Context, id auth.Identity, check bool, p rpc.Path) (resolved, error) {
	es, err := pm.store.Walk(ctx, p)
	if err != nil {
		return resolved{}, err
	}
	var r resolved
	for i, e := range es {
		switch {
		case e.Path == p:
			r.target = &es[i]
			if p == "/" {
				r.near = e
			}
			return r, nil
		case !e.IsDir:
			r.fileAbove = e.Path
			return r, nil
		case check:
			if err := allow(id, e, auth.Exec); err != nil {
				return r, err
			}
		}
		r.near = e
	}
	return r, nil
}

// stat checks that the caller may reach p: x on its ancestors.
func (pm perms) stat(ctx context.Context, p rpc.Path) error {
	id, _, checked := pm.caller(ctx)
	if !checked {
		return nil
	}
	_, err := pm.walk(ctx, id, true, p)
	return err
}

// list checks that the caller may list p: r and x on a directory; a
// file lists as itself, which takes what stat takes.
func (pm perms) list(ctx context.Context, p rpc.Path) error {
	_, err := pm.check(ctx, p, false)
	return err
}

// read checks that the caller may read the file p (r), and list the
// directory p (r and x).
func (pm perms) read(ctx context.Context, p rpc.Path) error {
	_, err := pm.check(ctx, p, true)
	return err
}

// readFile is read, returning also the file p when the check read it:
// nil when the caller is not checked, or p is not a file.
func (pm perms) readFile(ctx context.Context, p rpc.Path) (*meta.File, error) {
	e, err := pm.check(ctx, p, true)
	if e == nil || err != nil {
		return nil, err
	}
	return e.File, nil
}

// check is read, or with files false list, returning what p names when
// the check read it.
func (pm perms) check(ctx context.Context, p rpc.Path, files bool) (*meta.Entry, error) {
	id, _, checked := pm.caller(ctx)
	if !checked {
		return nil, nil
	}
	r, err := pm.walk(ctx, id, true, p)
	if err != nil || r.target == nil {
		return nil, err
	}
	want := auth.Read
	switch {
	case r.target.IsDir:
		want |= auth.Exec
	case !files:
		return r.target, nil
	}
	return r.target, allow(id, *r.target, want)
}

// created is what a new file or directory, and the directories made for
// it, are given: the caller's, in the group of the nearest existing
// ancestor (the BSD and HDFS rule). Without a caller, the zero Attr.
type created struct {
	file, dir meta.Attr
}

func createdBy(owner string, near meta.Entry) created {
	if owner == "" {
		return created{}
	}
	g := near.Attr().Group
	return created{
		file: meta.Attr{Owner: owner, Group: g, Mode: meta.DefaultFileMode},
		dir:  meta.Attr{Owner: owner, Group: g, Mode: meta.DefaultDirMode},
	}
}

// create checks that the caller may write p: w on the file p when there
// is one, else w and x on its nearest existing ancestor (a put and a
// mkdir -p create the missing ones). It returns what a new p and the
// directories made for it are given.
func (pm perms) create(ctx context.Context, p rpc.Path) (created, error) {
	id, known, _ := pm.caller(ctx)
	if !known {
		return created{}, nil
	}
	c, _, err := pm.createWalk(ctx, id.User, p)
	return c, err
}

// createResolved is create, returning also what its walk found of p:
// with no caller known, nothing is checked, but p is walked all the same
// (an upload refuses a conflict from it).
func (pm perms) createResolved(ctx context.Context, p rpc.Path) (created, resolved, error) {
	id, known, _ := pm.caller(ctx)
	if !known {
		r, err := pm.walk(ctx, id, false, p)
		return created{}, r, err
	}
	return pm.createWalk(ctx, id.User, p)
}

// createFor checks, as create does, that the caller (if there is one) may
// write p now, and returns what a new p and the directories made for it
// are given when committed for owner ("": nothing), from p's nearest
// existing ancestor now: one walk. An upload's commit asks it, so that
// the permissions and the parent's group are those at the commit, which
// may have changed since the upload opened.
func (pm perms) createFor(ctx context.Context, owner string, p rpc.Path) (created, error) {
	c, _, err := pm.createWalk(ctx, owner, p)
	return c, err
}

// createWalk is createFor, returning also what its walk found of p (the
// zero resolved when there was no walk).
func (pm perms) createWalk(ctx context.Context, owner string, p rpc.Path) (created, resolved, error) {
	id, known, checked := pm.caller(ctx)
	if !known && owner == "" {
		return created{}, resolved{}, nil
	}
	r, err := pm.walk(ctx, id, checked, p)
	if err != nil {
		return created{}, resolved{}, err
	}
	if checked {
		switch {
		case r.target != nil && !r.target.IsDir:
			err = allow(id, *r.target, auth.Write)
		case r.target == nil:
			err = allow(id, r.near, auth.Write|auth.Exec)
		}
	}
	if owner == "" {
		return created{}, r, err
	}
	return createdBy(owner, r.near), r, err
}

// remove checks that the caller may remove or rename away p (it must
// exist to be checked): w and x on its parent, and with the parent's
// sticky bit, owning p or the parent. A recursive removal checks each
// directory it empties as it goes (removeTree).
func (pm perms) remove(ctx context.Context, p rpc.Path) error {
	id, _, checked := pm.caller(ctx)
	if !checked || p == "/" {
		return nil
	}
	r, err := pm.walk(ctx, id, true, p)
	if err != nil || r.target == nil {
		return err
	}
	return removable(id, r.near, *r.target)
}

// removable checks that id may remove e from its parent dir.
func removable(id auth.Identity, dir, e meta.Entry) error {
	if err := allow(id, dir, auth.Write|auth.Exec); err != nil {
		return err
	}
	da := dir.Attr()
	if da.Mode&meta.ModeSticky != 0 && id.User != da.Owner && id.User != e.Attr().Owner {
		return rpc.Errorf(rpc.Permission, "permission denied: %s may not remove or rename %s: %s is sticky (owner %s, mode %s) and %s is %s's",
			id.User, e.Path, dir.Path, da.Owner, auth.FormatMode(da.Mode, true), e.Path, e.Attr().Owner)
	}
	return nil
}

// removeTree checks that the caller may empty the directory dir, which
// a recursive removal lists (r, x) and removes from (w, x).
func (pm perms) removeTree(ctx context.Context, dir meta.Entry) error {
	id, _, checked := pm.caller(ctx)
	if !checked {
		return nil
	}
	return allow(id, dir, auth.Read|auth.Write|auth.Exec)
}

// rename checks that the caller may move src to dst: remove's rules on
// src; w and x on dst's parent (or its nearest existing ancestor, when
// the move creates the parents); and for a file it replaces, w on it and
// the sticky rule of its parent. It returns what the directories made
// for dst are given.
func (pm perms) rename(ctx context.Context, src, dst rpc.Path) (created, error) {
	id, known, checked := pm.caller(ctx)
	if !known {
		return created{}, nil
	}
	if err := pm.remove(ctx, src); err != nil {
		return created{}, err
	}
	r, err := pm.walk(ctx, id, checked, dst)
	if err != nil {
		return created{}, err
	}
	if checked && src != dst {
		if err := allow(id, r.near, auth.Write|auth.Exec); err != nil {
			return created{}, err
		}
		if r.target != nil && !r.target.IsDir {
			if err := allow(id, *r.target, auth.Write); err != nil {
				return created{}, err
			}
			if err := removable(id, r.near, *r.target); err != nil {
				return created{}, err
			}
		}
	}
	return createdBy(id.User, r.near), nil
}

// setAttr checks that the caller may change p's attributes from cur to
// next: the mode only its owner, the owner only a superuser, the group
// its owner to a group they are in.
func (pm perms) setAttr(ctx context.Context, p rpc.Path, dir bool, cur, next meta.Attr) error {
	id, _, checked := pm.caller(ctx)
	if !checked {
		return nil
	}
	if _, err := pm.walk(ctx, id, true, p); err != nil {
		return err
	}
	switch {
	case next.Owner != cur.Owner:
		return rpc.Errorf(rpc.Permission, "permission denied: only a superuser may change the owner of %s (%s is not one)", p, id.User)
	case id.User != cur.Owner && (next.Mode != cur.Mode || next.Group != cur.Group):
		return denied(id, "change the mode or group of", p, cur, dir)
	case next.Group != cur.Group && !id.InGroup(next.Group):
		return rpc.Errorf(rpc.Permission, "permission denied: %s may not give %s to group %s, which they are not in", id.User, p, next.Group)
	}
	return nil
}

// lister decides, for the entries of one recursive listing of dir, which
// the caller may see: those whose every directory below dir lets it list
// (r and x). dir itself was checked (read).
type lister struct {
	pm      perms
	id      auth.Identity
	checked bool
	dir     rpc.Path
	ok      map[rpc.Path]bool // directories found listable or not
}

func (pm perms) lister(ctx context.Context, dir rpc.Path) *lister {
	id, _, checked := pm.caller(ctx)
	return &lister{pm: pm, id: id, checked: checked, dir: dir, ok: map[rpc.Path]bool{}}
}

// hidden returns the topmost directory below l.dir above e that the
// caller may not list, "" when it may see e. It remembers what it learns
// of e, when e is a directory, for the entries below it.
func (l *lister) hidden(ctx context.Context, e meta.Entry) (rpc.Path, error) {
	if !l.checked {
		return "", nil
	}
	if e.IsDir {
		if _, seen := l.ok[e.Path]; !seen {
			a := e.Attr()
			l.ok[e.Path] = auth.Allowed(l.id, a.Owner, a.Group, a.Mode, auth.Read|auth.Exec)
		}
	}
	top := rpc.Path("")
	for d := e.Path.Dir(); d != l.dir && d.IsBelow(l.dir); d = d.Dir() {
		ok, seen := l.ok[d]
		if !seen {
			de, err := l.pm.store.Lookup(ctx, d)
			if err != nil {
				return "", err
			}
			a := de.Attr()
			ok = auth.Allowed(l.id, a.Owner, a.Group, a.Mode, auth.Read|auth.Exec)
			l.ok[d] = ok
		}
		if !ok {
			top = d
		}
	}
	return top, nil
}

// pastTree is a listing key after every key of the directory d's
// subtree, so a listing resumed there skips it: no path holds the byte
// 0xff (paths are UTF-8).
func pastTree(d rpc.Path) string { return meta.DirKey(d) + "\xff" }
