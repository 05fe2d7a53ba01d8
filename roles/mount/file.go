package mount

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// fileNode is a file. Its content is the committed version in the
// cluster until a handle writes to it; then one of two local states
// holds the new content until the next commit (flush, fsync, close):
//
//   - stream: the file is being written sequentially from its start by a
//     write-only handle, straight into an SDK Writer (bounded memory);
//   - spool: anything else (random writes, appends, truncates, a file
//     opened read-write): a local copy of the whole file (copy-on-write:
//     the committed content is read into it before the first change).
//
// A file created here does not exist in the cluster before its first
// commit (pending).
type fileNode struct {
	gofs.Inode
	m *Mount

	mu      sync.Mutex
	a       attrs
	fetched time.Time

	pending   bool // created here, never committed
	excl      bool // created with O_EXCL: the first commit requires no file at the path
	truncated bool // emptied here, the empty content not committed yet
	dirty     bool // the spool holds changes not committed
	unlinked  bool // removed: no commit will ever go to the cluster

	modeSet             bool   // a.mode is to be set after the first commit
	wantUser, wantGroup string // owner and group to set after the first commit
	writers             int    // open handles that may write
	gen                 uint64 // commits made by this mount
	stream              *client.Writer
	spool               *os.File
	failed              error // a stream that failed: every write, flush and fsync fails until the last writer closes
}

var (
	_ gofs.NodeGetattrer = (*fileNode)(nil)
	_ gofs.NodeSetattrer = (*fileNode)(nil)
	_ gofs.NodeOpener    = (*fileNode)(nil)
	_ gofs.NodeStatfser  = (*fileNode)(nil)
	_ gofs.FileReader    = (*handle)(nil)
	_ gofs.FileWriter    = (*handle)(nil)
	_ gofs.FileFlusher   = (*handle)(nil)
	_ gofs.FileFsyncer   = (*handle)(nil)
	_ gofs.FileReleaser  = (*handle)(nil)
	_ gofs.FileGetlker   = (*handle)(nil)
	_ gofs.FileSetlker   = (*handle)(nil)
	_ gofs.FileSetlkwer  = (*handle)(nil)
)

// isLocal says the mount, not the cluster, knows the file's attributes.
func (n *fileNode) isLocal() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.localLocked()
}

func (n *fileNode) localLocked() bool {
	return n.pending || n.truncated || n.dirty || n.unlinked || n.stream != nil || n.spool != nil
}

// isUncommitted says the file was created here and is not in the
// cluster yet.
func (n *fileNode) isUncommitted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pending && !n.unlinked
}

// needsCommit says the file holds content the cluster has not.
func (n *fileNode) needsCommit() bool {
	return !n.unlinked && (n.stream != nil || n.dirty || n.pending || n.truncated)
}

// fillOut writes the attributes of the file, as it stands in the tree.
// The kernel may keep them for the attribute timeout, but not those of a
// file being written: its commit changes them (the time, the version).
func (n *fileNode) fillOut(out *fuse.AttrOut) {
	_, p := n.Parent()
	out.SetTimeout(n.m.attrTimeout(n.fill(&out.Attr, p != nil)))
}

// fillEntry writes the attributes of the file a lookup or create returns:
// it enters the tree as the call returns.
func (n *fileNode) fillEntry(out *fuse.EntryOut) {
	out.SetAttrTimeout(n.m.attrTimeout(n.fill(&out.Attr, true)))
}

// fill writes the attributes and says whether they are the mount's own,
// not yet the cluster's.
func (n *fileNode) fill(out *fuse.Attr, linked bool) (local bool) {
	n.mu.Lock()
	a := n.a
	unlinked := n.unlinked
	local = n.localLocked()
	n.mu.Unlock()
	nlink := uint32(1)
	if !linked || unlinked {
		nlink = 0
	}
	n.m.fill(out, a, false, nlink)
	return local && !unlinked
}

// refresh takes attributes read from the cluster, unless the mount
// holds newer ones.
func (n *fileNode) refresh(a attrs) {
	n.mu.Lock()
	if !n.localLocked() {
		n.a, n.fetched = a, time.Now()
	}
	n.mu.Unlock()
}

// Getattr returns the file's attributes: the mount's while it writes the
// file (or after it was removed), else the cluster's, read again when
// older than the attribute timeout.
func (n *fileNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	ask := !n.localLocked() && time.Since(n.fetched) >= n.m.cfg.AttrTimeout
	n.mu.Unlock()
	if ask {
		if p, ok := pathOf(&n.Inode); ok {
			fi, err := n.m.c.Head(ctx, p)
			if err != nil {
				return n.m.errno("stat", p, err)
			}
			n.refresh(fromInfo(fi))
		}
	}
	n.fillOut(out)
	return 0
}

// Setattr truncates, changes mode and owner; times are accepted and not
// kept (dfs keeps when a version was committed).
func (n *fileNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	_, setSize := in.GetSize()
	_, setMode := in.GetMode()
	_, setUID := in.GetUID()
	_, setGID := in.GetGID()
	if n.m.cfg.ReadOnly && (setSize || setMode || setUID || setGID) {
		return syscall.EROFS
	}
	if errno := n.setattrLocked(ctx, in, setMode || setUID || setGID); errno != 0 {
		return errno
	}
	n.fillOut(out)
	return 0
}

func (n *fileNode) setattrLocked(ctx context.Context, in *fuse.SetAttrIn, modeOwner bool) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncateLocked(ctx, int64(sz)); errno != 0 {
			return errno
		}
	}
	if modeOwner {
		if n.pending || n.unlinked {
			if mode, ok := in.GetMode(); ok {
				n.a.mode, n.modeSet = toFileMode(mode), true
			}
			user, group := n.m.ownerChange(in, n.a)
			if user != "" {
				n.a.owner, n.wantUser = user, user
			}
			if group != "" {
				n.a.group, n.wantGroup = group, group
			}
		} else if p, ok := pathOf(&n.Inode); ok {
			a := n.a
			if errno := n.m.setModeOwner(ctx, p, in, &a); errno != 0 {
				return errno
			}
			n.a = a
		}
	}
	return 0
}

// truncateLocked sets the file's size; with no handle open for writing
// (truncate(2)) the change is committed at once.
func (n *fileNode) truncateLocked(ctx context.Context, size int64) syscall.Errno {
	if n.failed != nil {
		return syscall.EIO
	}
	p, _ := pathOf(&n.Inode)
	switch {
	case n.stream != nil && size == n.a.size:
	case n.spool == nil && n.stream == nil && size == 0:
		// Emptied: nothing to copy.
		n.truncated = !n.pending
		n.a.size = 0
	default:
		if n.stream != nil {
			if err := n.commitLocked(ctx); err != nil {
				return n.m.errno("truncate", p, err)
			}
		}
		if err := n.spoolLocked(ctx); err != nil {
			return n.m.errno("truncate", p, err)
		}
		if err := n.spool.Truncate(size); err != nil {
			n.m.log.Error().Err(err).Str("path", p).Msg("truncate the spool file")
			return syscall.EIO
		}
		n.a.size, n.dirty = size, true
	}
	n.a.mtime = time.Now().Truncate(time.Millisecond)
	if n.writers == 0 {
		err := n.commitLocked(ctx)
		n.failed = nil // no writer is left to be told
		n.dropSpoolLocked()
		if err != nil {
			return n.m.errno("truncate", p, err)
		}
	}
	return 0
}

// spoolLocked makes the spool file, with a copy of the committed content
// unless the file is known to be empty.
func (n *fileNode) spoolLocked(ctx context.Context) error {
	if n.spool != nil {
		return nil
	}
	f, err := os.CreateTemp(n.m.cfg.SpoolDir, "dfs-mount-spool-")
	if err != nil {
		return err
	}
	os.Remove(f.Name()) // open handles keep it; nothing is left behind
	if !n.pending && !n.truncated && !n.unlinked {
		if p, ok := pathOf(&n.Inode); ok {
			fi, err := n.m.c.Get(ctx, p, f, nil)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				f.Close()
				return err
			}
			n.a.size = 0
			if fi != nil {
				n.a.size = fi.Size
			}
		}
	}
	n.spool = f
	return nil
}

func (n *fileNode) dropSpoolLocked() {
	if n.spool != nil && !n.dirty {
		n.spool.Close()
		n.spool = nil
	}
}

// commitLocked commits the local content, if any, as the file's new
// version: it closes the stream, or uploads the spool. It returns the
// failure the application must see.
func (n *fileNode) commitLocked(ctx context.Context) error {
	if !n.needsCommit() {
		return nil
	}
	if n.failed != nil {
		return n.failed
	}
	p, ok := pathOf(&n.Inode)
	if !ok {
		// A file replaced by a rename or removed is marked unlinked, and
		// needs no commit: this one lost its name otherwise (its directory
		// went away). Its content cannot be committed anywhere.
		n.discardLocked()
		n.failed = syscall.EIO
		n.m.log.Error().Msg("commit: the file has no path any more; its new content is lost")
		return n.failed
	}
	var info *client.FileInfo
	if n.stream != nil {
		w := n.stream
		n.stream = nil
		err := w.Close()
		if err != nil {
			n.failStreamLocked(err)
			return err
		}
		info = w.Info()
	} else {
		opts := &client.CreateOptions{IfNotExist: n.excl && n.pending}
		var src io.Reader = eofReader{}
		if n.spool != nil {
			src = io.NewSectionReader(n.spool, 0, n.a.size)
			if n.a.size > 0 {
				opts.Size = n.a.size
			}
		}
		w, err := n.m.c.Create(ctx, p, opts)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(w, src, make([]byte, 1<<20)); err != nil {
			w.Abort()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		info = w.Info()
	}
	n.pending, n.truncated, n.dirty, n.excl = false, false, false, false
	n.gen++
	if info == nil {
		// The Writer of an empty file returns no metadata.
		fi, err := n.m.c.Head(ctx, p)
		if err != nil {
			return err
		}
		info = fi
	}
	a := fromInfo(info)
	if n.modeSet {
		if a.mode != n.a.mode {
			if err := n.m.c.Chmod(ctx, p, n.a.mode); err != nil {
				return err
			}
		}
		a.mode, n.modeSet = n.a.mode, false
	}
	if n.wantUser != "" || n.wantGroup != "" {
		if err := n.m.c.Chown(ctx, p, n.wantUser, n.wantGroup); err != nil {
			return err
		}
		if n.wantUser != "" {
			a.owner = n.wantUser
		}
		if n.wantGroup != "" {
			a.group = n.wantGroup
		}
		n.wantUser, n.wantGroup = "", ""
	}
	n.a, n.fetched = a, time.Now()
	return nil
}

// failStreamLocked records a stream that failed: the Writer aborted the
// upload, so what was written through it is lost. The cluster keeps its
// old version (or no file, for a new one); the mount says EIO to every
// later write, flush and fsync until the last writer closes, so nothing
// written after the loss is ever committed on top of it.
func (n *fileNode) failStreamLocked(err error) {
	n.stream = nil
	n.pending, n.truncated, n.dirty = false, false, false
	n.failed = err
	if n.spool != nil {
		n.spool.Close()
		n.spool = nil
	}
}

// discardLocked drops the local content: the file was removed.
func (n *fileNode) discardLocked() {
	if n.stream != nil {
		n.stream.Abort()
		n.stream = nil
	}
	n.pending, n.truncated, n.dirty = false, false, false
}

// unlinkWith removes the file: a file that exists on this mount only is
// dropped here, else remove removes it from the cluster. It holds the
// file's lock throughout, so no commit of the file comes between.
func (n *fileNode) unlinkWith(remove func() error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.pending || n.unlinked {
		if err := remove(); err != nil {
			return err
		}
	}
	n.discardLocked()
	n.unlinked = true
	return nil
}

// unlink marks the file removed from the cluster: open handles still
// read and write the local content, which is never committed.
func (n *fileNode) unlink() {
	n.mu.Lock()
	n.discardLocked()
	n.unlinked = true
	n.mu.Unlock()
}

// beforeRename readies the file for a rename: what only this mount
// holds of it is committed first, at its old path, so that the rename is
// the cluster's (atomic, replacing the destination there): a stream (its
// Writer names the old path) and a file created here and not committed
// yet (so that a later unlink of the destination removes it, and an
// O_EXCL create is checked against its own path, not the destination).
// A spool is committed later, at whatever path the file has then.
// The caller holds n.mu until the rename is done, so that no commit goes
// to the old path in between.
func (n *fileNode) beforeRenameLocked(ctx context.Context) syscall.Errno {
	if n.unlinked || n.failed != nil || n.stream == nil && !n.pending {
		return 0
	}
	p, _ := pathOf(&n.Inode)
	if err := n.commitLocked(ctx); err != nil {
		return n.m.errno("rename", p, err)
	}
	return 0
}

// commitActive commits every file below the directory d that holds
// content the cluster has not (a directory rename: a Writer names the
// path it was created at).
func (d *dirNode) commitActive(ctx context.Context) syscall.Errno {
	for _, ch := range d.Children() {
		switch c := ch.Operations().(type) {
		case *dirNode:
			if errno := c.commitActive(ctx); errno != 0 {
				return errno
			}
		case *fileNode:
			c.mu.Lock()
			var err error
			if c.failed == nil && c.needsCommit() {
				err = c.commitLocked(ctx)
			}
			c.mu.Unlock()
			if err != nil {
				p, _ := pathOf(&c.Inode)
				return d.m.errno("rename", p, err)
			}
		}
	}
	return 0
}

// Open opens the file; a handle that may write counts as a writer until
// it is released.
func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.m.cfg.ReadOnly && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	return n.newHandle(flags), 0, 0
}

// Statfs reports the datanodes' capacity and free space.
func (n *fileNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.m.statfs(ctx, out)
}

func (n *fileNode) newHandle(flags uint32) *handle {
	acc := flags & syscall.O_ACCMODE
	h := &handle{n: n, write: acc != syscall.O_RDONLY, wronly: acc == syscall.O_WRONLY}
	if h.write {
		n.mu.Lock()
		n.writers++
		n.mu.Unlock()
	}
	return h
}

// handle is an open file.
type handle struct {
	n             *fileNode
	write, wronly bool

	mu  sync.Mutex
	br  *blockReader
	gen uint64 // the node's gen when br was opened
}

// Read reads the local content while there is one, else the committed
// version found at the handle's first read (or at this mount's last
// commit of the file since).
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := h.n
	n.mu.Lock()
	if n.spool != nil {
		k, err := n.spool.ReadAt(dest, off)
		n.mu.Unlock()
		if err != nil && err != io.EOF {
			n.m.log.Error().Err(err).Msg("read the spool file")
			return nil, syscall.EIO
		}
		return fuse.ReadResultData(dest[:k]), 0
	}
	if n.pending || n.truncated || n.unlinked && h.br == nil {
		n.mu.Unlock()
		return fuse.ReadResultData(nil), 0
	}
	gen := n.gen
	n.mu.Unlock()
	p, ok := pathOf(&n.Inode)
	for attempt := 0; ; attempt++ {
		br, errno := h.reader(ctx, p, ok, gen)
		if errno != 0 {
			return nil, errno
		}
		k, err := br.ReadAt(dest, off)
		if err == nil || err == io.EOF {
			return fuse.ReadResultData(dest[:k]), 0
		}
		if attempt == 0 && ok && rpc.KindOf(err) == rpc.FailedPrecondition {
			// The version read was replaced: read the new one.
			h.mu.Lock()
			if h.br == br {
				h.br.Close()
				h.br = nil
			}
			h.mu.Unlock()
			continue
		}
		return nil, n.m.errno("read", p, err)
	}
}

// reader returns the handle's reader, opening it at the first read.
func (h *handle) reader(ctx context.Context, p string, ok bool, gen uint64) (*blockReader, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.br != nil && (h.gen == gen || !ok) {
		return h.br, 0
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	if h.br != nil {
		h.br.Close()
		h.br = nil
	}
	r, err := h.n.m.c.Open(h.n.m.ctx, p)
	if err != nil {
		return nil, h.n.m.errno("open", p, err)
	}
	h.br, h.gen = newBlockReader(r, h.n.m.cfg.ReadAhead), gen
	return h.br, 0
}

// Write writes data at off: into the stream while the file is written in
// order from its start by a write-only handle, else into the spool.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failed != nil {
		return 0, syscall.EIO
	}
	p, ok := pathOf(&n.Inode)
	// Stream only a file known to be empty here (new, or emptied by
	// O_TRUNC or truncate): an empty size in cached attributes may be
	// stale, and a stream replaces the whole file.
	known := n.pending || n.truncated
	if n.stream == nil && n.spool == nil && h.wronly && off == 0 && known && n.a.size == 0 && ok && !n.unlinked {
		w, err := n.m.c.Create(n.m.ctx, p, &client.CreateOptions{IfNotExist: n.excl && n.pending})
		if err != nil {
			return 0, n.m.errno("write", p, err)
		}
		n.stream = w
	}
	if n.stream != nil && off != n.a.size {
		// Out of order: commit what was streamed, go on in a spool.
		if err := n.commitLocked(ctx); err != nil {
			return 0, n.m.errno("write", p, err)
		}
	}
	if n.stream != nil {
		if _, err := n.stream.Write(data); err != nil {
			// The Writer aborted the upload.
			n.failStreamLocked(err)
			return 0, n.m.errno("write", p, err)
		}
		n.a.size += int64(len(data))
		n.a.mtime = time.Now().Truncate(time.Millisecond)
		return uint32(len(data)), 0
	}
	if err := n.spoolLocked(ctx); err != nil {
		return 0, n.m.errno("write", p, err)
	}
	k, err := n.spool.WriteAt(data, off)
	if k > 0 {
		n.dirty = true
		n.a.size = max(n.a.size, off+int64(k))
		n.a.mtime = time.Now().Truncate(time.Millisecond)
	}
	if err != nil {
		n.m.log.Error().Err(err).Msg("write the spool file")
		return uint32(k), syscall.EIO
	}
	return uint32(k), 0
}

// Flush commits what the file's writers wrote: close(2) reports a failed
// commit. The commit runs on the mount's context, not the request's: the
// kernel interrupts a request when its caller gets any signal (a Go
// program gets SIGURG for preemption all the time), and a close must not
// drop the file's data for that.
func (h *handle) Flush(context.Context) syscall.Errno {
	if !h.write {
		return 0
	}
	return h.commit(h.n.m.ctx, "close")
}

// Fsync commits what the file's writers wrote.
func (h *handle) Fsync(ctx context.Context, _ uint32) syscall.Errno {
	return h.commit(ctx, "fsync")
}

func (h *handle) commit(ctx context.Context, op string) syscall.Errno {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failed != nil {
		return syscall.EIO
	}
	p, _ := pathOf(&n.Inode)
	if err := n.commitLocked(ctx); err != nil {
		return n.m.errno(op, p, err)
	}
	return 0
}

// Release closes the handle; the last writer drops the spool.
func (h *handle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	if h.br != nil {
		h.br.Close()
		h.br = nil
	}
	h.mu.Unlock()
	if !h.write {
		return 0
	}
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.writers--
	if n.writers == 0 {
		if n.failed != nil {
			// The last writer is gone: the file is the cluster's again.
			n.discardLocked()
			n.dirty, n.failed = false, nil
		} else if n.needsCommit() {
			// Flush failed or never came: one more try, in the background of
			// no application.
			p, _ := pathOf(&n.Inode)
			if err := n.commitLocked(n.m.ctx); err != nil {
				n.m.log.Error().Err(err).Str("path", p).Msg("commit on release failed; the new content is lost")
				n.discardLocked()
				n.dirty, n.failed = false, nil
			}
		}
		n.dropSpoolLocked()
	}
	return 0
}

// Getlk refuses: dfs has no locks, and the mount fakes none.
func (h *handle) Getlk(context.Context, uint64, *fuse.FileLock, uint32, *fuse.FileLock) syscall.Errno {
	return syscall.ENOTSUP
}

// Setlk refuses, as Getlk.
func (h *handle) Setlk(context.Context, uint64, *fuse.FileLock, uint32) syscall.Errno {
	return syscall.ENOTSUP
}

// Setlkw refuses, as Getlk.
func (h *handle) Setlkw(context.Context, uint64, *fuse.FileLock, uint32) syscall.Errno {
	return syscall.ENOTSUP
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
