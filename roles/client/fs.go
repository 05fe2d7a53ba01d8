package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"iter"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// FS returns the cluster's namespace as an fs.FS, for code written against
// io/fs (fs.WalkDir, fs.Glob, template.ParseFS, http.FS ...). Its names
// are io/fs's: unrooted and slash-separated, "." for the root, so
// "logs/a.txt" is the dfs path /logs/a.txt; a name that is not valid
// (fs.ValidPath) fails with fs.ErrInvalid. Every call is bounded by ctx.
//
// The result implements fs.StatFS, fs.ReadDirFS and fs.ReadFileFS. Open
// of a directory returns an fs.ReadDirFile that reads the listing a page
// at a time; Open of a file returns an fs.File whose Read reads it through
// a Reader (see Client.Open), verified, with read-ahead, without holding
// it whole; nothing is read before the first Read. Errors are *fs.PathError, whose
// Err keeps the SDK's error (errors.Is(err, fs.ErrNotExist) holds).
func (c *Client) FS(ctx context.Context) fs.FS {
	return &dfsFS{c: c, ctx: ctx}
}

// dfsFS is the fs.FS of FS.
type dfsFS struct {
	c   *Client
	ctx context.Context
}

var (
	_ fs.StatFS     = (*dfsFS)(nil)
	_ fs.ReadDirFS  = (*dfsFS)(nil)
	_ fs.ReadFileFS = (*dfsFS)(nil)
)

// dfsPath maps an io/fs name to a dfs path.
func dfsPath(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return "/", nil
	}
	return "/" + name, nil
}

// stat resolves name: a file (from its metadata) or a directory (one the
// coordinator knows, or one implied by the files below it).
func (f *dfsFS) stat(op, name string) (string, *FileInfo, error) {
	p, err := dfsPath(op, name)
	if err != nil {
		return "", nil, err
	}
	ctx := rpc.EnsureRequestID(f.ctx)
	if p == "/" {
		return p, rootInfo(), nil
	}
	fi, err := f.c.head(ctx, p)
	switch {
	case err == nil:
		return p, fromFileInfo(fi), nil
	case rpc.KindOf(err) != rpc.NotFound:
		return "", nil, &fs.PathError{Op: op, Path: name, Err: wrap(ctx, op, p, err)}
	}
	// Not a file: a directory if it can be listed.
	lerr := f.c.listPages(ctx, p, ListOptions{}, func([]DirEntry) error { return errStopped })
	if lerr != nil && !errors.Is(lerr, errStopped) {
		return "", nil, &fs.PathError{Op: op, Path: name, Err: wrap(ctx, op, p, lerr)}
	}
	return p, &FileInfo{Path: p, IsDir: true}, nil
}

// Open opens the file or directory name.
func (f *dfsFS) Open(name string) (fs.File, error) {
	p, fi, err := f.stat("open", name)
	if err != nil {
		return nil, err
	}
	if fi.IsDir {
		ctx, cancel := context.WithCancel(f.ctx)
		next, stop := iter.Pull2(f.c.List(ctx, p, nil))
		return &dirFile{name: name, info: fileInfo{fi}, next: next, stop: func() { stop(); cancel() }}, nil
	}
	return &file{fs: f, name: name, path: p, info: fileInfo{fi}}, nil
}

// Stat returns name's metadata.
func (f *dfsFS) Stat(name string) (fs.FileInfo, error) {
	_, fi, err := f.stat("stat", name)
	if err != nil {
		return nil, err
	}
	return fileInfo{fi}, nil
}

// ReadDir returns the directory name's entries sorted by name, as
// fs.ReadDir does; it holds the whole directory (io/fs asks for a slice):
// for a large directory, Open it and ReadDir a part at a time.
func (f *dfsFS) ReadDir(name string) ([]fs.DirEntry, error) {
	p, fi, err := f.stat("readdir", name)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: rpc.Errorf(rpc.Invalid, "%s is a file, not a directory", ShowPath(p))}
	}
	var out []fs.DirEntry
	for e, err := range f.c.List(f.ctx, p, nil) {
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
		}
		out = append(out, dirEntry{e})
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// ReadFile returns the whole of the file name.
func (f *dfsFS) ReadFile(name string) ([]byte, error) {
	p, err := dfsPath("readfile", name)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := f.c.Get(f.ctx, p, &buf, nil); err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	return buf.Bytes(), nil
}

// file is an open file of FS: a Reader (so also io.ReaderAt and
// io.Seeker, as http.FS wants), opened by the first read or seek, so that
// Open and Stat read no chunk.
type file struct {
	fs   *dfsFS
	name string
	path string
	info fileInfo

	r      *Reader
	closed bool
}

// Stat returns the file's metadata as it was when opened.
func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }

var (
	_ io.ReaderAt = (*file)(nil)
	_ io.Seeker   = (*file)(nil)
)

// reader returns the file's Reader, opening it on first use.
func (f *file) reader(op string) (*Reader, error) {
	if f.closed {
		return nil, &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	if f.r == nil {
		r, err := f.fs.c.Open(f.fs.ctx, f.path)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: f.name, Err: err}
		}
		f.r = r
	}
	return f.r, nil
}

// pathErr wraps a Reader's error, but io.EOF, for op.
func (f *file) pathErr(op string, err error) error {
	if err != nil && err != io.EOF {
		return &fs.PathError{Op: op, Path: f.name, Err: err}
	}
	return err
}

// Read reads the next bytes of the file.
func (f *file) Read(p []byte) (int, error) {
	r, err := f.reader("read")
	if err != nil {
		return 0, err
	}
	n, err := r.Read(p)
	return n, f.pathErr("read", err)
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt says.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	r, err := f.reader("read")
	if err != nil {
		return 0, err
	}
	n, err := r.ReadAt(p, off)
	return n, f.pathErr("read", err)
}

// Seek sets where the next Read reads, as io.Seeker says.
func (f *file) Seek(offset int64, whence int) (int64, error) {
	r, err := f.reader("seek")
	if err != nil {
		return 0, err
	}
	n, err := r.Seek(offset, whence)
	return n, f.pathErr("seek", err)
}

// Close ends the reads in flight, if any.
func (f *file) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	if f.r != nil {
		return f.r.Close()
	}
	return nil
}

// dirFile is an open directory of FS: ReadDir reads its listing a page
// at a time.
type dirFile struct {
	name   string
	info   fileInfo
	next   func() (DirEntry, error, bool)
	stop   func()
	closed bool
}

// Stat returns the directory's metadata.
func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }

// Read fails: a directory has no bytes.
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: rpc.Errorf(rpc.Invalid, "is a directory")}
}

// ReadDir returns the next n entries in listing order (all that are left
// with n <= 0), as fs.ReadDirFile says: at the end, with n > 0, no
// entries and io.EOF.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: fs.ErrClosed}
	}
	var out []fs.DirEntry
	for n <= 0 || len(out) < n {
		e, err, ok := d.next()
		if !ok {
			break
		}
		if err != nil {
			return out, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		out = append(out, dirEntry{e})
	}
	if n > 0 && len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

// Close ends the listing.
func (d *dirFile) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: fs.ErrClosed}
	}
	d.closed = true
	d.stop()
	return nil
}

// rootInfo is the root's FileInfo: the root is the default superuser's
// (docs/security.md), and its attributes cannot change.
func rootInfo() *FileInfo {
	return &FileInfo{Path: "/", IsDir: true, Owner: "admin", Group: "admin", Mode: fs.ModeDir | 0o755}
}

// fileInfo is a FileInfo as an fs.FileInfo. Its Mode is the file's or
// directory's, though FS only reads. A directory's ModTime is when it was
// made (zero for the root).
type fileInfo struct{ fi *FileInfo }

func (i fileInfo) Name() string       { return baseName(i.fi.Path) }
func (i fileInfo) Size() int64        { return i.fi.Size }
func (i fileInfo) ModTime() time.Time { return i.fi.Modified }
func (i fileInfo) IsDir() bool        { return i.fi.IsDir }
func (i fileInfo) Sys() any           { return i.fi }

func (i fileInfo) Mode() fs.FileMode {
	if i.fi.IsDir {
		return fs.ModeDir | i.fi.Mode
	}
	return i.fi.Mode
}

// dirEntry is a DirEntry as an fs.DirEntry (and its fs.FileInfo).
type dirEntry struct{ e DirEntry }

func (d dirEntry) Name() string               { return baseName(d.e.Path) }
func (d dirEntry) IsDir() bool                { return d.e.IsDir }
func (d dirEntry) Type() fs.FileMode          { return d.Mode().Type() }
func (d dirEntry) Info() (fs.FileInfo, error) { return d, nil }
func (d dirEntry) Size() int64                { return d.e.Size }
func (d dirEntry) ModTime() time.Time         { return d.e.Modified }
func (d dirEntry) Sys() any                   { return d.e }

func (d dirEntry) Mode() fs.FileMode {
	if d.e.IsDir {
		return fs.ModeDir | d.e.Mode
	}
	return d.e.Mode
}

// baseName is the last element of a dfs path; "." for the root, as
// io/fs names it.
func baseName(p string) string {
	if p == "/" {
		return "."
	}
	return path.Base(p)
}
