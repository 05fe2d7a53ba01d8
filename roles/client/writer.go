package client

import (
	"context"
	"maps"

	"github.com/dfs-project/dfs/rpc"
)

// CreateOptions are the choices of Create. The zero value, like nil,
// takes the client's Config for the chunk size and replication.
type CreateOptions struct {
	// ChunkSize for the file; 0 takes Config.ChunkSize (and so perhaps
	// the coordinator's default).
	ChunkSize int64
	// Replication for the file; 0 takes Config.Replication.
	Replication int
	// IfNotExist commits only if path holds no file when the file
	// commits (else Exists, errors.Is(err, fs.ErrExist)); the coordinator
	// checks it as the upload opens too.
	IfNotExist bool
	// IfVersion, when not 0, commits only over that version of path
	// (else FailedPrecondition); checked as the upload opens too.
	IfVersion uint64
	// Size, when more than 0, is the file's exact length: the
	// coordinator plans the chunks up front, and a Writer given more or
	// fewer bytes fails. 0 or -1 is unknown.
	Size int64
	// Progress is told how many more bytes reached the datanodes; it is
	// called from the Writer's goroutines, and may be nil.
	Progress Progress
	// Metadata is stored with the file when it commits (a content type,
	// an S3 ETag, user metadata; Stat and List return it): keys and
	// values of UTF-8 without control characters, at most 4 KiB in all.
	// Writer.SetMetadata replaces it before Close.
	Metadata map[string]string
}

// Writer writes a new version of a file: the bytes written fill a chunk,
// which goes to its datanodes in the background while the next one
// fills, at most Config.Parallel chunks at once, so a Writer holds at
// most Parallel+1 chunks in memory whatever the file's size. Nothing is
// visible at the path until Close commits the file, atomically; a
// failed Write, a failed Close, Abort, or the end of Create's context
// aborts the upload and leaves the previous version of the path as it
// was. A Writer is not safe for concurrent use; the Client it came from
// is.
type Writer struct {
	u    *upload
	ctx  context.Context // Create's, with the request ID
	path string
	cur  []byte // the chunk being filled
	done bool   // committed, aborted or failed
	err  error  // why it failed, or errClosed
	info *FileInfo
}

// Create opens an upload of a new version of the file at path and
// returns a Writer for its bytes; opts may be nil. The upload lives as
// long as ctx: a canceled ctx aborts it. The caller must Close (or Abort)
// the Writer. A path that is a directory, or below a file, fails with
// Exists; an IfNotExist or IfVersion that does not hold fails as the
// upload opens, with Exists or FailedPrecondition.
func (c *Client) Create(ctx context.Context, path string, opts *CreateOptions) (*Writer, error) {
	ctx = rpc.EnsureRequestID(ctx)
	o := uploadOptions{chunkSize: c.cfg.ChunkSize, replication: c.cfg.Replication}
	size := int64(-1)
	if opts != nil {
		if opts.ChunkSize != 0 {
			o.chunkSize = opts.ChunkSize
		}
		if opts.Replication != 0 {
			o.replication = opts.Replication
		}
		o.ifNotExist, o.ifVersion, o.progress = opts.IfNotExist, opts.IfVersion, opts.Progress
		o.metadata = maps.Clone(opts.Metadata)
		if opts.Size > 0 {
			size = opts.Size
		}
	}
	u, err := c.startUpload(ctx, path, size, o)
	if err != nil {
		return nil, wrap(ctx, "create", path, err)
	}
	return &Writer{u: u, ctx: ctx, path: path}, nil
}

// SetMetadata replaces the metadata Close commits with the file (see
// CreateOptions.Metadata), for what is known only once the bytes are
// written, such as a digest of them. Bad metadata fails Close.
func (w *Writer) SetMetadata(md map[string]string) {
	w.u.st.metadata = maps.Clone(md)
}

// Write writes p to the file. It returns once p is copied into chunk
// buffers, waiting only for a free buffer; a chunk that failed to reach
// its datanodes (after its retries) fails a later Write or Close. After
// an error the upload is aborted, and every later call fails the same.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		if w.err == nil {
			return 0, wrap(w.ctx, "create", w.path, errClosed)
		}
		return 0, w.err
	}
	n := 0
	chunk := int(w.u.st.chunkSize)
	for len(p) > 0 {
		if w.cur == nil {
			buf, err := w.u.buffer()
			if err != nil {
				return n, w.fail(err)
			}
			w.cur = buf[:0]
		}
		k := min(len(p), chunk-len(w.cur))
		if len(w.cur)+k > cap(w.cur) {
			// Grow to what is needed, by doubling, up to a chunk: a small
			// file takes a small buffer. With the file's size known, at
			// once to what the chunk will hold: no buffer grown and
			// dropped on the way.
			want := max(2*cap(w.cur), len(w.cur)+k, 64<<10)
			if w.u.size >= 0 {
				want = max(want, int(w.u.size-w.u.total))
			}
			grown := make([]byte, len(w.cur), min(chunk, want))
			copy(grown, w.cur)
			w.cur = grown
		}
		w.cur = append(w.cur, p[:k]...)
		p, n = p[k:], n+k
		if len(w.cur) == chunk || (w.u.size >= 0 && w.u.total+int64(len(w.cur)) > w.u.size) {
			if err := w.u.submit(w.cur, len(w.cur)); err != nil {
				return n, w.fail(err)
			}
			w.cur = nil
		}
	}
	return n, nil
}

// fail aborts the upload for err at once (the chunks in flight are
// canceled) and returns the error every later call returns.
func (w *Writer) fail(err error) error {
	w.done = true
	w.err = wrap(w.ctx, "create", w.path, w.u.abort(err))
	return w.err
}

// errClosed is what a Writer returns once closed or aborted.
var errClosed = rpc.Errorf(rpc.Invalid, "writer already closed")

// Close sends the last chunk, waits for every chunk to be stored, and
// commits the file; after it, Info describes the committed file. On any
// failure the upload is aborted and the previous version stays. A second
// Close returns what the first returned.
func (w *Writer) Close() error {
	if w.done {
		if w.info != nil {
			return nil
		}
		return w.err
	}
	if len(w.cur) > 0 {
		if err := w.u.submit(w.cur, len(w.cur)); err != nil {
			return w.fail(err)
		}
		w.cur = nil
	}
	w.done = true
	fi, err := w.u.finish(nil)
	if err != nil {
		w.err = wrap(w.ctx, "create", w.path, err)
		return w.err
	}
	w.info = fromFileInfo(fi)
	return nil
}

// Abort abandons the upload: the chunks sent are collected, and the
// path keeps its previous version. Abort after Close does nothing.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.fail(rpc.Errorf(rpc.Canceled, "aborted; nothing was committed"))
	w.err = wrap(w.ctx, "create", w.path, errClosed)
}

// Info returns the committed file's metadata after a successful Close,
// with its chunk map (see Put); nil before, or after a failure.
func (w *Writer) Info() *FileInfo {
	return w.info
}
