// Package client is the dfs SDK, on which the command line (roles/cli) is
// built. A Client holds no server state: every call asks the coordinator,
// then moves chunk bytes directly to or from the datanodes.
//
// Writing: Create returns a Writer that streams a file's chunks to the
// datanodes as they fill and commits the file atomically on Close; Put
// stores a whole io.Reader. Reading: Open returns a Reader (ReadAt, Read,
// Seek) that fetches only the chunks and frames a range needs; Get
// writes a whole file to an io.Writer. The namespace: Stat, List (paged, as an iterator), Walk,
// Mkdir, MkdirAll, Rename, Copy (server-side, no chunk byte moves),
// Remove, RemoveAll and Usage. FS adapts a Client to io/fs.
//
// Errors carry the operation, the path and the request ID, and match the
// standard library's: errors.Is(err, fs.ErrNotExist), fs.ErrExist,
// fs.ErrPermission and fs.ErrInvalid hold for the matching kinds (see
// rpc.KindOf for the rest). A Client is safe for concurrent use by many
// goroutines; it keeps one pool of connections.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Config is a client's configuration. New takes a zero field (but
// Coordinators) as its default from DefaultConfig, so
// Config{Coordinators: addrs} alone is a whole configuration.
type Config struct {
	// Coordinators are the coordinator addresses, tried in order.
	Coordinators []string
	// ChunkSize for new files; 0 uses the coordinator's default.
	ChunkSize int64
	// FrameSize is the size of each frame of a chunk stream.
	FrameSize int64
	// Replication for new files; 0 uses the coordinator's default.
	Replication int
	// Parallel is how many chunks are in flight at once.
	Parallel int
	// Window is the unacknowledged bytes per chunk stream.
	Window int64
	// RPCTimeout bounds each unary call.
	RPCTimeout time.Duration
	// FailoverTimeout bounds how long a call keeps retrying coordinators
	// that are alive but cannot serve yet (electing a leader, safe mode).
	FailoverTimeout time.Duration
	// ChunkTimeout bounds moving one chunk to or from a datanode.
	ChunkTimeout time.Duration
	// ProgressTimeout fails a chunk stream whose datanode shows no
	// progress (no ack, no frame) for this long, so a paused or cut-off
	// node costs one timeout: the chunk is placed elsewhere, or read from
	// another replica, and the node is reported to the coordinator.
	ProgressTimeout time.Duration
	// Attempts is how many placements a chunk of a put gets, and how many
	// rounds over the replicas a get makes, before giving up.
	Attempts int
	// Clock tells the time and makes the timers; nil is the real clock
	// (tests pass a fake one).
	Clock clockwork.Clock
	// PageSize is how many chunks of a chunk map one call to the
	// coordinator reads (get, stat); 0 takes the coordinator's default,
	// which also caps it.
	PageSize int
	// ReceiptBatch is how many chunk receipts of a put one call to the
	// coordinator records (1 to 1000).
	ReceiptBatch int
	// ListPageSize is how many entries of a listing one call to the
	// coordinator reads, and so the most a listing holds in memory at
	// once (see ListPages); 0 takes the coordinator's default (1,000),
	// the most is 10,000.
	ListPageSize int
	// Logger receives the client's warnings (a chunk placed again) and
	// debug messages; nil logs nothing.
	Logger *zerolog.Logger
	// TLSCA is the PEM file of the CA that signs the cluster's
	// certificates: set, every connection uses TLS and the servers must
	// present certificates of their role signed by it; empty, the client
	// talks plain text (a cluster run with --insecure).
	TLSCA string
	// TLSCert and TLSKey are the client's certificate and key (made by
	// dfs admin cert issue --role client): its common name is the user.
	// Leave them empty to authenticate with Token instead.
	TLSCert, TLSKey string
	// TLSCRL is the CA's revocation list (dfs admin cert revoke), if
	// any: a coordinator or datanode whose certificate it lists is
	// refused when a connection to it is set up. It needs TLSCA.
	TLSCRL string
	// Token is a bearer token (dfs admin token create) sent with every
	// call to a coordinator, and never to a datanode (chunk calls carry
	// chunk tokens); it needs TLSCA.
	Token string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Coordinators:    []string{"127.0.0.1:7000"},
		FrameSize:       1 << 20,
		Parallel:        4,
		Window:          chunkstream.DefaultWindow,
		RPCTimeout:      15 * time.Second,
		FailoverTimeout: 60 * time.Second,
		ChunkTimeout:    2 * time.Minute,
		ProgressTimeout: chunkstream.DefaultProgressTimeout,
		Attempts:        5,
		ReceiptBatch:    maxReceiptBatch,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case len(c.Coordinators) == 0 || c.Coordinators[0] == "":
		return rpc.Errorf(rpc.Invalid, "no coordinator address: set --coordinator or DFS_COORDINATOR")
	case c.ChunkSize != 0 && rpc.CheckChunkSize(c.ChunkSize) != nil:
		return rpc.CheckChunkSize(c.ChunkSize)
	case rpc.CheckFrameSize(c.FrameSize) != nil:
		return rpc.CheckFrameSize(c.FrameSize)
	case c.Replication < 0 || c.Replication > rpc.MaxReplication:
		return rpc.Errorf(rpc.Invalid, "replication %d out of range (1 to %d)", c.Replication, rpc.MaxReplication)
	case c.Parallel < 1 || c.Parallel > 64:
		return rpc.Errorf(rpc.Invalid, "parallel %d out of range (1 to 64)", c.Parallel)
	case c.RPCTimeout <= 0 || c.ChunkTimeout <= 0 || c.ProgressTimeout <= 0 || c.FailoverTimeout < 0:
		return rpc.Errorf(rpc.Invalid, "timeouts must be positive")
	case c.Attempts < 1:
		return rpc.Errorf(rpc.Invalid, "attempts must be at least 1")
	case c.PageSize < 0:
		return rpc.Errorf(rpc.Invalid, "negative page size %d", c.PageSize)
	case c.ListPageSize < 0 || c.ListPageSize > maxListPage:
		return rpc.Errorf(rpc.Invalid, "list page size %d out of range (0 to %d)", c.ListPageSize, maxListPage)
	case c.TLSCA == "" && (c.TLSCert != "" || c.TLSKey != "" || c.TLSCRL != "" || c.Token != ""):
		return rpc.Errorf(rpc.Invalid, "a client certificate, revocation list or token needs --tls-ca (DFS_TLS_CA): the CA that signs the cluster's certificates")
	case c.ReceiptBatch < 1 || c.ReceiptBatch > maxReceiptBatch:
		return rpc.Errorf(rpc.Invalid, "receipt batch %d out of range (1 to %d)", c.ReceiptBatch, maxReceiptBatch)
	}
	return nil
}

// Client talks to one dfs cluster. It is safe for concurrent use.
type Client struct {
	cfg   Config
	log   zerolog.Logger
	clock clockwork.Clock
	pool  *rpc.Pool
	tls   *pki.TLS // nil in plain text

	background sync.WaitGroup // reports of bad replicas still being sent

	coord *rpc.Leader // where calls to the coordinator go

	mu       sync.Mutex
	failing  map[rpc.NodeID]time.Time // datanodes that failed a stream lately, until when reads try them last
	inflight map[rpc.NodeID]int       // chunk reads in flight per datanode (see orderForRead)

	smallReads  *batcher[*dfspb.ReadChunk, *dfspb.ChunkRead]              // see readSmall
	heads       *batcher[*dfspb.DownloadFileRequest, *dfspb.FileDownload] // see firstPage
	smallWrites *batcher[*dfspb.WriteChunk, *dfspb.ChunkWritten]          // see writeSmall
}

// New returns a client of the cluster cfg names. Zero fields of cfg but
// Coordinators take their defaults from DefaultConfig (so a
// FailoverTimeout of 0 is the default, not none); the result must pass
// Validate. New connects
// lazily: it makes no call, and ctx is only checked (a canceled ctx fails
// New). Close the client when done.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, rpc.Errorf(rpc.Canceled, "new client: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = *cfg.Logger
	}
	var opts []grpc.DialOption
	var t *pki.TLS
	if cfg.TLSCA != "" {
		var err error
		t, err = pki.LoadTLS(pki.Files{CA: cfg.TLSCA, Cert: cfg.TLSCert, Key: cfg.TLSKey, CRL: cfg.TLSCRL}, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, t.DialOptions(t.ClientCredentialsFor(pki.CoordinatorsOnly(cfg.Coordinators)))...)
	}
	pool := rpc.NewBoundedPool(rpc.PoolConfig{Clock: cfg.Clock, Options: opts})
	coord := rpc.NewLeader(rpc.LeaderConfig{Addrs: cfg.Coordinators, Timeout: cfg.RPCTimeout, Failover: cfg.FailoverTimeout}, pool, cfg.Clock)
	c := &Client{cfg: cfg, log: log, clock: cfg.Clock, pool: pool, tls: t, coord: coord}
	c.smallReads, c.heads, c.smallWrites = c.newSmallReads(), c.newHeads(), c.newSmallWrites()
	return c, nil
}

// TLS returns the client's TLS files as loaded (nil in plain text): the
// same reloadable material a server holds. Each connection is set up
// with what it loaded last, so a long-running client (a gateway, a
// mount) picks up a reissued certificate or a new revocation list by
// calling its Reload, or by running its Watch; connections already up
// keep theirs.
func (c *Client) TLS() *pki.TLS { return c.tls }

// BearerToken is gRPC per-call credentials that send a bearer token with
// every call, over TLS only.
type BearerToken string

// GetRequestMetadata returns the authorization header.
func (b BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{auth.AuthorizationHeader: "Bearer " + string(b)}, nil
}

// RequireTransportSecurity says a token never travels in plain text.
func (BearerToken) RequireTransportSecurity() bool { return true }

// withDefaults returns cfg with each zero field set to DefaultConfig's.
// Coordinators has no default here (a client names its cluster), and the
// fields whose zero means "the coordinator's default" (ChunkSize,
// Replication, PageSize, ListPageSize) stay as they are.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDefault(&c.FrameSize, d.FrameSize)
	setDefault(&c.Parallel, d.Parallel)
	setDefault(&c.Window, d.Window)
	setDefault(&c.RPCTimeout, d.RPCTimeout)
	setDefault(&c.FailoverTimeout, d.FailoverTimeout)
	setDefault(&c.ChunkTimeout, d.ChunkTimeout)
	setDefault(&c.ProgressTimeout, d.ProgressTimeout)
	setDefault(&c.Attempts, d.Attempts)
	setDefault(&c.ReceiptBatch, d.ReceiptBatch)
	return c
}

// setDefault sets *v to d when it is zero.
func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Close waits (bounded by the reports' own timeout) for background reports
// to the coordinator, then releases the client's connections.
func (c *Client) Close() error {
	c.background.Wait()
	return c.pool.Close()
}

// coordinator calls fn with a client of the leading coordinator, with
// failover (see rpc.Leader.Call): a coordinator that is alive but not
// serving (a standby, or in safe mode) says so, and perhaps who leads:
// the call is retried there, or after a pause, for up to FailoverTimeout.
// An address that cannot be reached moves the call on to the next
// address; when no address can be reached the call fails at once rather
// than waiting out the failover time.
func (c *Client) coordinator(ctx context.Context, fn func(ctx context.Context, cc dfspb.CoordinatorClient) error) error {
	return c.coord.Call(c.authorized(ctx), fn)
}

// authorized returns ctx carrying the bearer token, if the client has
// one, for a call to a coordinator: the token goes to the coordinators
// only, never to a datanode (which could replay it), and only over TLS
// (Validate requires TLSCA with it).
func (c *Client) authorized(ctx context.Context) context.Context {
	if user, ok := ctx.Value(actingAsKey{}).(string); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, auth.ActAsHeader, user)
	}
	if c.cfg.Token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, auth.AuthorizationHeader, "Bearer "+c.cfg.Token)
}

type actingAsKey struct{}

// ActingAs returns ctx for calls made on behalf of user: the coordinator
// checks each call made with it against user's permissions and records
// user as the owner of what it creates. Only a client whose certificate
// has the gateway role (dfs admin cert issue --role gateway) may act for
// another user; anyone else's calls fail with Unauthenticated. Over plain
// text (a cluster run with --insecure) nothing is checked and the user is
// ignored.
func ActingAs(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, actingAsKey{}, user)
}

// datanode returns a client for the datanode at addr.
func (c *Client) datanode(addr string) (dfspb.DataNodeClient, error) {
	conn, err := c.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	return dfspb.NewDataNodeClient(conn), nil
}

// Stat returns a file's metadata and its whole chunk map with the
// replica locations, read from the coordinator a page at a time; for a
// directory it returns IsDir with Path and Modified. A file replaced or
// deleted between two pages fails with FailedPrecondition; a missing path
// with NotFound (errors.Is(err, fs.ErrNotExist)).
func (c *Client) Stat(ctx context.Context, path string) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	fi, err := c.stat(ctx, path)
	if err != nil {
		return nil, wrap(ctx, "stat", path, err)
	}
	return fromFileInfo(fi), nil
}

// stat reads path's metadata and whole chunk map.
func (c *Client) stat(ctx context.Context, path string) (*dfspb.FileInfo, error) {
	var fi *dfspb.FileInfo
	err := c.pages(ctx, path, false, nil, 0, func(page *dfspb.FileInfo) error {
		if fi == nil {
			fi = page
		} else {
			fi.Chunks = append(fi.Chunks, page.Chunks...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fi, nil
}

// head returns a file's metadata with at most one chunk of its map.
func (c *Client) head(ctx context.Context, path string) (*dfspb.FileInfo, error) {
	var fi *dfspb.FileInfo
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.StatFile(ctx, &dfspb.StatFileRequest{Path: path, PageSize: 1})
		if err == nil {
			fi = resp.File
		}
		return err
	})
	return fi, err
}

// complete reads the rest of fi's chunk map, when fi holds only its first
// pages, from the same version.
func (c *Client) complete(ctx context.Context, fi *dfspb.FileInfo) error {
	if uint32(len(fi.Chunks)) >= fi.ChunkCount {
		return nil
	}
	return c.pages(ctx, fi.Path, false, fi, uint32(len(fi.Chunks)), func(page *dfspb.FileInfo) error {
		fi.Chunks = append(fi.Chunks, page.Chunks...)
		return nil
	})
}

// pages calls fn with each page of path's chunk map in order, read with
// DownloadFile (download: every chunk must have a live replica) or
// StatFile, from chunk first. With at nil it reads the current version;
// otherwise version at.Version, failing with FailedPrecondition if the
// path no longer holds it. Every page is checked (checkFileInfo) before fn
// sees it, so a broken reply cannot make the caller allocate or write
// nonsense.
func (c *Client) pages(ctx context.Context, path string, download bool, at *dfspb.FileInfo, first uint32, fn func(*dfspb.FileInfo) error) error {
	head := at
	// Each page moves first forward by at least one chunk, up to the
	// chunk count, itself bounded: the loop ends.
	for {
		page, next, err := c.page(ctx, path, download, head, first)
		if err != nil {
			return err
		}
		if page.GetIsDir() && !download && head == nil {
			return fn(page) // a directory: no chunk map
		}
		if head == nil {
			head = page
		}
		if err := fn(page); err != nil {
			return err
		}
		if next == page.ChunkCount {
			return nil
		}
		first = next
	}
}

// page reads the page of path's chunk map from chunk first on, as pages
// does, and returns it with the index of the chunk the next page starts
// at (the chunk count after the last page). A directory's stat (not
// download, head nil) comes back as it is, without a chunk map.
func (c *Client) page(ctx context.Context, path string, download bool, head *dfspb.FileInfo, first uint32) (*dfspb.FileInfo, uint32, error) {
	var version uint64
	var session string
	if head != nil {
		version, session = head.Version, head.SessionId
	}
	var page *dfspb.FileInfo
	var next uint32
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		var err error
		if download {
			var resp *dfspb.DownloadFileResponse
			resp, err = cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: path, FirstChunk: first, PageSize: uint32(c.cfg.PageSize), Version: version, SessionId: session})
			page, next = resp.GetFile(), resp.GetNextChunk()
		} else {
			var resp *dfspb.StatFileResponse
			resp, err = cc.StatFile(ctx, &dfspb.StatFileRequest{Path: path, FirstChunk: first, PageSize: uint32(c.cfg.PageSize), Version: version, SessionId: session})
			page, next = resp.GetFile(), resp.GetNextChunk()
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if page.GetIsDir() && !download && head == nil {
		return page, next, nil
	}
	return checkPage(path, head, first, page, next)
}

// checkPage checks a page of the chunk map of path from chunk first, and
// the index next of the chunk after it, against the first page (head,
// nil for the first page itself); it returns them, or an Internal error
// for a malformed page.
func checkPage(path string, head *dfspb.FileInfo, first uint32, page *dfspb.FileInfo, next uint32) (*dfspb.FileInfo, uint32, error) {
	if err := checkFileInfo(page); err != nil {
		return nil, 0, err
	}
	ok := next <= page.ChunkCount && next-first == uint32(len(page.Chunks)) && (next > first || next == page.ChunkCount)
	if head != nil {
		ok = ok && page.Version == head.Version && page.SessionId == head.SessionId && page.ChunkCount == head.ChunkCount
	}
	for i, ch := range page.Chunks {
		ok = ok && ch.Index == first+uint32(i)
	}
	if !ok {
		return nil, 0, rpc.Errorf(rpc.Internal, "coordinator returned a malformed page of the chunk map of %s from chunk %d", path, first)
	}
	return page, next, nil
}

// Nodes returns the cluster's datanodes and the answering coordinator's
// state (safe mode, whether it takes writes, the chunks' health).
func (c *Client) Nodes(ctx context.Context) (*ClusterStatus, error) {
	ctx = rpc.EnsureRequestID(ctx)
	out, err := c.nodes(ctx)
	if err != nil {
		return nil, wrap(ctx, "nodes", "", err)
	}
	return fromListNodes(out), nil
}

// nodes calls ListNodes.
func (c *Client) nodes(ctx context.Context) (*dfspb.ListNodesResponse, error) {
	var out *dfspb.ListNodesResponse
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		var err error
		out, err = cc.ListNodes(ctx, &dfspb.ListNodesRequest{})
		return err
	})
	return out, err
}

// wrap prefixes an error with the operation, the path (when not "") and
// the request ID of ctx: "stat /a/b (request 5f0c...): file not found".
// The error's kind, and so errors.Is with fs.ErrNotExist and the like,
// passes through.
func wrap(ctx context.Context, op, path string, err error) error {
	if err == nil {
		return nil
	}
	what := op
	if path != "" {
		what += " " + ShowPath(path)
	}
	if id := rpc.RequestID(ctx); id != "" {
		what += " (request " + id + ")"
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ShowPath renders a path for a message: as it is when printable, quoted
// when it holds anything (a newline, a NUL) that would break the line.
func ShowPath(p string) string {
	for _, r := range p {
		if !unicode.IsPrint(r) {
			return strconv.Quote(p)
		}
	}
	return p
}

// Backup writes a consistent snapshot of the cluster's metadata to w, in
// the format `dfs coordinator --restore` reads. The stream is not bounded
// by the RPC timeout (ctx bounds it), and it is not retried once data has
// reached w: a broken backup is an error, never half of one plus a retry.
func (c *Client) Backup(ctx context.Context, w io.Writer) error {
	ctx = rpc.EnsureRequestID(ctx)
	return wrap(ctx, "backup", "", c.backup(ctx, w))
}

// backup is Backup without the wrapping of its errors.
func (c *Client) backup(ctx context.Context, w io.Writer) error {
	var addr string
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.ListNodes(ctx, &dfspb.ListNodesRequest{}) // find a coordinator that serves
		return err
	})
	if err != nil {
		return err
	}
	addr = c.coord.Addr()
	conn, err := c.pool.Get(addr)
	if err != nil {
		return err
	}
	stream, err := dfspb.NewCoordinatorClient(conn).Backup(c.authorized(ctx), &dfspb.BackupRequest{})
	if err != nil {
		return rpc.FromStatus(err)
	}
	for started := false; ; started = true {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !started {
			return rpc.FromStatus(err) // refused, or failed before any byte
		}
		if err != nil {
			return fmt.Errorf("backup from %s broke off: %w", addr, rpc.FromStatus(err))
		}
		if _, err := w.Write(chunk.Data); err != nil {
			return rpc.Errorf(rpc.Internal, "write backup: %w", err)
		}
	}
}

// Decommission starts draining a datanode (or stops it, with cancel). id
// may be a unique prefix of the node ID.
func (c *Client) Decommission(ctx context.Context, id string, cancel bool) (*NodeStatus, error) {
	ctx = rpc.EnsureRequestID(ctx)
	n, err := c.decommission(ctx, id, cancel)
	if err != nil {
		return nil, wrap(ctx, "decommission", id, err)
	}
	return n, nil
}

// decommission is Decommission without the wrapping of its errors.
func (c *Client) decommission(ctx context.Context, id string, cancel bool) (*NodeStatus, error) {
	full, err := c.resolveNode(ctx, id)
	if err != nil {
		return nil, err
	}
	var out *dfspb.NodeStatus
	err = c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.Decommission(ctx, &dfspb.DecommissionRequest{NodeId: full, Cancel: cancel})
		if err == nil {
			out = resp.Node
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned no node status")
	}
	n := fromNodeStatus(out)
	return &n, nil
}

// resolveNode expands a unique prefix of a node ID.
func (c *Client) resolveNode(ctx context.Context, id string) (string, error) {
	if _, err := rpc.ParseNodeID(id); err == nil {
		return id, nil
	}
	if id == "" {
		return "", rpc.Errorf(rpc.Invalid, "empty node id")
	}
	resp, err := c.nodes(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, n := range resp.Nodes {
		if strings.HasPrefix(n.NodeId, id) {
			match = append(match, n.NodeId)
		}
	}
	switch len(match) {
	case 0:
		return "", rpc.Errorf(rpc.NotFound, "no datanode id starts with %q", id)
	case 1:
		return match[0], nil
	}
	return "", rpc.Errorf(rpc.Invalid, "%q matches %d datanodes; give more of the id", id, len(match))
}

// Fsck checks the files below path and returns those with a problem and
// the summary.
func (c *Client) Fsck(ctx context.Context, path string) ([]FsckFile, *FsckSummary, error) {
	ctx = rpc.EnsureRequestID(ctx)
	files, sum, err := c.fsck(ctx, path)
	if err != nil {
		return nil, nil, wrap(ctx, "fsck", path, err)
	}
	out := make([]FsckFile, 0, len(files))
	for _, f := range files {
		out = append(out, fromFsckFile(f))
	}
	return out, fromFsckSummary(sum), nil
}

// fsck runs Fsck on the wire's types.
func (c *Client) fsck(ctx context.Context, path string) ([]*dfspb.FsckFile, *dfspb.FsckSummary, error) {
	var files []*dfspb.FsckFile
	var sum *dfspb.FsckSummary
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		files, sum = nil, nil
		stream, err := cc.Fsck(ctx, &dfspb.FsckRequest{Path: path})
		if err != nil {
			return err
		}
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if f := r.GetFile(); f != nil {
				files = append(files, f)
			}
			if s := r.GetSummary(); s != nil {
				sum = s
			}
		}
	})
	if err == nil && sum == nil {
		err = rpc.Errorf(rpc.Internal, "fsck ended without a summary")
	}
	return files, sum, err
}
