package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Progress is told how many more bytes were moved; it may be nil.
type Progress func(n int64)

// maxReceiptBatch is the most chunk receipts the coordinator takes in one
// call.
const maxReceiptBatch = 1000

// defaultSessionTimeout is assumed when a coordinator does not say how
// long its upload sessions live.
const defaultSessionTimeout = time.Minute

// Put stores r at path as a new version of the file. size is r's length,
// or -1 when unknown (r is read to its end without being buffered whole).
// Chunks go to their datanodes several at a time; a chunk whose datanode
// fails is placed again elsewhere. The file becomes visible only when the
// coordinator confirms it; on any failure, or when ctx is canceled, the
// upload is aborted and the previous version of path stays as it was.
// Receipts of finished chunks go to the coordinator in batches while the
// upload runs, which also keeps its session alive however long the
// upload takes. An input longer than the coordinator's chunk limit fails
// before the chunk beyond the limit is sent. A file of one chunk whose
// session a restarted (or newly elected) coordinator does not know is put
// again, once, from the chunk still in memory, unless a confirm whose
// answer was lost may have committed it (see upload.finish): a put whose
// outcome cannot be learned fails with Unavailable, and the file may or
// may not be committed. The returned metadata holds the whole chunk map,
// unless the path was replaced again before all of it was read
// (len(Chunks) < ChunkCount then).
//
// Put shares its machinery with Create's Writer, but reads r straight
// into the chunk buffers: no byte is copied on the way.
func (c *Client) Put(ctx context.Context, path string, r io.Reader, size int64, progress Progress) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	fi, err := c.put(ctx, path, r, size, progress)
	if err != nil {
		return nil, wrap(ctx, "put", path, err)
	}
	return fromFileInfo(fi), nil
}

type putState struct {
	c         *Client
	path      string
	session   rpc.SessionID
	chunkSize int64
	maxChunks uint32
	ttl       time.Duration
	plans     []*dfspb.ChunkPlan
	progress  Progress
	// ifNotExist and ifVersion are the upload's preconditions, repeated
	// in the confirm.
	ifNotExist bool
	ifVersion  uint64
	// metadata is committed with the file.
	metadata map[string]string
	// confirmUnknown is set when a confirm went out to a coordinator and
	// failed without saying whether it committed: a timeout, a lost
	// connection, an unavailable store. A later NotFound then does not
	// mean the file was not committed. Set and read by the goroutine that
	// ends the upload.
	confirmUnknown bool

	mu       sync.Mutex
	receipts map[uint32]*dfspb.ChunkReceipt
	// pending are the receipts not yet recorded with the coordinator;
	// full is signaled when they make a batch.
	pending []*dfspb.ChunkReceipt
	full    chan struct{}
	failed  map[rpc.NodeID]bool // nodes that failed any chunk of this put
}

type chunkJob struct {
	index uint32
	data  []byte
	buf   []byte // to return to the pool
}

// uploadOptions are the choices of one upload.
type uploadOptions struct {
	chunkSize   int64 // 0: the coordinator's default
	replication int   // 0: the coordinator's default
	ifNotExist  bool
	ifVersion   uint64
	progress    Progress
	metadata    map[string]string
}

// upload is one upload in progress, the core of Put and of Writer: its
// owner takes a free chunk buffer (buffer), fills it and hands it over
// (submit), which sends it to the datanodes in the background, at most
// Parallel chunks at once; then end confirms the upload, or aborts it.
// The buffers are Parallel+1, so an upload holds at most that many chunks
// whatever its size. An upload is used by one goroutine at a time.
type upload struct {
	st     *putState
	parent context.Context         // the caller's
	ctx    context.Context         // canceled, with the cause, when a chunk fails
	cancel context.CancelCauseFunc // cancels ctx
	size   int64                   // the declared size, or -1

	bufs       chan []byte // free chunk buffers; nil until first used
	jobs       chan chunkJob
	workers    sync.WaitGroup
	stopKeeper context.CancelFunc
	kept       chan struct{} // closed when the keeper returned
	stopped    bool

	h     hash.Hash // of the bytes submitted so far
	total int64     // bytes submitted so far
	index uint32    // the next chunk's index

	opts  uploadOptions // what it was opened with, for a second try
	first []byte        // chunk 0, while it is the only one (see finish)
}

// startUpload opens an upload of path with the coordinator and starts the
// goroutines that send its chunks and record their receipts.
func (c *Client) startUpload(ctx context.Context, path string, size int64, o uploadOptions) (*upload, error) {
	if _, err := rpc.ParsePath(path); err != nil {
		return nil, err
	}
	if size < -1 {
		return nil, rpc.Errorf(rpc.Invalid, "negative size %d", size)
	}
	if o.chunkSize != 0 {
		if err := rpc.CheckChunkSize(o.chunkSize); err != nil {
			return nil, err
		}
	}
	if o.replication < 0 || o.replication > rpc.MaxReplication {
		return nil, rpc.Errorf(rpc.Invalid, "replication %d out of range (1 to %d)", o.replication, rpc.MaxReplication)
	}
	var open *dfspb.UploadFileResponse
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		var err error
		open, err = cc.UploadFile(ctx, &dfspb.UploadFileRequest{
			Path: path, Size: size, ChunkSize: o.chunkSize, Replication: uint32(o.replication),
			IfNotExist: o.ifNotExist, IfVersion: o.ifVersion,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	st := &putState{
		c: c, path: path, session: rpc.SessionID(open.SessionId), chunkSize: open.ChunkSize, plans: open.Chunks,
		maxChunks: open.MaxChunks, ttl: time.Duration(open.SessionTimeoutMs) * time.Millisecond,
		progress: o.progress, receipts: map[uint32]*dfspb.ChunkReceipt{}, full: make(chan struct{}, 1), failed: map[rpc.NodeID]bool{},
		ifNotExist: o.ifNotExist, ifVersion: o.ifVersion, metadata: o.metadata,
	}
	if st.maxChunks == 0 {
		st.maxChunks = rpc.MaxFileChunks
	}
	if st.ttl <= 0 {
		st.ttl = defaultSessionTimeout
	}
	u := &upload{st: st, parent: ctx, size: size, h: sha256.New(), opts: o}
	u.ctx, u.cancel = context.WithCancelCause(ctx)
	if st.chunkSize <= 0 || st.chunkSize > rpc.MaxChunkSize {
		return nil, u.abort(rpc.Errorf(rpc.Internal, "coordinator chose chunk size %d", st.chunkSize))
	}
	par := c.cfg.Parallel
	u.bufs = make(chan []byte, par+1)
	for range par + 1 {
		u.bufs <- nil // allocated on first use, so small files stay small
	}
	u.jobs = make(chan chunkJob)
	var kctx context.Context
	kctx, u.stopKeeper = context.WithCancel(u.ctx)
	u.kept = make(chan struct{})
	go func() {
		defer close(u.kept)
		st.keep(kctx, u.cancel)
	}()
	for range par {
		u.workers.Go(func() {
			for j := range u.jobs {
				if err := st.sendChunk(u.ctx, j.index, j.data); err != nil {
					u.cancel(err)
				}
				u.bufs <- j.buf
			}
		})
	}
	return u, nil
}

// want is the size of a new chunk buffer: a chunk, or the whole file when
// it is known to be smaller.
func (u *upload) want() int64 {
	if u.size >= 0 {
		return min(u.st.chunkSize, max(u.size, 1))
	}
	return u.st.chunkSize
}

// buffer waits for a free chunk buffer: one that held a chunk already
// sent, or nil when the caller is to allocate it (up to want bytes). It
// fails once the upload has failed.
func (u *upload) buffer() ([]byte, error) {
	var buf []byte
	select {
	case buf = <-u.bufs:
	case <-u.ctx.Done():
	}
	if u.ctx.Err() != nil {
		return nil, context.Cause(u.ctx)
	}
	return buf, nil
}

// submit hands buf[:n], the next chunk, to the senders; buf returns to
// the free buffers once the chunk is stored. n is more than 0.
func (u *upload) submit(buf []byte, n int) error {
	if u.index >= u.st.maxChunks {
		return rpc.Errorf(rpc.Invalid, "input is longer than %d chunks of %s, the most a file may have (the coordinator's --max-file-chunks); use a larger chunk size",
			u.st.maxChunks, rpc.FormatBytes(u.st.chunkSize))
	}
	u.total += int64(n)
	if u.size >= 0 && u.total > u.size {
		return rpc.Errorf(rpc.Invalid, "input grew while reading: more than %d bytes", u.size)
	}
	u.h.Write(buf[:n])
	if u.index == 0 {
		u.first = buf[:n]
	}
	select {
	case u.jobs <- chunkJob{index: u.index, data: buf[:n], buf: buf}:
	case <-u.ctx.Done():
		return context.Cause(u.ctx)
	}
	u.index++
	return nil
}

// abort ends the upload for err at once: the chunks in flight are
// canceled, and the upload is aborted (see end).
func (u *upload) abort(err error) error {
	u.cancel(err)
	_, err = u.end(err)
	return err
}

// stop waits for the chunks handed over to be sent (or to fail) and stops
// the keeper.
func (u *upload) stop() {
	if u.stopped {
		return
	}
	u.stopped = true
	if u.jobs != nil {
		close(u.jobs)
		u.workers.Wait()
		u.stopKeeper()
		<-u.kept
	}
}

// end finishes the upload once the chunks handed over are stored (or
// failed): with err nil it confirms it and returns the committed file;
// otherwise, or when a chunk failed or the confirm does, it aborts the
// upload, so that the previous version of the path stays, and returns the
// error. An upload canceled through the caller's context fails with
// Canceled.
func (u *upload) end(err error) (*dfspb.FileInfo, error) {
	u.stop()
	if err != nil {
		u.cancel(err)
	} else {
		err = context.Cause(u.ctx)
	}
	if err == nil && u.size >= 0 && u.total != u.size {
		err = rpc.Errorf(rpc.Invalid, "input ended at %d bytes, expected %d (file changed while reading?)", u.total, u.size)
	}
	var fi *dfspb.FileInfo
	if err == nil {
		fi, err = u.st.confirm(u.ctx, u.total, u.h.Sum(nil))
	}
	u.cancel(nil)
	if err == nil {
		return fi, nil
	}
	// Abort even when ctx is canceled, so the chunks are collected now
	// rather than when the session expires.
	c := u.st.c
	actx, cancel := context.WithTimeout(context.WithoutCancel(u.parent), c.cfg.RPCTimeout)
	defer cancel()
	if aerr := c.coordinator(actx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.AbortUpload(ctx, &dfspb.AbortUploadRequest{SessionId: string(u.st.session)})
		return err
	}); aerr != nil && rpc.KindOf(aerr) != rpc.NotFound {
		c.log.Debug().Err(aerr).Msg("abort upload")
	}
	if u.parent.Err() != nil {
		return nil, rpc.Errorf(rpc.Canceled, "interrupted; nothing was committed")
	}
	return nil, err
}

// finish ends the upload (see end). The coordinator records no session of
// a file of one chunk (a known size up to the chunk size) until its
// commit: one that restarted or failed over since UploadFile does not
// know it and refuses the chunk's placement, its receipts or the confirm
// with NotFound. The file, when it is whole in its one buffer and no
// confirm can have committed it (see putAgain), is then put again, once,
// in a new session with the same chunk size; the chunk sent in the lost
// one is an orphan the coordinator collects.
func (u *upload) finish(err error) (*dfspb.FileInfo, error) {
	fi, err := u.end(err)
	if err == nil || !u.putAgain(err) {
		return fi, err
	}
	c := u.st.c
	c.log.Debug().Err(err).Str("path", u.st.path).Msg("coordinator lost the upload session of a one-chunk file; putting it again")
	o := u.opts
	// The chunk size the file fits in one chunk of: a coordinator started
	// with a smaller default would refuse the chunk.
	o.chunkSize = u.st.chunkSize
	o.metadata = u.st.metadata
	u.st.mu.Lock()
	if _, stored := u.st.receipts[0]; stored {
		o.progress = nil // the bytes were counted once
	}
	u.st.mu.Unlock()
	again, serr := c.startUpload(u.parent, u.st.path, u.size, o)
	if serr != nil {
		return nil, fmt.Errorf("%w (putting it again after: %v)", serr, err)
	}
	if len(u.first) > 0 {
		if _, err := again.buffer(); err != nil {
			return again.end(err)
		}
		if err := again.submit(u.first, len(u.first)); err != nil {
			return again.end(err)
		}
	}
	return again.end(nil)
}

// putAgain reports whether an upload that ended with err may be put again
// in a new session (see finish): err is NotFound (the coordinator does
// not know the session), the caller has not given up, the file is of one
// chunk and whole in memory (u.first holds all of its declared size), and
// no confirm of the session can have reached a coordinator and committed
// the file while its answer was lost (see putState.confirmUnknown): a
// second version of the same bytes would then replace the first, or a
// newer one another writer committed, and a conditional put would fail
// although it landed.
func (u *upload) putAgain(err error) bool {
	return rpc.KindOf(err) == rpc.NotFound && u.parent.Err() == nil && !u.st.confirmUnknown &&
		u.size >= 0 && u.size <= u.st.chunkSize && u.total == u.size && int64(len(u.first)) == u.size
}

func (c *Client) put(ctx context.Context, path string, r io.Reader, size int64, progress Progress) (*dfspb.FileInfo, error) {
	u, err := c.startUpload(ctx, path, size, uploadOptions{chunkSize: c.cfg.ChunkSize, replication: c.cfg.Replication, progress: progress})
	if err != nil {
		return nil, err
	}
	return u.finish(u.readFrom(r))
}

// readFrom reads r chunk by chunk straight into the upload's buffers and
// submits the chunks, up to r's end (or the declared size, which r must
// end at).
func (u *upload) readFrom(r io.Reader) error {
	for {
		buf, err := u.buffer()
		if err != nil {
			return err
		}
		if buf == nil {
			buf = make([]byte, u.want())
		}
		n, err := io.ReadFull(r, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return rpc.Errorf(rpc.Invalid, "read input: %w", err)
		}
		if n > 0 {
			if err := u.submit(buf, n); err != nil {
				return err
			}
		}
		if n < len(buf) || (u.size >= 0 && u.total == u.size) {
			break // end of input
		}
	}
	if u.size >= 0 && u.total == u.size {
		// The input must end where it said it would.
		var one [1]byte
		if n, _ := io.ReadFull(r, one[:]); n > 0 {
			return rpc.Errorf(rpc.Invalid, "input longer than its declared %d bytes (file changed while reading?)", u.size)
		}
	}
	return nil
}

// plan returns the placement of chunk index: the one UploadFile returned,
// or a new one that avoids every node that failed this put.
func (st *putState) plan(ctx context.Context, index uint32, retry bool) (*dfspb.ChunkPlan, error) {
	if !retry && int(index) < len(st.plans) {
		// A plan from UploadFile that is malformed (a coordinator bug) is
		// asked for again, like one that touches a failed node.
		if p := st.plans[index]; wellFormed(p, index) && !st.touchesFailed(p) {
			return p, nil
		}
	}
	st.mu.Lock()
	exclude := make([]string, 0, len(st.failed))
	for id := range st.failed {
		exclude = append(exclude, string(id))
	}
	st.mu.Unlock()
	slices.Sort(exclude)
	var plan *dfspb.ChunkPlan
	err := st.c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.AllocateChunk(ctx, &dfspb.AllocateChunkRequest{SessionId: string(st.session), Index: index, ExcludeNodeIds: exclude})
		if err == nil {
			plan = resp.Chunk
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if !wellFormed(plan, index) {
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned a malformed plan for chunk %d", index)
	}
	return plan, nil
}

// wellFormed reports whether p is a plan for chunk index that names its
// primary and every replica, each with an address.
func wellFormed(p *dfspb.ChunkPlan, index uint32) bool {
	named := func(n *dfspb.NodeRef) bool { return n.GetNodeId() != "" && n.GetAddr() != "" }
	return p != nil && p.Index == index && named(p.Primary) && !slices.ContainsFunc(p.Replicas, func(n *dfspb.NodeRef) bool { return !named(n) })
}

// forgiveFailures forgets the nodes that failed this put; it reports
// whether there were any.
func (st *putState) forgiveFailures() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	had := len(st.failed) > 0
	clear(st.failed)
	return had
}

func (st *putState) touchesFailed(p *dfspb.ChunkPlan) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failed[rpc.NodeID(p.GetPrimary().GetNodeId())] {
		return true
	}
	for _, r := range p.Replicas {
		if st.failed[rpc.NodeID(r.NodeId)] {
			return true
		}
	}
	return false
}

// sendChunk stores one chunk on its primary and replicas, placing it again
// elsewhere when a node fails, up to the configured attempts.
func (st *putState) sendChunk(ctx context.Context, index uint32, data []byte) error {
	backoff := rpc.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	var lastErr error
	forgiven, refused := false, false
	for attempt := 0; attempt < st.c.cfg.Attempts; attempt++ {
		if attempt > 0 && rpc.Sleep(ctx, st.c.clock, backoff.Delay(attempt)) != nil {
			return context.Cause(ctx)
		}
		plan, err := st.plan(ctx, index, attempt > 0)
		if err != nil && rpc.KindOf(err) == rpc.FailedPrecondition && !forgiven && st.forgiveFailures() {
			// The nodes that failed may have failed only for a moment; with
			// them excluded there are too few left, so try them once more.
			forgiven = true
			plan, err = st.plan(ctx, index, true)
		}
		if err != nil {
			// No placement (too few nodes, session gone): nothing to retry.
			if lastErr != nil {
				return fmt.Errorf("%w (after chunk %d failed: %v)", err, index, lastErr)
			}
			return err
		}
		receipt, err := st.c.storeChunk(ctx, plan, data)
		if err == nil {
			st.mu.Lock()
			st.receipts[index] = receipt
			st.pending = append(st.pending, receipt)
			if len(st.pending) >= st.c.cfg.ReceiptBatch {
				select {
				case st.full <- struct{}{}:
				default:
				}
			}
			st.mu.Unlock()
			if st.progress != nil {
				st.progress(int64(len(data)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if rpc.KindOf(err) == rpc.Permission && !refused {
			// The plan's chunk token expired (a long upload) or its key
			// is not at the datanode yet: no node failed. A new plan
			// brings a new token; a second refusal is an error.
			refused = true
			st.c.log.Debug().Err(err).Uint32("chunk", index).Msg("chunk token refused; asking for a new plan")
			lastErr = err
			continue
		}
		nodes := rpc.FailedNodesOf(err)
		if len(nodes) == 0 {
			nodes = []string{plan.Primary.NodeId}
		}
		st.mu.Lock()
		var fresh []string // failed for the first time in this put
		for _, n := range nodes {
			if !st.failed[rpc.NodeID(n)] {
				fresh = append(fresh, n)
			}
			st.failed[rpc.NodeID(n)] = true
		}
		st.mu.Unlock()
		st.c.nodesFailed(ctx, fresh, err)
		st.c.log.Warn().Err(err).Uint32("chunk", index).Strs("failed_nodes", nodes).Int("attempt", attempt+1).Msg("chunk failed; placing it again")
		lastErr = err
	}
	return rpc.Errorf(rpc.Unavailable, "chunk %d failed %d times, last: %w", index, st.c.cfg.Attempts, lastErr)
}

// storeChunk sends data to the plan's primary, which forwards it to the
// replicas, and returns the receipt from the final ack.
func (c *Client) storeChunk(ctx context.Context, plan *dfspb.ChunkPlan, data []byte) (*dfspb.ChunkReceipt, error) {
	if len(data) <= smallWrite {
		if receipt, err, ok := c.writeSmall(ctx, plan, data); ok {
			return receipt, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ChunkTimeout)
	defer cancel()
	primary := plan.Primary
	conn, err := c.pool.Get(primary.Addr)
	if err != nil {
		return nil, err
	}
	// A primary that cannot be connected to, or stops acking (or keeping
	// the stream alive while it waits on its replicas), fails the chunk
	// after the progress timeout. Waiting for a free stream on the
	// connection is the primary's back-pressure (its --max-conn-streams),
	// not a stall: the deadline resumes with the first frame.
	ctx, wd := chunkstream.NewWatchdog(ctx, c.clock, c.cfg.ProgressTimeout, "datanode "+rpc.NodeID(primary.NodeId).Short()+" ("+primary.Addr+")")
	defer wd.Stop()
	wd.HeardFrom(func() time.Time { return c.pool.Heard(primary.Addr) })
	err = rpc.WaitReady(ctx, conn)
	var stream dfspb.DataNode_UploadChunkStreamClient
	if err == nil {
		wd.Pause()
		stream, err = dfspb.NewDataNodeClient(conn).UploadChunkStream(ctx)
	}
	if err != nil {
		if werr := wd.Err(); werr != nil {
			return nil, werr
		}
		return nil, rpc.FromStatus(err)
	}
	// Prepare inline: the first frame carries the request, saving a round
	// trip per chunk (and per replica on the primary).
	prepare := &dfspb.PrepareChunkUploadRequest{
		ChunkId: plan.ChunkId, Size: int64(len(data)), FrameSize: c.cfg.FrameSize, Replicas: plan.Replicas, Token: plan.Token,
	}
	ack, digest, err := chunkstream.SendChunk(ctx, stream, "", prepare, rpc.ChunkID(plan.ChunkId), data, int(c.cfg.FrameSize), c.cfg.Window)
	if err != nil {
		return nil, err
	}
	return &dfspb.ChunkReceipt{
		Index: plan.Index, ChunkId: plan.ChunkId, Size: int64(len(data)), Digest: digest,
		FrameSize: c.cfg.FrameSize, NodeIds: ack.Replicas,
	}, nil
}

// keep records the put's receipts with the coordinator while its chunks
// are sent: a batch as soon as one is full, and whatever is pending at
// least four times per session timeout, an empty batch too, so that the
// session stays alive however slowly the input comes. A coordinator that
// cannot be reached is tried again at the next turn (confirm records what
// is left); one that refuses the receipts or no longer knows the session
// ends the put through fail.
func (st *putState) keep(ctx context.Context, fail context.CancelCauseFunc) {
	tick := st.c.clock.NewTicker(max(st.ttl/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		fullOnly := false
		select {
		case <-ctx.Done():
			return
		case <-st.full:
			fullOnly = true
		case <-tick.Chan():
		}
		err := st.flush(ctx, fullOnly)
		switch {
		case err == nil || ctx.Err() != nil:
		case rpc.Retryable(err):
			st.c.log.Debug().Err(err).Msg("recording chunk receipts; trying again later")
		default:
			fail(err)
			return
		}
	}
}

// flush records pending receipts with UploadReceipts, one batch per call:
// all of them, or with fullOnly only whole batches. Without fullOnly and
// with nothing pending it sends an empty batch, which keeps the session
// alive. The receipts of a call that failed stay pending.
func (st *putState) flush(ctx context.Context, fullOnly bool) error {
	size := st.c.cfg.ReceiptBatch
	// Each turn records at least one receipt or returns.
	for sent := false; ; sent = true {
		st.mu.Lock()
		n := min(len(st.pending), size)
		if (fullOnly && n < size) || (sent && n == 0) {
			st.mu.Unlock()
			return nil
		}
		batch := slices.Clone(st.pending[:n])
		st.pending = slices.Delete(st.pending, 0, n)
		st.mu.Unlock()
		err := st.c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
			_, err := cc.UploadReceipts(ctx, &dfspb.UploadReceiptsRequest{SessionId: string(st.session), Chunks: batch})
			return err
		})
		if err != nil {
			st.mu.Lock()
			st.pending = append(st.pending, batch...)
			st.mu.Unlock()
			return err
		}
	}
}

// maxConfirmRounds bounds how often a confirm sends the receipts again to a
// coordinator that lacks some (one that took over meanwhile).
const maxConfirmRounds = 3

// confirm records the receipts still pending and commits the upload,
// retrying while the coordinator or a datanode it checks with is briefly
// unavailable. The last batch of receipts rides in the confirm.
func (st *putState) confirm(ctx context.Context, size int64, sum []byte) (*dfspb.FileInfo, error) {
	count := uint32(len(st.receipts))
	for i := range count {
		if _, ok := st.receipts[i]; !ok {
			return nil, rpc.Errorf(rpc.Internal, "chunk %d has no receipt", i)
		}
	}
	for round := 0; ; round++ {
		// A failed batch stays pending: retrying records it again.
		err := rpc.Retry(ctx, st.c.clock, rpc.DefaultBackoff, func(int) error { return st.flush(ctx, true) })
		if err != nil {
			return nil, err
		}
		st.mu.Lock()
		req := &dfspb.ConfirmUploadRequest{SessionId: string(st.session), Size: size, Sha256: sum, Chunks: st.pending, ChunkCount: count,
			IfNotExist: st.ifNotExist, IfVersion: st.ifVersion, Metadata: st.metadata}
		st.pending = nil
		st.mu.Unlock()
		resp, err := st.confirmOnce(ctx, req)
		if err != nil {
			return nil, err
		}
		if !resp.MissingReceipts {
			fi := resp.File
			if err := checkFileInfo(fi); err != nil {
				return nil, err
			}
			if err := st.c.complete(ctx, fi); err != nil {
				// Committed: only the description is partial.
				st.c.log.Debug().Err(err).Msg("reading the chunk map of the committed file")
			}
			return fi, nil
		}
		if round+1 >= maxConfirmRounds || resp.FirstMissing >= count {
			return nil, rpc.Errorf(rpc.Unavailable, "coordinator still lacks the receipt of chunk %d after %d confirms", resp.FirstMissing, round+1)
		}
		// A coordinator that took over knows none of the receipts the
		// last one recorded: record them again.
		st.mu.Lock()
		for i := resp.FirstMissing; i < count; i++ {
			st.pending = append(st.pending, st.receipts[i])
		}
		st.mu.Unlock()
	}
}

// confirmOnce sends one confirm, retrying while the coordinator or a
// datanode it checks with is briefly unavailable. A confirm that finds
// the session gone (NotFound) may have been preceded by one that
// committed and lost its reply; the path is then stat'ed, and when the
// committed version names the session, the upload is done. When it does
// not, and an earlier attempt's outcome is unknown (confirmUnknown), the
// file may have been committed and replaced since, or its commit may
// still be under way: the confirm is tried again, and fails in the end
// with Unavailable, saying the outcome is unknown, not with NotFound.
func (st *putState) confirmOnce(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	var out *dfspb.ConfirmUploadResponse
	err := rpc.Retry(ctx, st.c.clock, rpc.DefaultBackoff, func(attempt int) error {
		err := st.c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
			var sent peer.Peer // set once the call went out on a connection
			resp, err := cc.ConfirmUpload(ctx, req, grpc.Peer(&sent))
			if err == nil {
				out = resp
			} else if sent.Addr != nil && outcomeUnknown(rpc.FromStatus(err)) {
				st.confirmUnknown = true
			}
			return err
		})
		if err != nil && rpc.KindOf(err) == rpc.NotFound {
			// A confirm may have committed and lost its reply (a coordinator
			// failed over, here or in an earlier attempt): the file then
			// names our session.
			if cur, serr := st.c.head(ctx, st.path); serr == nil && cur.SessionId == req.SessionId {
				out = &dfspb.ConfirmUploadResponse{File: cur}
				return nil
			}
			if st.confirmUnknown {
				return rpc.Errorf(rpc.Unavailable, "outcome unknown: an earlier confirm got no answer and the coordinator no longer knows the upload session (%v); %s may or may not hold this upload", err, st.path)
			}
		}
		return err
	})
	return out, err
}

// outcomeUnknown reports whether a confirm that reached a coordinator and
// failed with err may have committed: a not-serving coordinator (a
// standby, or one in safe mode) refuses before it does anything, and the
// kinds no retry helps are the coordinator's own answers.
func outcomeUnknown(err error) bool {
	if _, ok := rpc.NotServingOf(err); ok {
		return false
	}
	return rpc.Retryable(err) || rpc.KindOf(err) == rpc.Canceled
}
