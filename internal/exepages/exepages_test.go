package exepages

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"
)

func TestReleaseShrinksResidentSet(t *testing.T) {
	is := is.New(t)
	before := statusKiB(t, "RssFile:")
	n, err := Release()
	is.NoErr(err)
	is.True(n > 0) // the test binary's code and constant data
	after := statusKiB(t, "RssFile:")
	t.Logf("file-backed resident set %d -> %d KiB (%d KiB of mappings released)", before, after, n>>10)
	is.True(after < before)
	// The code dropped comes back as it runs.
	is.Equal(strconv.Itoa(42)+strings.Repeat("!", 2), "42!!")
}

func TestReleaseLeavesPagesOfItsOwn(t *testing.T) {
	is := is.New(t)
	exe, err := os.Open("/proc/self/exe")
	is.NoErr(err)
	defer exe.Close()
	page := os.Getpagesize()

	// A private, read-only mapping of the executable holding a page the
	// process wrote before making it read-only (as a dynamic loader does
	// with relocations): the written byte must stay.
	written, err := unix.Mmap(int(exe.Fd()), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	is.NoErr(err)
	defer unix.Munmap(written)
	orig := written[1]
	written[1] = orig + 1
	is.NoErr(unix.Mprotect(written, unix.PROT_READ))

	// A clean read-only mapping of it: released.
	clean, err := unix.Mmap(int(exe.Fd()), 0, page, unix.PROT_READ, unix.MAP_PRIVATE)
	is.NoErr(err)
	defer unix.Munmap(clean)
	is.Equal(clean[1], orig) // read: resident
	is.Equal(mappingRssKiB(t, clean), page>>10)

	_, err = Release()
	is.NoErr(err)
	is.Equal(written[1], orig+1)         // the process's own page kept
	is.Equal(mappingRssKiB(t, clean), 0) // the clean one dropped
	is.Equal(clean[1], orig)             // and read back from the file
}

func TestReleasable(t *testing.T) {
	is := is.New(t)
	smaps := []byte(`00400000-00800000 r-xp 00000000 fd:01 77 /usr/bin/dfs
Size:               4096 kB
Rss:                2048 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
00800000-00900000 r--p 00400000 fd:01 77 /usr/bin/dfs (deleted)
Rss:                 512 kB
Anonymous:             0 kB
00900000-00a00000 rw-p 00500000 fd:01 77 /usr/bin/dfs
Private_Dirty:       100 kB
00a00000-00b00000 r--p 00600000 fd:01 77 /usr/bin/dfs
Private_Dirty:         4 kB
Anonymous:             4 kB
00b00000-00b10000 r--p 00700000 fd:01 77 /usr/bin/dfs
Private_Dirty:        64 kB
Anonymous:             0 kB
00b10000-00b20000 r--p 00710000 fd:01 77 /usr/bin/dfs
Anonymous:             0 kB
Swap:                  8 kB
00b20000-00b30000 r--p 00800000 fd:01 77 /usr/bin/dfs
Anonymous:             0 kB
00b30000-00b40000 r--s 00810000 fd:01 77 /usr/bin/dfs
Anonymous:             0 kB
00c00000-00d00000 r-xp 00000000 fd:01 78 /usr/lib/other.so
Anonymous:             0 kB
00d00000-00e00000 r--p 00000000 fd:02 77 /data/coordinator/meta.db
Anonymous:             0 kB
00e00000-00f00000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
`)
	writable := []span{{0x800000, 0x801000}} // relocated data, read-only once loaded
	got := releasable(smaps, 0x401234, writable)
	var ranges [][2]uint64
	for _, m := range got {
		ranges = append(ranges, [2]uint64{m.start, m.end})
	}
	// The executable's code and constant data (even of a file replaced
	// since, and the file's pages not yet written back). Not: its
	// writable mapping; one holding a page the process wrote, in memory
	// or swapped out; one of a writable segment's bytes; a shared one;
	// another file, even with the same inode on another device.
	is.Equal(ranges, [][2]uint64{{0x400000, 0x800000}, {0x800000, 0x900000}, {0xb00000, 0xb10000}})

	is.Equal(len(releasable(smaps, 0x1000, writable)), 0) // pc in no mapping: nothing
}

// statusKiB reads a "Name:  N kB" line of /proc/self/status.
func statusKiB(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range bytes.Lines(b) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == name {
			return kib(t, f)
		}
	}
	t.Fatalf("no %s in /proc/self/status", name)
	return 0
}

// kib reads the figure of a "Name:  N kB" line split into fields.
func kib(t *testing.T, f []string) int {
	t.Helper()
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mappingRssKiB returns the resident size of the mapping that starts at b.
func mappingRssKiB(t *testing.T, b []byte) int {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := strconv.FormatUint(uint64(uintptr(unsafe.Pointer(&b[0]))), 16)
	in := false
	for line := range bytes.Lines(smaps) {
		f := strings.Fields(string(line))
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			lo, _, _ := strings.Cut(f[0], "-")
			in = strings.TrimLeft(lo, "0") == start
			continue
		}
		if in && len(f) >= 2 && f[0] == "Rss:" {
			return kib(t, f)
		}
	}
	t.Fatalf("no mapping at %s", start)
	return 0
}
