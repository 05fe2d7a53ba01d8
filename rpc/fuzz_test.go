package rpc_test

import (
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dfs-project/dfs/rpc"
)

// FuzzParsePath checks that every accepted path is normalized and cannot
// escape a directory it is joined under. The committed corpus lives in
// testdata/fuzz/FuzzParsePath.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/a", "/a/b/c.txt", "/", "", "a", "//", "/a//b", "/a/", "/.", "/..",
		"/a/../b", "/a/./b", "/a..b", "/...", "/a\x00b", "/a\nb", "/\xff",
		"/ünïcødé/ファイル", "/" + strings.Repeat("x", 256), "\\..\\x", "/a\\..\\b",
	} {
		f.Add(s)
	}
	const base = "/srv/dfs/data"
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := rpc.ParseDir(s); err == nil {
			ds := string(d)
			if ds != "/" && path.Clean(ds) != ds {
				t.Fatalf("ParseDir(%q) = %q, not clean", s, d)
			}
			if !strings.HasPrefix(filepath.Join(base, ds), base) {
				t.Fatalf("ParseDir(%q) = %q escapes %s", s, d, base)
			}
		}
		p, err := rpc.ParsePath(s)
		if err != nil {
			if p != "" {
				t.Fatalf("ParsePath(%q) returned %q with error %v", s, p, err)
			}
			if rpc.KindOf(err) != rpc.Invalid {
				t.Fatalf("ParsePath(%q) error %v is not Invalid", s, err)
			}
			return
		}
		ps := string(p)
		switch {
		case ps != s:
			t.Fatalf("ParsePath(%q) rewrote the path to %q", s, p)
		case !strings.HasPrefix(ps, "/") || ps == "/":
			t.Fatalf("ParsePath(%q): not an absolute file path", s)
		case strings.HasSuffix(ps, "/"):
			t.Fatalf("ParsePath(%q): trailing slash", s)
		case strings.Contains(ps, "//"):
			t.Fatalf("ParsePath(%q): empty segment", s)
		case strings.IndexByte(ps, 0) >= 0:
			t.Fatalf("ParsePath(%q): NUL", s)
		case !utf8.ValidString(ps):
			t.Fatalf("ParsePath(%q): invalid UTF-8", s)
		case len(ps) > rpc.MaxPathLen:
			t.Fatalf("ParsePath(%q): %d bytes", s, len(ps))
		case path.Clean(ps) != ps || filepath.Clean(ps) != ps:
			t.Fatalf("ParsePath(%q): not clean", s)
		}
		for _, seg := range strings.Split(ps[1:], "/") {
			if seg == ".." || seg == "." || seg == "" || len(seg) > rpc.MaxSegmentLen {
				t.Fatalf("ParsePath(%q): bad segment %q", s, seg)
			}
			for _, r := range seg {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("ParsePath(%q): control character %q", s, r)
				}
			}
		}
		joined := filepath.Join(base, ps)
		if !strings.HasPrefix(joined, base+"/") || joined != base+ps {
			t.Fatalf("ParsePath(%q) joined under %s gives %s", s, base, joined)
		}
		if rel, err := filepath.Rel(base, joined); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("ParsePath(%q): relative to base is %q (%v)", s, rel, err)
		}
		// Dir and Base take the path apart consistently.
		dir, b := p.Dir(), p.Base()
		if b == "" || strings.Contains(b, "/") {
			t.Fatalf("Path(%q).Base() = %q", p, b)
		}
		if strings.TrimSuffix(string(dir), "/")+"/"+b != ps {
			t.Fatalf("Path(%q): Dir %q + Base %q do not rebuild it", p, dir, b)
		}
		if d, err := rpc.ParseDir(string(dir)); err != nil || d != dir {
			t.Fatalf("Path(%q).Dir() = %q is not a valid directory: %v", p, dir, err)
		}
		// A file path is also a directory, with or without one trailing slash.
		if d, err := rpc.ParseDir(ps + "/"); err != nil || d != p {
			t.Fatalf("ParseDir(%q) = %q, %v; want %q", ps+"/", d, err, p)
		}
	})
}

// FuzzParseChunkID checks ParseChunkID against an independent statement of
// the pattern, in both directions: everything accepted matches it, and
// everything matching it (index in range) is accepted.
func FuzzParseChunkID(f *testing.F) {
	h := "0123456789abcdef0123456789abcdef"
	for _, s := range []string{
		h + "_0", h + "_1", h + "_2147483647", h + "_2147483648", h + "_4294967296",
		h + "_01", h + "_", h + "_-1", h + "_+1", h[:31] + "_1", "../" + h + "_1",
		strings.ToUpper(h) + "_1", h + "_1/", h + "_1\x00", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := rpc.ParseChunkID(s)
		want := chunkIDPattern.MatchString(s)
		if want {
			n, perr := strconv.ParseUint(s[33:], 10, 64)
			want = perr == nil && n <= rpc.MaxChunkIndex
		}
		if err != nil {
			if want {
				t.Fatalf("ParseChunkID(%q) refused a valid ID: %v", s, err)
			}
			if id != "" || rpc.KindOf(err) != rpc.Invalid {
				t.Fatalf("ParseChunkID(%q) = %q, %v", s, id, err)
			}
			return
		}
		switch {
		case !want:
			t.Fatalf("ParseChunkID(%q) accepted an ID outside the pattern", s)
		case string(id) != s:
			t.Fatalf("ParseChunkID(%q) rewrote it to %q", s, id)
		case filepath.Base(s) != s || filepath.Clean(s) != s:
			t.Fatalf("ParseChunkID(%q): not a plain file name", s)
		case id.Hash()+"_"+strconv.FormatUint(uint64(id.Index()), 10) != s:
			t.Fatalf("ParseChunkID(%q): Hash %q and Index %d do not rebuild it", s, id.Hash(), id.Index())
		}
	})
}

// FuzzParseBytes checks that sizes are bounded and that ByteSize prints
// values in a form ParseBytes reads back.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{
		"0", "1", "4k", "8MiB", "8 MiB", " 64 MB ", "1.5k", "0.5GiB", "1TiB",
		"4611686018427387904", "99999999999999999999", "1e3", "-1", "1PiB",
		".", "1.2.3", "", "k", "NaN", "Inf", "0x10",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := rpc.ParseBytes(s)
		if err != nil {
			if n != 0 || rpc.KindOf(err) != rpc.Invalid {
				t.Fatalf("ParseBytes(%q) = %d, %v", s, n, err)
			}
			return
		}
		if n < 0 || n >= 1<<62 {
			t.Fatalf("ParseBytes(%q) = %d, out of bounds", s, n)
		}
		if d := strings.TrimSpace(s); d != "" && strings.Trim(d, "0123456789") == "" && len(d) < 16 {
			if want, _ := strconv.ParseInt(d, 10, 64); n != want {
				t.Fatalf("ParseBytes(%q) = %d, want %d", s, n, want)
			}
		}
		if n < 1<<50 { // beyond, String prints units ParseBytes lacks (see TestByteSizeRoundTripPiB)
			b := rpc.ByteSize(n)
			var back rpc.ByteSize
			if err := back.Set(b.String()); err != nil || back != b {
				t.Fatalf("ByteSize(%d).String() = %q parses back as %d, %v", n, b.String(), back, err)
			}
		}
		if fb := rpc.FormatBytes(n); fb == "" {
			t.Fatalf("FormatBytes(%d) is empty", n)
		}
	})
}
