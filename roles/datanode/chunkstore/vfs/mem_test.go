package vfs

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/matryer/is"
)

func writeFile(t *testing.T, m *MemFS, name, data string, sync bool) {
	t.Helper()
	f, err := m.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// content returns file name's bytes, or "<absent>".
func content(t *testing.T, m *MemFS, name string) string {
	t.Helper()
	f, err := m.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return "<absent>"
	}
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
	return string(b)
}

// TestCrashClone: a crash keeps a file's bytes as of its last Sync, under
// the names its directory had at its last SyncDir.
func TestCrashClone(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, m *MemFS)
		file string
		want string
	}{
		{"written, synced, dir synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "data", true)
			m.SyncDir("/d")
		}, "/d/f", "data"},
		{"written, not synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "data", false)
			m.SyncDir("/d")
		}, "/d/f", ""},
		{"synced, dir not synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "data", true)
		}, "/d/f", "<absent>"},
		{"rewritten after the sync", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "old", true)
			m.SyncDir("/d")
			f, _ := m.OpenFile("/d/f", os.O_WRONLY, 0)
			f.WriteAt([]byte("new"), 0)
			f.Close()
		}, "/d/f", "old"},
		{"renamed, dir not synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f.tmp", "data", true)
			m.SyncDir("/d")
			m.Rename("/d/f.tmp", "/d/f")
		}, "/d/f", "<absent>"},
		{"renamed, old name kept", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f.tmp", "data", true)
			m.SyncDir("/d")
			m.Rename("/d/f.tmp", "/d/f")
		}, "/d/f.tmp", "data"},
		{"renamed, dir synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f.tmp", "data", true)
			m.Rename("/d/f.tmp", "/d/f")
			m.SyncDir("/d")
		}, "/d/f", "data"},
		{"removed, dir not synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "data", true)
			m.SyncDir("/d")
			m.Remove("/d/f")
		}, "/d/f", "data"},
		{"removed, dir synced", func(t *testing.T, m *MemFS) {
			writeFile(t, m, "/d/f", "data", true)
			m.SyncDir("/d")
			m.Remove("/d/f")
			m.SyncDir("/d")
		}, "/d/f", "<absent>"},
		{"in a directory its parent did not sync", func(t *testing.T, m *MemFS) {
			m.Mkdir("/d/sub", 0o750)
			writeFile(t, m, "/d/sub/f", "data", true)
			m.SyncDir("/d/sub")
		}, "/d/sub/f", "<absent>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			m := NewCrashableMem()
			is.NoErr(m.Mkdir("/d", 0o750))
			is.NoErr(m.SyncDir("/"))
			tt.do(t, m)
			live := content(t, m, tt.file)
			c := m.CrashClone()
			is.Equal(content(t, c, tt.file), tt.want) // what the crash left
			is.Equal(content(t, m, tt.file), live)    // the original is unchanged
			writeFile(t, c, "/d/other", "x", false)
			is.Equal(content(t, m, "/d/other"), "<absent>") // and independent of the clone
		})
	}
}

func TestMemErrors(t *testing.T) {
	is := is.New(t)
	m := NewCrashableMem()
	_, err := m.OpenFile("/nope", os.O_RDONLY, 0)
	is.True(errors.Is(err, fs.ErrNotExist)) // a missing file
	is.NoErr(m.MkdirAll("/a/b", 0o750))
	is.NoErr(m.MkdirAll("/a/b", 0o750)) // MkdirAll of an existing dir
	is.True(errors.Is(m.Mkdir("/a/b", 0o750), fs.ErrExist))
	writeFile(t, m, "/a/b/f", "x", false)
	_, err = m.OpenFile("/a/b/f", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	is.True(errors.Is(err, fs.ErrExist)) // O_EXCL
	is.True(errors.Is(m.MkdirAll("/a/b/f/g", 0o750), syscall.ENOTDIR))
	is.True(errors.Is(m.Remove("/a/b"), syscall.ENOTEMPTY))
	_, err = m.OpenFile("/a/b", os.O_WRONLY, 0)
	is.True(errors.Is(err, syscall.EISDIR))
	is.True(errors.Is(m.Rename("/a/b/none", "/a/b/x"), fs.ErrNotExist))

	writeFile(t, m, "/a/b/e", "", false)
	es, err := m.ReadDir("/a/b")
	is.NoErr(err)
	is.Equal(len(es), 2)
	is.Equal(es[0].Name(), "e") // sorted
	is.Equal(es[1].Name(), "f")

	f, err := m.OpenFile("/a/b/f", os.O_WRONLY, 0)
	is.NoErr(err)
	_, err = f.ReadAt(make([]byte, 1), 0)
	is.True(errors.Is(err, syscall.EBADF)) // not open for reading
	is.NoErr(f.Close())
	is.True(errors.Is(f.Close(), fs.ErrClosed)) // closed once

	a, err := m.Stat("/a/b/f")
	is.NoErr(err)
	is.NoErr(m.Rename("/a/b/f", "/a/g"))
	b, err := m.Stat("/a/g")
	is.NoErr(err)
	e, err := m.Stat("/a/b/e")
	is.NoErr(err)
	is.True(SameFile(a, b))  // renamed, the same file
	is.True(!SameFile(a, e)) // another file
}
