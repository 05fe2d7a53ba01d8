package datanode

import (
	"context"
	"sync"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// maxBulk bounds the chunk IDs of one StatChunks or BulkDeleteChunk call.
const maxBulk = 10000

// PrepareChunkDownload opens a stored chunk and returns a session that
// streams it, with the size, frame size and digest recorded at write time,
// and its frame digests when the request asks for them (a reader of some
// frames checks them against the chunk digest, then its frames against
// them).
// A chunk found corrupt is NotFound; one whose metadata turns out damaged
// now is taken out of service and reported, as the scrubber would, and
// one whose file turns out gone is NotFound and reported removed.
func (n *Node) PrepareChunkDownload(ctx context.Context, req *dfspb.PrepareChunkDownloadRequest) (*dfspb.PrepareChunkDownloadResponse, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if _, err := n.authorize(req.Token, id, chunktoken.Read); err != nil {
		return nil, rpc.ToStatus(err)
	}
	if n.downloads.Len() >= n.cfg.MaxSessions {
		return nil, rpc.ToStatus(n.tooManySessions("download"))
	}
	c, err := n.store.Open(id)
	if err != nil {
		n.unusable(id, err)
		return nil, rpc.ToStatus(err)
	}
	sid := rpc.NewSessionID()
	if _, ok := n.downloads.PutLimited(sid, c, n.cfg.MaxSessions); !ok {
		c.Close()
		return nil, rpc.ToStatus(n.tooManySessions("download"))
	}
	resp := &dfspb.PrepareChunkDownloadResponse{SessionId: string(sid), Size: c.Size, FrameSize: c.FrameSize, ChunkChecksum: c.Digest}
	if req.FrameDigests {
		resp.FrameDigests = c.Frames // read-only: the response is marshaled before the session can end
	}
	return resp, nil
}

// tooManySessions is the error for a stream beyond --max-sessions,
// attributed to this node so that the client tries another.
func (n *Node) tooManySessions(kind string) error {
	what := "download streams prepared and not yet started"
	if kind == "upload" {
		what = "upload streams prepared or running"
	}
	return rpc.NodeError(rpc.ResourceExhausted, []string{string(n.id)},
		"datanode %s: %d %s, at most %d (--max-sessions); try another node or later",
		n.id.Short(), n.cfg.MaxSessions, what, n.cfg.MaxSessions)
}

// DownloadChunkStream streams a chunk in frames, each with the digest
// stored when it was written; the reader verifies them. The chunk is a
// prepared one (session_id), or one named directly (chunk_id): then the
// chunk is opened as PrepareChunkDownload opens it, with the same errors,
// and the first message carries its header (size, frame size, digest, and
// the frame digests when frame_digests asks for them). A request that
// names frames (first_frame, frame_count; a count of 0 runs to the end of
// the chunk) gets those alone, the last of them marked final; a range
// outside the chunk is Invalid.
func (n *Node) DownloadChunkStream(req *dfspb.DownloadChunkStreamRequest, stream dfspb.DataNode_DownloadChunkStreamServer) error {
	c, direct, err := n.downloadChunk(req)
	if err != nil {
		return rpc.ToStatus(err)
	}
	defer c.Close()
	ranged := req.FirstFrame != 0 || req.FrameCount != 0
	var fr chunkstream.FrameRange
	if ranged {
		if fr, err = frameRange(c.ID, req.FirstFrame, req.FrameCount, c.Size, c.FrameSize); err != nil {
			return rpc.ToStatus(err)
		}
	}
	done, running := n.metrics.op(opDownload), n.metrics.stream(opDownload)
	var out chunkstream.FrameSender = countingSender{stream, n.metrics.sent}
	if direct {
		hdr := &dfspb.PrepareChunkDownloadResponse{Size: c.Size, FrameSize: c.FrameSize, ChunkChecksum: c.Digest}
		if req.FrameDigests {
			hdr.FrameDigests = c.Frames // read-only: marshaled before Send returns
		}
		out = &headerSender{FrameSender: out, header: hdr}
	}
	if ranged {
		err = chunkstream.SendStoredFrames(stream.Context(), out, c.ID, c.File, c.Size, c.FrameSize, c.Frames, c.Digest, fr)
	} else {
		err = chunkstream.SendStored(stream.Context(), out, c.ID, c.File, c.Size, c.FrameSize, c.Frames, c.Digest)
	}
	running()
	done(err)
	if err != nil {
		n.streamFailed(stream.Context(), err, "download failed")
	}
	return rpc.ToStatus(err)
}

// readsAtOnce bounds the chunks of one ReadChunks call opened and read at
// once, and a chunk whose bytes take slowRead or longer to read (they
// came from the disk, not the page cache) makes the rest of the call's
// chunks go at once. Only the read of the bytes is timed: the opening of
// a chunk makes more system calls, and on a busy node a goroutine back
// from a longer one waits its turn for a thread, which is no sign of a
// disk (timing the opening too made the parallel reads start in a
// CPU-bound bench, at 0.8-0.9x the gets/s).
const (
	readsAtOnce = 8
	slowRead    = 500 * time.Microsecond
)

// ReadChunks reads small chunks whole, several in one call (see
// dfs.proto). Each chunk is checked and opened as DownloadChunkStream
// by chunk_id checks and opens it, with the same errors, and answered
// with the frames that stream would send; their data together is at most
// rpc.MaxReadChunksBytes, a chunk beyond that is ResourceExhausted. The
// chunks are read in order until one turns out slow (see slowRead): the
// rest then go up to readsAtOnce at a time (and take what room is left
// in the order they are opened), so that a call of chunks not in the
// page cache waits for the disk about once, not once per chunk, and one
// of chunks in the page cache starts no goroutine. Once the
// caller has gone, the chunks not yet read are answered Canceled.
func (n *Node) ReadChunks(ctx context.Context, req *dfspb.ReadChunksRequest) (*dfspb.ReadChunksResponse, error) {
	if len(req.Chunks) == 0 || len(req.Chunks) > rpc.MaxReadChunks {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "ReadChunks names %d chunks; name 1 to %d", len(req.Chunks), rpc.MaxReadChunks))
	}
	resp := &dfspb.ReadChunksResponse{Chunks: make([]*dfspb.ChunkRead, len(req.Chunks))}
	room := &replyRoom{left: rpc.MaxReadChunksBytes}
	read := func(i int, rc *dfspb.ReadChunk) (took time.Duration) {
		r, took, err := n.readChunk(ctx, rc, room)
		if err != nil {
			code, msg := rpc.CodeOf(err)
			r = &dfspb.ChunkRead{Code: code, Message: msg}
		}
		resp.Chunks[i] = r
		return took
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, readsAtOnce)
	slow := false
	for i, rc := range req.Chunks {
		if !slow {
			slow = read(i, rc) >= time.Duration(n.slowRead.Load())
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		rpc.Go(func() {
			defer wg.Done()
			read(i, rc)
			<-slots
		})
	}
	wg.Wait()
	return resp, nil
}

// replyRoom is what is left of a ReadChunks reply's room for chunk data.
type replyRoom struct {
	mu   sync.Mutex
	left int64
}

// take takes size bytes of the room, if they are left.
func (r *replyRoom) take(size int64) (left int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if size > r.left {
		return r.left, false
	}
	r.left -= size
	return r.left, true
}

// give gives size bytes taken back.
func (r *replyRoom) give(size int64) {
	r.mu.Lock()
	r.left += size
	r.mu.Unlock()
}

// readChunk reads one chunk of a ReadChunks call whole, if room is left
// for it and the caller has not gone, and says how long reading its
// bytes took.
func (n *Node) readChunk(ctx context.Context, rc *dfspb.ReadChunk, room *replyRoom) (*dfspb.ChunkRead, time.Duration, error) {
	if ctx.Err() != nil {
		return nil, 0, rpc.Errorf(rpc.Canceled, "ReadChunks canceled")
	}
	id, err := rpc.ParseChunkID(rc.ChunkId)
	if err != nil {
		return nil, 0, err
	}
	if _, err := n.authorize(rc.Token, id, chunktoken.Read); err != nil {
		return nil, 0, err
	}
	c, err := n.store.Open(id)
	if err != nil {
		n.unusable(id, err)
		return nil, 0, err
	}
	defer c.Close()
	if left, ok := room.take(c.Size); !ok {
		return nil, 0, rpc.Errorf(rpc.ResourceExhausted, "chunk %s: %d bytes do not fit in what is left of the reply (%d of %d bytes); read it with DownloadChunkStream",
			id, c.Size, left, rpc.MaxReadChunksBytes)
	}
	done := n.metrics.op(opDownload)
	start := time.Now()
	r, err := readWhole(c)
	took := time.Since(start)
	done(err)
	if err != nil {
		room.give(c.Size)
		n.streamFailed(ctx, err, "read failed")
		return nil, took, err
	}
	n.metrics.sent.Add(float64(c.Size))
	return r, took, nil
}

// readWhole reads an opened chunk whole, in the frames a download stream
// of it sends: the first with its header, each with its stored digest,
// the last final with the chunk digest.
func readWhole(c *chunkstore.Chunk) (*dfspb.ChunkRead, error) {
	if n := chunkstream.FrameCount(c.Size, c.FrameSize); c.Size <= 0 || len(c.Frames) != n {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: %d stored frame digests for %d bytes in %d frames", c.ID, len(c.Frames), c.Size, n)
	}
	data := make([]byte, c.Size)
	if _, err := c.File.ReadAt(data, 0); err != nil {
		return nil, rpc.Errorf(rpc.Internal, "chunk %s: read: %w", c.ID, err)
	}
	read := &dfspb.ChunkRead{Frames: make([]*dfspb.ChunkDataStream, len(c.Frames))}
	for i, digest := range c.Frames {
		off := int64(i) * c.FrameSize
		read.Frames[i] = &dfspb.ChunkDataStream{ChunkId: string(c.ID), Data: data[off:min(off+c.FrameSize, c.Size)], Offset: off, PartialChecksum: digest}
	}
	read.Frames[0].Header = &dfspb.PrepareChunkDownloadResponse{Size: c.Size, FrameSize: c.FrameSize, ChunkChecksum: c.Digest}
	last := read.Frames[len(read.Frames)-1]
	last.IsFinal, last.ChunkChecksum = true, c.Digest
	return read, nil
}

// downloadChunk opens the chunk a download names: the prepared session's
// (taken from the table; its prepare checked the chunk token), or the
// chunk named by chunk_id, opened now (direct) once its read token is
// checked. The caller closes it. A request with both or neither, or with
// frame_digests but no chunk_id, is Invalid.
func (n *Node) downloadChunk(req *dfspb.DownloadChunkStreamRequest) (c *chunkstore.Chunk, direct bool, err error) {
	switch {
	case req.SessionId != "" && req.ChunkId != "":
		return nil, false, rpc.Errorf(rpc.Invalid, "download names both session %q and chunk %q; name one", req.SessionId, req.ChunkId)
	case req.ChunkId == "" && req.FrameDigests:
		return nil, false, rpc.Errorf(rpc.Invalid, "download asks for frame digests without a chunk_id (a prepared download gets them from PrepareChunkDownload)")
	case req.ChunkId != "":
		id, err := rpc.ParseChunkID(req.ChunkId)
		if err != nil {
			return nil, false, err
		}
		if _, err := n.authorize(req.Token, id, chunktoken.Read); err != nil {
			return nil, false, err
		}
		c, err := n.store.Open(id)
		if err != nil {
			n.unusable(id, err)
			return nil, false, err
		}
		return c, true, nil
	}
	sid, err := rpc.ParseSessionID(req.SessionId)
	if err != nil {
		return nil, false, err
	}
	c, ok := n.downloads.Take(sid)
	if !ok {
		return nil, false, rpc.Errorf(rpc.NotFound, "unknown or expired download session %s", sid)
	}
	return c, false, nil
}

// headerSender sets a chunk's header on the first frame it sends.
type headerSender struct {
	chunkstream.FrameSender
	header *dfspb.PrepareChunkDownloadResponse
}

func (s *headerSender) Send(f *dfspb.ChunkDataStream) error {
	if s.header != nil {
		f.Header, s.header = s.header, nil
	}
	return s.FrameSender.Send(f)
}

var _ chunkstream.SharedSender = (*headerSender)(nil)

func (s *headerSender) SendShared(f rpc.SharedFrame) error {
	shared, ok := s.FrameSender.(chunkstream.SharedSender)
	if !ok {
		return s.Send(f.Frame)
	}
	if s.header != nil {
		f.Frame.Header, s.header = s.header, nil
	}
	return shared.SendShared(f)
}

// frameRange checks the frames a download names, first and count (0: to
// the end) of a chunk of size bytes in frames of frameSize, and returns
// them as a range; frames outside the chunk are Invalid.
func frameRange(id rpc.ChunkID, first, count uint32, size, frameSize int64) (chunkstream.FrameRange, error) {
	n := uint64(chunkstream.FrameCount(size, frameSize))
	switch {
	case uint64(first) >= n:
		return chunkstream.FrameRange{}, rpc.Errorf(rpc.Invalid, "download of chunk %s: first frame %d out of range: the chunk has %d frames (0 to %d)", id, first, n, n-1)
	case count == 0:
		count = uint32(n - uint64(first))
	case uint64(first)+uint64(count) > n:
		return chunkstream.FrameRange{}, rpc.Errorf(rpc.Invalid, "download of chunk %s: frames %d to %d out of range: the chunk has %d frames (0 to %d)",
			id, first, uint64(first)+uint64(count)-1, n, n-1)
	}
	return chunkstream.FrameRange{First: int(first), Last: int(first + count - 1)}, nil
}

// parseIDs parses chunk IDs, at most maxBulk of them.
func parseIDs(ids []string) ([]rpc.ChunkID, error) {
	if len(ids) > maxBulk {
		return nil, rpc.Errorf(rpc.Invalid, "%d chunk ids in one call, at most %d", len(ids), maxBulk)
	}
	out := make([]rpc.ChunkID, len(ids))
	for i, s := range ids {
		id, err := rpc.ParseChunkID(s)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// StatChunks reports, for each ID, whether the chunk is stored and its
// recorded size and digest. The coordinator checks these before a commit.
func (n *Node) StatChunks(ctx context.Context, req *dfspb.StatChunksRequest) (*dfspb.StatChunksResponse, error) {
	ids, err := parseIDs(req.ChunkIds)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	resp := &dfspb.StatChunksResponse{Chunks: make([]*dfspb.ChunkStat, len(ids))}
	for i, id := range ids {
		st := &dfspb.ChunkStat{ChunkId: string(id)}
		if m, err := n.store.Stat(id); err == nil {
			st.Present, st.Size, st.Digest, st.FrameSize = true, m.Size, m.Digest, m.FrameSize
		}
		resp.Chunks[i] = st
	}
	return resp, nil
}

// DeleteChunk removes one chunk; a missing chunk is NotFound. With TLS
// it needs the chunk's delete token.
func (n *Node) DeleteChunk(ctx context.Context, req *dfspb.DeleteChunkRequest) (*dfspb.DeleteChunkResponse, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if _, err := n.authorize(req.Token, id, chunktoken.Delete); err != nil {
		return nil, rpc.ToStatus(err)
	}
	done := n.metrics.op(opDelete)
	freed, err := n.store.Delete(id)
	done(err)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if freed == 0 {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.NotFound, "chunk %s not found", id))
	}
	if err := n.store.SyncDeletes([]rpc.ChunkID{id}); err != nil {
		return nil, rpc.ToStatus(err)
	}
	n.reports.deleted(id)
	return &dfspb.DeleteChunkResponse{}, nil
}

// BulkDeleteChunk removes many chunks; missing ones count as deleted, and
// the IDs that could not be removed come back in failed. With TLS every
// chunk needs its delete token (tokens, in the order of chunk_ids): one
// missing or refused fails the call, and nothing is deleted.
func (n *Node) BulkDeleteChunk(ctx context.Context, req *dfspb.BulkDeleteChunkRequest) (*dfspb.BulkDeleteChunkResponse, error) {
	if req.NodeId != "" {
		if _, err := rpc.ParseNodeID(req.NodeId); err != nil {
			return nil, rpc.ToStatus(err)
		}
	}
	if req.NodeId != "" && req.NodeId != string(n.id) {
		// Meant for the node that had this address before: its chunk
		// IDs here may be good copies of this node's own.
		return nil, rpc.ToStatus(rpc.Errorf(rpc.FailedPrecondition, "deletions for node %s sent to node %s", req.NodeId, n.id))
	}
	ids, err := parseIDs(req.ChunkIds)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if n.keys != nil && len(req.Tokens) != len(ids) {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "%d chunk ids with %d delete tokens: want one token per chunk", len(ids), len(req.Tokens)))
	}
	for i, id := range ids {
		if n.keys == nil {
			break
		}
		if _, err := n.authorize(req.Tokens[i], id, chunktoken.Delete); err != nil {
			return nil, rpc.ToStatus(err)
		}
	}
	d := n.deleteChunks(ids)
	return &dfspb.BulkDeleteChunkResponse{Deleted: d.deleted, BytesFreed: d.freed, Failed: d.failed}, nil
}

// deletion is what deleteChunks did.
type deletion struct {
	deleted uint32   // chunks removed (absent ones not counted)
	freed   int64    // bytes freed
	failed  []string // the IDs that could not be removed, or not durably
}

// deleteParallel bounds the chunks one bulk delete removes at once.
const deleteParallel = 64

// deleteChunks removes ids and fsyncs their directories before it answers
// or reports: a deletion the coordinator is told of survives a crash.
// When the fsync fails, every chunk counts as failed (the coordinator
// retries; deleting an absent chunk is done at once).
func (n *Node) deleteChunks(ids []rpc.ChunkID) deletion {
	var d deletion
	var gone []rpc.ChunkID
	// Deleted concurrently (at most deleteParallel at once): the delete
	// records of packed chunks then share one fdatasync (group commit).
	freedOf, errOf := make([]int64, len(ids)), make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, deleteParallel)
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			done := n.metrics.op(opDelete)
			freedOf[i], errOf[i] = n.store.Delete(id)
			done(errOf[i])
		})
	}
	wg.Wait()
	for i, id := range ids {
		freed, err := freedOf[i], errOf[i]
		d.freed += freed
		if err != nil {
			n.log.Warn().Err(err).Str("chunk_id", string(id)).Msg("delete failed")
			d.failed = append(d.failed, string(id))
			continue
		}
		if freed > 0 {
			d.deleted++
		}
		gone = append(gone, id) // absent ones too: make sure the coordinator agrees
	}
	if err := n.store.SyncDeletes(gone); err != nil {
		n.log.Warn().Err(err).Int("chunks", len(gone)).Msg("deletions not durable; reported failed")
		for _, id := range gone {
			d.failed = append(d.failed, string(id))
		}
		d.deleted = 0
		return d
	}
	n.reports.deleted(gone...)
	return d
}

// HealthCheck reports the node's identity and disk usage.
func (n *Node) HealthCheck(ctx context.Context, req *dfspb.HealthCheckRequest) (*dfspb.HealthCheckResponse, error) {
	u := n.store.Usage()
	return &dfspb.HealthCheckResponse{NodeId: string(n.id), Capacity: u.Capacity, Used: u.Used, Free: u.Free, ChunkCount: u.Chunks}, nil
}
