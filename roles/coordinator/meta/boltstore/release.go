package boltstore

import (
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
