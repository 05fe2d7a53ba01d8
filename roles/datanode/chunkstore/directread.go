package chunkstore

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
)

// Large reads of a chunk file (a frame of a download, a scrubber's
// pass) take the bytes from the page cache when they are all there, and
// otherwise read them from the disk around it (O_DIRECT): a cold buffered
// read costs these machines ~0.26 CPU-s per GiB (page-cache pages
// allocated, filled and copied), a direct one ~0.06, about the same as a
// read from the cache (`dd` of a 1 GiB file; DESIGN.md, "What the machine
// costs"). Chunks are written around the cache too (directio.go), so a
// chunk read once, right after its put or by the scrubber, does not fill
// the cache. A chunk read again from its start while its file is still
// kept open (openfiles.go: the 64 chunks read last) is read through the
// cache, which then keeps it warm for the reads after. Small reads (ranged
// reads, packed chunks) go through the cache.
//
// Whether the bytes are cached is asked of the kernel with cachestat(2)
// (Linux 6.5), which has no side effect; a buffered read that will not
// wait (RWF_NOWAIT) would start the readahead it means to avoid. Where
// cachestat is missing every read goes through the cache, as before.
const directReadMin = 256 << 10

// directReader is a chunk file open for reading, its large reads served as
// above.
type directReader struct {
	vfs.File
	fsys vfs.FS
	name string

	starts atomic.Int32 // reads from offset 0: a second pass goes through the cache

	mu     sync.Mutex
	direct vfs.File // opened by the first read that needs it
	tried  bool     // direct was opened, or could not be
}

func newDirectReader(fsys vfs.FS, name string, f vfs.File) *directReader {
	return &directReader{File: f, fsys: fsys, name: name}
}

func (f *directReader) ReadAt(b []byte, off int64) (int, error) {
	if off == 0 {
		f.starts.Add(1)
	}
	if f.starts.Load() > 1 {
		return f.File.ReadAt(b, off) // read again: into the cache
	}
	whole := len(b) / directAlign * directAlign // the part a direct read can take
	if whole < directReadMin || off%directAlign != 0 || uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 || !uncached(f.File, off, len(b)) {
		return f.File.ReadAt(b, off)
	}
	d := f.directFile()
	if d == nil {
		return f.File.ReadAt(b, off)
	}
	n, err := d.ReadAt(b[:whole], off)
	switch {
	case err != nil && !errors.Is(err, io.EOF):
		// A read the file system would not do directly after all
		// (EINVAL): through the cache.
		return f.File.ReadAt(b, off)
	case n < whole:
		return n, io.EOF // the file ends here
	case n == len(b):
		return n, nil
	}
	m, err := f.File.ReadAt(b[n:], off+int64(n)) // the tail of under a block
	return n + m, err
}

// uncached reports whether some of the n bytes of f at off are not in the
// page cache; false when the kernel cannot tell (no cachestat, or not the
// OS's file).
func uncached(f vfs.File, off int64, n int) bool {
	sc, ok := f.(syscall.Conn)
	if !ok || noCachestat.Load() {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Cachestat_t
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &st, 0)
	}); err != nil {
		return false
	}
	if serr != nil {
		if errors.Is(serr, syscall.ENOSYS) || errors.Is(serr, syscall.EPERM) {
			noCachestat.Store(true) // an older kernel, or a seccomp filter that does not know it
		}
		return false
	}
	pages := (uint64(off)+uint64(n)+pageSize-1)/pageSize - uint64(off)/pageSize
	return st.Cache < pages
}

// noCachestat is set once cachestat(2) is found missing or refused.
var noCachestat atomic.Bool

var pageSize = uint64(os.Getpagesize())

// directFile returns the chunk file opened for direct reads, opening it
// on the first call; nil when the file system does not read directly
// (tmpfs, the in-memory one) or the open failed.
func (f *directReader) directFile() vfs.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.tried {
		f.tried = true
		if d, err := f.fsys.OpenFile(f.name, os.O_RDONLY|syscall.O_DIRECT, 0); err == nil {
			if _, ok := d.(syscall.Conn); ok && sameFile(f.File, d) {
				f.direct = d
			} else {
				// Not a direct read after all (the in-memory file
				// system), or no longer this file (deleted since).
				d.Close()
			}
		}
	}
	return f.direct
}

// Close closes the file and its direct descriptor.
func (f *directReader) Close() error {
	f.mu.Lock()
	d := f.direct
	f.direct, f.tried = nil, true
	f.mu.Unlock()
	err := f.File.Close()
	if d != nil {
		if derr := d.Close(); err == nil {
			err = derr
		}
	}
	return err
}

func sameFile(a, b vfs.File) bool {
	ai, err := a.Stat()
	if err != nil {
		return false
	}
	bi, err := b.Stat()
	return err == nil && vfs.SameFile(ai, bi)
}
