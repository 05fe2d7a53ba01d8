package rpc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits on names, shared by every role.
const (
	MaxPathLen     = 4096
	MaxSegmentLen  = 255
	MaxChunkIndex  = 1<<31 - 1
	chunkHashLen   = 32 // hex digits of the chunk ID's hash part
	DigestSize     = sha256.Size
	MinChunkSize   = 64 << 10
	MaxChunkSize   = 64 << 20
	MinFrameSize   = 4 << 10
	MaxFrameSize   = 4 << 20
	MaxReplication = 16
	// MaxFileChunks bounds the chunks of one file (the coordinator's
	// --max-file-chunks may set less): 64 TiB at 64 MiB chunks.
	MaxFileChunks = 1 << 20
	// MaxAddrLen bounds a node's host:port address: a DNS name of 253
	// bytes, a colon and a port.
	MaxAddrLen = 260
	// MaxReadChunks bounds the chunks of one ReadChunks call, and
	// MaxReadChunksBytes their data in its reply.
	MaxReadChunks      = 64
	MaxReadChunksBytes = 1 << 20
	// MaxWriteChunks bounds the chunks of one WriteChunks call, and
	// MaxWriteChunksBytes their data together.
	MaxWriteChunks      = 64
	MaxWriteChunksBytes = 1 << 20
	// MaxDownloadFiles bounds the files of one DownloadFiles call, and
	// MaxDownloadFilesPage the chunks of each one's page.
	MaxDownloadFiles     = 64
	MaxDownloadFilesPage = 8
)

// DigestPrefixSize is how much of a chunk digest the coordinator's chunk
// index keeps, and so the least of one a repair request carries: SHA-256
// truncated to 128 bits still tells any accidental damage and keeps 2^64
// collision resistance (see DigestsMatch).
const DigestPrefixSize = 16

// Path is a normalized absolute file path: it starts with "/", has no
// empty, "." or ".." segments, no NUL and no trailing slash. The root "/"
// is a valid directory but never a file.
type Path string

// ParsePath validates an absolute file path. It refuses anything that could
// escape or be ambiguous rather than rewriting it.
func ParsePath(s string) (Path, error) {
	if s == "/" {
		return "", Errorf(Invalid, "invalid path %q: the root is a directory, not a file", s)
	}
	if err := checkPath(s); err != nil {
		return "", err
	}
	return Path(s), nil
}

// ParseDir validates a directory path for listing: the root "/" or a file
// path, with one trailing slash tolerated.
func ParseDir(s string) (Path, error) {
	if s == "" || s == "/" {
		return "/", nil
	}
	s = strings.TrimSuffix(s, "/")
	if err := checkPath(s); err != nil {
		return "", err
	}
	return Path(s), nil
}

func checkPath(s string) error {
	switch {
	case s == "":
		return Errorf(Invalid, "invalid path: empty")
	case len(s) > MaxPathLen:
		return Errorf(Invalid, "invalid path: longer than %d bytes", MaxPathLen)
	case !utf8.ValidString(s):
		return Errorf(Invalid, "invalid path %q: not valid UTF-8", s)
	case s[0] != '/':
		return Errorf(Invalid, "invalid path %q: must be absolute (start with /)", s)
	case strings.IndexByte(s, 0) >= 0:
		return Errorf(Invalid, "invalid path %q: contains NUL", s)
	}
	for _, seg := range strings.Split(s[1:], "/") {
		switch {
		case seg == "":
			return Errorf(Invalid, "invalid path %q: empty segment", s)
		case seg == "." || seg == "..":
			return Errorf(Invalid, "invalid path %q: %q segments are not allowed", s, seg)
		case len(seg) > MaxSegmentLen:
			return Errorf(Invalid, "invalid path %q: segment longer than %d bytes", s, MaxSegmentLen)
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return Errorf(Invalid, "invalid path %q: control character", s)
			}
		}
	}
	return nil
}

// Dir returns the directory that holds p ("/" for top-level files).
func (p Path) Dir() Path {
	i := strings.LastIndexByte(string(p), '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// Base returns the last segment of p.
func (p Path) Base() string {
	return string(p[strings.LastIndexByte(string(p), '/')+1:])
}

func (p Path) String() string { return string(p) }

// IsBelow reports whether p is dir or lies below it ("/a/b" is below "/a",
// "/ab" is not; every path is below "/").
func (p Path) IsBelow(dir Path) bool {
	return p == dir || dir == "/" || strings.HasPrefix(string(p), string(dir)+"/")
}

// ChunkID names one immutable chunk: "<32 hex digits>_<index>". The hash
// covers the path, the upload session, the attempt and the index, so two
// uploads of one path, or two attempts at one chunk, never share an ID, and
// the chunks of one file spread over the datanode's directories.
type ChunkID string

// NewChunkID derives the ID of chunk index of an upload.
func NewChunkID(path Path, session SessionID, attempt uint32, index uint32) ChunkID {
	h := sha256.New()
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write([]byte(session))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatUint(uint64(attempt), 10)))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatUint(uint64(index), 10)))
	sum := h.Sum(nil)
	return ChunkID(hex.EncodeToString(sum[:chunkHashLen/2]) + "_" + strconv.FormatUint(uint64(index), 10))
}

// ParseChunkID validates s against the strict chunk ID pattern. Only a
// validated ID may be used to build a path on disk.
func ParseChunkID(s string) (ChunkID, error) {
	if len(s) < chunkHashLen+2 || len(s) > chunkHashLen+11 || s[chunkHashLen] != '_' {
		return "", Errorf(Invalid, "invalid chunk id %q", s)
	}
	for i := 0; i < chunkHashLen; i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", Errorf(Invalid, "invalid chunk id %q", s)
		}
	}
	idx := s[chunkHashLen+1:]
	if idx != "0" && idx[0] == '0' {
		return "", Errorf(Invalid, "invalid chunk id %q", s)
	}
	n, err := strconv.ParseUint(idx, 10, 32)
	if err != nil || n > MaxChunkIndex {
		return "", Errorf(Invalid, "invalid chunk id %q", s)
	}
	return ChunkID(s), nil
}

// Hash returns the hex hash part of the ID.
func (c ChunkID) Hash() string { return string(c[:chunkHashLen]) }

// Index returns the chunk's index within its file.
func (c ChunkID) Index() uint32 {
	n, _ := strconv.ParseUint(string(c[chunkHashLen+1:]), 10, 32)
	return uint32(n)
}

func (c ChunkID) String() string { return string(c) }

// NodeID identifies a datanode; a UUID persisted in its data dir.
type NodeID string

// ParseNodeID validates a node ID (a UUID in canonical form).
func ParseNodeID(s string) (NodeID, error) {
	u, err := uuid.Parse(s)
	if err != nil || u.String() != s {
		return "", Errorf(Invalid, "invalid node id %q", s)
	}
	return NodeID(s), nil
}

func (n NodeID) String() string { return string(n) }

// Short returns the first 8 characters, for tables and logs.
func (n NodeID) Short() string {
	if len(n) > 8 {
		return string(n[:8])
	}
	return string(n)
}

// SessionID identifies a metadata or streaming session.
type SessionID string

// NewSessionID returns a fresh random session ID.
func NewSessionID() SessionID { return SessionID(uuid.NewString()) }

// ParseSessionID validates a session ID.
func ParseSessionID(s string) (SessionID, error) {
	u, err := uuid.Parse(s)
	if err != nil || u.String() != s {
		return "", Errorf(Invalid, "invalid session id %q", s)
	}
	return SessionID(s), nil
}

// CheckChunkSize validates a chunk size in bytes.
func CheckChunkSize(n int64) error {
	if n < MinChunkSize || n > MaxChunkSize {
		return Errorf(Invalid, "chunk size %d out of range: must be between %s and %s", n, FormatBytes(MinChunkSize), FormatBytes(MaxChunkSize))
	}
	return nil
}

// CheckFrameSize validates a frame size in bytes.
func CheckFrameSize(n int64) error {
	if n < MinFrameSize || n > MaxFrameSize {
		return Errorf(Invalid, "frame size %d out of range: must be between %s and %s", n, FormatBytes(MinFrameSize), FormatBytes(MaxFrameSize))
	}
	return nil
}

// DigestsMatch reports whether chunk digests a and b agree: each is a
// whole digest or a prefix of one of at least DigestPrefixSize bytes, and
// they are equal over the shorter. Two whole digests are compared whole;
// a prefix cannot tell apart digests that differ only after it.
func DigestsMatch(a, b []byte) bool {
	n := min(len(a), len(b))
	if n < DigestPrefixSize || len(a) > DigestSize || len(b) > DigestSize {
		return false
	}
	return string(a[:n]) == string(b[:n])
}

// FormatBytes renders n in binary units ("8 MiB").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if (v >= 1023.95 || v <= -1023.95) && exp < 5 {
		div *= unit
		exp++
		v = float64(n) / float64(div)
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %ciB", int64(v), "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}

// ParseBytes parses a size such as "8MiB", "64 MB", "4k" or "1048576".
// Units are powers of 1024 (k, K, KiB, KB all mean 1024).
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, Errorf(Invalid, "invalid size %q", s)
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
		"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
		"p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
		"e": 1 << 60, "eb": 1 << 60, "eib": 1 << 60,
	}[unit]
	if mult == 0 {
		return 0, Errorf(Invalid, "invalid size %q: unknown unit %q", s, unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v*mult >= 1<<62 {
		return 0, Errorf(Invalid, "invalid size %q", s)
	}
	return int64(v * mult), nil
}

// ByteSize is a size in bytes that reads and prints in binary units; it
// implements flag.Value so command-line flags can take "8MiB".
type ByteSize int64

// Set parses s with ParseBytes.
func (b *ByteSize) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

func (b *ByteSize) String() string {
	if b == nil {
		return "0"
	}
	s := FormatBytes(int64(*b))
	if strings.Contains(s, ".") {
		return strconv.FormatInt(int64(*b), 10)
	}
	return strings.ReplaceAll(s, " ", "")
}
