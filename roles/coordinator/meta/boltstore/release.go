package boltstore

import (
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
)

var _ meta.PageReleaser = (*Store)(nil)

// ReleasePages drops the store file's pages from the process's resident
// set. Bolt reads through a shared, read-only memory map of the file: a
// pass over every record (a term's load) leaves the whole file mapped in,
// counted in the coordinator's RSS (2.4 GiB at 10M one-chunk files) though
// the coordinator needs few of those pages again. MADV_DONTNEED unmaps
// them from this process only: the kernel's page cache keeps them, and
// the next read of a page maps it in again from there (a minor fault),
// with the same bytes. It runs under a read transaction, during which
// bolt cannot move the map (it remaps only under its write lock, when the
// file grows).
func (s *Store) ReleasePages() error {
	return s.db.View(func(tx *bolt.Tx) error {
		size := tx.Size()
		if size <= 0 {
			return nil
		}
		info := s.db.Info()
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, info.Data, uintptr(size), unix.MADV_DONTNEED)
		if errno != 0 {
			return errno
		}
		return nil
	})
}

// span is the stretch of bolt's memory map a read transaction walked (the
// keys and values it read), to take out of the resident set when the
// walk is done (releaseSpan): a listing of 10M files otherwise leaves the
// whole file mapped in, 2.4 GiB of the coordinator's RSS.
type span struct{ lo, hi uintptr }

// add extends the span over b, which bolt returned from the map.
func (sp *span) add(b []byte) {
	if len(b) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if sp.hi == 0 || p < sp.lo {
		sp.lo = p
	}
	sp.hi = max(sp.hi, p+uintptr(len(b)))
}

// releaseSpan drops the pages under sp from the resident set, like
// ReleasePages; tx is the read transaction sp was read in, still open, so
// that the map cannot move. Only what lies within the map is released:
// anything else (a value copied to the heap) is left alone.
func (s *Store) releaseSpan(tx *bolt.Tx, sp span) {
	if sp.hi == 0 {
		return
	}
	page := uintptr(unix.Getpagesize())
	start := s.db.Info().Data
	end := start + uintptr(tx.Size())
	lo, hi := max(sp.lo, start)&^(page-1), min((sp.hi+page-1)&^(page-1), end)
	if lo >= hi || sp.lo >= end || sp.hi <= start {
		return
	}
	unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, unix.MADV_DONTNEED) // an error leaves the pages mapped in: no harm
}
