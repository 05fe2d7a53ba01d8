package datanode

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// WriteChunks stores small chunks whole, several in one call (see
// dfs.proto): each is checked as an UploadChunkStream prepared inline
// checks it (its write token, its size, the replicas it names, the space
// for it, the node's --max-sessions), its frames verified as that stream
// verifies them, and answered on its own. A primary forwards the chunks
// to their replicas, all those for one replica in one WriteChunks call,
// while it stores its own copies, each in its own goroutine so that the
// store's group commit makes them durable together; it answers once
// every copy of every chunk is durable, or failed. A stream holds a
// chunk's frames in the node's frame budget; a call holds its data there
// from the time it is checked until it is answered.
//
// What it saves against a stream per chunk: the stream's goroutines,
// acks, watchdogs and HTTP/2 stream on every node, and on a primary a
// stream per replica per chunk, which for a 4 KiB chunk cost more CPU
// than storing it.
//
// While the call works, an empty response goes to the caller every
// quarter of the progress timeout (see writeKeepalive), as an upload
// stream repeats its last ack.
func (n *Node) WriteChunks(req *dfspb.WriteChunksRequest, stream dfspb.DataNode_WriteChunksServer) error {
	if len(req.Chunks) == 0 || len(req.Chunks) > rpc.MaxWriteChunks {
		return rpc.ToStatus(rpc.Errorf(rpc.Invalid, "WriteChunks carries %d chunks; send 1 to %d", len(req.Chunks), rpc.MaxWriteChunks))
	}
	k := n.writeKeepalive(stream)
	resp, err := n.writeChunks(stream.Context(), req)
	if err != nil {
		k.stop()
		return rpc.ToStatus(err)
	}
	return rpc.ToStatus(k.last(resp))
}

// writeChunks does a WriteChunks call's work: see WriteChunks.
func (n *Node) writeChunks(ctx context.Context, req *dfspb.WriteChunksRequest) (*dfspb.WriteChunksResponse, error) {
	var total int64
	forwards := false
	for _, wc := range req.Chunks {
		for _, f := range wc.GetFrames() {
			total += int64(len(f.GetData()))
		}
		forwards = forwards || len(wc.GetPrepare().GetReplicas()) > 0
	}
	if total > rpc.MaxWriteChunksBytes {
		return nil, rpc.Errorf(rpc.Invalid, "WriteChunks carries %s of chunk data; at most %s in one call",
			rpc.FormatBytes(total), rpc.FormatBytes(rpc.MaxWriteChunksBytes))
	}
	resp := &dfspb.WriteChunksResponse{Chunks: make([]*dfspb.ChunkWritten, len(req.Chunks))}
	ceiling := n.frames.limit
	if forwards {
		ceiling /= 2 // as a primary's stream: see budget.acquire
	}
	if err := n.frames.acquire(ctx, total, ceiling, n.cfg.SessionTimeout); err != nil {
		err = rpc.NodeError(rpc.Other, []string{string(n.id)}, "%w; try another node or later", err)
		n.streamFailed(ctx, err, "upload failed")
		for i := range resp.Chunks {
			n.metrics.op(opUpload)(err)
			resp.Chunks[i] = written(err, nil)
		}
		return resp, nil
	}
	defer n.frames.release(total)

	items := make([]*writeItem, len(req.Chunks))
	named := make(map[rpc.ChunkID]bool, len(req.Chunks))
	for i, wc := range req.Chunks {
		it := &writeItem{done: n.metrics.op(opUpload), frames: wc.GetFrames()}
		it.u, it.v, it.err = n.checkWrite(wc)
		if it.err == nil && named[it.u.id] {
			it.err = rpc.Errorf(rpc.Invalid, "chunk %s named twice in one call", it.u.id)
		}
		if it.err == nil {
			named[it.u.id] = true
		}
		items[i] = it
	}
	peers := n.checkPeers(ctx, items)
	for _, it := range items {
		if it.err == nil {
			it.s, it.err = n.admitWrite(it.u, peers)
		}
	}
	defer func() {
		for _, it := range items {
			if it.s != nil {
				it.s.release()
				n.running.Add(-1)
				n.metrics.streams.WithLabelValues(opUpload).Dec()
			}
		}
	}()

	var wg sync.WaitGroup
	for _, g := range n.replicaGroups(items) {
		wg.Add(1)
		rpc.Go(func() { defer wg.Done(); n.forwardWrites(ctx, g) })
	}
	var own []*writeItem
	for _, it := range items {
		if it.err == nil {
			own = append(own, it)
		}
	}
	for i, it := range own {
		if i == len(own)-1 {
			n.storeWritten(it)
			break
		}
		wg.Add(1)
		rpc.Go(func() { defer wg.Done(); n.storeWritten(it) })
	}
	wg.Wait()

	log := n.logFor(ctx)
	for i, it := range items {
		err := it.err
		if err == nil {
			err = joinNodeErrors(it.replicaErrs)
		}
		it.done(err)
		if err != nil {
			n.streamFailed(ctx, err, "upload failed")
			resp.Chunks[i] = written(err, nil)
			continue
		}
		stored := []string{string(n.id)}
		for _, t := range it.s.replicas {
			stored = append(stored, it.stored[t.node]...)
		}
		log.Debug().Str("chunk_id", string(it.s.id)).Int64("size", it.s.size).Int("replicas", len(stored)-1).Msg("chunk stored")
		resp.Chunks[i] = written(nil, stored)
	}
	return resp, nil
}

// writeAlive sends a WriteChunks call's keepalives and then its answer.
type writeAlive struct {
	stream dfspb.DataNode_WriteChunksServer
	every  time.Duration

	mu    sync.Mutex
	timer clockwork.Timer
	done  bool
	err   error // a failed send: no more keepalives
}

// writeKeepalive starts sending empty responses on stream every quarter
// of the node's progress timeout, until stop or last.
func (n *Node) writeKeepalive(stream dfspb.DataNode_WriteChunksServer) *writeAlive {
	k := &writeAlive{stream: stream, every: max(n.cfg.ProgressTimeout/4, 10*time.Millisecond)}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.timer = n.clock.AfterFunc(k.every, k.repeat)
	return k
}

func (k *writeAlive) repeat() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done || k.err != nil {
		return
	}
	k.err = k.stream.Send(&dfspb.WriteChunksResponse{})
	k.timer.Reset(k.every)
}

// stop ends the keepalives; none is sent once it returns.
func (k *writeAlive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.done = true
	k.timer.Stop()
}

// last ends the keepalives and sends resp.
func (k *writeAlive) last(resp *dfspb.WriteChunksResponse) error {
	k.stop()
	return k.stream.Send(resp)
}

// writeItem is one chunk of a WriteChunks call on its way to the disk
// and the replicas.
type writeItem struct {
	u      uploadRequest         // checked
	v      *chunkstream.Verifier // its frames, verified
	s      *uploadSession        // admitted: counted and its space reserved
	frames []*dfspb.ChunkDataStream
	done   func(error) // its metrics

	err error // its own failure: checks, or this node's copy

	mu          sync.Mutex
	stored      map[rpc.NodeID][]string // by each replica: the nodes its answer named
	replicaErrs []error
}

// replicaDone records what replica t answered for it.
func (it *writeItem) replicaDone(t replicaTarget, stored []string, err error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if err != nil {
		it.replicaErrs = append(it.replicaErrs, err)
		return
	}
	if it.stored == nil {
		it.stored = map[rpc.NodeID][]string{}
	}
	it.stored[t.node] = stored
}

// written is a WriteChunks answer for one chunk: stored by nodes, or
// failed with err.
func written(err error, nodes []string) *dfspb.ChunkWritten {
	if err == nil {
		return &dfspb.ChunkWritten{Replicas: nodes}
	}
	code, msg := rpc.CodeOf(err)
	return &dfspb.ChunkWritten{Code: code, Message: msg, FailedNodes: rpc.FailedNodesOf(err)}
}

// checkWrite checks one chunk of a WriteChunks call, as a stream's inline
// prepare and its frames are checked, but for its replicas' registration
// (see checkPeers and admitWrite).
func (n *Node) checkWrite(wc *dfspb.WriteChunk) (uploadRequest, *chunkstream.Verifier, error) {
	if wc.GetPrepare() == nil {
		return uploadRequest{}, nil, rpc.Errorf(rpc.Invalid, "chunk without a prepare request")
	}
	u, err := n.checkUpload(wc.Prepare)
	if err != nil {
		return uploadRequest{}, nil, err
	}
	v := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: u.id, Size: u.size, FrameSize: u.frameSize})
	for _, f := range wc.GetFrames() {
		if f.SessionId != "" || f.Prepare != nil || f.Header != nil {
			return uploadRequest{}, nil, rpc.Errorf(rpc.Invalid, "chunk %s: a WriteChunks frame carries no session, prepare request or header", u.id)
		}
		if err := v.Check(f); err != nil {
			return uploadRequest{}, nil, err
		}
	}
	if !v.Done() {
		return uploadRequest{}, nil, rpc.Errorf(rpc.Invalid, "chunk %s: frames end at %d of %d bytes without a final frame", u.id, v.Received(), u.size)
	}
	return u, v, nil
}

// checkPeers checks every replica the call's checked chunks name, each
// (node, address) once and all at once (checkPeer may wait for the
// coordinator's next word on membership), and returns their failures.
func (n *Node) checkPeers(ctx context.Context, items []*writeItem) map[replicaTarget]error {
	var targets []replicaTarget
	named := map[replicaTarget]bool{}
	for _, it := range items {
		if it.err != nil {
			continue
		}
		for _, t := range it.u.replicas {
			if !named[t] {
				named[t] = true
				targets = append(targets, t)
			}
		}
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		if n.knownPeer(t.node, t.addr) {
			continue // as checkPeer would say at once
		}
		wg.Add(1)
		rpc.Go(func() { defer wg.Done(); errs[i] = n.checkPeer(ctx, t.node, t.addr) })
	}
	wg.Wait()
	out := make(map[replicaTarget]error, len(targets))
	for i, t := range targets {
		out[t] = errs[i]
	}
	return out
}

// admitWrite counts a checked chunk as an upload running (within
// --max-sessions, and in dfs_datanode_streams) and reserves its space,
// once its replicas passed checkPeers; the caller releases both.
func (n *Node) admitWrite(u uploadRequest, peers map[replicaTarget]error) (*uploadSession, error) {
	for _, t := range u.replicas {
		if err := peers[t]; err != nil {
			return nil, unknownReplica(u.id, t, err)
		}
	}
	n.running.Add(1) // count first, then check: racing uploads never exceed the cap
	if n.uploadStreams() > n.cfg.MaxSessions {
		n.running.Add(-1)
		return nil, n.tooManySessions("upload")
	}
	s, err := n.reserve(u)
	if err != nil {
		n.running.Add(-1)
		return nil, err
	}
	n.metrics.streams.WithLabelValues(opUpload).Inc()
	return s, nil
}

// storeWritten writes a checked chunk to the store and makes it durable,
// recording its failure in it.
func (n *Node) storeWritten(it *writeItem) {
	s := it.s
	w, err := n.store.Create(s.id, s.size, s.frameSize)
	if err != nil {
		it.err = err
		return
	}
	for _, f := range it.frames {
		if _, err := w.Write(f.Data); err != nil {
			w.Abort()
			it.err = rpc.NodeError(rpc.Internal, []string{string(n.id)}, "%w", err)
			return
		}
	}
	if err := w.Commit(it.v.FrameDigests(), it.v.Sum()); err != nil {
		it.err = rpc.NodeError(rpc.Internal, []string{string(n.id)}, "%w", err)
		return
	}
	n.metrics.received.Add(float64(s.size))
	n.reports.stored(s.id, chunkstore.Meta{Size: s.size, FrameSize: s.frameSize, Digest: it.v.Sum()})
}

// replicaGroup is the chunks of a WriteChunks call that go to one replica.
type replicaGroup struct {
	target replicaTarget
	items  []*writeItem
}

// replicaGroups groups the checked chunks of a call by the replicas they
// go to, in the order the replicas are first named.
func (n *Node) replicaGroups(items []*writeItem) []*replicaGroup {
	var groups []*replicaGroup
	byNode := map[rpc.NodeID]*replicaGroup{}
	for _, it := range items {
		if it.err != nil {
			continue
		}
		for _, t := range it.s.replicas {
			g := byNode[t.node]
			if g == nil || g.target.addr != t.addr {
				// A node named at two addresses in one call cannot pass
				// reserveUpload's registration check for both; keep them
				// apart all the same.
				g = &replicaGroup{target: t}
				byNode[t.node] = g
				groups = append(groups, g)
			}
			g.items = append(g.items, it)
		}
	}
	return groups
}

// forwardWrites stores g's chunks on its replica in one WriteChunks call,
// under the replica's progress deadline (--stream-progress-timeout, as a
// forwarding stream's), and records each chunk's outcome. A replica of an
// earlier release, without WriteChunks, is sent each chunk in a stream.
func (n *Node) forwardWrites(ctx context.Context, g *replicaGroup) {
	t := g.target
	fail := func(kind rpc.Kind, err error) {
		if ctx.Err() != nil {
			// The caller went away: no replica is to blame.
			err = rpc.Errorf(rpc.Canceled, "replica %s (%s): WriteChunks canceled by its caller", t.node.Short(), t.addr)
		} else {
			err = rpc.NodeError(kind, []string{string(t.node)}, "replica %s (%s): %w", t.node.Short(), t.addr, err)
		}
		for _, it := range g.items {
			it.replicaDone(t, nil, err)
		}
	}
	cc, err := n.pool.Get(t.addr) // checkPeers admitted it
	if err != nil {
		fail(rpc.Other, err)
		return
	}
	req := &dfspb.WriteChunksRequest{Chunks: make([]*dfspb.WriteChunk, len(g.items))}
	for i, it := range g.items {
		s := it.s
		req.Chunks[i] = &dfspb.WriteChunk{
			Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: string(s.id), Size: s.size, FrameSize: s.frameSize, Token: s.token},
			Frames:  it.frames,
		}
	}
	rctx, wd := chunkstream.NewWatchdog(ctx, n.clock, n.cfg.ProgressTimeout, "WriteChunks")
	defer wd.Stop()
	wd.HeardFrom(func() time.Time { return n.pool.Heard(t.addr) })
	var answers []*dfspb.ChunkWritten
	err = rpc.WaitReady(rctx, cc)
	if err == nil {
		answers, err = chunkstream.WriteChunks(rctx, cc, req)
	}
	if status.Code(err) == codes.Unimplemented {
		wd.Stop()
		n.streamWrites(ctx, g)
		return
	}
	if err != nil {
		if werr := wd.Err(); werr != nil {
			err = werr
		}
		fail(rpc.Unavailable, rpc.FromStatus(err))
		return
	}
	for i, it := range g.items {
		cw := answers[i]
		if err := rpc.FromCode(cw.Code, cw.Message); err != nil {
			it.replicaDone(t, nil, rpc.NodeError(rpc.Unavailable, []string{string(t.node)}, "replica %s (%s): %w", t.node.Short(), t.addr, err))
			continue
		}
		it.replicaDone(t, cw.Replicas, nil)
		n.metrics.forwarded.Add(float64(it.s.size))
	}
}

// streamWrites stores g's chunks on its replica one stream each, in
// parallel: a replica of an earlier release, without WriteChunks.
func (n *Node) streamWrites(ctx context.Context, g *replicaGroup) {
	t := g.target
	var wg sync.WaitGroup
	for _, it := range g.items {
		wg.Add(1)
		rpc.Go(func() {
			defer wg.Done()
			stored, err := n.streamWrite(ctx, t, it)
			switch {
			case err != nil && ctx.Err() != nil:
				err = rpc.Errorf(rpc.Canceled, "replica %s (%s): upload stream canceled by the WriteChunks caller", t.node.Short(), t.addr)
			case err != nil:
				err = rpc.NodeError(rpc.Unavailable, []string{string(t.node)}, "replica %s (%s): %w", t.node.Short(), t.addr, err)
			default:
				n.metrics.forwarded.Add(float64(it.s.size))
			}
			it.replicaDone(t, stored, err)
		})
	}
	wg.Wait()
}

// streamWrite sends one chunk to replica t in an upload stream.
func (n *Node) streamWrite(ctx context.Context, t replicaTarget, it *writeItem) ([]string, error) {
	cc, err := n.pool.Get(t.addr) // checkPeers admitted it
	if err != nil {
		return nil, err
	}
	rctx, wd := chunkstream.NewWatchdog(ctx, n.clock, n.cfg.ProgressTimeout, "upload stream")
	defer wd.Stop()
	wd.HeardFrom(func() time.Time { return n.pool.Heard(t.addr) })
	st, err := openReplica(rctx, wd, cc)
	if err != nil {
		if werr := wd.Err(); werr != nil {
			return nil, werr
		}
		return nil, err
	}
	s := it.s
	data := make([]byte, 0, s.size)
	for _, f := range it.frames {
		data = append(data, f.Data...)
	}
	prepare := &dfspb.PrepareChunkUploadRequest{ChunkId: string(s.id), Size: s.size, FrameSize: s.frameSize, Token: s.token}
	ack, _, err := chunkstream.SendChunk(rctx, st, "", prepare, s.id, data, int(s.frameSize), n.cfg.Window)
	if err != nil {
		if werr := wd.Err(); werr != nil && !errors.Is(err, werr) {
			return nil, werr
		}
		return nil, err
	}
	return ack.Replicas, nil
}
