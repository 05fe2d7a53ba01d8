package client

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// smallRead is the largest chunk a whole-chunk read asks a datanode for
// with ReadChunks, together with the client's other small reads from that
// node, instead of with a download stream of its own: a stream costs two
// goroutines, its HTTP/2 framing and a scheduling round per chunk, which
// for a 4 KiB chunk is most of a read's CPU.
const smallRead = 256 << 10

// readCalls is how many ReadChunks calls a client has in flight to one
// datanode (see batcher). One made larger calls and no fewer CPU cycles
// in the bench; a second call lets a read go at once more often, where
// round trips, not the CPU, bound a client.
const readCalls = 2

// errOlder is the error of a call a server does not have: it is of an
// earlier release (a cluster in a rolling upgrade). The client then does
// what the call does for it the way it did before the call was added.
var errOlder = errors.New("the server has no such call: it is of an earlier release")

// older returns errOlder for a call's error that says the server does
// not have the call, else err.
func older(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return errOlder
	}
	return err
}

// newSmallReads returns the batcher of c's small chunk reads, keyed by
// the datanode's address. A call fails as a stream would: when nothing
// moves on the connection to the node for the progress timeout (a node
// that is slow, or busy with other calls, is waited for), and at the
// latest after the chunk timeout.
func (c *Client) newSmallReads() *batcher[*dfspb.ReadChunk, *dfspb.ChunkRead] {
	return &batcher[*dfspb.ReadChunk, *dfspb.ChunkRead]{
		calls:    readCalls,
		maxItems: rpc.MaxReadChunks,
		maxBytes: rpc.MaxReadChunksBytes,
		send: func(ctx context.Context, addr string, chunks []*dfspb.ReadChunk) ([]*dfspb.ChunkRead, error) {
			dn, err := c.datanode(addr)
			if err != nil {
				return nil, err
			}
			ctx, wd, done := c.nodeCall(ctx, addr)
			defer done()
			resp, err := dn.ReadChunks(ctx, &dfspb.ReadChunksRequest{Chunks: chunks})
			if werr := wd.Err(); err != nil && werr != nil {
				err = werr
			}
			return resp.GetChunks(), older(err)
		},
	}
}

// nodeCall bounds a call for many small chunks to the datanode at addr
// as a stream is bounded: the returned ctx ends once nothing has moved on
// the connection to the node for the progress timeout (a node that is
// slow, or busy with other calls, is waited for), and at the latest after
// the chunk timeout. The caller calls done once the call is over.
func (c *Client) nodeCall(ctx context.Context, addr string) (_ context.Context, _ *chunkstream.Watchdog, done func()) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ChunkTimeout)
	ctx, wd := chunkstream.NewWatchdog(ctx, c.clock, c.cfg.ProgressTimeout, "datanode "+addr)
	wd.HeardFrom(func() time.Time { return c.pool.Heard(addr) })
	return ctx, wd, func() { wd.Stop(); cancel() }
}

// readSmall reads a small chunk whole with the client's other small reads
// from the datanode at addr (see smallReads), and verifies it as Fetch
// would. ok is false when the node could not answer it that way (it has
// no ReadChunks, or its reply had no room for the chunk): the chunk is
// then streamed.
func (c *Client) readSmall(ctx context.Context, addr string, exp chunkstream.Expect, token *dfspb.ChunkToken, p part) (got chunkstream.Fetched, err error, ok bool) {
	read, err := c.smallReads.do(ctx, addr, &dfspb.ReadChunk{ChunkId: string(exp.ChunkID), Token: token}, exp.Size)
	if errors.Is(err, errOlder) {
		return chunkstream.Fetched{}, nil, false
	}
	if err != nil {
		if ctx.Err() != nil {
			return chunkstream.Fetched{}, ctx.Err(), true
		}
		// The call's failure is each of its chunks'.
		code, msg := rpc.CodeOf(err)
		read = &dfspb.ChunkRead{Code: code, Message: msg}
	}
	got, err = chunkstream.Take(exp, read, p.writer())
	if rpc.KindOf(err) == rpc.ResourceExhausted && chunkstream.FaultOf(err) != chunkstream.WriterFailed {
		return chunkstream.Fetched{}, nil, false
	}
	return got, err, true
}

// headCalls is how many DownloadFiles calls a client has in flight for
// one user (see batcher).
const headCalls = 2

// newHeads returns the batcher of the first pages of the chunk maps of
// files c reads, keyed by the user the client acts for (see ActingAs):
// a call carries the first item's context, and with it whom the
// coordinator checks.
func (c *Client) newHeads() *batcher[*dfspb.DownloadFileRequest, *dfspb.FileDownload] {
	return &batcher[*dfspb.DownloadFileRequest, *dfspb.FileDownload]{
		calls:    headCalls,
		maxItems: rpc.MaxDownloadFiles,
		send: func(ctx context.Context, _ string, files []*dfspb.DownloadFileRequest) ([]*dfspb.FileDownload, error) {
			var resp *dfspb.DownloadFilesResponse
			err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
				var err error
				resp, err = cc.DownloadFiles(ctx, &dfspb.DownloadFilesRequest{Files: files})
				return older(err)
			})
			return resp.GetFiles(), err
		},
	}
}

// firstPage reads the first page of the chunk map of the file at path to
// download it (see page), with the client's other such reads for the
// same user (see newHeads): a page of at most rpc.MaxDownloadFilesPage
// chunks (and PageSize), and the index of the chunk after it.
func (c *Client) firstPage(ctx context.Context, path string) (*dfspb.FileInfo, uint32, error) {
	key := ""
	if user, ok := ctx.Value(actingAsKey{}).(string); ok {
		key = "as " + user
	}
	size := uint32(rpc.MaxDownloadFilesPage)
	if c.cfg.PageSize > 0 {
		size = min(size, uint32(c.cfg.PageSize))
	}
	d, err := c.heads.do(ctx, key, &dfspb.DownloadFileRequest{Path: path, PageSize: size}, 0)
	if errors.Is(err, errOlder) || d.GetNotServing() {
		// An older coordinator; or one that cannot serve this file yet,
		// whose NotServing DownloadFile waits out (rpc.Leader).
		return c.page(ctx, path, true, nil, 0)
	}
	if err == nil {
		err = rpc.FromCode(d.GetCode(), d.GetMessage())
	}
	if err != nil {
		return nil, 0, err
	}
	return checkPage(path, nil, 0, d.GetDownload().GetFile(), d.GetDownload().GetNextChunk())
}
