// Package exepages releases the pages of the executable that a process
// touched to start and no longer uses.
//
// One dfs binary holds every role, and every linked package's init runs
// in each (the S3 gateway's, the FUSE mount's, the AWS SDK's for
// `dfs bench --s3`): a process that has started holds ~20 MiB more of the
// executable's pages than the role it runs uses again, and they count in
// its resident set for as long as it runs. They are clean pages of the
// file (the page cache holds them, shared by every process that maps the
// file): dropping them from the process's page tables loses nothing, and
// what the role still uses comes back from the page cache at its next
// touch, without I/O.
package exepages

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Release drops from this process's page tables its read-only mappings of
// its own executable (code and constant data) that hold no page of the
// process's own: a mapping holding one (a page written before it was made
// read-only, as a dynamic loader's relocations are) is left alone, since
// dropping it would bring back the file's bytes. It returns the size of
// the mappings released.
func Release() (int64, error) {
	var exe syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &exe); err != nil {
		return 0, fmt.Errorf("executable pages: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("executable pages: %w", err)
	}
	var released int64
	for _, m := range readOnlyMappings(smaps, exe.Ino) {
		// The raw call: the range is not Go memory, so not a []byte.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("executable pages: madvise %x-%x: %w", m.start, m.end, errno)
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}

type mapping struct {
	start, end uintptr
	own        bool // holds a page of the process's own: one it wrote, copied from the file
}

// readOnlyMappings returns the mappings of smaps (the text of
// /proc/PID/smaps) of the file with inode ino that are not writable and
// hold no page of the process's own.
func readOnlyMappings(smaps []byte, ino uint64) []mapping {
	var all []*mapping
	var cur *mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if m, ok := header(f, ino); ok {
			cur = m
			if m != nil {
				all = append(all, m)
			}
			continue
		}
		// A field of the current mapping: "Anonymous:    4 kB" counts the
		// pages copied on a write (Private_Dirty would also count the
		// file's own pages not yet written back, of a binary just built).
		if cur != nil && len(f) >= 2 && f[0] == "Anonymous:" && f[1] != "0" {
			cur.own = true
		}
	}
	var out []mapping
	for _, m := range all {
		if !m.own {
			out = append(out, *m)
		}
	}
	return out
}

// header reads a mapping's first line, "start-end perms offset dev inode
// [path]": ok is false when f is not one; m is nil for a mapping that is
// not a read-only one of inode ino.
func header(f []string, ino uint64) (m *mapping, ok bool) {
	if len(f) < 5 || len(f[1]) != 4 || !strings.Contains(f[0], "-") || strings.HasSuffix(f[0], ":") {
		return nil, false
	}
	lo, hi, _ := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	inode, err3 := strconv.ParseUint(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, false
	}
	if inode != ino || f[1][1] == 'w' || end <= start {
		return nil, true
	}
	return &mapping{start: uintptr(start), end: uintptr(end)}, true
}
