package client_test

// The put of a file of one chunk across a coordinator that lost its
// upload session (its session is never recorded, see upload.finish): the
// client puts the file again only when no confirm can have committed it.
// A proxy between the client and a real coordinator changes the answers
// of the calls as a restarted coordinator, a lost reply or a slow commit
// would.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/internal/grpctest"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// faultFunc answers the nth call (from 1) of method in place of the real
// coordinator; forward makes the call there. A nil answer and error
// forwards the call.
type faultFunc func(ctx context.Context, method string, n int, req proto.Message, forward func(context.Context) (proto.Message, error)) (proto.Message, error)

// proxyCoordinator forwards the calls of a put to a real coordinator,
// counting them, and lets fault answer in its place.
type proxyCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	real  dfspb.CoordinatorClient
	fault faultFunc

	mu    sync.Mutex
	calls map[string]int
}

// count returns how many calls of method the proxy got.
func (p *proxyCoordinator) count(method string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[method]
}

func relay[Req, Resp proto.Message](p *proxyCoordinator, ctx context.Context, method string, req Req,
	call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	p.mu.Lock()
	p.calls[method]++
	n := p.calls[method]
	p.mu.Unlock()
	var zero Resp
	if p.fault != nil {
		resp, err := p.fault(ctx, method, n, req, func(ctx context.Context) (proto.Message, error) { return call(ctx, req) })
		if err != nil {
			return zero, rpc.ToStatus(err)
		}
		if resp != nil {
			return resp.(Resp), nil
		}
	}
	return call(ctx, req)
}

func (p *proxyCoordinator) UploadFile(ctx context.Context, req *dfspb.UploadFileRequest) (*dfspb.UploadFileResponse, error) {
	return relay(p, ctx, "UploadFile", req, p.real.UploadFile)
}

func (p *proxyCoordinator) AllocateChunk(ctx context.Context, req *dfspb.AllocateChunkRequest) (*dfspb.AllocateChunkResponse, error) {
	return relay(p, ctx, "AllocateChunk", req, p.real.AllocateChunk)
}

func (p *proxyCoordinator) UploadReceipts(ctx context.Context, req *dfspb.UploadReceiptsRequest) (*dfspb.UploadReceiptsResponse, error) {
	return relay(p, ctx, "UploadReceipts", req, p.real.UploadReceipts)
}

func (p *proxyCoordinator) ConfirmUpload(ctx context.Context, req *dfspb.ConfirmUploadRequest) (*dfspb.ConfirmUploadResponse, error) {
	return relay(p, ctx, "ConfirmUpload", req, p.real.ConfirmUpload)
}

func (p *proxyCoordinator) AbortUpload(ctx context.Context, req *dfspb.AbortUploadRequest) (*dfspb.AbortUploadResponse, error) {
	return relay(p, ctx, "AbortUpload", req, p.real.AbortUpload)
}

func (p *proxyCoordinator) StatFile(ctx context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	return relay(p, ctx, "StatFile", req, p.real.StatFile)
}

// startProxy starts a proxyCoordinator in front of c's coordinator and
// returns it with a client that reaches the coordinator through it only,
// with calls that time out after 2 s.
func startProxy(t *testing.T, c *roles.Cluster, fault faultFunc) (*proxyCoordinator, *client.Client) {
	t.Helper()
	conn, err := rpc.Dial(c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &proxyCoordinator{real: dfspb.NewCoordinatorClient(conn), fault: fault, calls: map[string]int{}}
	cfg := client.DefaultConfig()
	cfg.Coordinators = []string{grpctest.Serve(t, func(srv *grpc.Server) { dfspb.RegisterCoordinatorServer(srv, p) })}
	cfg.FrameSize = rolestest.FrameSize
	cfg.RPCTimeout = 2 * time.Second
	log := rolestest.Logger(t)
	cfg.Logger = &log
	cl, err := client.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return p, cl
}

// lostSession is the coordinator's answer to a session it does not know.
func lostSession() error {
	return rpc.Errorf(rpc.NotFound, "unknown or expired upload session")
}

// gatedReader reads r, but its first Read at or past offset at closes
// reached and waits until release is closed.
type gatedReader struct {
	r       io.Reader
	at, n   int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGatedReader(data []byte, at int64) *gatedReader {
	return &gatedReader{r: bytes.NewReader(data), at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.n >= g.at {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
	if rest := g.at - g.n; rest > 0 && int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// TestPutAgainOnlyIfUncommitted: a confirm whose reply was lost (the
// client timed out) may have committed the file although a retry finds
// the session gone; the client then does not put the file again, which
// would commit it a second time, over itself or over another writer's
// newer version.
func TestPutAgainOnlyIfUncommitted(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	direct := rolestest.Client(t, c)
	chunk := rolestest.ChunkSize

	t.Run("committed and replaced since", func(t *testing.T) {
		is := is.New(t)
		data, newer := randomBytes(chunk/3), randomBytes(chunk/4)
		var otherErr error
		p, cl := startProxy(t, c, func(ctx context.Context, method string, n int, _ proto.Message, forward func(context.Context) (proto.Message, error)) (proto.Message, error) {
			if method != "ConfirmUpload" || n != 1 {
				return nil, nil
			}
			if _, err := forward(ctx); err != nil {
				return nil, err
			}
			// Committed; another writer replaces it before the reply,
			// which never comes.
			_, otherErr = direct.Put(t.Context(), "/lost/replaced", bytes.NewReader(newer), int64(len(newer)), nil)
			<-ctx.Done()
			return nil, ctx.Err()
		})
		_, err := cl.Put(t.Context(), "/lost/replaced", bytes.NewReader(data), int64(len(data)), nil)
		is.NoErr(otherErr)                       // the other writer committed
		is.True(errors.Is(err, rpc.Unavailable)) // the outcome is unknown
		is.True(!errors.Is(err, fs.ErrNotExist)) // not a missing file
		is.Equal(p.count("UploadFile"), 1)       // the file was not put again
		got, fi, err := getBytes(t, direct, "/lost/replaced")
		is.NoErr(err)
		is.Equal(fi.Version, uint64(2))  // ours, then the other writer's
		is.True(bytes.Equal(got, newer)) // whose newer version stays
	})

	t.Run("commit under way when the confirm is retried", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(chunk / 3)
		held := make(chan func(context.Context) (proto.Message, error), 1)
		ready := make(chan struct{})
		var commitErr error
		p, cl := startProxy(t, c, func(ctx context.Context, method string, n int, _ proto.Message, forward func(context.Context) (proto.Message, error)) (proto.Message, error) {
			switch {
			case method == "ConfirmUpload" && n == 1:
				// The commit is slow: the client gives up waiting first.
				<-ctx.Done()
				held <- forward
				close(ready)
				return nil, ctx.Err()
			case method == "ConfirmUpload" && n == 2:
				// The session is out of the coordinator's table while the
				// first confirm commits.
				<-ready
				return nil, lostSession()
			case method == "StatFile":
				select {
				case commit := <-held:
					// The path is read before the commit lands; then it
					// lands.
					resp, err := forward(ctx)
					_, commitErr = commit(t.Context())
					if err != nil {
						return nil, err
					}
					return resp, nil
				default:
				}
			}
			return nil, nil
		})
		fi, err := cl.Put(t.Context(), "/lost/slow", bytes.NewReader(data), int64(len(data)), nil)
		is.NoErr(commitErr)                // the first confirm committed
		is.NoErr(err)                      // and a retried one found it committed
		is.Equal(fi.Version, uint64(1))    // once
		is.Equal(p.count("UploadFile"), 1) // the file was not put again
		got, fi, err := getBytes(t, direct, "/lost/slow")
		is.NoErr(err)
		is.Equal(fi.Version, uint64(1)) // one version
		is.True(bytes.Equal(got, data)) // of what was put
	})
}

// TestPutAgainAfterLostSession: a file of one chunk whose session the
// coordinator lost (it restarted or failed over, and never recorded the
// session) before any confirm could commit it is put again, once, whole,
// with the chunk size it was cut to; progress counts each byte once. A
// file of more chunks is not: it fails with the NotFound.
func TestPutAgainAfterLostSession(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	direct := rolestest.Client(t, c)
	chunk := rolestest.ChunkSize

	// put puts data at path through cl, and returns what progress was
	// told.
	put := func(cl *client.Client, path string, r io.Reader, size int) (*client.FileInfo, int64, error) {
		var moved atomic.Int64
		fi, err := cl.Put(t.Context(), path, r, int64(size), func(n int64) { moved.Add(n) })
		return fi, moved.Load(), err
	}
	// check checks that path holds data, once.
	check := func(t *testing.T, path string, data []byte) {
		t.Helper()
		is := is.New(t)
		got, fi, err := getBytes(t, direct, path)
		is.NoErr(err)
		is.Equal(fi.Version, uint64(1)) // committed once
		is.True(bytes.Equal(got, data)) // with what was put
	}

	t.Run("confirm refused", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(chunk * 3 / 4)
		p, cl := startProxy(t, c, func(_ context.Context, method string, n int, req proto.Message, _ func(context.Context) (proto.Message, error)) (proto.Message, error) {
			switch {
			case method == "ConfirmUpload" && n == 1:
				return nil, lostSession()
			case method == "UploadFile" && n == 2:
				// The coordinator now running has a smaller default chunk
				// size.
				if r := req.(*dfspb.UploadFileRequest); r.ChunkSize == 0 {
					r.ChunkSize = int64(chunk / 2)
				}
			}
			return nil, nil
		})
		_, moved, err := put(cl, "/again/confirm", bytes.NewReader(data), len(data))
		is.NoErr(err)                      // put again, with the chunk size of the first try
		is.Equal(p.count("UploadFile"), 2) // once more
		is.Equal(moved, int64(len(data)))  // the bytes stored twice counted once
		check(t, "/again/confirm", data)
	})

	t.Run("placement refused", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(chunk / 2)
		p, cl := startProxy(t, c, func(ctx context.Context, method string, n int, req proto.Message, forward func(context.Context) (proto.Message, error)) (proto.Message, error) {
			switch {
			case method == "UploadFile" && n == 1:
				// Without the plan, the client asks for the chunk's
				// placement, which the coordinator refuses.
				resp, err := forward(ctx)
				if err != nil {
					return nil, err
				}
				resp.(*dfspb.UploadFileResponse).Chunks = nil
				return resp, nil
			case method == "AllocateChunk" && n == 1:
				return nil, lostSession()
			}
			return nil, nil
		})
		_, moved, err := put(cl, "/again/placement", bytes.NewReader(data), len(data))
		is.NoErr(err)                      // put again
		is.Equal(p.count("UploadFile"), 2) // once more
		is.Equal(moved, int64(len(data)))  // progress reaches the whole file, though the first try stored nothing
		check(t, "/again/placement", data)
	})

	// refuseReceipts returns a fault that shortens the first session's
	// timeout, so that the client records receipts every 10 ms, and
	// refuses its receipts once r waits at its gate, releasing it.
	refuseReceipts := func(r *gatedReader) faultFunc {
		var first atomic.Pointer[string]
		var once sync.Once
		return func(ctx context.Context, method string, n int, req proto.Message, forward func(context.Context) (proto.Message, error)) (proto.Message, error) {
			switch {
			case method == "UploadFile" && n == 1:
				resp, err := forward(ctx)
				if err != nil {
					return nil, err
				}
				open := resp.(*dfspb.UploadFileResponse)
				open.SessionTimeoutMs = 40
				first.Store(&open.SessionId)
				return open, nil
			case method == "UploadReceipts":
				if id := first.Load(); id == nil || req.(*dfspb.UploadReceiptsRequest).SessionId != *id {
					return nil, nil
				}
				select {
				case <-r.reached:
					once.Do(func() { close(r.release) })
					return nil, lostSession()
				default:
				}
			}
			return nil, nil
		}
	}

	t.Run("receipts refused while the input is read", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(chunk / 2)
		r := newGatedReader(data, 0)
		p, cl := startProxy(t, c, refuseReceipts(r))
		_, moved, err := put(cl, "/again/reading", r, len(data))
		is.NoErr(err)                      // put again, once the input was read
		is.Equal(p.count("UploadFile"), 2) // once more
		is.Equal(moved, int64(len(data)))  // counted once
		check(t, "/again/reading", data)
	})

	t.Run("file of two chunks", func(t *testing.T) {
		is := is.New(t)
		data := randomBytes(chunk + chunk/2)
		r := newGatedReader(data, int64(chunk))
		p, cl := startProxy(t, c, refuseReceipts(r))
		_, _, err := put(cl, "/again/two", r, len(data))
		is.True(errors.Is(err, rpc.NotFound)) // the session is lost
		is.Equal(p.count("UploadFile"), 1)    // and the file not put again
		_, err = direct.Stat(t.Context(), "/again/two")
		is.True(errors.Is(err, fs.ErrNotExist)) // nothing committed
	})
}
