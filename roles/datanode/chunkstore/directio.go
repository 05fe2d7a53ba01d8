package chunkstore

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
)

// Chunk data is written with O_DIRECT where the filesystem allows it:
// copying fresh data into the page cache costs these machines more CPU than
// anything else on the write path (see DESIGN.md, "What the machine
// costs"), and a chunk just written is rarely read again soon. Direct
// writes need an aligned buffer, length and offset, so data is gathered in
// an aligned block and written a block at a time; the unaligned tail, the
// digests and the footer go through an ordinary descriptor at commit, and
// fsync makes both durable. Without O_DIRECT (tmpfs, some overlays) the
// same blocks go through the ordinary descriptor: a write per MiB, not
// one per piece of a frame as gRPC received it (16 KiB).
const (
	directAlign = 4096
	directBlock = 1 << 20
)

var directBufs = sync.Pool{New: func() any {
	b := aligned(directBlock)
	return &b
}}

// aligned returns n bytes starting at a directAlign boundary, as direct
// I/O needs.
func aligned(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+n]
}

// openDirect opens name for direct writes; ok is false when the
// filesystem does not support O_DIRECT (tmpfs, some overlays).
func openDirect(fsys vfs.FS, name string) (f vfs.File, ok bool, err error) {
	f, err = fsys.OpenFile(name, os.O_WRONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return f, true, nil
}
