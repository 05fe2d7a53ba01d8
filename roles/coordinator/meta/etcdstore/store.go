// Package etcdstore is a meta.Store kept in etcd, for coordinators that
// run highly available: several coordinators share one etcd cluster and
// elect a leader through it (see Election).
//
// Layout under the prefix (default "/dfs/"); values are the protobuf
// encodings of meta/codec.go:
//
//	<prefix>f<path>          a committed file (meta.File); key order is path order
//	<prefix>f<path>/         a directory (metapb.Dir): it sorts right before what it holds
//	<prefix>u/<session id>   an open upload (meta.Upload)
//	<prefix>d/<node>/<chunk> a pending deletion (metapb.Deletion)
//	<prefix>n/<node>         a draining datanode; the value is empty
//	<prefix>meta/cluster     the cluster id
//	<prefix>meta/format      the layout version, "3"
//	<prefix>meta/restoring   present only while Init loads a restore
//	<prefix>election/<name>/ election keys (see Store.Election)
//
// Layout 1 had no drains, and layouts 1 and 2 no directory keys (a
// directory was implied by the files below it). Open upgrades an
// initialized prefix of layout 1 or 2 in place (see upgrade): it puts the
// directory key of every ancestor of every file, then raises the version,
// so that a dfs of an older layout, which would take the directory keys
// for damaged files, refuses the prefix. Stop the coordinators of the
// older release before starting this one: one still leading would go on
// writing files without their directories.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metapb"
	"github.com/dfs-project/dfs/rpc"
)

// Defaults for Options.
const (
	DefaultPrefix      = "/dfs/"
	DefaultDialTimeout = 5 * time.Second
	// DefaultMaxTxnOps is etcd's default --max-txn-ops.
	DefaultMaxTxnOps = 128
	// DefaultMaxTxnBytes keeps a txn well under etcd's default
	// --max-request-bytes (1.5 MiB).
	DefaultMaxTxnBytes = 1 << 20

	formatVersion = "3"
	// formatNoDrains is the layout before drains, and formatNoDirs the
	// one before directory keys, both upgraded by Open.
	formatNoDrains = "1"
	formatNoDirs   = "2"
	// readBatch is how many keys one range read returns at most.
	readBatch = 1000
)

// Options configures Open.
type Options struct {
	// Endpoints are the etcd client endpoints, "host:port" or URLs.
	Endpoints []string
	// Prefix is the key prefix of this store; "/" is appended when
	// missing. Default DefaultPrefix.
	Prefix string
	// DialTimeout bounds how long Open waits for etcd to answer.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxTxnOps and MaxTxnBytes are the limits the store keeps each etcd
	// txn within; set them to the server's --max-txn-ops and a margin
	// under its --max-request-bytes. Defaults DefaultMaxTxnOps and
	// DefaultMaxTxnBytes.
	MaxTxnOps   int
	MaxTxnBytes int
	// TLS, Username and Password are passed to the etcd client.
	TLS      *tls.Config
	Username string
	Password string
	// Logger receives the etcd client's own logs; nil discards them.
	Logger *zap.Logger
	// Log receives the store's lifecycle events (a layout upgrade); the
	// zero Logger discards them.
	Log zerolog.Logger

	pagedReads bool // tests: read ranges as on a server before 3.7
}

func (o *Options) setDefaults() error {
	if len(o.Endpoints) == 0 {
		return rpc.Errorf(rpc.Invalid, "etcdstore: no etcd endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxTxnOps < 8 {
		return rpc.Errorf(rpc.Invalid, "etcdstore: max txn ops %d is too small (at least 8)", o.MaxTxnOps)
	}
	if o.MaxTxnBytes <= 0 {
		o.MaxTxnBytes = DefaultMaxTxnBytes
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// Store is a meta.Store in etcd. Its methods are safe for concurrent use.
type Store struct {
	cli  *clientv3.Client
	opts Options
	pfx  string

	mu      sync.RWMutex
	cluster string
	broken  error // set when an Init failed part-way: the store refuses use

	noStream  atomic.Bool // the server has no RangeStream (before 3.7)
	fence     atomic.Pointer[Leadership]
	closeOnce sync.Once
	closeErr  error
}

var _ meta.Store = (*Store)(nil)

// MaxFileChunks returns the most chunks a file may have in this store: a
// file's record travels whole in the one etcd txn that commits it, beside
// its checks and the end of its upload session, within MaxTxnBytes
// (about 11,400 chunks with the defaults). The coordinator refuses larger
// uploads before they start.
func (s *Store) MaxFileChunks() int {
	// The file's key and its path inside the record, the record's other
	// fields, and the upload key, each with its op overhead.
	reserve := 2*(len(s.pfx)+1+rpc.MaxPathLen) + 4*opOverhead + 1024
	return max((s.opts.MaxTxnBytes-reserve)/meta.MaxChunkRecordSize(), 1)
}

// Open connects to etcd and opens the store under opts.Prefix. It fails
// within opts.DialTimeout when etcd does not answer (rpc.Unavailable),
// and refuses a prefix that holds an interrupted restore or keys that are
// not a dfs store (rpc.FailedPrecondition). An empty prefix opens as an
// uninitialized store (ClusterID ""). Close releases the client.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	where := strings.Join(opts.Endpoints, ",")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		Logger:      opts.Logger,
		// Let etcd's --max-request-bytes be the limit that matters.
		MaxCallSendMsgSize: 64 << 20,
		MaxCallRecvMsgSize: 64 << 20,
		// Notice a dead connection, and so a dead leader, promptly.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Context:              context.WithoutCancel(ctx),
	})
	if err != nil {
		if rpc.KindOf(etcdError("", err)) == rpc.Permission { // a wrong user or password
			return nil, fmt.Errorf("etcd at %s: %w", where, etcdError("open", err))
		}
		return nil, rpc.Errorf(rpc.Unavailable, "etcd at %s unreachable: %w", where, err)
	}
	s := &Store{cli: cli, opts: opts, pfx: opts.Prefix}
	if err := s.load(ctx, where, false); err != nil {
		cli.Close()
		return nil, err
	}
	return s, nil
}

// load reads the store's identity, probing etcd within DialTimeout.
func (s *Store) load(ctx context.Context, where string, again bool) error {
	pctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	resp, err := s.cli.Get(pctx, s.metaKey(""), clientv3.WithPrefix())
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("etcdstore: open: %w", ctx.Err())
	case err != nil && rpc.KindOf(etcdError("", err)) == rpc.Permission:
		return fmt.Errorf("etcd at %s: %w", where, etcdError("open", err))
	case err != nil:
		return rpc.Errorf(rpc.Unavailable, "etcd at %s unreachable: %w", where, err)
	}
	vals := map[string]string{}
	for _, kv := range resp.Kvs {
		vals[strings.TrimPrefix(string(kv.Key), s.metaKey(""))] = string(kv.Value)
	}
	if _, ok := vals["restoring"]; ok {
		return rpc.Errorf(rpc.FailedPrecondition,
			"etcdstore: prefix %q at %s holds an incomplete restore (interrupted, or still running elsewhere); clear the prefix (etcdctl del --prefix %q) and restore again", s.pfx, where, s.pfx)
	}
	id, ok := vals["cluster"]
	if !ok {
		first, err := s.firstDataKey(pctx)
		if err != nil {
			return fmt.Errorf("etcd at %s: %w", where, etcdError("open", err))
		}
		if len(first) > 0 && strings.HasPrefix(string(first[0].Key), s.metaKey("")) && !again {
			// Another coordinator initialized the prefix between our two
			// reads: read its identity again.
			return s.load(ctx, where, true)
		}
		if len(first) > 0 {
			return rpc.Errorf(rpc.FailedPrecondition, "etcdstore: prefix %q at %s holds keys that are not a dfs metadata store (e.g. %q); choose another prefix", s.pfx, where, first[0].Key)
		}
		return nil
	}
	switch f := vals["format"]; f {
	case formatVersion:
	case formatNoDrains, formatNoDirs:
		if err := s.upgrade(ctx, where, f); err != nil {
			return err
		}
	default:
		return rpc.Errorf(rpc.FailedPrecondition, "etcdstore: prefix %q at %s has layout version %q, this dfs reads %q", s.pfx, where, f, formatVersion)
	}
	s.cluster = id
	return nil
}

// upgrade raises the layout version of an initialized prefix from the
// older version from to formatVersion: it walks the files in key order at
// one revision and puts the directory key of every ancestor that has
// none, in txns of at most MaxTxnOps keys, the last of which raises the
// version. Memory is bounded by the depth of a path: keys come in order,
// a directory's key before what it holds, so the directories that exist
// or were put are a stack along the current path. Every txn compares the
// version with from, so once one upgrade finished no other writes;
// coordinators opening the prefix at once may all run it, and an
// upgrade that stopped part-way is run again by the next Open (putting a
// directory key again only sets its time again).
func (s *Store) upgrade(ctx context.Context, where, from string) error {
	key := s.metaKey("format")
	same := clientv3.Compare(clientv3.Value(key), "=", from)
	errDone := errors.New("upgraded by another coordinator")
	var batch []clientv3.Op
	flush := func(last bool) error {
		ops := batch
		if last {
			ops = append(ops, clientv3.OpPut(key, formatVersion))
		}
		tr, err := s.cli.Txn(ctx).If(same).Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return fmt.Errorf("etcd at %s: %w", where, etcdError("open: upgrade layout", err))
		}
		if !tr.Succeeded {
			kvs := tr.Responses[0].GetResponseRange().GetKvs()
			if len(kvs) == 0 || string(kvs[0].Value) != formatVersion {
				return rpc.Errorf(rpc.FailedPrecondition, "etcdstore: prefix %q at %s changed while its layout was upgraded from version %q; open it again", s.pfx, where, from)
			}
			return errDone
		}
		batch = batch[:0]
		return nil
	}
	start := time.Now()
	fpfx := s.pfx + "f"
	var stack []rpc.Path // the directories along the last key's path
	files, dirs := 0, 0
	_, err := s.scanPrefix(ctx, fpfx+"/", 0, func(kv *mvccpb.KeyValue) error {
		k := string(kv.Key)
		isDir := strings.HasSuffix(k, "/")
		p := rpc.Path(strings.TrimSuffix(k[len(fpfx):], "/"))
		for len(stack) > 0 && !meta.IsBelow(p, stack[len(stack)-1]) {
			stack = stack[:len(stack)-1]
		}
		var need []rpc.Path
		for d := p.Dir(); d != "/" && (len(stack) == 0 || d != stack[len(stack)-1]); d = d.Dir() {
			need = append(need, d)
		}
		mod := start
		if !isDir {
			files++
			if f, err := meta.UnmarshalFile(kv.Value); err == nil {
				mod = f.Modified
			} // a damaged file keeps its key, which the directories need; reads report it
		}
		for i := len(need) - 1; i >= 0; i-- {
			v, err := meta.MarshalDir(&meta.Dir{Path: need[i], Modified: mod})
			if err != nil {
				return err
			}
			batch = append(batch, clientv3.OpPut(s.dirKey(need[i]), string(v)))
			stack = append(stack, need[i])
			dirs++
			if len(batch) >= s.opts.MaxTxnOps-1 {
				if err := flush(false); err != nil {
					return err
				}
			}
		}
		if isDir {
			stack = append(stack, p)
		}
		return nil
	})
	if err == nil {
		err = flush(true)
	}
	switch {
	case errors.Is(err, errDone):
	case err != nil:
		return err
	default:
		s.opts.Log.Info().Str("prefix", s.pfx).Str("from", from).Str("to", formatVersion).Int("files", files).Int("directories", dirs).
			Dur("took", time.Since(start)).Msg("etcd metadata layout upgraded: directories are explicit")
	}
	return nil
}

// Client returns the store's etcd client, for an Election on the same
// connection. It is closed by Close.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the store's key prefix, with its trailing slash.
func (s *Store) Prefix() string { return s.pfx }

// Close closes the etcd client. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.cli.Close() })
	return s.closeErr
}

// SetFence makes every later write of the store conditional on l still
// holding its leadership, so a coordinator that lost its lease (a long
// pause, a partition) cannot overwrite the new leader's work: such a
// write fails with rpc.Unavailable. nil removes the fence.
func (s *Store) SetFence(l *Leadership) { s.fence.Store(l) }

func (s *Store) fileKey(p rpc.Path) string         { return s.pfx + "f" + string(p) }
func (s *Store) uploadKey(id rpc.SessionID) string { return s.pfx + "u/" + string(id) }
func (s *Store) deletionKey(d meta.Deletion) string {
	return s.pfx + "d/" + meta.DeletionKey(d)
}
func (s *Store) drainKey(n rpc.NodeID) string   { return s.pfx + "n/" + string(n) }
func (s *Store) metaKey(name string) string     { return s.pfx + "meta/" + name }
func (s *Store) electionKey(name string) string { return s.pfx + "election/" + name }

// dataRanges are the key ranges of the store's data: the prefix less the
// election keys, which live beside the data and outlive a restore.
func (s *Store) dataRanges() [][2]string {
	el := s.electionKey("")
	return [][2]string{{s.pfx, el}, {clientv3.GetPrefixRangeEnd(el), clientv3.GetPrefixRangeEnd(s.pfx)}}
}

// firstDataKey returns the first data key, or nil for an empty store.
func (s *Store) firstDataKey(ctx context.Context) ([]*mvccpb.KeyValue, error) {
	for _, r := range s.dataRanges() {
		resp, err := s.cli.Get(ctx, r[0], clientv3.WithRange(r[1]), clientv3.WithLimit(1), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		if len(resp.Kvs) > 0 {
			return resp.Kvs, nil
		}
	}
	return nil, nil
}

// emptyCmps hold when the store has no data.
func (s *Store) emptyCmps() []clientv3.Cmp {
	var out []clientv3.Cmp
	for _, r := range s.dataRanges() {
		out = append(out, clientv3.Compare(clientv3.CreateRevision(r[0]), "=", 0).WithRange(r[1]))
	}
	return out
}

// ClusterID returns the cluster id read at Open or set by Init.
func (s *Store) ClusterID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cluster
}

func (s *Store) ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.broken != nil:
		return s.broken
	case s.cluster == "":
		return rpc.Errorf(rpc.FailedPrecondition, "metadata store not initialized")
	}
	return nil
}

// Init initializes an empty prefix as the store of cluster id and loads
// recs into it. A restore that does not fit one etcd txn is written in
// batches under a "restoring" marker that only the last txn removes, so
// an interrupted restore leaves a store that Open refuses (and that this
// Store refuses to use) until the prefix is cleared.
func (s *Store) Init(ctx context.Context, id string, recs []meta.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cluster != "":
		return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", s.cluster)
	case s.broken != nil:
		return s.broken
	case id == "":
		return rpc.Errorf(rpc.Invalid, "empty cluster id")
	}
	ops, err := s.recordOps(recs)
	if err != nil {
		return err
	}
	// Cheap emptiness check first: an If over a non-empty range reads the
	// whole range on the server.
	first, err := s.firstDataKey(ctx)
	if err != nil {
		return etcdError("init", err)
	}
	if err := s.notEmpty(ctx, first); err != nil {
		return err
	}
	empty := s.emptyCmps()
	done := []clientv3.Op{clientv3.OpPut(s.metaKey("cluster"), id), clientv3.OpPut(s.metaKey("format"), formatVersion)}
	if len(ops)+len(done) <= s.opts.MaxTxnOps-1 && opsSize(ops) <= s.opts.MaxTxnBytes {
		tr, err := s.cli.Txn(ctx).If(s.fenced(empty...)...).Then(append(ops, done...)...).Commit()
		if err != nil {
			return etcdError("init", err)
		}
		if !tr.Succeeded {
			return s.initRaced(ctx)
		}
		s.cluster = id
		return nil
	}
	token := uuid.NewString()
	marker := s.metaKey("restoring")
	tr, err := s.cli.Txn(ctx).If(s.fenced(empty...)...).Then(clientv3.OpPut(marker, token)).Commit()
	if err != nil {
		return etcdError("init", err)
	}
	if !tr.Succeeded {
		return s.initRaced(ctx)
	}
	fail := func(err error) error {
		s.broken = rpc.Errorf(rpc.FailedPrecondition, "etcdstore: restore into prefix %q failed part-way (%w); clear the prefix (etcdctl del --prefix %q) and restore again", s.pfx, err, s.pfx)
		return s.broken
	}
	ours := clientv3.Compare(clientv3.Value(marker), "=", token)
	for _, batch := range s.batches(ops, s.opts.MaxTxnOps, s.opts.MaxTxnBytes) {
		tr, err := s.cli.Txn(ctx).If(s.fenced(ours)...).Then(batch...).Commit()
		if err != nil {
			return fail(etcdError("restore", err))
		}
		if !tr.Succeeded {
			return fail(rpc.Errorf(rpc.FailedPrecondition, "another restore took over the prefix"))
		}
	}
	tr, err = s.cli.Txn(ctx).If(s.fenced(ours)...).Then(append(done, clientv3.OpDelete(marker))...).Commit()
	if err != nil {
		return fail(etcdError("restore", err))
	}
	if !tr.Succeeded {
		return fail(rpc.Errorf(rpc.FailedPrecondition, "another restore took over the prefix"))
	}
	s.cluster = id
	return nil
}

// notEmpty explains why a prefix whose first key is kvs[0] cannot be
// initialized; nil when there is no key.
func (s *Store) notEmpty(ctx context.Context, kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		return nil
	}
	resp, err := s.cli.Get(ctx, s.metaKey(""), clientv3.WithPrefix())
	if err != nil {
		return etcdError("init", err)
	}
	for _, kv := range resp.Kvs {
		switch strings.TrimPrefix(string(kv.Key), s.metaKey("")) {
		case "cluster":
			// Another coordinator initialized it first: adopt its identity.
			s.cluster = string(kv.Value)
			return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", kv.Value)
		case "restoring":
			return rpc.Errorf(rpc.FailedPrecondition, "etcdstore: prefix %q holds an incomplete restore; clear the prefix (etcdctl del --prefix %q) and restore again", s.pfx, s.pfx)
		}
	}
	return rpc.Errorf(rpc.FailedPrecondition, "etcdstore: prefix %q is not empty (e.g. %q); a store is initialized on an empty prefix only", s.pfx, kvs[0].Key)
}

// initRaced explains an Init whose emptiness compare failed.
func (s *Store) initRaced(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, s.metaKey("cluster"))
	if err != nil {
		return etcdError("init", err)
	}
	if len(resp.Kvs) > 0 {
		// Another coordinator initialized it first: adopt its identity.
		s.cluster = string(resp.Kvs[0].Value)
		return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", s.cluster)
	}
	first, err := s.firstDataKey(ctx)
	if err != nil {
		return etcdError("init", err)
	}
	if err := s.notEmpty(ctx, first); err != nil {
		return err
	}
	if err := s.checkFence(ctx); err != nil {
		return err
	}
	return rpc.Errorf(rpc.Unavailable, "etcdstore: init raced with another writer; try again")
}

// recordOps turns restore records into puts, the last record of a key
// winning as in a replay. The missing parents of a file or directory are
// put before it, with its time (a backup from before directories were
// explicit holds none).
func (s *Store) recordOps(recs []meta.Record) ([]clientv3.Op, error) {
	idx := map[string]int{}
	var ops []clientv3.Op
	add := func(k string, v []byte) {
		op := clientv3.OpPut(k, string(v))
		if i, ok := idx[k]; ok {
			ops[i] = op
			return
		}
		idx[k] = len(ops)
		ops = append(ops, op)
	}
	parents := func(p rpc.Path, mod time.Time) error {
		for d := p.Dir(); d != "/"; d = d.Dir() {
			k := s.dirKey(d)
			if _, ok := idx[k]; ok {
				break // its ancestors were put with it
			}
			v, err := meta.MarshalDir(&meta.Dir{Path: d, Modified: mod})
			if err != nil {
				return err
			}
			add(k, v)
		}
		return nil
	}
	for _, r := range recs {
		switch {
		case r.File != nil:
			v, err := meta.MarshalFile(r.File)
			if err != nil {
				return nil, err
			}
			if err := parents(r.File.Path, r.File.Modified); err != nil {
				return nil, err
			}
			add(s.fileKey(r.File.Path), v)
		case r.Dir != nil:
			if _, err := meta.DirFromPB(meta.DirToPB(r.Dir)); err != nil {
				return nil, rpc.Errorf(rpc.Invalid, "directory %s would not read back: %w", r.Dir.Path, err)
			}
			v, err := meta.MarshalDir(r.Dir)
			if err != nil {
				return nil, err
			}
			if err := parents(r.Dir.Path, r.Dir.Modified); err != nil {
				return nil, err
			}
			add(s.dirKey(r.Dir.Path), v)
		case r.Upload != nil:
			v, err := meta.MarshalUpload(r.Upload)
			if err != nil {
				return nil, err
			}
			add(s.uploadKey(r.Upload.ID), v)
		case r.Deletion != nil:
			add(s.deletionKey(*r.Deletion), marshalDeletion(*r.Deletion))
		case r.Drain != nil:
			if _, err := rpc.ParseNodeID(string(*r.Drain)); err != nil {
				return nil, rpc.Errorf(rpc.Invalid, "drain of %q would not read back: %w", *r.Drain, err)
			}
			add(s.drainKey(*r.Drain), nil)
		}
	}
	return ops, nil
}

func marshalDeletion(d meta.Deletion) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&metapb.Deletion{Node: string(d.Node), Chunk: string(d.Chunk)})
	return b
}

func unmarshalDeletion(b []byte) (meta.Deletion, error) {
	var m metapb.Deletion
	if err := proto.Unmarshal(b, &m); err != nil {
		return meta.Deletion{}, fmt.Errorf("decode deletion: %w", err)
	}
	return meta.DeletionFromPB(&m)
}

// etcdError gives an etcd client error its rpc kind, keeping the cause.
func etcdError(op string, err error) error {
	if err == nil {
		return nil
	}
	kind := rpc.Unavailable
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		kind = rpc.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		kind = rpc.Canceled
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrTooManyOps):
		kind = rpc.Invalid
	case errors.Is(err, rpctypes.ErrNoSpace):
		kind = rpc.ResourceExhausted
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrInvalidAuthToken):
		kind = rpc.Permission
	default:
		var ee rpctypes.EtcdError
		if errors.As(err, &ee) {
			switch ee.Code() {
			case codes.InvalidArgument, codes.OutOfRange:
				kind = rpc.Internal // a request this package built wrong
			case codes.PermissionDenied, codes.Unauthenticated:
				kind = rpc.Permission
			case codes.DeadlineExceeded:
				kind = rpc.DeadlineExceeded
			}
		} else if st, ok := status.FromError(err); ok && st.Code() == codes.Canceled {
			kind = rpc.Canceled
		}
	}
	return fmt.Errorf("%w: %w", rpc.Errorf(kind, "etcdstore: %s", op), err)
}
