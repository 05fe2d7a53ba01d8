package mount

import (
	"context"
	"errors"
	"hash/fnv"
	"io/fs"
	"iter"
	gopath "path"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dfs-project/dfs/roles/client"
)

// dirNode is a directory.
type dirNode struct {
	gofs.Inode
	m *Mount

	mu      sync.Mutex
	a       attrs
	fetched time.Time
}

var (
	_ gofs.NodeLookuper       = (*dirNode)(nil)
	_ gofs.NodeGetattrer      = (*dirNode)(nil)
	_ gofs.NodeSetattrer      = (*dirNode)(nil)
	_ gofs.NodeMkdirer        = (*dirNode)(nil)
	_ gofs.NodeRmdirer        = (*dirNode)(nil)
	_ gofs.NodeUnlinker       = (*dirNode)(nil)
	_ gofs.NodeRenamer        = (*dirNode)(nil)
	_ gofs.NodeCreater        = (*dirNode)(nil)
	_ gofs.NodeOpendirHandler = (*dirNode)(nil)
	_ gofs.NodeStatfser       = (*dirNode)(nil)
	_ gofs.NodeLinker         = (*dirNode)(nil)
	_ gofs.NodeSymlinker      = (*dirNode)(nil)
	_ gofs.NodeMknoder        = (*dirNode)(nil)
	_ gofs.FileReaddirenter   = (*dirHandle)(nil)
	_ gofs.FileLookuper       = (*dirHandle)(nil)
	_ gofs.FileSeekdirer      = (*dirHandle)(nil)
	_ gofs.FileReleasedirer   = (*dirHandle)(nil)
)

func (d *dirNode) path() (string, syscall.Errno) {
	p, ok := pathOf(&d.Inode)
	if !ok {
		return "", syscall.ENOENT
	}
	return p, 0
}

// fillOut writes the attributes of the directory, as it stands in the
// tree.
func (d *dirNode) fillOut(out *fuse.AttrOut) {
	_, p := d.Parent()
	d.fill(&out.Attr, p != nil || d.IsRoot())
	out.SetTimeout(d.m.attrTimeout(false))
}

// fillEntry writes the attributes of the directory a lookup or mkdir
// returns: it enters the tree as the call returns.
func (d *dirNode) fillEntry(out *fuse.EntryOut) {
	d.fill(&out.Attr, true)
	out.SetAttrTimeout(d.m.attrTimeout(false))
}

func (d *dirNode) fill(out *fuse.Attr, linked bool) {
	d.mu.Lock()
	a := d.a
	d.mu.Unlock()
	nlink := uint32(2)
	if !linked {
		nlink = 0
	}
	d.m.fill(out, a, true, nlink)
}

func (d *dirNode) setAttrs(a attrs) {
	d.mu.Lock()
	d.a, d.fetched = a, time.Now()
	d.mu.Unlock()
}

// Getattr returns the directory's attributes, from the cluster when the
// ones held are older than the attribute timeout.
func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.mu.Lock()
	fresh := time.Since(d.fetched) < d.m.cfg.AttrTimeout
	d.mu.Unlock()
	if !fresh {
		p, ok := pathOf(&d.Inode)
		if ok {
			fi, err := d.m.c.Head(ctx, p)
			if err != nil {
				return d.m.errno("stat", p, err)
			}
			d.setAttrs(fromInfo(fi))
		}
	}
	d.fillOut(out)
	return 0
}

// Setattr changes the mode and owner; times are accepted and not kept
// (dfs keeps when a directory was made).
func (d *dirNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	p, errno := d.path()
	if errno != 0 {
		return errno
	}
	d.mu.Lock()
	a := d.a
	d.mu.Unlock()
	if errno := d.m.setModeOwner(ctx, p, in, &a); errno != 0 {
		return errno
	}
	d.setAttrs(a)
	d.fillOut(out)
	return 0
}

// setModeOwner applies the mode and owner a setattr asks for to path,
// and to a.
func (m *Mount) setModeOwner(ctx context.Context, path string, in *fuse.SetAttrIn, a *attrs) syscall.Errno {
	if m.cfg.ReadOnly {
		return syscall.EROFS
	}
	if mode, ok := in.GetMode(); ok {
		fm := toFileMode(mode)
		if fm != a.mode {
			if err := m.c.Chmod(ctx, path, fm); err != nil {
				return notOwner(m.errno("chmod", path, err))
			}
			a.mode = fm
		}
	}
	user, group := m.ownerChange(in, *a)
	if user != "" || group != "" {
		if err := m.c.Chown(ctx, path, user, group); err != nil {
			return notOwner(m.errno("chown", path, err))
		}
		if user != "" {
			a.owner = user
		}
		if group != "" {
			a.group = group
		}
	}
	return 0
}

// notOwner is the errno of a refused chmod or chown: EPERM, as POSIX
// says for a caller who may not change the file's mode or owner.
func notOwner(errno syscall.Errno) syscall.Errno {
	if errno == syscall.EACCES {
		return syscall.EPERM
	}
	return errno
}

// ownerChange returns the user and group a setattr sets that differ from
// a's ("" for no change).
func (m *Mount) ownerChange(in *fuse.SetAttrIn, a attrs) (user, group string) {
	if uid, ok := in.GetUID(); ok && uid != m.uidOf(a.owner) {
		user = m.userName(uid)
	}
	if gid, ok := in.GetGID(); ok && gid != m.gidOf(a.group) {
		group = m.groupName(gid)
	}
	return user, group
}

// Lookup finds a child: a file this mount is writing, or what the cluster
// holds.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, errno
	}
	if ch := d.GetChild(name); ch != nil {
		if f, ok := ch.Operations().(*fileNode); ok && f.isLocal() {
			f.fillEntry(out)
			return ch, 0
		}
	}
	p := join(dir, name)
	fi, err := d.m.c.Head(ctx, p)
	if err != nil {
		return nil, d.m.errno("lookup", p, err)
	}
	return d.child(ctx, name, fi.IsDir, fromInfo(fi), out), 0
}

// child returns the node of a child the cluster holds with attributes a:
// the one the tree has when it is of the same type, else a new one.
func (d *dirNode) child(ctx context.Context, name string, isDir bool, a attrs, out *fuse.EntryOut) *gofs.Inode {
	if ch := d.GetChild(name); ch != nil {
		switch n := ch.Operations().(type) {
		case *dirNode:
			if isDir {
				n.setAttrs(a)
				n.fillEntry(out)
				return ch
			}
		case *fileNode:
			if !isDir {
				n.refresh(a)
				n.fillEntry(out)
				return ch
			}
		}
	}
	if isDir {
		n := &dirNode{m: d.m, a: a, fetched: time.Now()}
		ch := d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR})
		n.fillEntry(out)
		return ch
	}
	n := &fileNode{m: d.m, a: a, fetched: time.Now()}
	ch := d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG})
	n.fillEntry(out)
	return ch
}

// Mkdir makes a directory, with mode when it is not dfs's default.
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.m.cfg.ReadOnly {
		return nil, syscall.EROFS
	}
	dir, errno := d.path()
	if errno != 0 {
		return nil, errno
	}
	p := join(dir, name)
	if err := d.m.c.Mkdir(ctx, p); err != nil {
		return nil, d.m.errno("mkdir", p, err)
	}
	fm := toFileMode(mode)
	if fm != 0o755 {
		if err := d.m.c.Chmod(ctx, p, fm); err != nil {
			return nil, d.m.errno("chmod", p, err)
		}
	}
	fi, err := d.m.c.Head(ctx, p)
	if err != nil {
		return nil, d.m.errno("stat", p, err)
	}
	return d.child(ctx, name, true, fromInfo(fi), out), 0
}

// Rmdir removes an empty directory.
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if d.m.cfg.ReadOnly {
		return syscall.EROFS
	}
	dir, errno := d.path()
	if errno != 0 {
		return errno
	}
	// The kernel has checked that name is a directory. The files this
	// mount created in it and has not committed are not in the cluster:
	// they count, as they would on a local disk.
	p := join(dir, name)
	if ch := d.GetChild(name); ch != nil {
		for _, c := range ch.Children() {
			if f, ok := c.Operations().(*fileNode); ok && f.isUncommitted() {
				return syscall.ENOTEMPTY
			}
		}
	}
	return d.m.errno("rmdir", p, d.m.c.Remove(ctx, p))
}

// Unlink removes a file. A file this mount created and has not committed
// yet is dropped here.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if d.m.cfg.ReadOnly {
		return syscall.EROFS
	}
	dir, errno := d.path()
	if errno != 0 {
		return errno
	}
	p := join(dir, name)
	var f *fileNode
	if ch := d.GetChild(name); ch != nil {
		f, _ = ch.Operations().(*fileNode)
	}
	// The kernel has checked that name is not a directory.
	remove := func() error { return d.m.c.Remove(ctx, p) }
	if f != nil {
		return d.m.errno("unlink", p, f.unlinkWith(remove))
	}
	return d.m.errno("unlink", p, remove())
}

// Rename moves a file or a directory, atomically (SDK Rename). A
// directory replaces an empty directory: that one is removed first, so
// that case is two steps.
func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if d.m.cfg.ReadOnly {
		return syscall.EROFS
	}
	if flags&gofs.RENAME_EXCHANGE != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	dir, errno := d.path()
	if errno != 0 {
		return errno
	}
	ndir, errno := np.path()
	if errno != 0 {
		return errno
	}
	src, dst := join(dir, name), join(ndir, newName)
	noReplace := flags&unix.RENAME_NOREPLACE != 0

	var f *fileNode
	srcIsDir := false
	if ch := d.GetChild(name); ch != nil {
		switch n := ch.Operations().(type) {
		case *fileNode:
			// The file's lock is held until the rename is done: no commit
			// of it goes to the old path in between.
			f = n
			f.mu.Lock()
			defer f.mu.Unlock()
			if errno := f.beforeRenameLocked(ctx); errno != 0 {
				return errno
			}
		case *dirNode:
			srcIsDir = true
			// The files below it being written are committed at their
			// present paths first (docs/fuse.md).
			if errno := n.commitActive(ctx); errno != 0 {
				return errno
			}
		}
	}
	// A file the rename replaces loses its name: its local content, if
	// any, is never committed (as after unlink).
	var replaced *fileNode
	if ch := np.GetChild(newName); ch != nil {
		if r, ok := ch.Operations().(*fileNode); ok && r != f {
			replaced = r
		}
	}
	if replaced != nil && noReplace && replaced.isUncommitted() {
		return syscall.EEXIST
	}
	err := d.m.c.Rename(ctx, src, dst, &client.RenameOptions{NoReplace: noReplace})
	if err != nil && errors.Is(err, fs.ErrExist) && !noReplace {
		// dfs never lets a rename replace a directory, or a directory
		// replace a file: sort out what POSIX says here.
		fi, herr := d.m.c.Head(ctx, dst)
		if herr != nil {
			return d.m.errno("rename", src, err)
		}
		if f == nil && !srcIsDir {
			si, serr := d.m.c.Head(ctx, src)
			if serr != nil {
				return d.m.errno("rename", src, serr)
			}
			srcIsDir = si.IsDir
		}
		switch {
		case srcIsDir && !fi.IsDir:
			return syscall.ENOTDIR
		case !srcIsDir && fi.IsDir:
			return syscall.EISDIR
		case srcIsDir:
			if rerr := d.m.c.Remove(ctx, dst); rerr != nil {
				return d.m.errno("rename", dst, rerr)
			}
			err = d.m.c.Rename(ctx, src, dst, &client.RenameOptions{NoReplace: true})
		}
	}
	if err != nil {
		return d.m.errno("rename", src, err)
	}
	if replaced != nil {
		replaced.unlink()
	}
	return 0
}

// Create makes a file that exists on this mount only until its first
// commit (a flush, fsync or close).
func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if d.m.cfg.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	if _, errno := d.path(); errno != 0 {
		return nil, nil, 0, errno
	}
	n := &fileNode{m: d.m, pending: true, excl: flags&syscall.O_EXCL != 0, modeSet: true,
		a: attrs{mode: toFileMode(mode), mtime: time.Now().Truncate(time.Millisecond)}}
	ch := d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG})
	h := n.newHandle(flags)
	n.fillEntry(out)
	return ch, h, 0, 0
}

// Link is refused: dfs has no hard links.
func (d *dirNode) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Symlink is refused: dfs has no symbolic links.
func (d *dirNode) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Mknod is refused: dfs holds files and directories only.
func (d *dirNode) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Statfs reports the datanodes' capacity and free space.
func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return d.m.statfs(ctx, out)
}

func (m *Mount) statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := m.c.Nodes(ctx)
	if err != nil {
		return m.errno("statfs", "/", err)
	}
	var capacity, free int64
	for _, n := range st.Nodes {
		if n.State == client.NodeDead || n.Decommissioned {
			continue
		}
		capacity += n.Capacity
		free += n.Free
	}
	const bs = 4096
	out.Bsize, out.Frsize = bs, bs
	out.Blocks = uint64(capacity / bs)
	out.Bfree = uint64(free / bs)
	out.Bavail = out.Bfree
	out.Files, out.Ffree = 1<<40, 1<<40
	out.NameLen = 255
	return 0
}

// OpendirHandle opens a listing that reads the directory a page at a
// time.
func (d *dirNode) OpendirHandle(ctx context.Context, _ uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{d: d, dir: dir}, 0, 0
}

// dirHandle is an open directory: the listing, read from the cluster a
// page at a time, then the files this mount created there and has not
// committed yet. The entries of the page being read answer the kernel's
// lookups (READDIRPLUS), so `ls -l` costs no call per entry.
type dirHandle struct {
	d   *dirNode
	dir string

	next   func() (client.DirEntry, error, bool)
	stop   func()
	off    uint64
	listed map[string]bool // names listed, while there are local ones to add
	local  []string
	recent map[string]client.DirEntry
	done   bool
}

func (h *dirHandle) start() {
	h.next, h.stop = iter.Pull2(h.d.m.c.List(h.d.m.ctx, h.dir, nil))
	h.off, h.done = 0, false
	h.local = h.local[:0]
	for name, ch := range h.d.Children() {
		if f, ok := ch.Operations().(*fileNode); ok && f.isUncommitted() {
			h.local = append(h.local, name)
		}
	}
	h.listed = nil
	if len(h.local) > 0 {
		h.listed = map[string]bool{}
	}
	h.recent = map[string]client.DirEntry{}
}

// Readdirent returns the next entry, or nil at the end.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.next == nil {
		h.start()
	}
	for !h.done {
		e, err, ok := h.next()
		if !ok {
			h.done = true
			break
		}
		if err != nil {
			h.stop()
			h.next = nil
			return nil, h.d.m.errno("readdir", h.dir, err)
		}
		name := gopath.Base(e.Path)
		if h.listed != nil {
			h.listed[name] = true
		}
		if len(h.recent) >= 4096 {
			clear(h.recent)
		}
		h.recent[name] = e
		return h.entry(name, e.IsDir), 0
	}
	for len(h.local) > 0 {
		name := h.local[0]
		h.local = h.local[1:]
		if !h.listed[name] {
			return h.entry(name, false), 0
		}
	}
	return nil, 0
}

func (h *dirHandle) entry(name string, isDir bool) *fuse.DirEntry {
	h.off++
	mode := uint32(syscall.S_IFREG)
	if isDir {
		mode = syscall.S_IFDIR
	}
	var ino uint64
	if ch := h.d.GetChild(name); ch != nil {
		ino = ch.StableAttr().Ino
	} else {
		f := fnv.New64a()
		f.Write([]byte(join(h.dir, name)))
		ino = f.Sum64()&(1<<62-1) | 1
	}
	return &fuse.DirEntry{Name: name, Mode: mode, Ino: ino, Off: h.off}
}

// Lookup answers the kernel's lookup of an entry just listed from the
// listing itself.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e, ok := h.recent[name]; ok {
		if ch := h.d.GetChild(name); ch != nil {
			if f, ok := ch.Operations().(*fileNode); ok && f.isLocal() {
				f.fillEntry(out)
				return ch, 0
			}
		}
		return h.d.child(ctx, name, e.IsDir, fromEntry(e), out), 0
	}
	return h.d.Lookup(ctx, name, out)
}

// Seekdir restarts the listing and skips to off.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if h.stop != nil {
		h.stop()
	}
	h.start()
	for h.off < off {
		e, errno := h.Readdirent(ctx)
		if errno != 0 {
			return errno
		}
		if e == nil {
			break
		}
	}
	return 0
}

// Releasedir ends the listing.
func (h *dirHandle) Releasedir(context.Context, uint32) {
	if h.stop != nil {
		h.stop()
	}
}
