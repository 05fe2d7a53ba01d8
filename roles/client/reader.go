package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// maxPages bounds the pages of a chunk map a Reader keeps: those around
// the positions read lately, never the whole map of a huge file.
const maxPages = 4

// errPageRead ends a read of the chunk map after its first page.
var errPageRead = errors.New("page read")

// Reader reads one version of a committed file: at any offset (ReadAt,
// safe for concurrent use) or in order (Read, Seek, WriteTo, which are
// not). It reads only the chunks and frames that cover what is asked and
// verifies every frame against the digests recorded at commit, falling
// back to another replica when one fails or returns bad bytes, as Get
// does. Read fetches the next chunks ahead while reads are sequential.
//
// The version read is the one Open found: a file replaced or deleted
// meanwhile fails later reads of chunks that went with it with
// FailedPrecondition; a reader never mixes versions.
type Reader struct {
	c      *Client
	ctx    context.Context // Open's, with its request ID; Close cancels it
	cancel context.CancelFunc
	head   *dfspb.FileInfo // the file's metadata, without chunks: it pins the version read
	closed atomic.Bool

	pagesMu sync.Mutex
	pages   []*dfspb.FileInfo // pages of the chunk map read lately, the most recent last; at most maxPages
	pageLen uint32            // chunks in a page of the chunk map, to align the pages read

	digests *digestCache // the verified frame digests of chunks read lately, by chunk ID

	mu      sync.Mutex // serializes Read, Seek, WriteTo and Close
	off     int64      // the position of Read
	seq     bool       // whether Read continues where the last Read (or Open) left off
	ahead   *readAhead // the chunks being fetched ahead of Read, if any
	sum     hash.Hash  // SHA-256 of the bytes Read returned in order from offset 0
	summed  int64      // bytes in sum
	sumErr  error      // the file checksum mismatch, once found
	checked bool       // whether sum was checked
}

// Open opens the committed file at path for reading: it reads its
// metadata and the first page of its chunk map, and pins the version
// found. ctx carries the request ID of every call the Reader makes, and
// canceling it (or Close) ends the reads in flight. The caller must Close
// the Reader.
func (c *Client) Open(ctx context.Context, path string) (*Reader, error) {
	ctx = rpc.EnsureRequestID(ctx)
	r, err := c.open(ctx, path)
	if err != nil {
		return nil, wrap(ctx, "open", path, err)
	}
	return r, nil
}

func (c *Client) open(ctx context.Context, path string) (*Reader, error) {
	if _, err := rpc.ParsePath(path); err != nil {
		return nil, err
	}
	first, _, err := c.firstPage(ctx, path)
	if err != nil {
		return nil, err
	}
	head := &dfspb.FileInfo{
		Path: first.Path, Size: first.Size, Sha256: first.Sha256, ChunkSize: first.ChunkSize, Replication: first.Replication,
		ModifiedUnixMs: first.ModifiedUnixMs, Version: first.Version, SessionId: first.SessionId, ChunkCount: first.ChunkCount,
		Owner: first.Owner, Group: first.Group, Mode: first.Mode, Metadata: first.Metadata,
	}
	if head.Path == "" {
		head.Path = path
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Reader{c: c, ctx: ctx, cancel: cancel, head: head, seq: true, sum: sha256.New(), digests: newDigestCache(maxDigestBytes)}
	if len(first.Chunks) > 0 {
		r.pages = append(r.pages, first)
		if uint32(len(first.Chunks)) < head.ChunkCount {
			r.pageLen = uint32(len(first.Chunks))
		}
	}
	return r, nil
}

// Path returns the file's path.
func (r *Reader) Path() string { return r.head.Path }

// Size returns the file's size in bytes.
func (r *Reader) Size() int64 { return r.head.Size }

// ModTime returns when the version read was committed.
func (r *Reader) ModTime() time.Time { return time.UnixMilli(r.head.ModifiedUnixMs) }

// Version returns the version of the file being read.
func (r *Reader) Version() uint64 { return r.head.Version }

// Info returns the metadata of the version being read (as Stat's,
// without the chunk map), so a reader needs no Stat of its own: what it
// says and what it reads are the same version.
func (r *Reader) Info() *FileInfo { return fromFileInfo(r.head) }

// SHA256 returns the SHA-256 of the whole file, recorded at commit; nil
// for a file made by Concat, which has none.
func (r *Reader) SHA256() []byte { return bytes.Clone(r.head.Sha256) }

// Close ends the reads in flight and the read-ahead, and releases them.
// Later reads fail. It is idempotent.
func (r *Reader) Close() error {
	r.closed.Store(true)
	r.cancel()
	r.mu.Lock()
	r.stopAhead()
	r.mu.Unlock()
	return nil
}

// errClosed is the error of a read from a closed Reader.
func (r *Reader) errClosed() error { return rpc.Errorf(rpc.Canceled, "reader closed") }

// wrap is the client's wrap for a read of r's file.
func (r *Reader) wrap(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return wrap(r.ctx, "read", r.head.Path, err)
}

// ReadAt reads len(p) bytes at offset off, as io.ReaderAt says: fewer only
// at the end of the file, with io.EOF. It fetches the frames that cover
// the range and nothing more, several chunks at once; p's bytes are
// undefined when it fails. It is safe for concurrent use, with Read too.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.readAt(p, off)
	return n, r.wrap(err)
}

func (r *Reader) readAt(p []byte, off int64) (int, error) {
	switch {
	case r.closed.Load():
		return 0, r.errClosed()
	case off < 0:
		return 0, rpc.Errorf(rpc.Invalid, "negative offset %d", off)
	case off >= r.head.Size:
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.head.Size)
	n := int(end - off)
	cs := r.head.ChunkSize
	first, last := off/cs, (end-1)/cs
	// read reads the bytes of chunk i that p wants.
	read := func(ctx context.Context, i int64) error {
		lo, hi := max(off, i*cs), min(end, (i+1)*cs)
		return r.readRange(ctx, uint32(i), lo-i*cs, p[lo-off:hi-off])
	}
	if first == last {
		if err := read(r.ctx, first); err != nil {
			return 0, err
		}
	} else {
		// Several chunks: Parallel at once; the first error ends the rest.
		ctx, cancel := context.WithCancel(r.ctx)
		defer cancel()
		var wg sync.WaitGroup
		var once sync.Once
		var failed error
		sem := make(chan struct{}, r.c.cfg.Parallel)
	loop:
		for i := first; i <= last; i++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := read(ctx, i); err != nil {
					once.Do(func() { failed = err; cancel() })
				}
			})
		}
		wg.Wait()
		if failed == nil && r.ctx.Err() != nil {
			failed = rpc.Errorf(rpc.Canceled, "interrupted")
		}
		if failed != nil {
			return 0, failed
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readRange reads len(dst) bytes of chunk i from offset off in the chunk
// into dst, fetching only the frames that hold them, and checking them
// against the chunk's frame digests kept from an earlier read when there
// are some.
func (r *Reader) readRange(ctx context.Context, i uint32, off int64, dst []byte) error {
	return r.readChunk(ctx, i, func(ch *dfspb.ChunkInfo) part {
		fs := ch.FrameSize
		fr := &chunkstream.FrameRange{First: int(off / fs), Last: int((off + int64(len(dst)) - 1) / fs)}
		if fr.First == 0 && int64(len(dst)) == ch.Size {
			return part{dst: dst} // the whole chunk
		}
		return part{frames: fr, skip: off - int64(fr.First)*fs, dst: dst, digests: r.digests.get(ch.ChunkId)}
	})
}

// readChunk reads the part of chunk i that want names (given the chunk's
// entry in the chunk map) with fetchChunk, and keeps the frame digests a
// read of some frames verified. When every replica failed, a read of a
// file that changed meanwhile fails with FailedPrecondition; otherwise the
// chunk map's page is read again, and if it lists other replicas now (the
// chunk was repaired or moved), or every replica refused the chunk token
// (it expired while the reader was open), they are tried once with the
// new page's token; if they fail too, the error is the first one.
func (r *Reader) readChunk(ctx context.Context, i uint32, want func(*dfspb.ChunkInfo) part) error {
	ch, err := r.chunk(ctx, i, false)
	if err != nil {
		return err
	}
	p := want(ch)
	got, err := r.c.fetchChunk(ctx, ch, p)
	if err == nil {
		r.learn(ch, p, got)
	}
	if err == nil || ctx.Err() != nil {
		return r.interrupted(ctx, err)
	}
	if err = r.c.changedOr(ctx, r.head, err); rpc.KindOf(err) == rpc.FailedPrecondition {
		return err
	}
	fresh, ferr := r.chunk(ctx, i, true)
	if ferr != nil || sameReplicas(ch, fresh) && rpc.KindOf(err) != rpc.Permission {
		return err // a refused chunk token is tried once more with a new one
	}
	p = want(fresh)
	got, rerr := r.c.fetchChunk(ctx, fresh, p)
	if rerr != nil {
		// The first failure says more: the copies it found bad are out
		// of service by now, and the retry learns only that.
		return r.interrupted(ctx, err)
	}
	r.learn(fresh, p, got)
	return nil
}

// learn keeps the frame digests a read of some frames of chunk ch
// verified, unless it had them already.
func (r *Reader) learn(ch *dfspb.ChunkInfo, p part, got chunkstream.Fetched) {
	if p.frames != nil && p.digests == nil && got.FrameDigests != nil {
		r.digests.put(ch.ChunkId, got.FrameDigests)
	}
}

// interrupted returns err, or Canceled when ctx ended (by Close, the
// caller's context, or a failed neighbour in the same ReadAt).
func (r *Reader) interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		if r.closed.Load() {
			return r.errClosed()
		}
		return rpc.Errorf(rpc.Canceled, "interrupted")
	}
	return err
}

// sameReplicas reports whether a and b list the same replicas.
func sameReplicas(a, b *dfspb.ChunkInfo) bool {
	return slices.EqualFunc(a.Replicas, b.Replicas, func(x, y *dfspb.ReplicaInfo) bool { return x.NodeId == y.NodeId && x.Addr == y.Addr })
}

// chunk returns chunk i's entry in the chunk map: from a page read lately
// unless fresh, else from a new read of the page that holds it (of the
// version pinned), which is kept in place of the oldest one.
func (r *Reader) chunk(ctx context.Context, i uint32, fresh bool) (*dfspb.ChunkInfo, error) {
	if i >= r.head.ChunkCount {
		return nil, rpc.Errorf(rpc.Internal, "chunk %d of a file of %d chunks", i, r.head.ChunkCount)
	}
	r.pagesMu.Lock()
	for k, p := range slices.Backward(r.pages) {
		if base := p.Chunks[0].Index; i >= base && i-base < uint32(len(p.Chunks)) {
			if fresh {
				r.pages = slices.Delete(r.pages, k, k+1)
				break
			}
			r.pages = append(slices.Delete(r.pages, k, k+1), p)
			r.pagesMu.Unlock()
			return p.Chunks[i-base], nil
		}
	}
	r.pagesMu.Unlock()

	first := i
	if r.pageLen > 0 {
		first = i / r.pageLen * r.pageLen
	}
	var page *dfspb.FileInfo
	err := r.c.pages(ctx, r.head.Path, true, r.head, first, func(p *dfspb.FileInfo) error {
		page = p
		return errPageRead
	})
	if err != nil && !errors.Is(err, errPageRead) {
		return nil, r.interrupted(ctx, err)
	}
	if len(page.Chunks) == 0 || i < page.Chunks[0].Index || i-page.Chunks[0].Index >= uint32(len(page.Chunks)) {
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned a page of the chunk map of %s without chunk %d", r.head.Path, i)
	}
	r.pagesMu.Lock()
	r.pages = append(r.pages, page)
	if len(r.pages) > maxPages {
		r.pages = slices.Delete(r.pages, 0, len(r.pages)-maxPages)
	}
	r.pagesMu.Unlock()
	return page.Chunks[i-page.Chunks[0].Index], nil
}

// Read reads up to len(p) bytes from the current position, as io.Reader
// says. While reads are sequential it fetches the chunks ahead, at most
// Config.Parallel chunks in memory at once; the first read after a Seek
// fetches only the frames it needs. When the file was read whole and in
// order from offset 0, the last Read checks the file's SHA-256 and
// returns an error instead of io.EOF if it does not match.
func (r *Reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.read(p)
	return n, r.wrap(err)
}

func (r *Reader) read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, r.errClosed()
	}
	if r.off >= r.head.Size {
		return 0, r.atEOF()
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !r.seq {
		// The first read after a Seek: only what it asks for.
		n, err := r.readAt(p, r.off)
		if err != nil && err != io.EOF {
			return 0, err
		}
		r.advance(p[:n])
		r.seq = true
		return n, nil
	}
	data, err := r.next()
	if err != nil {
		return 0, err
	}
	n := copy(p, data)
	r.advance(p[:n])
	return n, nil
}

// WriteTo writes the file from the current position to its end to w, as
// io.WriterTo says, fetching the chunks ahead as Read does; the bytes are
// written from the read-ahead buffers, with no copy. It checks the file's
// SHA-256 as Read does when the file was read whole and in order.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.writeTo(w)
	return n, r.wrap(err)
}

func (r *Reader) writeTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.closed.Load() {
			return total, r.errClosed()
		}
		if r.off >= r.head.Size {
			if err := r.atEOF(); err != io.EOF {
				return total, err
			}
			return total, nil
		}
		data, err := r.next()
		if err != nil {
			return total, err
		}
		n, werr := w.Write(data)
		r.advance(data[:n])
		total += int64(n)
		switch {
		case werr != nil:
			return total, rpc.Errorf(rpc.Internal, "write output: %w", werr)
		case n < len(data):
			return total, rpc.Errorf(rpc.Internal, "write output: %w", io.ErrShortWrite)
		}
	}
}

// advance moves the position past data, just read there, and adds it to
// the file's checksum when it continues the bytes summed.
func (r *Reader) advance(data []byte) {
	if r.off == r.summed && !r.checked {
		r.sum.Write(data)
		r.summed += int64(len(data))
	}
	r.off += int64(len(data))
}

// atEOF is what a read at or past the end returns: io.EOF, or the error
// of a file checksum that does not match once every byte was summed.
func (r *Reader) atEOF() error {
	if r.summed == r.head.Size && !r.checked {
		r.checked = true
		if got := r.sum.Sum(nil); len(r.head.Sha256) > 0 && !bytes.Equal(got, r.head.Sha256) {
			r.sumErr = rpc.Errorf(rpc.Internal, "file checksum mismatch: committed %x, read %x", r.head.Sha256, got)
		}
	}
	if r.sumErr != nil {
		return r.sumErr
	}
	return io.EOF
}

// Seek sets the position of the next Read or WriteTo, as io.Seeker says;
// a position past the end reads io.EOF. Moving the position stops the
// read-ahead.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var to int64
	switch whence {
	case io.SeekStart:
		to = offset
	case io.SeekCurrent:
		to = r.off + offset
	case io.SeekEnd:
		to = r.head.Size + offset
	default:
		return r.off, r.wrap(rpc.Errorf(rpc.Invalid, "seek: whence %d is not io.SeekStart, io.SeekCurrent or io.SeekEnd", whence))
	}
	if to < 0 {
		return r.off, r.wrap(rpc.Errorf(rpc.Invalid, "seek to negative offset %d", to))
	}
	if to != r.off {
		r.stopAhead()
		r.off, r.seq = to, false
	}
	return to, nil
}

// readAhead fetches the chunks of a file in order, from a position to the
// end, ahead of the Reader's Read: at most Parallel chunks in memory, the
// one being read included.
type readAhead struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	results chan chan span // in file order; closed after the last chunk
	bufs    chan []byte    // free chunk buffers

	cur    span   // the span being read
	curBuf []byte // cur's buffer, handed back when cur is done
}

// span is bytes of the file fetched by the read-ahead, at their offset.
type span struct {
	data []byte
	off  int64
	err  error
}

// next returns the bytes from the current position on that the
// read-ahead holds, starting it if it is not running; it waits for them.
func (r *Reader) next() ([]byte, error) {
	if r.ahead == nil {
		r.startAhead()
	}
	ra := r.ahead
	for r.off >= ra.cur.off+int64(len(ra.cur.data)) || r.off < ra.cur.off {
		if ra.curBuf != nil {
			ra.bufs <- ra.curBuf[:0] // never blocks: it came from there
			ra.curBuf, ra.cur = nil, span{}
		}
		var res chan span
		var ok bool
		select {
		case res, ok = <-ra.results:
		case <-r.ctx.Done():
			return nil, r.interrupted(r.ctx, r.ctx.Err())
		}
		if !ok {
			return nil, rpc.Errorf(rpc.Internal, "read-ahead ended at %d of %d bytes", r.off, r.head.Size)
		}
		var s span
		select {
		case s = <-res:
		case <-r.ctx.Done():
			return nil, r.interrupted(r.ctx, r.ctx.Err())
		}
		if s.err != nil {
			r.stopAhead() // the next Read starts again from its position
			return nil, s.err
		}
		ra.cur, ra.curBuf = s, s.data
	}
	return ra.cur.data[r.off-ra.cur.off:], nil
}

// startAhead starts fetching the chunks from the current position to the
// end of the file: the first one from the frame that holds the position.
func (r *Reader) startAhead() {
	ctx, cancel := context.WithCancel(r.ctx)
	par := r.c.cfg.Parallel
	ra := &readAhead{cancel: cancel, results: make(chan chan span, par), bufs: make(chan []byte, par)}
	for range par {
		ra.bufs <- nil
	}
	from := r.off
	ra.wg.Go(func() {
		defer close(ra.results)
		for i := uint32(from / r.head.ChunkSize); i < r.head.ChunkCount; i++ {
			var buf []byte
			select {
			case buf = <-ra.bufs:
			case <-ctx.Done():
				return
			}
			res := make(chan span, 1)
			ch, err := r.chunk(ctx, i, false)
			if err != nil {
				res <- span{err: err}
			} else {
				// The first chunk from the frame that holds the position.
				skip := max(from-ch.Offset, 0) / ch.FrameSize * ch.FrameSize
				n := ch.Size - skip
				if int64(cap(buf)) < n {
					buf = make([]byte, ch.Size)
				}
				data := buf[:n]
				ra.wg.Go(func() {
					err := r.readRange(ctx, i, skip, data)
					res <- span{data: data, off: ch.Offset + skip, err: err}
				})
			}
			select {
			case ra.results <- res:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	})
	r.ahead = ra
}

// stopAhead stops the read-ahead, if any, and waits for its fetches to
// end.
func (r *Reader) stopAhead() {
	if r.ahead == nil {
		return
	}
	r.ahead.cancel()
	r.ahead.wg.Wait()
	r.ahead = nil
}

var (
	_ io.ReadSeekCloser = (*Reader)(nil)
	_ io.ReaderAt       = (*Reader)(nil)
	_ io.WriterTo       = (*Reader)(nil)
)
