// Package vfs is the file-system seam of the chunk store: the few calls
// it makes, on the operating system's file system (Default) or in memory
// (NewCrashableMem, which can lose what was not synced, as a crash does).
// pebble's vfs package is the model.
package vfs

import (
	"io"
	"io/fs"
	"os"
	"syscall"
)

// File is an open file. Sync makes the file's data durable (not its name:
// that takes a SyncDir of its directory). Stat's FileInfo can be compared
// with SameFile.
type File interface {
	io.Writer
	io.WriterAt
	io.ReaderAt
	io.Closer
	Sync() error
	// Truncate changes the file's size (not durable until Sync).
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	// Name is the name the file was opened with.
	Name() string
}

// FS is what the chunk store asks of a file system. Names are slash
// paths; errors are *fs.PathError or *os.LinkError wrapping a
// syscall.Errno, so errors.Is(err, fs.ErrNotExist) and the like work
// whatever the implementation.
type FS interface {
	// OpenFile opens name with os.OpenFile's flags (O_RDONLY, O_WRONLY,
	// O_RDWR, O_CREATE, O_EXCL, O_TRUNC; O_DIRECT where it is supported:
	// EINVAL where not).
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Mkdir creates a directory; MkdirAll creates it and its parents,
	// and is nil when it exists.
	Mkdir(name string, perm fs.FileMode) error
	MkdirAll(name string, perm fs.FileMode) error
	// Rename replaces newname with oldname, atomically.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Stat and Lstat describe a file (Lstat does not follow a final
	// symbolic link).
	Stat(name string) (fs.FileInfo, error)
	Lstat(name string) (fs.FileInfo, error)
	// ReadDir returns a directory's entries sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// SyncDir makes the directory's entries durable: the files created,
	// renamed into or removed from it since its last SyncDir.
	SyncDir(name string) error
	// DiskUsage returns the free bytes (for an unprivileged user) and the
	// size of the file system holding name.
	DiskUsage(name string) (free, size int64, err error)
}

// SameFile reports whether a and b, from Stat, Lstat or File.Stat of one
// FS, describe the same file (os.SameFile on the OS).
func SameFile(a, b fs.FileInfo) bool {
	if os.SameFile(a, b) {
		return true
	}
	na, ok := a.Sys().(*memNode)
	nb, _ := b.Sys().(*memNode)
	return ok && na == nb
}

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

var _ FS = osFS{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a nil *os.File in a non-nil File
	}
	return f, nil
}

func (osFS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) Rename(oldname, newname string) error         { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (osFS) Lstat(name string) (fs.FileInfo, error)       { return os.Lstat(name) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }

func (osFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (osFS) DiskUsage(name string) (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(name, &st); err != nil {
		return 0, 0, &fs.PathError{Op: "statfs", Path: name, Err: err}
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// WriteFile writes data to name in fsys, creating or truncating it, and
// fsyncs the file (not its directory: the caller syncs that when the
// name must survive a crash).
func WriteFile(fsys FS, name string, data []byte) error {
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
