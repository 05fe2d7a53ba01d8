package etcdstore

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// listBatch is how many keys one range read of a one-level listing asks
// for at most: keys below a subdirectory are read once and skipped, so a
// small batch bounds the waste per subdirectory.
const listBatch = 128

// Reads are linearizable: a Get after a Commit returned, on any
// coordinator, sees it.

// Get returns the file at p, or an error of kind rpc.NotFound.
func (s *Store) Get(ctx context.Context, p rpc.Path) (*meta.File, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.fileKey(p))
	if err != nil {
		return nil, etcdError("get "+string(p), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	return s.decodeFile(resp.Kvs[0])
}

func (s *Store) decodeFile(kv *mvccpb.KeyValue) (*meta.File, error) {
	f, err := meta.UnmarshalFile(kv.Value)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
	}
	if s.fileKey(f.Path) != string(kv.Key) {
		return nil, rpc.Errorf(rpc.Internal, "etcdstore: key %q holds file %s", kv.Key, f.Path)
	}
	return f, nil
}

func (s *Store) decodeDir(kv *mvccpb.KeyValue) (*meta.Dir, error) {
	d, err := meta.UnmarshalDir(kv.Value)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
	}
	if s.dirKey(d.Path) != string(kv.Key) {
		return nil, rpc.Errorf(rpc.Internal, "etcdstore: key %q holds directory %s", kv.Key, d.Path)
	}
	return d, nil
}

// isDirKey reports whether k, a key of the files range, is a directory's.
func isDirKey(k []byte) bool { return len(k) > 0 && k[len(k)-1] == '/' }

// decodeEntry decodes the file or directory of a key of the files range.
func (s *Store) decodeEntry(kv *mvccpb.KeyValue) (meta.Entry, error) {
	if isDirKey(kv.Key) {
		d, err := s.decodeDir(kv)
		if err != nil {
			return meta.Entry{}, err
		}
		return meta.Entry{Path: d.Path, IsDir: true, Dir: d}, nil
	}
	f, err := s.decodeFile(kv)
	if err != nil {
		return meta.Entry{}, err
	}
	return meta.Entry{Path: f.Path, File: f}, nil
}

// Lookup returns what p names, a file or a directory, or an error of
// kind rpc.NotFound: one txn reads both keys.
func (s *Store) Lookup(ctx context.Context, p rpc.Path) (meta.Entry, error) {
	if err := s.ready(); err != nil {
		return meta.Entry{}, err
	}
	if p == "/" {
		return meta.Root(), nil
	}
	resp, err := s.cli.Txn(ctx).Then(s.lookupOps(p)...).Commit()
	if err != nil {
		return meta.Entry{}, etcdError("lookup "+string(p), err)
	}
	e, found, err := s.entryOf(resp.Responses)
	if err == nil && !found {
		err = rpc.Errorf(rpc.NotFound, "%s: no such file or directory", p)
	}
	return e, err
}

// Walk implements meta.Namespace.Walk: one transaction reads both keys of
// every path, as many paths as MaxTxnOps allows (64 with etcd's defaults).
func (s *Store) Walk(ctx context.Context, p rpc.Path) ([]meta.Entry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	out := []meta.Entry{meta.Root()}
	levels := max(s.opts.MaxTxnOps/2, 1)
	for paths := meta.Lineage(p)[1:]; len(paths) > 0; {
		batch := paths[:min(len(paths), levels)]
		paths = paths[len(batch):]
		ops := make([]clientv3.Op, 0, 2*len(batch))
		for _, q := range batch {
			ops = append(ops, s.lookupOps(q)...)
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, etcdError("walk "+string(p), err)
		}
		for i := range batch {
			e, found, err := s.entryOf(resp.Responses[2*i : 2*i+2])
			if err != nil || !found {
				return out, err
			}
			out = append(out, e)
			if !e.IsDir {
				return out, nil
			}
		}
	}
	return out, nil
}

// lookupOps read the two keys a path (not the root) may be stored at.
func (s *Store) lookupOps(p rpc.Path) []clientv3.Op {
	return []clientv3.Op{clientv3.OpGet(s.fileKey(p)), clientv3.OpGet(s.dirKey(p))}
}

// entryOf decodes the entry of the answers to lookupOps.
func (s *Store) entryOf(rs []*etcdserverpb.ResponseOp) (meta.Entry, bool, error) {
	for _, r := range rs {
		if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
			e, err := s.decodeEntry(kvs[0])
			return e, err == nil, err
		}
	}
	return meta.Entry{}, false, nil
}

// List lists dir with range reads at one revision, in etcd key order,
// which is meta.ListKey order (a directory's key, <prefix>f<path>/, comes
// right before what it holds). Without recursive, a subdirectory's key
// makes its entry, and after a few more keys below it the read starts
// again past the whole subdirectory (at <prefix>f<sub>0, the end of the
// range <prefix>f<sub>/), so a huge subdirectory costs a few keys, not a
// scan.
func (s *Store) List(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	prefix := meta.DirKey(dir)
	if dir == "/" {
		prefix = "/"
	}
	fpfx := s.pfx + "f"
	start := prefix + "\x00" // past the directory's own key
	if after >= start {
		start = meta.ListResume(after, recursive)
	}
	end := clientv3.GetPrefixRangeEnd(fpfx + prefix)
	// The point reads fix the revision of the listing; for the root they
	// read keys that are never stored.
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.fileKey(dir)), clientv3.OpGet(fpfx+prefix, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, etcdError("list "+string(dir), err)
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 && dir != "/" {
		if after >= string(dir) {
			return nil, nil
		}
		f, err := s.decodeFile(kvs[0])
		if err != nil {
			return nil, err
		}
		return []meta.Entry{{Path: dir, File: f}}, nil
	}
	if len(resp.Responses[1].GetResponseRange().GetKvs()) == 0 && dir != "/" {
		return nil, rpc.Errorf(rpc.NotFound, "%s: no such file or directory", dir)
	}
	rev := resp.Header.Revision
	if limit <= 0 {
		return nil, nil
	}
	var out []meta.Entry
	skipTo, restart := "", fpfx+start
	for restart != "" && restart < end {
		from, skipped := restart, 0
		restart = ""
		batch := min(limit, listBatch)
		if recursive {
			batch = min(limit, readBatch)
		}
		_, err := s.scan(ctx, from, end, rev, batch, func(kv *mvccpb.KeyValue) (bool, error) {
			k := string(kv.Key)
			if k < skipTo {
				if skipped++; skipped >= listBatch {
					restart = skipTo // jump past the subdirectory
					return false, nil
				}
				return true, nil
			}
			e, err := s.decodeEntry(kv)
			if err != nil {
				return false, err
			}
			out = append(out, e)
			if e.IsDir && !recursive {
				skipTo, skipped = fpfx+meta.ListStart(meta.ListKey(e)), 0
			}
			return len(out) < limit, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scan calls fn for the keys of [start, end) at revision rev (0: the
// latest) in key order until fn returns false or an error, and returns
// the revision it read at (0 when fn stopped it). It streams the range
// (etcd 3.7's RangeStream, where each chunk costs the server its own
// keys); on an older server it pages with Get and a limit of batch keys,
// where each page costs the server a walk of the rest of the range,
// which etcd counts.
func (s *Store) scan(ctx context.Context, start, end string, rev int64, batch int, fn func(*mvccpb.KeyValue) (bool, error)) (int64, error) {
	if !s.opts.pagedReads && !s.noStream.Load() {
		r, ok, err := s.scanStream(ctx, start, end, rev, fn)
		if ok {
			return r, err
		}
		s.noStream.Store(true)
	}
	return s.scanPaged(ctx, start, end, rev, batch, fn)
}

// scanStream is scan over RangeStream; ok is false when the server does
// not have it (and nothing was read).
func (s *Store) scanStream(ctx context.Context, start, end string, rev int64, fn func(*mvccpb.KeyValue) (bool, error)) (_ int64, ok bool, _ error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(end)}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	ch, err := s.cli.GetStream(sctx, start, opts...)
	if err != nil {
		if unimplemented(err) {
			return 0, false, nil
		}
		return 0, true, etcdError("read", err)
	}
	stop := func(err error) (int64, bool, error) {
		cancel()
		for range ch { // let the stream's goroutine end
		}
		return 0, true, err
	}
	got := false
	for r := range ch {
		if err := r.Err(); err != nil {
			if !got && unimplemented(err) {
				return 0, false, nil
			}
			return stop(etcdError("read", err))
		}
		got = true
		for _, kv := range r.Kvs {
			more, err := fn(kv)
			if err != nil || !more {
				return stop(err)
			}
		}
		if r.Header != nil {
			rev = r.Header.Revision
		}
	}
	if !got {
		return 0, true, rpc.Errorf(rpc.Unavailable, "etcdstore: read: range stream ended without a response")
	}
	return rev, true, nil
}

func unimplemented(err error) bool {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented {
		return true
	}
	var ee rpctypes.EtcdError
	return errors.As(err, &ee) && ee.Code() == codes.Unimplemented
}

// scanPaged is scan with Get and a limit of batch keys a page.
func (s *Store) scanPaged(ctx context.Context, start, end string, rev int64, batch int, fn func(*mvccpb.KeyValue) (bool, error)) (int64, error) {
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(max(batch, 1)))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, start, opts...)
		if err != nil {
			return 0, etcdError("read", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			more, err := fn(kv)
			if err != nil || !more {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (s *Store) scanPrefix(ctx context.Context, pfx string, rev int64, fn func(*mvccpb.KeyValue) error) (int64, error) {
	return s.scan(ctx, pfx, clientv3.GetPrefixRangeEnd(pfx), rev, readBatch, func(kv *mvccpb.KeyValue) (bool, error) {
		return true, fn(kv)
	})
}

func (s *Store) decodeUpload(kv *mvccpb.KeyValue) (*meta.Upload, error) {
	u, err := meta.UnmarshalUpload(kv.Value)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
	}
	return u, nil
}

func (s *Store) decodeDeletion(kv *mvccpb.KeyValue) (meta.Deletion, error) {
	d, err := unmarshalDeletion(kv.Value)
	if err != nil {
		return d, rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
	}
	return d, nil
}

// Uploads returns every open upload, by id, read at one revision.
func (s *Store) Uploads(ctx context.Context) ([]*meta.Upload, error) {
	var out []*meta.Upload
	_, err := s.scanPrefix(ctx, s.pfx+"u/", 0, func(kv *mvccpb.KeyValue) error {
		u, err := s.decodeUpload(kv)
		out = append(out, u)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Deletions returns every pending deletion, by DeletionKey, read at one
// revision.
func (s *Store) Deletions(ctx context.Context) ([]meta.Deletion, error) {
	var out []meta.Deletion
	_, err := s.scanPrefix(ctx, s.pfx+"d/", 0, func(kv *mvccpb.KeyValue) error {
		d, err := s.decodeDeletion(kv)
		out = append(out, d)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) decodeDrain(kv *mvccpb.KeyValue) (rpc.NodeID, error) {
	n, err := rpc.ParseNodeID(strings.TrimPrefix(string(kv.Key), s.pfx+"n/"))
	if err != nil {
		return "", rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
	}
	return n, nil
}

// Drains returns every draining datanode, by ID, read at one revision.
func (s *Store) Drains(ctx context.Context) ([]rpc.NodeID, error) {
	var out []rpc.NodeID
	_, err := s.scanPrefix(ctx, s.pfx+"n/", 0, func(kv *mvccpb.KeyValue) error {
		n, err := s.decodeDrain(kv)
		out = append(out, n)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Files calls fn for every file in path order, skipping the directories,
// all read at one revision
// (a page at a time, so fn runs between reads).
func (s *Store) Files(ctx context.Context, fn func(*meta.File) error) error {
	_, err := s.scanPrefix(ctx, s.pfx+"f/", 0, func(kv *mvccpb.KeyValue) error {
		if isDirKey(kv.Key) {
			return nil
		}
		f, err := s.decodeFile(kv)
		if err != nil {
			return err
		}
		return fn(f)
	})
	return err
}

// Snapshot calls fn with every file and directory (key order), upload (id order),
// deletion (key order) and drain (node order), all read at the revision
// of its first read: one consistent view, however long fn takes, unless
// etcd compacts that revision meanwhile (then Snapshot fails and can be
// run again).
func (s *Store) Snapshot(ctx context.Context, fn func(meta.Record) error) error {
	head, err := s.cli.Get(ctx, s.metaKey("cluster"))
	if err != nil {
		return etcdError("snapshot", err)
	}
	rev := head.Header.Revision
	_, err = s.scanPrefix(ctx, s.pfx+"f/", rev, func(kv *mvccpb.KeyValue) error {
		e, err := s.decodeEntry(kv)
		if err != nil {
			return err
		}
		return fn(meta.Record{File: e.File, Dir: e.Dir})
	})
	if err != nil {
		return err
	}
	if _, err := s.scanPrefix(ctx, s.pfx+"u/", rev, func(kv *mvccpb.KeyValue) error {
		u, err := s.decodeUpload(kv)
		if err != nil {
			return err
		}
		return fn(meta.Record{Upload: u})
	}); err != nil {
		return err
	}
	if _, err := s.scanPrefix(ctx, s.pfx+"d/", rev, func(kv *mvccpb.KeyValue) error {
		d, err := s.decodeDeletion(kv)
		if err != nil {
			return err
		}
		return fn(meta.Record{Deletion: &d})
	}); err != nil {
		return err
	}
	_, err = s.scanPrefix(ctx, s.pfx+"n/", rev, func(kv *mvccpb.KeyValue) error {
		n, err := s.decodeDrain(kv)
		if err != nil {
			return err
		}
		return fn(meta.Record{Drain: &n})
	})
	return err
}
