package meta

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
)

// Synth describes a synthetic namespace of Files one-chunk files, for
// measuring the coordinator at scale: file i is what a put of FileSize
// bytes would have committed (path, size, SHA-256, chunk ID derived from
// the path and a session, chunk size, frame size and digest, version 1,
// the session). Every file holds the same bytes, so the digests are
// computed once; the IDs, paths and sessions differ. A Synth is a
// Snapshotter: Backup(ctx, s, w, info) writes it as a backup that
// `dfs coordinator --restore` loads, streaming, in memory that does not
// grow with Files.
type Synth struct {
	Files       int
	FileSize    int64 // 1 to ChunkSize
	ChunkSize   int64
	FrameSize   int64
	Replication uint32
	Modified    time.Time

	digest, sum []byte
}

// synthSpace seeds the sessions of synthetic files (a UUID, fixed so that
// two runs with the same parameters name the same chunks).
var synthSpace = uuid.MustParse("5f0f8a56-6c3b-4c56-9a55-3d2b8c1f6a10")

// NewSynth returns the namespace of n one-chunk files of size bytes, with
// the given chunk size, frame size and replication, modified at mod.
func NewSynth(n int, size, chunkSize, frameSize int64, replication uint32, mod time.Time) (*Synth, error) {
	switch {
	case n < 0:
		return nil, rpc.Errorf(rpc.Invalid, "synth: %d files", n)
	case rpc.CheckChunkSize(chunkSize) != nil:
		return nil, rpc.CheckChunkSize(chunkSize)
	case rpc.CheckFrameSize(frameSize) != nil:
		return nil, rpc.CheckFrameSize(frameSize)
	case size < 1 || size > chunkSize:
		return nil, rpc.Errorf(rpc.Invalid, "synth: file size %d must be 1 to the chunk size %d", size, chunkSize)
	case replication < 1 || replication > rpc.MaxReplication:
		return nil, rpc.Errorf(rpc.Invalid, "synth: replication %d", replication)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i % 251)
	}
	digest, _ := chunkstream.DigestOf(data, int(frameSize))
	sum := sha256.Sum256(data)
	return &Synth{Files: n, FileSize: size, ChunkSize: chunkSize, FrameSize: frameSize, Replication: replication,
		Modified: mod, digest: digest, sum: sum[:]}, nil
}

// synthPerDir is how many files share a directory.
const synthPerDir = 1000

// Path returns the path of file i: /synth/<i/1000>/<i>.
func (s *Synth) Path(i int) rpc.Path {
	return rpc.Path("/synth/" + strconv.Itoa(i/synthPerDir) + "/" + strconv.Itoa(i))
}

// Session returns the upload session that committed file i.
func (s *Synth) Session(i int) rpc.SessionID {
	return rpc.SessionID(uuid.NewSHA1(synthSpace, strconv.AppendInt(nil, int64(i), 10)).String())
}

// Chunk returns the one chunk of file i.
func (s *Synth) Chunk(i int) Chunk {
	return Chunk{ID: rpc.NewChunkID(s.Path(i), s.Session(i), 0, 0), Size: s.FileSize, Digest: s.digest, FrameSize: s.FrameSize}
}

// File returns file i.
func (s *Synth) File(i int) *File {
	p, sess := s.Path(i), s.Session(i)
	return &File{
		Path: p, Size: s.FileSize, SHA256: s.sum, ChunkSize: s.ChunkSize, Replication: s.Replication,
		Modified: s.Modified, Version: 1, Session: sess,
		Chunks: []Chunk{{ID: rpc.NewChunkID(p, sess, 0, 0), Size: s.FileSize, Digest: s.digest, FrameSize: s.FrameSize}},
	}
}

var _ Snapshotter = (*Synth)(nil)

// Snapshot calls fn with every file, in path order (the order a store's
// snapshot has), one at a time.
func (s *Synth) Snapshot(ctx context.Context, fn func(Record) error) error {
	dirs := (s.Files + synthPerDir - 1) / synthPerDir
	for _, d := range byDecimal(0, dirs) {
		for _, i := range byDecimal(d*synthPerDir, min((d+1)*synthPerDir, s.Files)) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("synth: %w", err)
			}
			if err := fn(Record{File: s.File(i)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// byDecimal returns lo..hi-1 sorted as decimal strings, as paths sort.
func byDecimal(lo, hi int) []int {
	out := make([]int, 0, max(hi-lo, 0))
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b int) int { return strings.Compare(strconv.Itoa(a), strconv.Itoa(b)) })
	return out
}
