// Package chunkstoretest is the chunk store's conformance suite: Run
// checks a chunkstore.Store's contract on a file system, the operating
// system's or one in memory that can crash.
package chunkstoretest

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
)

// Disk is a file system and a data dir on it for the store under test.
type Disk struct {
	FS  vfs.FS
	Dir string
	// Crash returns the file system a crash now would leave. On a disk
	// that cannot crash (the operating system's: a process that dies
	// loses nothing it wrote) it returns FS.
	Crash func() vfs.FS
	// LosesUnsynced says Crash drops what was not synced: the suite
	// then checks that nothing it drops was acknowledged.
	LosesUnsynced bool
}

// Factory returns a new, empty Disk for a test.
type Factory func(t *testing.T) Disk

// OS is a Disk in a temporary directory of the operating system's file
// system.
func OS(t *testing.T) Disk {
	return Disk{FS: vfs.Default, Dir: t.TempDir(), Crash: func() vfs.FS { return vfs.Default }}
}

// Mem is a Disk on a crashable in-memory file system; its data dir
// exists durably.
func Mem(t *testing.T) Disk {
	m := vfs.NewCrashableMem()
	const dir = "/data/dn"
	for _, err := range []error{m.MkdirAll(dir, 0o750), m.SyncDir("/data"), m.SyncDir("/")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	d := Disk{FS: m, Dir: dir, LosesUnsynced: true}
	d.Crash = func() vfs.FS { return m.CrashClone() }
	return d
}

// hookFS calls before ahead of every call that changes the file system
// or a file (open, mkdir, rename, remove, syncdir; write, sync, close):
// a test can fail the call (by returning an error) or crash the disk
// just before it.
type hookFS struct {
	vfs.FS
	mu     sync.Mutex
	before func(op, name string) error
}

// Hooked returns fsys with before called ahead of every call that changes
// it or a file: op is "open" (for writing), "mkdir", "rename" (given the
// new name), "remove", "syncdir", "write", "sync" or "close". An error
// from before fails the call; before may also wait, as a slow disk does.
func Hooked(fsys vfs.FS, before func(op, name string) error) vfs.FS {
	h := &hookFS{FS: fsys}
	h.set(before)
	return h
}

func (h *hookFS) set(before func(op, name string) error) {
	h.mu.Lock()
	h.before = before
	h.mu.Unlock()
}

func (h *hookFS) call(op, name string) error {
	h.mu.Lock()
	before := h.before
	h.mu.Unlock()
	if before == nil {
		return nil
	}
	if err := before(op, name); err != nil {
		return &fs.PathError{Op: op, Path: name, Err: err}
	}
	return nil
}

func (h *hookFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE) != 0 {
		if err := h.call("open", name); err != nil {
			return nil, err
		}
	}
	f, err := h.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &hookFile{File: f, h: h}, nil
}

func (h *hookFS) Mkdir(name string, perm fs.FileMode) error {
	if err := h.call("mkdir", name); err != nil {
		return err
	}
	return h.FS.Mkdir(name, perm)
}

func (h *hookFS) MkdirAll(name string, perm fs.FileMode) error {
	if err := h.call("mkdir", name); err != nil {
		return err
	}
	return h.FS.MkdirAll(name, perm)
}

// Rename's hook is given the new name.
func (h *hookFS) Rename(oldname, newname string) error {
	if err := h.call("rename", newname); err != nil {
		return err
	}
	return h.FS.Rename(oldname, newname)
}

func (h *hookFS) Remove(name string) error {
	if err := h.call("remove", name); err != nil {
		return err
	}
	return h.FS.Remove(name)
}

func (h *hookFS) SyncDir(name string) error {
	if err := h.call("syncdir", name); err != nil {
		return err
	}
	return h.FS.SyncDir(name)
}

type hookFile struct {
	vfs.File
	h *hookFS
}

func (f *hookFile) Write(p []byte) (int, error) {
	if err := f.h.call("write", f.Name()); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *hookFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.h.call("write", f.Name()); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *hookFile) Sync() error {
	if err := f.h.call("sync", f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *hookFile) Close() error {
	if err := f.h.call("close", f.Name()); err != nil {
		f.File.Close()
		return err
	}
	return f.File.Close()
}

// readFile returns the bytes of file name.
func readFile(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, info.Size())
	if _, err := f.ReadAt(b, 0); err != nil && len(b) > 0 {
		t.Fatal(err)
	}
	return b
}

// writeFile replaces the bytes of file name, durably.
func writeFile(t *testing.T, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.SyncDir(filepath.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

// exists reports whether name exists.
func exists(fsys vfs.FS, name string) bool {
	_, err := fsys.Stat(name)
	return err == nil
}

// tempFiles returns the temporary files (chunks being written) under dir.
func tempFiles(t *testing.T, fsys vfs.FS, dir string) []string {
	t.Helper()
	var out []string
	var walk func(dir string)
	walk = func(dir string) {
		es, err := fsys.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.IsDir():
				walk(p)
			case filepath.Ext(p) == ".tmp":
				out = append(out, p)
			}
		}
	}
	walk(filepath.Join(dir, "chunks"))
	return out
}
