// Package exepages releases the pages of the executable that a process
// touched to start and no longer uses.
//
// One dfs binary holds every role, and the init of every linked package
// that has one (351) runs in each: the S3 gateway's, the FUSE mount's, the
// AWS SDK's of `dfs bench --s3`. What those touch of the executable stays
// in the process's page tables and counts in its resident set for as long
// as it runs, ~10 MiB a datanode does not use again. They are clean pages
// of the file (the page cache holds them, shared by every process that
// maps the file): dropping them from the process's page tables loses
// nothing, and what the role still uses comes back from the page cache at
// its next touch, without I/O.
package exepages

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Release drops from this process's page tables the pages of its private,
// read-only mappings of its own executable (code and constant data), and
// returns the size of the mappings released. It leaves alone a mapping
// that holds a page of the process's own, in memory or swapped out (one
// it wrote before making it read-only), and any mapping of the file bytes
// of a writable segment (a position-independent executable's relocated
// data, made read-only after the loader wrote it): dropping those would
// bring back the file's bytes. A debugger's breakpoint set between the
// reading of the mappings and their release would be lost.
func Release() (int64, error) {
	writable, err := writableSegments("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("executable pages: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("executable pages: %w", err)
	}
	var released int64
	for _, m := range releasable(smaps, uint64(reflect.ValueOf(Release).Pointer()), writable) {
		// The raw call: the range is not Go memory, so not a []byte.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("executable pages: madvise %x-%x: %w", m.start, m.end, errno)
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}

// span is a range of addresses or file offsets, [lo, hi).
type span struct{ lo, hi uint64 }

func (s span) overlaps(o span) bool { return s.lo < o.hi && o.lo < s.hi }

// writableSegments returns the file ranges of the executable's writable
// loaded segments, widened to whole pages: the pages a writable mapping
// may hold.
func writableSegments(path string) ([]span, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	page := uint64(os.Getpagesize())
	var out []span
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 {
			out = append(out, span{p.Off &^ (page - 1), (p.Off + p.Filesz + page - 1) &^ (page - 1)})
		}
	}
	return out, nil
}

// mapping is one mapping of /proc/PID/smaps.
type mapping struct {
	start, end uint64
	perms      string // "r-xp"
	offset     uint64 // in the file
	dev        string
	inode      uint64
	own        bool // holds a page of the process's own: Anonymous or Swap not 0
}

// releasable returns the mappings of smaps (the text of /proc/PID/smaps)
// to release: those of the file that the mapping holding code address pc
// maps (the executable; its device and inode as the kernel names them),
// private, not writable, holding no page of the process's own and no byte
// of the file ranges writable.
func releasable(smaps []byte, pc uint64, writable []span) []mapping {
	all := parse(smaps)
	var exe *mapping
	for i := range all {
		if all[i].start <= pc && pc < all[i].end {
			exe = &all[i]
		}
	}
	if exe == nil {
		return nil
	}
	var out []mapping
	for _, m := range all {
		if m.dev != exe.dev || m.inode != exe.inode || m.perms[1] == 'w' || m.perms[3] != 'p' || m.own {
			continue
		}
		file := span{m.offset, m.offset + (m.end - m.start)}
		if !overlapsAny(file, writable) {
			out = append(out, m)
		}
	}
	return out
}

func overlapsAny(s span, spans []span) bool {
	for _, o := range spans {
		if s.overlaps(o) {
			return true
		}
	}
	return false
}

// parse reads the mappings of smaps: a header line "start-end perms
// offset dev inode [path]" each, then lines of "Field: value".
func parse(smaps []byte) []mapping {
	var all []mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if m, ok := header(f); ok {
			all = append(all, m)
			continue
		}
		// "Anonymous:" counts the pages copied on a write, in memory;
		// "Swap:" also those swapped out. (Private_Dirty would also count
		// the file's pages not yet written back, of a binary just built.)
		if n := len(all); n > 0 && len(f) >= 2 && (f[0] == "Anonymous:" || f[0] == "Swap:") && f[1] != "0" {
			all[n-1].own = true
		}
	}
	return all
}

// header reads a mapping's first line; ok is false when f is not one (a
// field line's first word ends with ':').
func header(f []string) (mapping, bool) {
	if len(f) < 5 || len(f[1]) != 4 || strings.HasSuffix(f[0], ":") {
		return mapping{}, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	offset, err3 := strconv.ParseUint(f[2], 16, 64)
	inode, err4 := strconv.ParseUint(f[4], 10, 64)
	if !found || err1 != nil || err2 != nil || err3 != nil || err4 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{start: start, end: end, perms: f[1], offset: offset, dev: f[3], inode: inode}, true
}
