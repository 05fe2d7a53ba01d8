package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/mem"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// GetOptions are the choices of Get.
type GetOptions struct {
	// Progress is told how many more bytes were written to w; it may be
	// nil.
	Progress Progress
	// VerifyFileDigest also checks the file's SHA-256 recorded at commit
	// against the bytes written, which costs a second hashing pass over
	// every byte. Without it, every frame is verified against its digest
	// and the frame digests against the chunk digest committed with the
	// file, so every byte written is a byte that was committed; the file
	// digest adds a check of the order and completeness of the chunks
	// the uploader committed. A mismatch is found after the last byte
	// was written: Get then fails with Internal.
	VerifyFileDigest bool
}

// Get writes the committed file at path to w, in order. Chunks are fetched
// several at a time, from different replicas where they can; each is
// verified frame by frame and as a whole against the digests recorded at
// commit before any of its bytes are written, and a replica that fails or
// returns bad bytes is skipped for the next one. Gets made at once on one
// Client share calls for their first page of the chunk map and for small
// chunks (see batcher). opts may be nil (see GetOptions).
func (c *Client) Get(ctx context.Context, path string, w io.Writer, opts *GetOptions) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	var o GetOptions
	if opts != nil {
		o = *opts
	}
	fi, err := c.get(ctx, path, w, o)
	if err != nil {
		return nil, wrap(ctx, "get", path, err)
	}
	return fromFileInfo(fi), nil
}

type fetched struct {
	frames *frames
	err    error
}

// bigWrite is the size of the writes Get makes to a writer that is not a
// file, at least (but for the end of the file): frames arrive in 16 KiB
// pieces.
const bigWrite = 1 << 20

// get reads the chunk map a page at a time while it fetches the chunks:
// it holds at most Parallel chunks and two pages of the map (the one
// being fetched and the next). A file the first page maps whole in one
// chunk at most (every small file) is read in the caller's goroutine.
func (c *Client) get(ctx context.Context, path string, w io.Writer, o GetOptions) (*dfspb.FileInfo, error) {
	if _, err := rpc.ParsePath(path); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	head, next, err := c.firstPage(ctx, path)
	if err != nil {
		return nil, err
	}
	out := &output{w: w, progress: o.Progress}
	if o.VerifyFileDigest {
		out.h = sha256.New()
	}
	if next == head.ChunkCount && len(head.Chunks) <= 1 {
		for _, ch := range head.Chunks {
			fr, err := c.getChunk(ctx, head, ch)
			if err != nil {
				if ctx.Err() == nil {
					err = c.changedOr(ctx, head, err)
				}
				return nil, err
			}
			if err := out.write(fr); err != nil {
				return nil, err
			}
		}
		return head, out.finish(head)
	}

	// Chunks are fetched ahead of the writer, at most Parallel of them
	// held at once; the writer takes their results in order and hands
	// each slot back.
	par := c.cfg.Parallel
	slots := make(chan struct{}, par)
	results := make(chan chan fetched, par)
	go func() {
		defer close(results)
		fetch := func(page *dfspb.FileInfo) error {
			for _, ch := range page.Chunks {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return ctx.Err()
				}
				res := make(chan fetched, 1)
				go func() {
					fr, err := c.getChunk(ctx, page, ch)
					res <- fetched{fr, err}
				}()
				select {
				case results <- res:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		err := fetch(head)
		if err == nil && next < head.ChunkCount {
			err = c.pages(ctx, path, true, head, next, fetch)
		}
		if err != nil {
			res := make(chan fetched, 1)
			res <- fetched{err: err}
			select {
			case results <- res:
			case <-ctx.Done():
			}
		}
	}()

	for {
		var res chan fetched
		select {
		case res = <-results:
		case <-ctx.Done():
			return nil, rpc.Errorf(rpc.Canceled, "interrupted")
		}
		if res == nil {
			break // every page read, every chunk written
		}
		var r fetched
		select {
		case r = <-res:
		case <-ctx.Done():
			return nil, rpc.Errorf(rpc.Canceled, "interrupted")
		}
		if r.err != nil {
			if ctx.Err() == nil {
				return nil, c.changedOr(ctx, head, r.err)
			}
			return nil, r.err
		}
		if err := out.write(r.frames); err != nil {
			return nil, err
		}
		<-slots
	}
	return head, out.finish(head)
}

// getChunk fetches the whole chunk ch of the version of a file page is a
// page of the chunk map of, and returns its frames, verified.
func (c *Client) getChunk(ctx context.Context, page *dfspb.FileInfo, ch *dfspb.ChunkInfo) (*frames, error) {
	fr := &frames{}
	_, err := c.fetchChunk(ctx, ch, part{keep: fr})
	if rpc.KindOf(err) == rpc.Permission {
		// The page's chunk tokens expired while the chunks before were
		// read: once more with a new one.
		if fresh, ferr := c.chunkAgain(ctx, page, ch.Index); ferr == nil {
			_, err = c.fetchChunk(ctx, fresh, part{keep: fr})
		}
	}
	if err != nil {
		fr.recycle()
		return nil, err
	}
	return fr, nil
}

// output is where Get writes a file's verified chunks, in order.
type output struct {
	w        io.Writer
	bw       *bufio.Writer // between get and w, but for a file: frames come in pieces; flushed after each chunk
	h        hash.Hash     // the file's SHA-256, with VerifyFileDigest
	progress Progress
}

// write writes the frames of the next chunk and hands their buffers
// back. A file (*os.File) is written the pieces the frames arrived in,
// many in one writev, without a copy; any other writer gets writes of at
// least bigWrite bytes (but for the end of the file) through a buffer,
// unless the chunk is a single piece.
func (o *output) write(fr *frames) error {
	defer fr.recycle()
	if o.h != nil {
		for _, f := range fr.data {
			for _, p := range f {
				o.h.Write(p.ReadOnlyData())
			}
		}
	}
	if f, ok := o.w.(*os.File); ok {
		if err := writePieces(f, fr.data); err != nil {
			return rpc.Errorf(rpc.Internal, "write output: %w", err)
		}
		if o.progress != nil {
			for _, f := range fr.data {
				o.progress(int64(f.Len()))
			}
		}
		return nil
	}
	if o.bw == nil && (len(fr.data) > 1 || len(fr.data) == 1 && len(fr.data[0]) > 1) {
		o.bw = bufio.NewWriterSize(o.w, bigWrite)
	}
	for _, f := range fr.data {
		for _, p := range f {
			var err error
			if o.bw != nil {
				_, err = o.bw.Write(p.ReadOnlyData())
			} else {
				_, err = o.w.Write(p.ReadOnlyData())
			}
			if err != nil {
				return rpc.Errorf(rpc.Internal, "write output: %w", err)
			}
		}
		if o.progress != nil {
			o.progress(int64(f.Len()))
		}
	}
	if o.bw != nil {
		// Each chunk reaches w whole once it is verified, as it would
		// without the buffer.
		if err := o.bw.Flush(); err != nil {
			return rpc.Errorf(rpc.Internal, "write output: %w", err)
		}
	}
	return nil
}

// maxIovecs is the most pieces one writev takes (Linux's IOV_MAX).
const maxIovecs = 1024

// writePieces writes the pieces of frames to f at its offset, in order,
// in as few writev calls as IOV_MAX allows.
func writePieces(f *os.File, frames []mem.BufferSlice) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	n := 0
	for _, fr := range frames {
		n += len(fr)
	}
	iovs := make([][]byte, 0, min(n, maxIovecs))
	flush := func() error {
		rest := iovs
		for len(rest) > 0 {
			var n int
			var werr error
			if err := rc.Write(func(fd uintptr) bool {
				n, werr = unix.Writev(int(fd), rest)
				return werr != unix.EAGAIN
			}); err != nil {
				return err
			}
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				return &os.PathError{Op: "writev", Path: f.Name(), Err: werr}
			}
			if n == 0 {
				return &os.PathError{Op: "writev", Path: f.Name(), Err: io.ErrShortWrite}
			}
			for n > 0 { // past what was written
				if k := min(n, len(rest[0])); k < len(rest[0]) {
					rest[0], n = rest[0][k:], 0
				} else {
					rest, n = rest[1:], n-k
				}
			}
		}
		iovs = iovs[:0]
		return nil
	}
	for _, fr := range frames {
		for _, p := range fr {
			if len(iovs) == maxIovecs {
				if err := flush(); err != nil {
					return err
				}
			}
			iovs = append(iovs, p.ReadOnlyData())
		}
	}
	return flush()
}

// finish checks, with VerifyFileDigest, the file's SHA-256 against fi's;
// it drops fi's chunk map, which Get does not return.
func (o *output) finish(fi *dfspb.FileInfo) error {
	fi.Chunks = nil
	if o.h != nil {
		if sum := o.h.Sum(nil); len(fi.Sha256) > 0 && !bytes.Equal(sum, fi.Sha256) {
			return rpc.Errorf(rpc.Internal, "file checksum mismatch: committed %x, read %x", fi.Sha256, sum)
		}
	}
	return nil
}

// frames keeps the frames of one chunk as a fetch hands them over, each
// in the pieces it arrived in (a chunkstream.PieceWriter), until the
// chunk is verified whole; then they are written out and freed.
type frames struct {
	data []mem.BufferSlice
}

var _ chunkstream.PieceWriter = (*frames)(nil)

func (f *frames) WritePieces(data mem.BufferSlice) error {
	f.data = append(f.data, data)
	return nil
}

// Write keeps a frame in one piece (the fetch gives a PieceWriter its
// frames in pieces; this is for any other caller).
func (f *frames) Write(p []byte) (int, error) {
	f.data = append(f.data, mem.BufferSlice{mem.SliceBuffer(p)})
	return len(p), nil
}

// recycle frees the frames' pieces and empties f.
func (f *frames) recycle() {
	for i, d := range f.data {
		d.Free()
		f.data[i] = nil
	}
	f.data = f.data[:0]
}

// chunkAgain reads chunk index's entry of the chunk map of fi's version
// again, for a new chunk token (or new replicas).
func (c *Client) chunkAgain(ctx context.Context, fi *dfspb.FileInfo, index uint32) (*dfspb.ChunkInfo, error) {
	var page *dfspb.FileInfo
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: fi.Path, FirstChunk: index, PageSize: 1, Version: fi.Version, SessionId: fi.SessionId})
		page = resp.GetFile()
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkFileInfo(page); err != nil {
		return nil, err
	}
	if len(page.Chunks) != 1 || page.Chunks[0].Index != index || page.Version != fi.Version || page.SessionId != fi.SessionId {
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned a malformed page of the chunk map of %s from chunk %d", fi.Path, index)
	}
	return page.Chunks[0], nil
}

// changedOr returns the error of a read of fi that failed with err: when
// the path no longer holds fi's version (it was replaced or deleted, and
// the chunks being read went with it), that the file changed
// (FailedPrecondition), else err.
func (c *Client) changedOr(ctx context.Context, fi *dfspb.FileInfo, err error) error {
	// A page from past the last chunk holds no chunk: only the check,
	// bounded so that a coordinator failing over does not hold up the
	// chunk's error.
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
	defer cancel()
	if cerr := c.pages(ctx, fi.Path, false, fi, fi.ChunkCount, func(*dfspb.FileInfo) error { return nil }); rpc.KindOf(cerr) == rpc.FailedPrecondition {
		return cerr
	}
	return err
}

// checkFileInfo refuses file metadata or a page of its chunk map that
// does not add up, so a broken reply cannot make the client allocate or
// write nonsense: every chunk but the last is a whole chunk, at its
// offset, and the last one ends the file.
func checkFileInfo(fi *dfspb.FileInfo) error {
	if fi == nil || fi.Size < 0 || (len(fi.Sha256) != sha256.Size && len(fi.Sha256) != 0) || fi.ChunkSize <= 0 || fi.ChunkSize > rpc.MaxChunkSize ||
		int64(fi.ChunkCount) != (fi.Size+fi.ChunkSize-1)/fi.ChunkSize {
		return rpc.Errorf(rpc.Internal, "coordinator returned malformed file metadata")
	}
	for _, ch := range fi.Chunks {
		i := ch.Index
		want := fi.ChunkSize
		if i == fi.ChunkCount-1 {
			want = fi.Size - int64(i)*fi.ChunkSize
		}
		if i >= fi.ChunkCount || ch.Offset != int64(i)*fi.ChunkSize || ch.Size != want || len(ch.Digest) != sha256.Size || rpc.CheckFrameSize(ch.FrameSize) != nil {
			return rpc.Errorf(rpc.Internal, "coordinator returned malformed metadata for chunk %d", i)
		}
	}
	return nil
}

// part is what a read wants of one chunk: its frames (nil: the whole
// chunk) and, of the bytes those frames hold, len(dst) bytes from skip on,
// written into dst; the rest are verified and dropped. digests, if set
// with frames, are the chunk's frame digests, verified by an earlier
// fetch (see chunkstream.Download.FrameDigests).
type part struct {
	frames  *chunkstream.FrameRange
	skip    int64
	dst     []byte
	digests [][]byte
	// keep, if set (with no frames, skip nor dst), keeps the whole
	// chunk's frames as they arrive instead of copying them into dst.
	keep *frames
}

// writer returns a writer that fills p.dst from a fetch of p's frames, or
// p.keep emptied; each attempt at the chunk starts with a new one.
func (p part) writer() io.Writer {
	if p.keep != nil {
		p.keep.recycle() // a failed attempt's: the fetch that wrote them is over
		return p.keep
	}
	if p.frames == nil && p.skip == 0 {
		return recycling{chunkstream.SliceWriter(p.dst)} // the whole chunk: it must fit
	}
	return recycling{&window{dst: p.dst, skip: p.skip}}
}

// recycling hands each frame back to the buffer pool (rpc.RecycleFrame)
// once w, which copies what it keeps, has taken it; a frame in pieces is
// written to w a piece at a time, not joined first.
type recycling struct{ w io.Writer }

var _ chunkstream.PieceWriter = recycling{}

func (r recycling) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	rpc.RecycleFrame(p)
	return n, err
}

func (r recycling) WritePieces(data mem.BufferSlice) error {
	defer data.Free()
	for _, p := range data {
		if _, err := r.w.Write(p.ReadOnlyData()); err != nil {
			return err
		}
	}
	return nil
}

// window writes the bytes from offset skip of what it is given into dst,
// as far as dst goes, and drops the others.
type window struct {
	dst  []byte
	skip int64
	pos  int64 // bytes written so far
}

func (w *window) Write(p []byte) (int, error) {
	start := w.pos
	w.pos += int64(len(p))
	lo, hi := max(start, w.skip), min(w.pos, w.skip+int64(len(w.dst)))
	if lo < hi {
		copy(w.dst[lo-w.skip:hi-w.skip], p[lo-start:hi-start])
	}
	return len(p), nil
}

// fetchChunk reads the part p of one chunk from the first replica that
// returns it intact, trying replicas healthy-first and making a few rounds
// with backoff before giving up. A replica that returns bad bytes is
// reported, and one that fails is tried last for a while (see
// nodesFailed). It returns what the fetch verified: the chunk's frame
// digests and digest. A replica that refuses the chunk's token is not
// counted as failing; when all do, the error is rpc.Permission at once,
// and the caller may ask the coordinator for a new token (chunkAgain).
func (c *Client) fetchChunk(ctx context.Context, ch *dfspb.ChunkInfo, p part) (chunkstream.Fetched, error) {
	replicas := make([]placement.Replica, 0, len(ch.Replicas))
	for _, r := range ch.Replicas {
		replicas = append(replicas, placement.Replica{ID: rpc.NodeID(r.NodeId), Addr: r.Addr, State: stateFromProto(r.State)})
	}
	if len(replicas) == 0 {
		return chunkstream.Fetched{}, rpc.Errorf(rpc.Unavailable, "chunk %d (%s) has no replica", ch.Index, ch.ChunkId)
	}
	exp := chunkstream.Expect{ChunkID: rpc.ChunkID(ch.ChunkId), Size: ch.Size, FrameSize: ch.FrameSize, Digest: ch.Digest}
	backoff := rpc.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second}
	var last, lastBad error // the last failure, and the last bad bytes
	reported := map[rpc.NodeID]bool{}
	for round := 0; round < c.cfg.Attempts; round++ {
		if round > 0 {
			if err := rpc.Sleep(ctx, c.clock, backoff.Delay(round)); err != nil {
				return chunkstream.Fetched{}, err
			}
		}
		refused := 0 // replicas that refused the chunk token this round
		for i, r := range c.orderForRead(replicas) {
			if i > 0 {
				c.reading(r.ID, 1) // orderForRead counted the first
			}
			got, err := c.readReplica(ctx, r.Addr, exp, ch.Token, p)
			c.reading(r.ID, -1)
			if err == nil {
				return got, nil
			}
			if ctx.Err() != nil {
				return chunkstream.Fetched{}, ctx.Err()
			}
			last = fmt.Errorf("%s: %w", r.ID.Short(), err)
			if rpc.KindOf(err) == rpc.Permission {
				// Not the node's failure, nor its copy's: the token's.
				c.log.Debug().Err(err).Str("chunk_id", ch.ChunkId).Str("node_id", string(r.ID)).Msg("replica refused the chunk token")
				refused++
				continue
			}
			c.log.Warn().Err(err).Str("chunk_id", ch.ChunkId).Str("node_id", string(r.ID)).Msg("replica failed; trying the next")
			fault := chunkstream.FaultOf(err)
			bad := fault == chunkstream.SourceCorrupt
			if !bad && rpc.KindOf(err) != rpc.Internal {
				// Internal here is what the node said of its own copy
				// (damaged metadata): no sign the node is failing.
				c.nodesFailed(ctx, []string{string(r.ID)}, err)
			}
			// A replica that says it has no such chunk was listed by the
			// coordinator all the same: its copy may be lost.
			missing := fault == chunkstream.SourceMissing
			if bad {
				lastBad = last
			}
			if (bad || missing) && !reported[r.ID] {
				reported[r.ID] = true
				c.reportBadReplica(ctx, exp.ChunkID, r.ID, err, missing)
			}
		}
		if refused == len(replicas) {
			// Every replica refused the chunk token (it expired): asking
			// them again will not help, a new token from the coordinator
			// may (see chunkAgain).
			return chunkstream.Fetched{}, rpc.Errorf(rpc.Permission, "chunk %d (%s): every replica refused the chunk token: %w", ch.Index, ch.ChunkId, last)
		}
	}
	// Bad bytes say more than what a replica answered after it was told
	// about them (it stops serving a copy found corrupt).
	if lastBad != nil {
		last = lastBad
	}
	return chunkstream.Fetched{}, rpc.Errorf(rpc.Unavailable, "chunk %d (%s): no replica returned it intact: %w", ch.Index, ch.ChunkId, last)
}

// readReplica reads the part p of one chunk from the datanode at addr.
// Its error's chunkstream.Fault tells bad bytes (or a size or digest) that
// do not match what was committed from a failure to answer.
func (c *Client) readReplica(ctx context.Context, addr string, exp chunkstream.Expect, token *dfspb.ChunkToken, p part) (chunkstream.Fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ChunkTimeout)
	defer cancel()
	dn, err := c.datanode(addr)
	if err != nil {
		return chunkstream.Fetched{}, err
	}
	if p.frames == nil && p.skip == 0 && exp.Size <= smallRead {
		got, err, ok := c.readSmall(ctx, addr, exp, token, p)
		if ok {
			return got, err
		}
	}
	// From the call to the last frame, a replica that stops answering
	// fails after the progress timeout and the next one is tried.
	return chunkstream.Fetch(ctx, chunkstream.Download{
		Expect:          exp,
		From:            dn,
		Token:           token,
		Peer:            "datanode " + addr,
		ProgressTimeout: c.cfg.ProgressTimeout,
		Heard:           func() time.Time { return c.pool.Heard(addr) },
		Clock:           c.clock,
		Frames:          p.frames,
		FrameDigests:    p.digests,
	}, p.writer())
}

// reportBadReplica tells the coordinator, in the background, that node
// returned bytes of chunk id that fail verification, or (missing) said it
// does not hold the chunk, so that it has the copy checked and replaced.
// It is best effort (see report): a coordinator that cannot take the
// report only costs a debug line.
func (c *Client) reportBadReplica(ctx context.Context, id rpc.ChunkID, node rpc.NodeID, cause error, missing bool) {
	req := &dfspb.ReportBadReplicaRequest{ChunkId: string(id), NodeId: string(node), Reason: reason(cause), Missing: missing}
	c.report(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.ReportBadReplica(ctx, req)
		return err
	}, func(err error) {
		log := c.log.Debug().Str("chunk_id", string(id)).Str("node_id", string(node))
		if err != nil {
			log.Err(err).Msg("could not report a bad replica")
			return
		}
		log.Msg("reported a bad replica")
	})
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
