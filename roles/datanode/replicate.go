package datanode

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// ReplicateChunk copies a chunk from the source node named in the request
// to this node, for the coordinator's repairs. Every frame and the chunk
// are verified against the digest in the request (the one recorded at
// commit, not the source's word for it) and written as they arrive, so a
// copy holds about a frame queue in memory whatever the chunk's size. It
// returns once the copy is durable, with the bytes copied, and queues the
// chunk's stored report.
//
// The request's digest may be the committed digest's first
// rpc.DigestPrefixSize bytes or more (the coordinator's index keeps no
// more): the source's whole digest must then start with it, the bytes
// must match that whole digest, and the copy stores it (see
// chunkstream.Fetch).
//
// A chunk already stored here with the requested size, frame size and
// digest succeeds at once with bytes 0, so a repeated request is harmless;
// stored with another digest it is Exists, and on the corrupt list (a bad
// copy awaiting deletion) FailedPrecondition. Errors are attributed
// (rpc.NodeError) to this node when it cannot take the chunk
// (ResourceExhausted when full, a failed write) and to the source when the
// source fails or serves bytes that do not match the digest, so the
// coordinator can retry with another source or target. The request's
// context bounds the whole copy.
func (n *Node) ReplicateChunk(ctx context.Context, req *dfspb.ReplicateChunkRequest) (*dfspb.ReplicateChunkResponse, error) {
	began := n.clock.Now()
	done, running := n.metrics.op(opReplicate), n.metrics.stream(opReplicate)
	r, err := n.checkReplicate(req)
	var copied int64
	if err == nil {
		copied, err = n.replicate(ctx, r)
	}
	running()
	done(err)
	if err != nil {
		n.streamFailed(ctx, err, "replicate failed")
		return nil, rpc.ToStatus(err)
	}
	l := n.logFor(ctx)
	l.Debug().Str("chunk_id", string(r.id)).Str("peer", string(r.src.id)).
		Int64("bytes", copied).Dur("took", n.clock.Since(began)).Msg("chunk replicated")
	return &dfspb.ReplicateChunkResponse{Bytes: copied}, nil
}

// replicateSource is the checked source of a ReplicateChunk request.
type replicateSource struct {
	id   rpc.NodeID
	addr string
}

// replicateRequest is a checked ReplicateChunk request: the chunk as
// committed, and the node to copy it from.
type replicateRequest struct {
	id   rpc.ChunkID
	want chunkstore.Meta
	src  replicateSource
	// srcToken is the read token this node presents to the source.
	srcToken *dfspb.ChunkToken
}

// checkReplicate validates a ReplicateChunk request; with TLS its
// replicate token must be valid here.
func (n *Node) checkReplicate(req *dfspb.ReplicateChunkRequest) (replicateRequest, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return replicateRequest{}, err
	}
	if _, err := n.authorize(req.Token, id, chunktoken.Replicate); err != nil {
		return replicateRequest{}, err
	}
	if req.Size <= 0 || req.Size > rpc.MaxChunkSize {
		return replicateRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: size %d out of range (1 B to %s)", id, req.Size, rpc.FormatBytes(rpc.MaxChunkSize))
	}
	if err := rpc.CheckFrameSize(req.FrameSize); err != nil {
		return replicateRequest{}, err
	}
	if len(req.Digest) < rpc.DigestPrefixSize || len(req.Digest) > rpc.DigestSize {
		return replicateRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: digest of %d bytes, want %d to %d", id, len(req.Digest), rpc.DigestPrefixSize, rpc.DigestSize)
	}
	if req.Source == nil {
		return replicateRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: no source node", id)
	}
	src, err := rpc.ParseNodeID(req.Source.NodeId)
	if err != nil {
		return replicateRequest{}, err
	}
	if req.Source.Addr == "" {
		return replicateRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: source %s has no address", id, src)
	}
	if src == n.id {
		return replicateRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: the source is this node", id)
	}
	return replicateRequest{
		id:   id,
		want: chunkstore.Meta{Size: req.Size, FrameSize: req.FrameSize, Digest: req.Digest},
		src:  replicateSource{id: src, addr: req.Source.Addr},

		srcToken: req.SourceToken,
	}, nil
}

func (n *Node) replicate(ctx context.Context, r replicateRequest) (int64, error) {
	id, src, want := r.id, r.src, r.want
	self := []string{string(n.id)}
	if done, err := n.holds(id, want); done || err != nil {
		return 0, err
	}
	if err := n.writable(); err != nil {
		return 0, err
	}
	srcErr := func(kind rpc.Kind, format string, args ...any) error {
		if ctx.Err() != nil {
			return rpc.Errorf(rpc.Other, "chunk %s: copy from %s ended: %w", id, src.id.Short(), ctx.Err())
		}
		return rpc.NodeError(kind, []string{string(src.id)}, format, args...)
	}
	cc, err := n.peerConn(ctx, src.id, src.addr)
	if err != nil {
		return 0, srcErr(rpc.Other, "chunk %s: source %w", id, err)
	}
	need := chunkstore.FileSize(want.Size, want.FrameSize)
	if err := n.store.Reserve(need); err != nil {
		return 0, rpc.NodeError(rpc.Other, self, "%w", err)
	}
	defer n.store.Release(need)

	w, err := n.store.Create(id, want.Size, want.FrameSize)
	if err != nil {
		return 0, n.lostRace(id, want, err)
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	// Frames are written by the sink's own goroutine while the next ones
	// arrive and are hashed; its queue bounds the memory. The source is
	// under a progress deadline from the prepare to the last frame, paused
	// while this node's disk takes a frame: a source that stalls fails
	// the copy, blamed, in one timeout. What it claims and serves must
	// match the commit.
	sink := n.newFrameSink(ctx, w, &forwarder{}, sinkDepth)
	sink.bytes = n.metrics.replicated
	got, err := chunkstream.Fetch(ctx, chunkstream.Download{
		Expect:          chunkstream.Expect{ChunkID: id, Size: want.Size, FrameSize: want.FrameSize, Digest: want.Digest},
		From:            dfspb.NewDataNodeClient(cc),
		Token:           r.srcToken,
		Peer:            "download stream",
		ProgressTimeout: n.cfg.ProgressTimeout,
		PrepareTimeout:  n.cfg.RPCTimeout,
		Heard:           func() time.Time { return n.pool.Heard(src.addr) },
		Clock:           n.clock,
	}, &sinkWriter{sink: sink})
	werr := sink.finish()
	switch fault := chunkstream.FaultOf(err); {
	case fault == chunkstream.WriterFailed: // this node's disk
		return 0, err
	case err == nil && werr != nil:
		return 0, werr
	case err == nil:
	case fault == chunkstream.SourceCorrupt:
		return 0, srcErr(rpc.Internal, "chunk %s: source %s served a corrupt copy: %w", id, src.id.Short(), err)
	default:
		return 0, srcErr(rpc.Other, "chunk %s: source %s (%s): %w", id, src.id.Short(), src.addr, err)
	}

	if err := w.Commit(got.FrameDigests, got.Digest); err != nil {
		committed = true // Commit cleans up after itself
		return 0, n.lostRace(id, want, err)
	}
	committed = true
	n.reports.stored(id, chunkstore.Meta{Size: want.Size, FrameSize: want.FrameSize, Digest: got.Digest})
	return want.Size, nil
}

// sinkWriter hands a fetch's frames, in order and in the pieces they
// arrived in, to a frame sink.
type sinkWriter struct {
	sink *frameSink
	off  int64
}

var _ chunkstream.PieceWriter = (*sinkWriter)(nil)

func (s *sinkWriter) WritePieces(data mem.BufferSlice) error {
	n := data.Len()
	if err := s.sink.Frame(&rpc.PiecedFrame{Msg: &dfspb.ChunkDataStream{Offset: s.off}, Pieces: data}); err != nil {
		return err
	}
	s.off += int64(n)
	return nil
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	if err := s.WritePieces(mem.BufferSlice{mem.SliceBuffer(p)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// lostRace turns err, from creating or committing chunk id, into nil when
// a concurrent copy of the same chunk stored it meanwhile (Exists), and
// otherwise attributes it to this node.
func (n *Node) lostRace(id rpc.ChunkID, want chunkstore.Meta, err error) error {
	if errors.Is(err, rpc.Exists) {
		if done, herr := n.holds(id, want); done || herr != nil {
			return herr
		}
	}
	return rpc.NodeError(rpc.Other, []string{string(n.id)}, "%w", err)
}

// holds reports whether chunk id is already stored here as want describes
// (then it queues the stored report again, in case the coordinator missed
// it), or fails when this node holds another or a corrupt copy of it.
func (n *Node) holds(id rpc.ChunkID, want chunkstore.Meta) (bool, error) {
	self := []string{string(n.id)}
	if n.store.IsCorrupt(id) {
		return false, rpc.NodeError(rpc.FailedPrecondition, self, "chunk %s: this node holds a corrupt copy awaiting deletion", id)
	}
	m, err := n.store.Check(id) // on disk, not only indexed
	if err != nil {
		n.unusable(id, err)
		return false, nil
	}
	if m.Size != want.Size || m.FrameSize != want.FrameSize || !rpc.DigestsMatch(m.Digest, want.Digest) {
		return false, rpc.NodeError(rpc.Exists, self, "chunk %s: this node holds another chunk under this id (size %d, frame size %d, digest %.6x)", id, m.Size, m.FrameSize, m.Digest)
	}
	n.reports.stored(id, m)
	return true, nil
}
