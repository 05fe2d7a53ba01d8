package vfs

import (
	"bytes"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MemFS is a file system in memory that can crash. It keeps, beside what
// a reader sees, what a crash would leave: a file's bytes as of its last
// Sync, a directory's entries as of its last SyncDir. CrashClone returns
// that durable state as a new MemFS, the way pebble's NewCrashableMem
// and CrashClone do: data written but not synced is lost, and so is a
// create, rename or remove whose directory was not synced since.
type MemFS struct {
	mu   sync.Mutex
	root *memNode
	size int64 // what DiskUsage says the file system holds
}

var _ FS = (*MemFS)(nil)

// memNode is a file or a directory.
type memNode struct {
	dir  bool
	perm fs.FileMode
	// A file's bytes, now and as of its last Sync.
	data, synced []byte
	// A directory's entries, now and as of its last SyncDir.
	children, syncedChildren map[string]*memNode
}

func newDir(perm fs.FileMode) *memNode {
	return &memNode{dir: true, perm: perm, children: map[string]*memNode{}, syncedChildren: map[string]*memNode{}}
}

// memSize is the size DiskUsage reports for a MemFS.
const memSize = 1 << 40

// NewCrashableMem returns an empty MemFS: only its root directory "/"
// exists (durably). Relative names are taken from the root.
func NewCrashableMem() *MemFS { return &MemFS{root: newDir(0o755), size: memSize} }

// CrashClone returns the file system a crash (a power loss) would leave
// now: every file with the bytes it had at its last Sync, under the names
// its directories had at their last SyncDir. The receiver is unchanged;
// the clone is independent of it, and all of it is durable.
func (m *MemFS) CrashClone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &MemFS{root: durableCopy(m.root, map[*memNode]*memNode{}), size: m.size}
}

// durableCopy copies n as a crash leaves it. A file reached under two
// names (renamed, the old directory not synced since) stays one file.
func durableCopy(n *memNode, seen map[*memNode]*memNode) *memNode {
	if c, ok := seen[n]; ok {
		return c
	}
	c := &memNode{dir: n.dir, perm: n.perm}
	seen[n] = c
	if !n.dir {
		c.data, c.synced = bytes.Clone(n.synced), bytes.Clone(n.synced)
		return c
	}
	c.children = make(map[string]*memNode, len(n.syncedChildren))
	for name, child := range n.syncedChildren {
		c.children[name] = durableCopy(child, seen)
	}
	c.syncedChildren = maps.Clone(c.children)
	return c
}

// elems splits a name into its path elements below the root.
func elems(name string) []string {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// walk returns the node at elems; m.mu is held.
func (m *MemFS) walk(op, name string, es []string) (*memNode, error) {
	n := m.root
	for _, e := range es {
		if !n.dir {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		c, ok := n.children[e]
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOENT}
		}
		n = c
	}
	return n, nil
}

// parent returns the directory holding name and name's last element;
// m.mu is held.
func (m *MemFS) parent(op, name string) (*memNode, string, error) {
	es := elems(name)
	if len(es) == 0 {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: syscall.EINVAL} // the root
	}
	dir, err := m.walk(op, name, es[:len(es)-1])
	if err != nil {
		return nil, "", err
	}
	if !dir.dir {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
	}
	return dir, es[len(es)-1], nil
}

// OpenFile opens name. O_DIRECT is accepted and changes nothing: a
// MemFS has no cache to bypass.
func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	const op = "open"
	dir, base, err := m.parent(op, name)
	if err != nil {
		if es := elems(name); len(es) == 0 && flag&(os.O_WRONLY|os.O_RDWR) == 0 {
			return &memFile{m: m, n: m.root, name: name, read: true}, nil
		}
		return nil, err
	}
	write := flag&(os.O_WRONLY|os.O_RDWR) != 0
	n, ok := dir.children[base]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOENT}
	case !ok:
		n = &memNode{perm: perm.Perm()}
		dir.children[base] = n
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, &fs.PathError{Op: op, Path: name, Err: syscall.EEXIST}
	case n.dir && write:
		return nil, &fs.PathError{Op: op, Path: name, Err: syscall.EISDIR}
	}
	if write && flag&os.O_TRUNC != 0 {
		n.data = nil
	}
	return &memFile{m: m, n: n, name: name, read: flag&os.O_WRONLY == 0, write: write}, nil
}

// Mkdir creates directory name.
func (m *MemFS) Mkdir(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.parent("mkdir", name)
	if err != nil {
		if len(elems(name)) == 0 {
			return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.EEXIST}
		}
		return err
	}
	if _, ok := dir.children[base]; ok {
		return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.EEXIST}
	}
	dir.children[base] = newDir(perm.Perm())
	return nil
}

// MkdirAll creates directory name and its missing parents.
func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.root
	for _, e := range elems(name) {
		c, ok := n.children[e]
		if !ok {
			c = newDir(perm.Perm())
			n.children[e] = c
		}
		if !c.dir {
			return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.ENOTDIR}
		}
		n = c
	}
	return nil
}

// Rename moves a file (or a directory, to a name not taken).
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	linkErr := func(err error) error { return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err} }
	from, fbase, err := m.parent("rename", oldname)
	if err != nil {
		return linkErr(syscall.ENOENT)
	}
	n, ok := from.children[fbase]
	if !ok {
		return linkErr(syscall.ENOENT)
	}
	to, tbase, err := m.parent("rename", newname)
	if err != nil {
		return linkErr(syscall.ENOENT)
	}
	if old, ok := to.children[tbase]; ok && old != n && (old.dir || n.dir) {
		return linkErr(syscall.EEXIST)
	}
	delete(from.children, fbase)
	to.children[tbase] = n
	return nil
}

// Remove removes a file or an empty directory.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.parent("remove", name)
	if err != nil {
		return err
	}
	n, ok := dir.children[base]
	switch {
	case !ok:
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOENT}
	case n.dir && len(n.children) > 0:
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(dir.children, base)
	return nil
}

// Stat describes name.
func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk("stat", name, elems(name))
	if err != nil {
		return nil, err
	}
	return n.info(path.Base(path.Clean("/" + name))), nil
}

// Lstat is Stat: a MemFS has no symbolic links.
func (m *MemFS) Lstat(name string) (fs.FileInfo, error) { return m.Stat(name) }

// ReadDir returns the entries of directory name, sorted by name.
func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk("readdir", name, elems(name))
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	out := make([]fs.DirEntry, 0, len(n.children))
	for _, e := range slices.Sorted(maps.Keys(n.children)) {
		out = append(out, fs.FileInfoToDirEntry(n.children[e].info(e)))
	}
	return out, nil
}

// SyncDir makes the entries of directory name durable.
func (m *MemFS) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk("sync", name, elems(name))
	if err != nil {
		return err
	}
	if !n.dir {
		return &fs.PathError{Op: "sync", Path: name, Err: syscall.ENOTDIR}
	}
	n.syncedChildren = maps.Clone(n.children)
	return nil
}

// DiskUsage says the file system holds 1 TiB, less the bytes of its
// files.
func (m *MemFS) DiskUsage(name string) (free, size int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.walk("statfs", name, elems(name)); err != nil {
		return 0, 0, err
	}
	var used int64
	var count func(n *memNode)
	count = func(n *memNode) {
		used += int64(len(n.data))
		for _, c := range n.children {
			count(c)
		}
	}
	count(m.root)
	return m.size - used, m.size, nil
}

func (n *memNode) info(name string) *memInfo {
	return &memInfo{name: name, n: n, size: int64(len(n.data))}
}

// memInfo describes a memNode as it was when stat'ed.
type memInfo struct {
	name string
	n    *memNode
	size int64
}

func (i *memInfo) Name() string { return i.name }
func (i *memInfo) Size() int64  { return i.size }
func (i *memInfo) Mode() fs.FileMode {
	if i.n.dir {
		return fs.ModeDir | i.n.perm
	}
	return i.n.perm
}
func (i *memInfo) ModTime() time.Time { return time.Time{} }
func (i *memInfo) IsDir() bool        { return i.n.dir }
func (i *memInfo) Sys() any           { return i.n } // for SameFile

// memFile is an open MemFS file.
type memFile struct {
	m           *MemFS
	n           *memNode
	name        string
	read, write bool
	off         int64 // where Write writes
	closed      bool
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) check(op string, want bool) error {
	switch {
	case f.closed:
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	case f.n.dir && op != "sync" && op != "stat" && op != "close":
		return &fs.PathError{Op: op, Path: f.name, Err: syscall.EISDIR}
	case !want:
		return &fs.PathError{Op: op, Path: f.name, Err: syscall.EBADF}
	}
	return nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	n, err := f.writeAtLocked(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	return f.writeAtLocked(p, off)
}

// writeAtLocked writes p at off, growing the file; f.m.mu is held.
func (f *memFile) writeAtLocked(p []byte, off int64) (int, error) {
	if err := f.check("write", f.write); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: syscall.EINVAL}
	}
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	return copy(f.n.data[off:], p), nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", f.read); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EINVAL}
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Sync makes the file's bytes durable; on a directory it does nothing
// (SyncDir syncs a directory's entries).
func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("sync", true); err != nil {
		return err
	}
	if !f.n.dir {
		f.n.synced = bytes.Clone(f.n.data)
	}
	return nil
}

// Truncate cuts the file to size bytes or pads it with zeros.
func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("truncate", f.write); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	if size <= int64(len(f.n.data)) {
		f.n.data = f.n.data[:size:size]
	} else {
		f.n.data = append(f.n.data, make([]byte, size-int64(len(f.n.data)))...)
	}
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("stat", true); err != nil {
		return nil, err
	}
	return f.n.info(path.Base(path.Clean("/" + f.name))), nil
}

func (f *memFile) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("close", true); err != nil {
		return err
	}
	f.closed = true
	return nil
}
