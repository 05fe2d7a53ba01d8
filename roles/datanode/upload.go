package datanode

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// uploadSession is a prepared chunk upload: the space reserved for it and,
// on a primary, the replicas' own sessions.
type uploadSession struct {
	id        rpc.ChunkID
	size      int64
	frameSize int64
	replicas  []replicaTarget
	token     *dfspb.ChunkToken // the write token, forwarded to the replicas

	once    sync.Once
	release func()
}

type replicaTarget struct {
	node    rpc.NodeID
	addr    string
	session rpc.SessionID
}

// PrepareChunkUpload reserves space for a chunk and, on a primary, prepares
// every replica in parallel. A replica that cannot take the chunk fails the
// call with its node ID attached, so the client can place it elsewhere.
// (Clients usually prepare inline, on the stream's first frame.)
func (n *Node) PrepareChunkUpload(ctx context.Context, req *dfspb.PrepareChunkUploadRequest) (*dfspb.PrepareChunkUploadResponse, error) {
	if n.uploadStreams() >= n.cfg.MaxSessions {
		return nil, rpc.ToStatus(n.tooManySessions("upload"))
	}
	s, err := n.newSession(ctx, req)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	if err := n.prepareReplicas(ctx, s); err != nil {
		s.release()
		return nil, rpc.ToStatus(err)
	}
	sid := rpc.NewSessionID()
	exp, ok := n.uploads.PutLimited(sid, s, n.cfg.MaxSessions-int(n.running.Load()))
	if !ok {
		// The replicas' sessions expire unused.
		s.release()
		return nil, rpc.ToStatus(n.tooManySessions("upload"))
	}
	return &dfspb.PrepareChunkUploadResponse{SessionId: string(sid), ExpiresUnixMs: exp.UnixMilli()}, nil
}

// newSession validates an upload request, checks that its replicas are
// registered datanodes, and reserves its space.
func (n *Node) newSession(ctx context.Context, req *dfspb.PrepareChunkUploadRequest) (*uploadSession, error) {
	u, err := n.checkUpload(req)
	if err != nil {
		return nil, err
	}
	return n.reserveUpload(ctx, u)
}

// uploadRequest is a checked request to take a chunk: its ID, size and
// frame size, on a primary the replicas to forward it to, and its write
// token.
type uploadRequest struct {
	id        rpc.ChunkID
	size      int64
	frameSize int64
	replicas  []replicaTarget
	token     *dfspb.ChunkToken
}

// checkUpload validates a PrepareChunkUpload request. With TLS its write
// token must be valid here and name every replica: a primary forwards
// only to the nodes the coordinator placed the chunk on (and reserveUpload
// checks that each is registered at the address named), never to one
// only the caller names.
func (n *Node) checkUpload(req *dfspb.PrepareChunkUploadRequest) (uploadRequest, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return uploadRequest{}, err
	}
	tok, err := n.authorize(req.Token, id, chunktoken.Write)
	if err != nil {
		return uploadRequest{}, err
	}
	if req.Size <= 0 || req.Size > rpc.MaxChunkSize {
		return uploadRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: size %d out of range (1 B to %s)", id, req.Size, rpc.FormatBytes(rpc.MaxChunkSize))
	}
	if err := rpc.CheckFrameSize(req.FrameSize); err != nil {
		return uploadRequest{}, err
	}
	if len(req.Replicas) >= rpc.MaxReplication {
		return uploadRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: %d replicas, at most %d", id, len(req.Replicas), rpc.MaxReplication-1)
	}
	targets := make([]replicaTarget, 0, len(req.Replicas))
	seen := map[rpc.NodeID]bool{n.id: true}
	for _, r := range req.Replicas {
		nid, err := rpc.ParseNodeID(r.NodeId)
		if err != nil {
			return uploadRequest{}, err
		}
		if seen[nid] {
			return uploadRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: node %s named twice (or is the primary)", id, nid)
		}
		if r.Addr == "" {
			return uploadRequest{}, rpc.Errorf(rpc.Invalid, "chunk %s: replica %s has no address", id, nid)
		}
		if n.keys != nil && !tok.Names(nid) {
			return uploadRequest{}, rpc.Errorf(rpc.Permission, "chunk %s: the chunk token does not name replica %s (%s); refusing to forward to it", id, nid.Short(), r.Addr)
		}
		seen[nid] = true
		targets = append(targets, replicaTarget{node: nid, addr: r.Addr})
	}
	return uploadRequest{id: id, size: req.Size, frameSize: req.FrameSize, replicas: targets, token: req.Token}, nil
}

// reserveUpload checks that an upload's replicas are registered
// datanodes and that this node can take the chunk, and reserves its
// space.
func (n *Node) reserveUpload(ctx context.Context, u uploadRequest) (*uploadSession, error) {
	for _, t := range u.replicas {
		if err := n.checkPeer(ctx, t.node, t.addr); err != nil {
			return nil, unknownReplica(u.id, t, err)
		}
	}
	return n.reserve(u)
}

// unknownReplica is the failure of chunk id's upload when its replica t
// failed checkPeer (err).
func unknownReplica(id rpc.ChunkID, t replicaTarget, err error) error {
	return rpc.NodeError(rpc.Other, []string{string(t.node)}, "chunk %s: replica %w", id, err)
}

// reserve checks that this node can take upload u's chunk, and reserves
// its space.
func (n *Node) reserve(u uploadRequest) (*uploadSession, error) {
	id := u.id
	if n.store.Has(id) {
		return nil, rpc.Errorf(rpc.Exists, "chunk %s already stored", id)
	}
	if err := n.writable(); err != nil {
		return nil, err
	}
	need := chunkstore.FileSize(u.size, u.frameSize)
	if err := n.store.Reserve(need); err != nil {
		return nil, rpc.NodeError(rpc.Other, []string{string(n.id)}, "%w", err)
	}
	s := &uploadSession{id: id, size: u.size, frameSize: u.frameSize, replicas: u.replicas, token: u.token}
	s.release = func() { s.once.Do(func() { n.store.Release(need) }) }
	return s, nil
}

// prepareReplicas prepares an upload session on each of s's replicas, in
// parallel, and records their session IDs in s.
func (n *Node) prepareReplicas(ctx context.Context, s *uploadSession) error {
	targets := s.replicas
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i := range targets {
		wg.Go(func() {
			t := &targets[i]
			cctx, cancel := context.WithTimeout(ctx, n.cfg.RPCTimeout)
			defer cancel()
			cc, err := n.peerConn(ctx, t.node, t.addr)
			if err == nil {
				var resp *dfspb.PrepareChunkUploadResponse
				if err = rpc.WaitReady(cctx, cc); err == nil {
					resp, err = dfspb.NewDataNodeClient(cc).PrepareChunkUpload(cctx, &dfspb.PrepareChunkUploadRequest{
						ChunkId: string(s.id), Size: s.size, FrameSize: s.frameSize, Token: s.token,
					})
				}
				if err == nil {
					t.session = rpc.SessionID(resp.SessionId)
				}
			}
			if err != nil {
				err = rpc.FromStatus(err)
				kind := rpc.Unavailable
				if rpc.KindOf(err) == rpc.FailedPrecondition {
					kind = rpc.FailedPrecondition // not a datanode of this cluster
				}
				errs[i] = rpc.NodeError(kind, []string{string(t.node)}, "replica %s (%s): prepare: %w", t.node.Short(), t.addr, err)
			}
		})
	}
	wg.Wait()
	return joinNodeErrors(errs)
}

// joinNodeErrors merges per-replica failures into one error that carries
// every failed node.
func joinNodeErrors(errs []error) error {
	var merr *multierror.Error
	var nodes []string
	for _, err := range errs {
		if err != nil {
			merr = multierror.Append(merr, err)
			nodes = append(nodes, rpc.FailedNodesOf(err)...)
		}
	}
	if merr == nil {
		return nil
	}
	if len(merr.Errors) == 1 {
		return merr.Errors[0]
	}
	merr.ErrorFormat = func(es []error) string {
		s := ""
		for i, e := range es {
			if i > 0 {
				s += "; "
			}
			s += e.Error()
		}
		return s
	}
	return rpc.NodeError(rpc.Unavailable, nodes, "%w", merr.ErrorOrNil())
}

// idleStream bounds the wait for each frame: a sender that goes quiet for
// the session timeout loses its stream and its partial chunk.
type idleStream struct {
	dfspb.DataNode_UploadChunkStreamServer
	clock   clockwork.Clock
	timeout time.Duration
	frames  chan recvResult
}

type recvResult struct {
	f   *rpc.PiecedFrame
	err error
}

// newIdleStream receives s's frames in pieces (rpc.PiecedFrame): their
// data stays in the buffers gRPC read it into, not copied until the disk
// takes it.
func newIdleStream(s dfspb.DataNode_UploadChunkStreamServer, clk clockwork.Clock, timeout time.Duration) *idleStream {
	st := &idleStream{DataNode_UploadChunkStreamServer: s, clock: clk, timeout: timeout, frames: make(chan recvResult, 1)}
	rpc.Go(func() {
		for {
			f := new(rpc.PiecedFrame)
			err := s.RecvMsg(f)
			if err != nil {
				f = nil
			}
			select {
			case st.frames <- recvResult{f, err}:
			case <-s.Context().Done():
				if f != nil {
					f.Pieces.Free()
				}
				return
			}
			if err != nil {
				return
			}
		}
	})
	return st
}

var _ chunkstream.PieceRecvStream = (*idleStream)(nil)

// Recv is RecvPieces with the frame's data joined.
func (s *idleStream) Recv() (*dfspb.ChunkDataStream, error) { return joined(s.RecvPieces()) }

// joined returns f with its data joined into its message.
func joined(f *rpc.PiecedFrame, err error) (*dfspb.ChunkDataStream, error) {
	if err != nil {
		return nil, err
	}
	m := f.Msg
	m.Data = f.Join()
	return m, nil
}

func (s *idleStream) RecvPieces() (*rpc.PiecedFrame, error) {
	t := s.clock.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case r := <-s.frames:
		return r.f, r.err
	case <-t.Chan():
		return nil, rpc.Errorf(rpc.DeadlineExceeded, "no frame for %s: stream expired", s.timeout)
	case <-s.Context().Done():
		return nil, rpc.Errorf(rpc.Canceled, "stream canceled by the sender")
	}
}

// UploadChunkStream receives a chunk's frames, verifies each, writes it to
// a temporary file and forwards it to the replicas as it arrives. After the
// final frame the chunk is made durable here while the replicas do the same;
// the final ack names every node that stored it. Write quorum is all: a
// failed replica fails the upload, naming the node.
func (n *Node) UploadChunkStream(stream dfspb.DataNode_UploadChunkStreamServer) error {
	done, running := n.metrics.op(opUpload), n.metrics.stream(opUpload)
	err := n.uploadChunk(stream)
	running()
	done(err)
	if err != nil {
		n.streamFailed(stream.Context(), err, "upload failed")
	}
	return rpc.ToStatus(err)
}

// streamFailed logs a failed chunk stream: at warn with its cause (naming
// the nodes it blames), unless the other side canceled it. A failure of
// this node's own disk has the writability probe run at once.
func (n *Node) streamFailed(ctx context.Context, err error, msg string) {
	log := n.logFor(ctx)
	if rpc.KindOf(err) == rpc.Canceled {
		log.Debug().Err(err).Msg(msg)
		return
	}
	failed := rpc.FailedNodesOf(err)
	log.Warn().Err(err).Strs("failed_nodes", failed).Msg(msg)
	if slices.Contains(failed, string(n.id)) && rpc.KindOf(err) == rpc.Internal {
		n.probeNow()
	}
}

func (n *Node) uploadChunk(raw dfspb.DataNode_UploadChunkStreamServer) error {
	idle := newIdleStream(raw, n.clock, n.cfg.SessionTimeout)
	first, err := idle.RecvPieces()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return rpc.Errorf(rpc.Invalid, "upload stream closed before the first frame")
		}
		return rpc.FromStatus(err)
	}
	handed := false // first's pieces, to Receive
	defer func() {
		if !handed {
			first.Pieces.Free()
		}
	}()
	s, sid, err := n.streamSession(raw.Context(), first.Msg)
	if err != nil {
		return err
	}
	defer n.running.Add(-1)
	defer s.release()
	stream := newKeepalive(raw.Context(), idle, n.clock, sid, n.cfg.ProgressTimeout/4, n.cfg.SessionTimeout)
	defer stream.stop()
	log := n.logFor(raw.Context()).With().Str("chunk_id", string(s.id)).Str("session_id", string(sid)).Logger()

	w, err := n.store.Create(s.id, s.size, s.frameSize)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()

	ctx, cancel := context.WithCancel(raw.Context())
	defer cancel()
	fwd, err := n.openReplicas(ctx, s)
	if err != nil {
		return err
	}
	defer fwd.stop()

	self := []string{string(n.id)}
	sink := n.newFrameSink(ctx, w, fwd, sinkDepth)
	sink.bytes = n.metrics.received
	handed = true
	v, err := chunkstream.Receive(ctx, stream, sid, first, chunkstream.Expect{ChunkID: s.id, Size: s.size, FrameSize: s.frameSize}, sink)
	if werr := sink.finish(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}

	// Make the chunk durable here while the replicas do the same.
	var wg sync.WaitGroup
	var stored []string
	var ferr error
	wg.Add(1)
	rpc.Go(func() { defer wg.Done(); stored, ferr = fwd.finish() })
	cerr := w.Commit(v.FrameDigests(), v.Sum())
	committed = cerr == nil
	wg.Wait()
	if cerr != nil {
		return rpc.NodeError(rpc.Internal, self, "%w", cerr)
	}
	n.reports.stored(s.id, chunkstore.Meta{Size: s.size, FrameSize: s.frameSize, Digest: v.Sum()})
	if ferr != nil {
		return ferr
	}
	log.Debug().Int64("size", s.size).Int("replicas", len(stored)).Msg("chunk stored")
	return stream.Send(&dfspb.ChunkDataAck{
		SessionId:     string(sid),
		BytesReceived: s.size,
		ReadyForNext:  true,
		IsFinal:       true,
		Replicas:      append(self, stored...),
	})
}

// keepalive serializes a receiver's acks and repeats the last one every
// interval while the node works on the sender's behalf: forwarding to its
// replicas (each under its own progress deadline), waiting for room in
// its frame budget or for its disk (ready_for_next=false, repeated as
// sent, so the sender stays paused), committing the chunk. A busy node is
// alive, and back-pressure must not be taken for a stall; a paused or
// cut-off node sends nothing, and its sender's deadline fires. It is
// quiet while the node waits for the sender's next frame, and after a
// pause for its disk has lasted maxPause (a disk that hangs): the sender
// then gives up on this node.
type keepalive struct {
	stream   chunkstream.PieceRecvStream
	clock    clockwork.Clock
	maxPause time.Duration
	stop     func() // ends the keepalives; returns once they have

	mu          sync.Mutex
	last        *dfspb.ChunkDataAck
	pausedSince time.Time // when last asked the sender to pause; zero while it did not
	inRecv      bool
	err         error // a failed send: no more keepalives
}

var _ chunkstream.PieceRecvStream = (*keepalive)(nil)

func newKeepalive(ctx context.Context, stream chunkstream.PieceRecvStream, clk clockwork.Clock, sid rpc.SessionID, every, maxPause time.Duration) *keepalive {
	k := &keepalive{stream: stream, clock: clk, maxPause: maxPause,
		last: &dfspb.ChunkDataAck{SessionId: string(sid), ReadyForNext: true}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	rpc.Go(func() {
		defer close(done)
		rpc.Every(ctx, clk, max(every, 10*time.Millisecond), k.repeat)
	})
	k.stop = func() { cancel(); <-done }
	return k
}

// repeat sends the last ack again, unless the node waits for the sender,
// the chunk is done or a pause for the disk has lasted too long.
func (k *keepalive) repeat(context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stuck := !k.last.ReadyForNext && k.clock.Since(k.pausedSince) > k.maxPause
	if !k.inRecv && k.err == nil && !k.last.IsFinal && !stuck {
		k.err = k.stream.Send(&dfspb.ChunkDataAck{SessionId: k.last.SessionId, BytesReceived: k.last.BytesReceived, ReadyForNext: k.last.ReadyForNext})
	}
}

func (k *keepalive) Send(ack *dfspb.ChunkDataAck) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case ack.ReadyForNext:
		k.pausedSince = time.Time{}
	case k.last.ReadyForNext:
		k.pausedSince = k.clock.Now()
	}
	k.last = ack
	return k.stream.Send(ack)
}

// Recv is RecvPieces with the frame's data joined.
func (k *keepalive) Recv() (*dfspb.ChunkDataStream, error) { return joined(k.RecvPieces()) }

func (k *keepalive) RecvPieces() (*rpc.PiecedFrame, error) {
	k.mu.Lock()
	k.inRecv = true
	k.mu.Unlock()
	f, err := k.stream.RecvPieces()
	k.mu.Lock()
	k.inRecv = false
	k.mu.Unlock()
	return f, err
}

// streamSession finds the session a stream's first frame names, or
// prepares one inline from the frame's prepare request, within
// MaxSessions. On success the stream counts as running until the caller
// calls n.running.Add(-1).
func (n *Node) streamSession(ctx context.Context, first *dfspb.ChunkDataStream) (*uploadSession, rpc.SessionID, error) {
	if first.SessionId == "" {
		if first.Prepare == nil {
			return nil, "", rpc.Errorf(rpc.Invalid, "first frame carries neither a session id nor a prepare request")
		}
		if first.Prepare.ChunkId != first.ChunkId {
			return nil, "", rpc.Errorf(rpc.Invalid, "prepare names chunk %q, frame names %q", first.Prepare.ChunkId, first.ChunkId)
		}
		n.running.Add(1) // count first, then check: racing streams never exceed the cap
		if n.uploadStreams() > n.cfg.MaxSessions {
			n.running.Add(-1)
			return nil, "", n.tooManySessions("upload")
		}
		s, err := n.newSession(ctx, first.Prepare)
		if err != nil {
			n.running.Add(-1)
			return nil, "", err
		}
		return s, rpc.NewSessionID(), nil
	}
	sid, err := rpc.ParseSessionID(first.SessionId)
	if err != nil {
		return nil, "", err
	}
	s, ok := n.uploads.Take(sid)
	if !ok {
		return nil, "", rpc.Errorf(rpc.NotFound, "unknown or expired upload session %s", sid)
	}
	n.running.Add(1) // it was counted as prepared
	return s, sid, nil
}

// uploadStreams returns the upload streams prepared or running.
func (n *Node) uploadStreams() int {
	return n.uploads.Len() + int(n.running.Load())
}

// sinkDepth is how many frames may wait for the disk per stream before
// the sender is told to pause.
const sinkDepth = 4

// frameSink hands verified frames to a background disk writer through a
// bounded queue and forwards them to the replicas, so receiving, hashing,
// writing and forwarding overlap. A full queue is a backlog: the sender is
// paused (ready_for_next=false) until the writer has drained half of it.
type frameSink struct {
	w     *chunkstore.Writer
	fwd   *forwarder
	self  []string
	queue chan *rpc.PiecedFrame
	done  chan struct{}
	bytes prometheus.Counter // counts the frames' bytes, when set

	// Every frame takes its bytes from budget, at most ceiling of it in
	// use, waiting at most wait and while ctx lasts; the writer returns
	// them once the frame is written.
	budget  *budget
	ceiling int64
	wait    time.Duration
	ctx     context.Context

	mu     sync.Mutex
	err    error
	waiter chan struct{}
}

var _ chunkstream.Sink = (*frameSink)(nil)

// A frame on its way to the disk and the replicas stays in the pieces
// gRPC read it into (rpc.PiecedFrame): pooled buffers, each with a count
// of its references, the last of which hands it back, so the next frame
// received reuses it instead of new memory: a 1 GiB put then turns over a
// few megabytes per node instead of the whole gigabyte, and the heap stays
// near what the windows hold. The references are the disk writer's (the
// store copies what it keeps), the forwarder's until every replica's Send
// has returned, and those the codec takes to send the pieces to each
// replica without copying them (rpc.SharedFrame) until gRPC has written
// them out.

func (n *Node) newFrameSink(ctx context.Context, w *chunkstore.Writer, fwd *forwarder, depth int) *frameSink {
	s := &frameSink{
		w: w, fwd: fwd, self: []string{string(n.id)}, queue: make(chan *rpc.PiecedFrame, depth), done: make(chan struct{}),
		budget: n.frames, ceiling: n.frames.limit, wait: n.cfg.SessionTimeout, ctx: ctx,
	}
	if len(fwd.ups) > 0 {
		s.ceiling = n.frames.limit / 2 // see budget.acquire
	}
	rpc.Go(s.write)
	return s
}

func (s *frameSink) write() {
	defer close(s.done)
	for f := range s.queue {
		s.mu.Lock()
		failed := s.err != nil
		s.mu.Unlock()
		var err error
		n := f.Len()
		for _, p := range f.Pieces {
			if failed || err != nil {
				break
			}
			_, err = s.w.Write(p.ReadOnlyData()) // the store copies what it keeps
		}
		s.budget.release(int64(n))
		f.Pieces.Free()
		s.mu.Lock()
		if err != nil && s.err == nil {
			s.err = rpc.NodeError(rpc.Internal, s.self, "%w", err)
		}
		if s.waiter != nil && (len(s.queue) <= cap(s.queue)/2 || s.err != nil) {
			close(s.waiter)
			s.waiter = nil
		}
		s.mu.Unlock()
	}
}

// Frame forwards f to the replicas and queues it for the disk.
func (s *frameSink) Frame(f *rpc.PiecedFrame) error {
	n := f.Len()
	if err := s.budget.acquire(s.ctx, int64(n), s.ceiling, s.wait); err != nil {
		f.Pieces.Free()
		return rpc.NodeError(rpc.Other, s.self, "%w; try another node or later", err)
	}
	if s.bytes != nil {
		s.bytes.Add(float64(n))
	}
	f.Pieces.Ref() // the forwarder's; the disk writer has f's own
	fwd := s.fwd.send(f, n)
	s.queue <- f
	ferr := <-fwd // every replica's Send has returned: the codec holds what gRPC has yet to write
	f.Pieces.Free()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	return ferr
}

// Backlog reports a full disk queue.
func (s *frameSink) Backlog() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) < cap(s.queue) || s.err != nil {
		return nil
	}
	if s.waiter == nil {
		s.waiter = make(chan struct{})
	}
	return s.waiter
}

// finish waits for the queued frames to reach the file.
func (s *frameSink) finish() error {
	close(s.queue)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// forwarder sends a primary's frames to its replicas, one Upload each.
// Replicas without a session from PrepareChunkUpload are prepared inline
// by the first frame.
type forwarder struct {
	s       *uploadSession
	targets []replicaTarget
	ups     []*chunkstream.Upload
	wds     []*chunkstream.Watchdog // each replica stream's progress deadline
	started bool
	bytes   prometheus.Counter // counts the bytes each replica took, when set
}

// openReplicas opens a stream to each replica, each under its own
// progress deadline (--stream-progress-timeout): a replica that stops
// answering fails the upload naming it, and only its stream is canceled.
func (n *Node) openReplicas(ctx context.Context, s *uploadSession) (*forwarder, error) {
	fw := &forwarder{s: s, targets: s.replicas, bytes: n.metrics.forwarded}
	for _, t := range s.replicas {
		cc, err := n.peerConn(ctx, t.node, t.addr)
		if err != nil {
			fw.stop()
			return nil, rpc.NodeError(rpc.Other, []string{string(t.node)}, "replica %s: %w", t.node.Short(), err)
		}
		rctx, wd := chunkstream.NewWatchdog(ctx, n.clock, n.cfg.ProgressTimeout, "upload stream")
		wd.HeardFrom(func() time.Time { return n.pool.Heard(t.addr) })
		fw.wds = append(fw.wds, wd)
		st, err := openReplica(rctx, wd, cc)
		if err != nil {
			if werr := wd.Err(); werr != nil {
				err = werr
			}
			fw.stop()
			return nil, rpc.NodeError(rpc.Unavailable, []string{string(t.node)}, "replica %s (%s): open stream: %w", t.node.Short(), t.addr, err)
		}
		fw.ups = append(fw.ups, chunkstream.NewUpload(rctx, st, n.cfg.Window))
	}
	return fw, nil
}

// stop ends the replicas' progress deadlines (and their streams, if still
// open).
func (fw *forwarder) stop() {
	for _, wd := range fw.wds {
		wd.Stop()
	}
}

// openReplica opens an upload stream to a replica over cc. The
// connection must be ready within the stream's progress deadline wd (the
// coordinator placed the replica, so it is live; a connection backing off
// after an earlier failure, the node restarted, connects again at once).
// The wait for a free stream on it is not: that is the replica's
// back-pressure (--max-conn-streams), not a stall; the deadline resumes
// with the first frame.
func openReplica(ctx context.Context, wd *chunkstream.Watchdog, cc *grpc.ClientConn) (dfspb.DataNode_UploadChunkStreamClient, error) {
	if err := rpc.WaitReady(ctx, cc); err != nil {
		return nil, err
	}
	wd.Pause()
	st, err := dfspb.NewDataNodeClient(cc).UploadChunkStream(ctx)
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	return st, nil
}

// send forwards f, of n data bytes, to every replica in parallel, its
// pieces not copied but referenced until gRPC has written them out to
// each; the channel yields the combined error once all have taken it. The
// caller holds a reference on the pieces until then.
func (fw *forwarder) send(pf *rpc.PiecedFrame, n int) <-chan error {
	done := make(chan error, 1)
	if len(fw.ups) == 0 {
		done <- nil
		return done
	}
	first := !fw.started
	fw.started = true
	rpc.Go(func() {
		errs := make([]error, len(fw.ups))
		f := pf.Msg
		// A small frame goes as the message's own data, which the codec
		// copies as it encodes: splitting it costs more than a copy.
		var small []byte
		if n < rpc.SharedMin {
			if len(pf.Pieces) == 1 {
				small = pf.Pieces[0].ReadOnlyData() // ours until every Send returned
			} else {
				small = pf.Pieces.Materialize()
			}
		}
		eachInParallel(fw.ups, func(i int, u *chunkstream.Upload) {
			t := fw.targets[i]
			g := &dfspb.ChunkDataStream{
				SessionId: string(t.session), ChunkId: f.ChunkId, Offset: f.Offset,
				IsFinal: f.IsFinal, PartialChecksum: f.PartialChecksum, ChunkChecksum: f.ChunkChecksum,
			}
			if first && t.session == "" {
				g.Prepare = &dfspb.PrepareChunkUploadRequest{ChunkId: string(fw.s.id), Size: fw.s.size, FrameSize: fw.s.frameSize, Token: fw.s.token}
			}
			sf := rpc.SharedFrame{Frame: g, Pieces: pf.Pieces}
			if small != nil {
				sf = rpc.SharedFrame{Frame: g}
				g.Data = small
			}
			if err := u.SendShared(sf); err != nil {
				errs[i] = rpc.NodeError(rpc.Unavailable, []string{string(t.node)}, "replica %s (%s): %w", t.node.Short(), t.addr, err)
			} else if fw.bytes != nil {
				fw.bytes.Add(float64(n))
			}
		})
		done <- joinNodeErrors(errs)
	})
	return done
}

// eachInParallel runs fn on every upload at once and waits for all: the
// last in the calling goroutine, the others on kept goroutines (rpc.Go).
func eachInParallel(ups []*chunkstream.Upload, fn func(int, *chunkstream.Upload)) {
	var wg sync.WaitGroup
	for i, u := range ups[:max(len(ups)-1, 0)] {
		wg.Add(1)
		rpc.Go(func() { defer wg.Done(); fn(i, u) })
	}
	if last := len(ups) - 1; last >= 0 {
		fn(last, ups[last])
	}
	wg.Wait()
}

// finish waits for every replica's final ack and returns the nodes that
// stored the chunk.
func (fw *forwarder) finish() ([]string, error) {
	errs := make([]error, len(fw.ups))
	stored := make([][]string, len(fw.ups))
	eachInParallel(fw.ups, func(i int, u *chunkstream.Upload) {
		t := fw.targets[i]
		ack, err := u.Finish()
		if err != nil {
			errs[i] = rpc.NodeError(rpc.Unavailable, []string{string(t.node)}, "replica %s (%s): %w", t.node.Short(), t.addr, err)
			return
		}
		stored[i] = ack.Replicas
	})
	if err := joinNodeErrors(errs); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range stored {
		out = append(out, s...)
	}
	return out, nil
}
