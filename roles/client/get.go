package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Get writes the committed file at path to w, in order. Chunks are fetched
// several at a time; each is verified frame by frame and as a whole against
// the digests recorded at commit, and a replica that fails or returns bad
// bytes is skipped for the next one. The file's SHA-256 is checked at the
// end; bytes that fail a check are never written.
func (c *Client) Get(ctx context.Context, path string, w io.Writer, progress Progress) (*dfspb.FileInfo, error) {
	fi, err := c.get(rpc.EnsureRequestID(ctx), path, w, progress)
	return fi, wrap("get", path, err)
}

type fetched struct {
	data []byte
	err  error
}

func (c *Client) get(ctx context.Context, path string, w io.Writer, progress Progress) (*dfspb.FileInfo, error) {
	if _, err := rpc.ParsePath(path); err != nil {
		return nil, err
	}
	var fi *dfspb.FileInfo
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: path})
		if err == nil {
			fi = resp.File
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkFileInfo(fi); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Chunks are fetched ahead of the writer into a bounded set of buffers;
	// the writer takes them in order and hands each buffer back.
	par := c.cfg.Parallel
	bufs := make(chan []byte, par)
	for range par {
		bufs <- nil
	}
	results := make([]chan fetched, len(fi.Chunks))
	for i := range results {
		results[i] = make(chan fetched, 1)
	}
	go func() {
		for i, ch := range fi.Chunks {
			var buf []byte
			select {
			case buf = <-bufs:
			case <-ctx.Done():
				return
			}
			if int64(cap(buf)) < ch.Size {
				buf = make([]byte, ch.Size)
			}
			go func() {
				data := buf[:ch.Size]
				results[i] <- fetched{data, c.fetchChunk(ctx, ch, data)}
			}()
		}
	}()

	h := sha256.New()
	for i := range fi.Chunks {
		var r fetched
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return nil, rpc.Errorf(rpc.Canceled, "interrupted")
		}
		if r.err != nil {
			return nil, r.err
		}
		h.Write(r.data)
		if _, err := w.Write(r.data); err != nil {
			return nil, rpc.Errorf(rpc.Internal, "write output: %v", err)
		}
		if progress != nil {
			progress(int64(len(r.data)))
		}
		bufs <- r.data[:0]
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, fi.Sha256) {
		return nil, rpc.Errorf(rpc.Internal, "file checksum mismatch: committed %x, read %x", fi.Sha256, sum)
	}
	return fi, nil
}

// checkFileInfo refuses a chunk map that does not add up, so a broken
// reply cannot make the client allocate or write nonsense.
func checkFileInfo(fi *dfspb.FileInfo) error {
	if fi == nil || fi.Size < 0 || len(fi.Sha256) != sha256.Size || fi.ChunkSize <= 0 || fi.ChunkSize > rpc.MaxChunkSize {
		return rpc.Errorf(rpc.Internal, "coordinator returned malformed file metadata")
	}
	var off int64
	for i, ch := range fi.Chunks {
		if ch.Index != uint32(i) || ch.Offset != off || ch.Size <= 0 || ch.Size > fi.ChunkSize || len(ch.Digest) != sha256.Size || rpc.CheckFrameSize(ch.FrameSize) != nil {
			return rpc.Errorf(rpc.Internal, "coordinator returned malformed metadata for chunk %d", i)
		}
		off += ch.Size
	}
	if off != fi.Size {
		return rpc.Errorf(rpc.Internal, "coordinator returned chunks of %d bytes for a file of %d", off, fi.Size)
	}
	return nil
}

// fetchChunk reads one chunk into dst from the first replica that returns
// it intact, trying replicas healthy-first and making a few rounds with
// backoff before giving up.
func (c *Client) fetchChunk(ctx context.Context, ch *dfspb.ChunkInfo, dst []byte) error {
	replicas := make([]placement.Replica, 0, len(ch.Replicas))
	for _, r := range ch.Replicas {
		replicas = append(replicas, placement.Replica{ID: rpc.NodeID(r.NodeId), Addr: r.Addr, State: stateFromProto(r.State)})
	}
	if len(replicas) == 0 {
		return rpc.Errorf(rpc.Unavailable, "chunk %d (%s) has no replica", ch.Index, ch.ChunkId)
	}
	exp := chunkstream.Expect{ChunkID: rpc.ChunkID(ch.ChunkId), Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest}
	backoff := chunkstream.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second}
	var last, lastBad string // the last failure, and the last bad bytes
	reported := map[rpc.NodeID]bool{}
	for round := 0; round < c.cfg.Attempts; round++ {
		if round > 0 {
			t := time.NewTimer(backoff.Delay(round))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		for _, r := range c.orderForRead(replicas) {
			bad, err := c.readReplica(ctx, r.Addr, exp, dst)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn().Err(err).Str("chunk_id", ch.ChunkId).Str("node_id", string(r.ID)).Msg("replica failed; trying the next")
			if !bad && rpc.KindOf(err) != rpc.Internal {
				// Internal here is what the node said of its own copy
				// (damaged metadata): no sign the node is failing.
				c.nodesFailed(ctx, []string{string(r.ID)}, err)
			}
			last = fmt.Sprintf("%s: %v", r.ID.Short(), err)
			if bad {
				lastBad = last
				if !reported[r.ID] {
					reported[r.ID] = true
					c.reportBadReplica(ctx, exp.ChunkID, r.ID, err)
				}
			}
		}
	}
	// Bad bytes say more than what a replica answered after it was told
	// about them (it stops serving a copy found corrupt).
	if lastBad != "" {
		last = lastBad
	}
	return rpc.Errorf(rpc.Unavailable, "chunk %d (%s): no replica returned it intact: %s", ch.Index, ch.ChunkId, last)
}

// readReplica reads one chunk from the datanode at addr into dst. bad
// reports that the replica answered with bytes (or a size or digest) that
// do not match what was committed, as opposed to failing to answer.
func (c *Client) readReplica(ctx context.Context, addr string, exp chunkstream.Expect, dst []byte) (bad bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ChunkTimeout)
	defer cancel()
	dn, err := c.datanode(addr)
	if err != nil {
		return false, err
	}
	// From the prepare to the last frame, a replica that stops answering
	// fails after the progress timeout and the next one is tried.
	ctx, wd := chunkstream.NewWatchdog(ctx, c.cfg.ProgressTimeout, "datanode "+addr)
	defer wd.Stop()
	prep, err := dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: string(exp.ChunkID)})
	if err != nil {
		if werr := wd.Err(); werr != nil {
			return false, werr
		}
		return false, rpc.FromStatus(err)
	}
	wd.Kick()
	if prep.Size != exp.Size || prep.FrameSize != exp.FrameSize || !bytes.Equal(prep.ChunkChecksum, exp.Digest) {
		return true, rpc.Errorf(rpc.Internal, "replica holds a different chunk (size %d, frame size %d) than was committed", prep.Size, prep.FrameSize)
	}
	stream, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{SessionId: prep.SessionId})
	if err != nil {
		if werr := wd.Err(); werr != nil {
			return false, werr
		}
		return false, rpc.FromStatus(err)
	}
	err = chunkstream.ReceiveInto(wd.Receiver(stream), exp, dst)
	// Invalid is what the verifier says of bytes that fail their digests.
	return rpc.KindOf(err) == rpc.Invalid, err
}

const (
	// badReplicaTimeout bounds a report of a bad replica.
	badReplicaTimeout = 5 * time.Second
	// maxReason bounds the reason sent with it.
	maxReason = 512
)

// reportBadReplica tells the coordinator, in the background, that node
// returned bytes of chunk id that fail verification, so that it has the
// copy checked and replaced. It is best effort: bounded by
// badReplicaTimeout, it never fails or delays the read, and a coordinator
// that cannot take the report only costs a debug line.
func (c *Client) reportBadReplica(ctx context.Context, id rpc.ChunkID, node rpc.NodeID, cause error) {
	reason := cause.Error()
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	reason = strings.ToValidUTF8(reason, "") // a proto string must be UTF-8
	req := &dfspb.ReportBadReplicaRequest{ChunkId: string(id), NodeId: string(node), Reason: reason}
	// The read may end before the report does: keep its values (the
	// request ID), not its cancellation.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), badReplicaTimeout)
	c.background.Add(1)
	go func() {
		defer c.background.Done()
		defer cancel()
		err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
			_, err := cc.ReportBadReplica(ctx, req)
			return err
		})
		log := c.log.Debug().Str("chunk_id", string(id)).Str("node_id", string(node))
		if err != nil {
			log.Err(err).Msg("could not report a bad replica")
			return
		}
		log.Msg("reported a bad replica")
	}()
}

func stateFromProto(s dfspb.NodeState) placement.State {
	switch s {
	case dfspb.NodeState_NODE_STATE_HEALTHY:
		return placement.Healthy
	case dfspb.NodeState_NODE_STATE_SUSPECT:
		return placement.Suspect
	}
	return placement.Dead
}
