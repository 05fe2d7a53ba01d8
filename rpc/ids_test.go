package rpc_test

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

func TestParsePath(t *testing.T) {
	long := "/" + strings.Repeat("a", rpc.MaxSegmentLen)
	tooLongSeg := "/" + strings.Repeat("a", rpc.MaxSegmentLen+1)
	// MaxPathLen bytes made of valid segments, then one byte more.
	maxPath := strings.Repeat("/"+strings.Repeat("b", 127), rpc.MaxPathLen/128)
	tests := []struct {
		in string
		ok bool
	}{
		{"/a", true},
		{"/a/b/c.txt", true},
		{"/dir with spaces/ünïcødé", true},
		{"/.hidden", true},
		{"/a/...", true},
		{"/a..b", true},
		{long, true},
		{maxPath, true},
		{maxPath + "x", false},
		{tooLongSeg, false},
		{"", false},
		{"/", false},
		{"a", false},
		{"a/b", false},
		{"./a", false},
		{"//", false},
		{"//a", false},
		{"/a//b", false},
		{"/a/", false},
		{"/.", false},
		{"/..", false},
		{"/a/./b", false},
		{"/a/../b", false},
		{"/a/..", false},
		{"/../etc/passwd", false},
		{"/a\x00b", false},
		{"/a\nb", false},
		{"/a\tb", false},
		{"/a\x7fb", false},
		{"/a\xffb", false},
		{"/\xc0\xaf", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			p, err := rpc.ParsePath(tt.in)
			if !tt.ok {
				is.True(err != nil)                             // path must be refused
				is.True(errors.Is(err, rpc.Invalid))            // refusal is of kind Invalid
				is.Equal(p, rpc.Path(""))                       // no path on error
				is.True(!strings.Contains(err.Error(), "\x00")) // message is printable (%q quoting)
				return
			}
			is.NoErr(err)               // path must be accepted
			is.Equal(p.String(), tt.in) // accepted path is returned unchanged
		})
	}
}

func TestParseDir(t *testing.T) {
	tests := []struct {
		in   string
		want rpc.Path
		ok   bool
	}{
		{"", "/", true},
		{"/", "/", true},
		{"/a", "/a", true},
		{"/a/", "/a", true},
		{"/a/b/", "/a/b", true},
		{"/a//", "", false},
		{"//", "", false},
		{"a/", "", false},
		{"/a/../", "", false},
		{"/..", "", false},
		{"/a\x00/", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			got, err := rpc.ParseDir(tt.in)
			if !tt.ok {
				is.True(errors.Is(err, rpc.Invalid)) // directory refused as Invalid
				return
			}
			is.NoErr(err)          // directory accepted
			is.Equal(got, tt.want) // normalized directory
		})
	}
}

func TestPathDirBase(t *testing.T) {
	tests := []struct {
		p    rpc.Path
		dir  rpc.Path
		base string
	}{
		{"/a", "/", "a"},
		{"/a/b", "/a", "b"},
		{"/a/b/c.txt", "/a/b", "c.txt"},
	}
	for _, tt := range tests {
		t.Run(string(tt.p), func(t *testing.T) {
			is := is.New(t)
			is.Equal(tt.p.Dir(), tt.dir)   // Dir
			is.Equal(tt.p.Base(), tt.base) // Base
		})
	}
}

var chunkIDPattern = regexp.MustCompile(`^[0-9a-f]{32}_(0|[1-9][0-9]*)$`)

func TestParseChunkID(t *testing.T) {
	h := strings.Repeat("0123456789abcdef", 2)
	tests := []struct {
		in string
		ok bool
	}{
		{h + "_0", true},
		{h + "_1", true},
		{h + "_10", true},
		{h + "_2147483647", true},
		{h + "_2147483648", false}, // beyond MaxChunkIndex
		{h + "_4294967295", false},
		{h + "_4294967296", false},
		{h + "_99999999999", false},
		{h + "_01", false},
		{h + "_00", false},
		{h + "_", false},
		{h + "_-1", false},
		{h + "_+1", false},
		{h + "_1_0", false},
		{h + "_1a", false},
		{h + "_ 1", false},
		{h + "0_1", false},
		{h[:31] + "_1", false},
		{strings.ToUpper(h) + "_1", false},
		{h[:31] + "g_1", false},
		{h + "-1", false},
		{"../../" + h[6:] + "_1", false},
		{h[:16] + "/" + h[17:] + "_1", false},
		{h + "_1\x00", false},
		{"", false},
		{"_", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			id, err := rpc.ParseChunkID(tt.in)
			if !tt.ok {
				is.True(errors.Is(err, rpc.Invalid)) // refused as Invalid
				is.Equal(id, rpc.ChunkID(""))        // no ID on error
				return
			}
			is.NoErr(err)                                   // accepted
			is.Equal(string(id), tt.in)                     // unchanged
			is.True(chunkIDPattern.MatchString(string(id))) // matches the strict pattern
			is.Equal(id.Hash(), h)                          // Hash is the hex part
		})
	}
}

func TestChunkIDIndex(t *testing.T) {
	is := is.New(t)
	h := strings.Repeat("a", 32)
	for _, idx := range []uint32{0, 1, 7, 1000, rpc.MaxChunkIndex} {
		id, err := rpc.ParseChunkID(h + "_" + itoa(idx))
		is.NoErr(err)                          // valid ID
		is.Equal(id.Index(), idx)              // Index parses back
		is.Equal(id.String(), h+"_"+itoa(idx)) // String
	}
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestNewChunkID(t *testing.T) {
	is := is.New(t)
	s1, s2 := rpc.NewSessionID(), rpc.NewSessionID()
	a := rpc.NewChunkID("/a", s1, 0, 3)

	parsed, err := rpc.ParseChunkID(string(a))
	is.NoErr(err)                                 // derived IDs pass the strict parser
	is.Equal(parsed, a)                           // unchanged by parsing
	is.Equal(a.Index(), uint32(3))                // index is kept
	is.Equal(rpc.NewChunkID("/a", s1, 0, 3), a)   // deterministic
	is.Equal(filepath.Base(string(a)), string(a)) // safe as a file name

	others := map[string]rpc.ChunkID{
		"other path":    rpc.NewChunkID("/b", s1, 0, 3),
		"other session": rpc.NewChunkID("/a", s2, 0, 3),
		"other attempt": rpc.NewChunkID("/a", s1, 1, 3),
	}
	for what, id := range others {
		is.True(id.Hash() != a.Hash()) // hash covers path, session and attempt
		_ = what
	}
	is.True(rpc.NewChunkID("/a", s1, 0, 4) != a)               // index changes the ID
	is.True(rpc.NewChunkID("/a", s1, 0, 4).Hash() != a.Hash()) // and its hash part, so chunks spread over directories
	// The NUL separators keep path and session apart: "/a"+"b..." vs "/ab"+"...".
	is.True(rpc.NewChunkID("/a", "bc", 0, 0) != rpc.NewChunkID("/ab", "c", 0, 0)) // no ambiguity across fields

	for _, idx := range []uint32{0, 1, 9, 10, rpc.MaxChunkIndex} {
		_, err := rpc.ParseChunkID(string(rpc.NewChunkID("/x", s1, 0, idx)))
		is.NoErr(err) // every index up to MaxChunkIndex parses
	}
}

func TestParseNodeAndSessionID(t *testing.T) {
	good := "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	bad := []string{
		"",
		"1B4E28BA-2FA1-11D2-883F-0016D3CCA427",   // not canonical (upper case)
		"{1b4e28ba-2fa1-11d2-883f-0016d3cca427}", // braces
		"urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", // urn form
		"1b4e28ba2fa111d2883f0016d3cca427",              // no dashes
		"1b4e28ba-2fa1-11d2-883f-0016d3cca42",           // short
		"1b4e28ba-2fa1-11d2-883f-0016d3cca427\n",        // trailing newline
		"../../etc/passwd",
	}
	t.Run("node", func(t *testing.T) {
		is := is.New(t)
		id, err := rpc.ParseNodeID(good)
		is.NoErr(err)                              // canonical UUID accepted
		is.Equal(string(id), good)                 // unchanged
		is.Equal(id.Short(), "1b4e28ba")           // Short is the first 8 characters
		is.Equal(rpc.NodeID("abc").Short(), "abc") // Short of a short ID is the ID
		for _, s := range bad {
			_, err := rpc.ParseNodeID(s)
			is.True(errors.Is(err, rpc.Invalid)) // non-canonical node ID refused
		}
	})
	t.Run("session", func(t *testing.T) {
		is := is.New(t)
		id, err := rpc.ParseSessionID(good)
		is.NoErr(err)              // canonical UUID accepted
		is.Equal(string(id), good) // unchanged
		for _, s := range bad {
			_, err := rpc.ParseSessionID(s)
			is.True(errors.Is(err, rpc.Invalid)) // non-canonical session ID refused
		}
		for range 10 {
			fresh := rpc.NewSessionID()
			back, err := rpc.ParseSessionID(string(fresh))
			is.NoErr(err)         // NewSessionID output parses
			is.Equal(back, fresh) // unchanged
		}
		is.True(rpc.NewSessionID() != rpc.NewSessionID()) // fresh IDs differ
	})
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"1b", 1, true},
		{"4k", 4 << 10, true},
		{"4K", 4 << 10, true},
		{"4KB", 4 << 10, true},
		{"4KiB", 4 << 10, true},
		{"8MiB", 8 << 20, true},
		{"8 MiB", 8 << 20, true},
		{"  64 MB ", 64 << 20, true},
		{"1.5k", 1536, true},
		{"0.5MiB", 512 << 10, true},
		{"2g", 2 << 30, true},
		{"1TiB", 1 << 40, true},
		{"4095TiB", 4095 << 40, true},
		{"4096TiB", 1 << 52, true},
		{"", 0, false},
		{"   ", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1e3", 0, false},
		{"1PiB", 1 << 50, true},
		{"8 MiBs", 0, false},
		{"1.2.3", 0, false},
		{".", 0, false},
		{"0x10", 0, false},
		{"99999999999999999999", 0, false},
		{"4611686018427387904", 0, false},          // 1<<62
		{"4194304TiB", 0, false},                   // 1<<62 again, with a unit
		{"4611686018427387903", 0, false},          // rounds up to 1<<62 as a float64
		{"4611686018427387392", 1<<62 - 512, true}, // largest double below 1<<62
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			got, err := rpc.ParseBytes(tt.in)
			if !tt.ok {
				is.True(errors.Is(err, rpc.Invalid)) // refused as Invalid
				return
			}
			is.NoErr(err)          // accepted
			is.Equal(got, tt.want) // value
		})
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{-5, "-5 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{8 << 20, "8 MiB"},
		{64 << 20, "64 MiB"},
		{3 << 30, "3 GiB"},
		{1 << 40, "1 TiB"},
		{1 << 50, "1 PiB"},
		{1 << 60, "1 EiB"},
		{-2048, "-2 KiB"},
		{1<<63 - 1, "8 EiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			is := is.New(t)
			is.Equal(rpc.FormatBytes(tt.in), tt.want) // rendering
		})
	}
}

func TestByteSize(t *testing.T) {
	is := is.New(t)
	var b rpc.ByteSize
	var _ flag.Value = &b

	is.NoErr(b.Set("8MiB"))           // parses units
	is.Equal(int64(b), int64(8<<20))  // value
	is.Equal(b.String(), "8MiB")      // prints without a space, so it can be parsed back
	is.True(b.Set("nonsense") != nil) // bad input refused
	is.Equal(int64(b), int64(8<<20))  // and leaves the value alone
	b = 1536
	is.Equal(b.String(), "1536") // fractional units print as plain bytes
	b = 1000001
	is.Equal(b.String(), "1000001") // inexact values print as plain bytes
	var nilp *rpc.ByteSize
	is.Equal(nilp.String(), "0") // nil receiver is safe (flag package zero value)

	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var cs rpc.ByteSize = 8 << 20
	fs.Var(&cs, "chunk-size", "")
	is.NoErr(fs.Parse([]string{"-chunk-size", "64 MB"})) // works as a flag
	is.Equal(int64(cs), int64(64<<20))                   // flag value
}

// TestByteSizeRoundTrip pins that String output parses back to the same
// value for the sizes an operator configures.
func TestByteSizeRoundTrip(t *testing.T) {
	is := is.New(t)
	vals := []int64{0, 1, 1023, 1024, 1025, 1536, 4 << 10, 1 << 20, 8 << 20, 64<<20 + 1, 3 << 30, 5 << 40, 1<<50 - 1}
	for _, v := range vals {
		b := rpc.ByteSize(v)
		var back rpc.ByteSize
		is.NoErr(back.Set(b.String())) // String output parses
		is.Equal(back, b)              // and gives the same value
	}
}

// TestByteSizeRoundTripPiB documents a mismatch between FormatBytes and
// ParseBytes: FormatBytes prints PiB and EiB, which ParseBytes refuses.
func TestByteSizeRoundTripPiB(t *testing.T) {
	is := is.New(t)
	b := rpc.ByteSize(1 << 50)
	var back rpc.ByteSize
	is.NoErr(back.Set(b.String())) // String output parses
	is.Equal(back, b)              // same value
}

func TestCheckChunkAndFrameSize(t *testing.T) {
	is := is.New(t)
	for _, n := range []int64{rpc.MinChunkSize, 8 << 20, rpc.MaxChunkSize} {
		is.NoErr(rpc.CheckChunkSize(n)) // chunk size in range
	}
	for _, n := range []int64{-1, 0, rpc.MinChunkSize - 1, rpc.MaxChunkSize + 1, 1 << 62} {
		err := rpc.CheckChunkSize(n)
		is.True(errors.Is(err, rpc.Invalid))             // chunk size out of range
		is.True(strings.Contains(err.Error(), "64 MiB")) // message names the bound
	}
	for _, n := range []int64{rpc.MinFrameSize, 1 << 20, rpc.MaxFrameSize} {
		is.NoErr(rpc.CheckFrameSize(n)) // frame size in range
	}
	for _, n := range []int64{0, rpc.MinFrameSize - 1, rpc.MaxFrameSize + 1} {
		is.True(errors.Is(rpc.CheckFrameSize(n), rpc.Invalid)) // frame size out of range
	}
}

func TestDigestsMatch(t *testing.T) {
	is := is.New(t)
	d := make([]byte, rpc.DigestSize)
	for i := range d {
		d[i] = byte(i)
	}
	late := bytes.Clone(d)
	late[rpc.DigestPrefixSize] ^= 1 // differs only after the prefix
	early := bytes.Clone(d)
	early[rpc.DigestPrefixSize-1] ^= 1
	is.True(rpc.DigestsMatch(d, bytes.Clone(d)))                // whole digests, equal
	is.True(!rpc.DigestsMatch(d, late))                         // whole digests are compared whole
	is.True(rpc.DigestsMatch(late, d[:rpc.DigestPrefixSize]))   // a prefix cannot tell the rest apart
	is.True(rpc.DigestsMatch(d[:rpc.DigestPrefixSize], d))      // either way round
	is.True(!rpc.DigestsMatch(early, d[:rpc.DigestPrefixSize])) // a difference in the prefix is seen
	is.True(!rpc.DigestsMatch(d, d[:rpc.DigestPrefixSize-1]))   // too short a prefix matches nothing
	is.True(!rpc.DigestsMatch(nil, nil))                        // no digest matches nothing
	is.True(!rpc.DigestsMatch(append(bytes.Clone(d), 0), d))    // longer than a digest
}
