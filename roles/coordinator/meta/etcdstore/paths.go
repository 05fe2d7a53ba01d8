package etcdstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// A txn that names a path (a file change, Mkdir, Rmdir or Move) is one
// etcd txn planned from a read of the keys its checks need:
//
//   - the path's file key and directory key (<prefix>f<path>/);
//   - for a Put, a Mkdir and the target of a Move, the file and directory
//     keys of every ancestor;
//   - for a Move, the target's keys and the whole subtree below the
//     path's directory key; for a Rmdir, the first key below it.
//
// The plan (see plan) decides the txn's fate exactly as metatest.Mem
// does, and turns every fact the decision rests on into a compare: the
// ModRevision of each key read (0 for a key that was absent), the
// CreateRevision of the nearest existing ancestor directory, and for a
// Rmdir and a Move of a directory the emptiness, or the unchanged state,
// of the range below. A txn whose compares fail is planned again from a
// new read. Every directory's ancestors are directories (a Put, a Mkdir
// with parents and a Move create the missing ones in their txn, and
// Rmdir needs an empty directory), so the checks stop at the nearest
// existing ancestor directory: above it there is no file. A missing
// ancestor directory is put without a compare of its own key (a
// concurrent Mkdir of it only has its time overwritten), but with the
// compare that no file took its path.

// MaxMoveEntries returns the most entries (the directory itself, and the
// files and directories below it) one Move of a directory may rewrite:
// they travel in one etcd txn, each with its compare and its put, so the
// bound is MaxTxnOps less the txn's other compares (at most 8), 120 with
// etcd's default --max-txn-ops. A larger move is refused with
// rpc.ResourceExhausted; raise etcd's --max-txn-ops and
// Options.MaxTxnOps to move larger directories.
func (s *Store) MaxMoveEntries() int { return s.opts.MaxTxnOps - 8 }

// pathRead is what a plan reads: the state of the keys named above, all
// at one revision.
type pathRead struct {
	rev  int64
	keys map[string]*mvccpb.KeyValue // every point key read; nil when absent
	// below is the subtree of the path's directory key (its own key
	// first), for a Move; for a Rmdir, at most its first two keys.
	below []*mvccpb.KeyValue
	more  bool // the subtree has more keys than below holds
}

// get returns the kv of key k, which must have been read (nil: absent).
func (r *pathRead) get(k string) *mvccpb.KeyValue { return r.keys[k] }

// dirKey is the key of the directory p.
func (s *Store) dirKey(p rpc.Path) string { return s.pfx + "f" + meta.DirKey(p) }

// readPath reads what txn's plan needs, in as few read txns as etcd's op
// limit allows, all at the revision of the first.
func (s *Store) readPath(ctx context.Context, txn *meta.Txn, serializable bool) (*pathRead, error) {
	p := txn.Path
	var keys []string
	keys = append(keys, s.fileKey(p), s.dirKey(p))
	anc := rpc.Path("")
	switch {
	case txn.Put != nil, txn.Mkdir != nil:
		anc = p
	case txn.Move != nil:
		anc = txn.Move.To
		keys = append(keys, s.fileKey(txn.Move.To), s.dirKey(txn.Move.To))
	}
	if anc != "" {
		for d := anc.Dir(); d != "/"; d = d.Dir() {
			keys = append(keys, s.fileKey(d), s.dirKey(d))
		}
	}
	var o []clientv3.OpOption
	if serializable {
		o = append(o, clientv3.WithSerializable())
	}
	r := &pathRead{keys: map[string]*mvccpb.KeyValue{}}
	// below returns the read of the range below the path, if the txn
	// needs one, with the options ro.
	var below func(ro []clientv3.OpOption) clientv3.Op
	dk := s.dirKey(p)
	switch {
	case txn.Move != nil:
		below = func(ro []clientv3.OpOption) clientv3.Op {
			return clientv3.OpGet(dk, append(ro, clientv3.WithRange(clientv3.GetPrefixRangeEnd(dk)), clientv3.WithLimit(int64(s.MaxMoveEntries()+1)))...)
		}
	case txn.Rmdir:
		below = func(ro []clientv3.OpOption) clientv3.Op {
			return clientv3.OpGet(dk, append(ro, clientv3.WithRange(clientv3.GetPrefixRangeEnd(dk)), clientv3.WithLimit(2), clientv3.WithKeysOnly())...)
		}
	}
	hasBelow := below != nil
	for len(keys) > 0 || hasBelow {
		n := min(len(keys), s.opts.MaxTxnOps-1)
		ops := make([]clientv3.Op, 0, n+1)
		ro := slices.Clip(o)
		if r.rev != 0 {
			ro = append(ro, clientv3.WithRev(r.rev))
		}
		for _, k := range keys[:n] {
			ops = append(ops, clientv3.OpGet(k, ro...))
		}
		if hasBelow {
			ops = append(ops, below(slices.Clip(ro)))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, etcdError("commit "+string(p), err)
		}
		if r.rev == 0 {
			r.rev = resp.Header.Revision
		}
		for i, k := range keys[:n] {
			var kv *mvccpb.KeyValue
			if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
				kv = kvs[0]
			}
			r.keys[k] = kv
		}
		if hasBelow {
			rr := resp.Responses[n].GetResponseRange()
			r.below, r.more = rr.GetKvs(), rr.GetMore()
			hasBelow = false
		}
		keys = keys[n:]
	}
	return r, nil
}

// plan is the etcd txn of a path change: its compares and its ops.
type plan struct {
	cmps  []clientv3.Cmp
	ops   []clientv3.Op
	value []byte // a Put's value, to tell whether a txn of unknown fate was applied
}

// modIs compares key k's ModRevision with what r read (0: absent).
func modIs(r *pathRead, k string) clientv3.Cmp {
	var rev int64
	if kv := r.get(k); kv != nil {
		rev = kv.ModRevision
	}
	return clientv3.Compare(clientv3.ModRevision(k), "=", rev)
}

// version returns the version of the file at p as r read it.
func (s *Store) version(r *pathRead, p rpc.Path) (uint64, error) {
	kv := r.get(s.fileKey(p))
	if kv == nil {
		return 0, nil
	}
	f, err := s.decodeFile(kv)
	if err != nil {
		return 0, err
	}
	return f.Version, nil
}

// isDir reports whether p is a directory as r read it.
func (s *Store) isDir(r *pathRead, p rpc.Path) bool {
	return p == "/" || r.get(s.dirKey(p)) != nil
}

// parents checks the ancestors of t as r read them and adds to pl the
// compares that keep them so and the puts of the missing ones, made at
// mod.Modified with mod.Attr; it returns how many are missing, or rpc.Exists when one is a file.
func (s *Store) parents(r *pathRead, pl *plan, t rpc.Path, mod meta.Dir) (int, error) {
	missing := 0
	for d := t.Dir(); d != "/"; d = d.Dir() {
		if kv := r.get(s.dirKey(d)); kv != nil {
			pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(s.dirKey(d)), "=", kv.CreateRevision))
			break
		}
		if r.get(s.fileKey(d)) != nil {
			return 0, rpc.Errorf(rpc.Exists, "%s: parent %s is a file", t, d)
		}
		missing++
		v, err := meta.MarshalDir(&meta.Dir{Path: d, Modified: mod.Modified, Attr: mod.Attr})
		if err != nil {
			return 0, err
		}
		pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(s.fileKey(d)), "=", 0))
		pl.ops = append(pl.ops, clientv3.OpPut(s.dirKey(d), string(v)))
	}
	return missing, nil
}

// plan decides txn from r exactly as metatest.Mem does: the error Mem
// returns, or the etcd txn that applies the change while r still holds.
func (s *Store) plan(txn *meta.Txn, r *pathRead) (*plan, error) {
	p := txn.Path
	fk, dk := s.fileKey(p), s.dirKey(p)
	cur, err := s.version(r, p)
	if err != nil {
		return nil, err
	}
	pl := &plan{cmps: []clientv3.Cmp{modIs(r, fk)}}
	switch {
	case txn.Mkdir != nil:
		switch {
		case cur != 0:
			return nil, rpc.Errorf(rpc.Exists, "mkdir %s: a file exists there", p)
		case s.isDir(r, p) && !txn.MkdirParents:
			return nil, rpc.Errorf(rpc.Exists, "mkdir %s: the directory exists", p)
		case s.isDir(r, p):
			if p != "/" {
				pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", r.get(dk).CreateRevision))
			}
			return pl, nil
		}
		missing, err := s.parents(r, pl, p, meta.Dir{Modified: txn.Mkdir.Modified, Attr: txn.Parents})
		if err != nil {
			return nil, err
		}
		if missing > 0 && !txn.MkdirParents {
			return nil, rpc.Errorf(rpc.NotFound, "mkdir %s: the parent directory %s does not exist", p, p.Dir())
		}
		v, err := meta.MarshalDir(txn.Mkdir)
		if err != nil {
			return nil, err
		}
		pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
		pl.ops = append(pl.ops, clientv3.OpPut(dk, string(v)))
		return pl, nil
	case txn.Rmdir:
		switch {
		case cur != 0:
			return nil, rpc.Errorf(rpc.Invalid, "rmdir %s: a file, not a directory", p)
		case !s.isDir(r, p):
			return nil, rpc.Errorf(rpc.NotFound, "rmdir %s: no such directory", p)
		case len(r.below) > 1:
			return nil, rpc.Errorf(rpc.Other, "rmdir %s: %w", p, meta.ErrNotEmpty)
		}
		pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", r.get(dk).CreateRevision),
			clientv3.Compare(clientv3.CreateRevision(dk+"\x00"), "=", 0).WithRange(clientv3.GetPrefixRangeEnd(dk)))
		pl.ops = append(pl.ops, clientv3.OpDelete(dk))
		return pl, nil
	case txn.Move != nil:
		return s.planMove(txn, r, pl, cur)
	case txn.SetAttr != nil:
		return s.planSetAttr(txn, r, pl, cur)
	}
	if txn.Delete && cur == 0 {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	if cur != txn.Expect {
		return nil, meta.Conflict(p, cur, txn.Expect)
	}
	switch {
	case txn.Put != nil:
		if s.isDir(r, p) {
			return nil, rpc.Errorf(rpc.Exists, "%s is a directory", p)
		}
		pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
		if _, err := s.parents(r, pl, p, meta.Dir{Modified: txn.Put.Modified, Attr: txn.Parents}); err != nil {
			return nil, err
		}
		v, err := meta.MarshalFile(txn.Put)
		if err != nil {
			return nil, err
		}
		pl.ops = append(pl.ops, clientv3.OpPut(fk, string(v)))
		pl.value = v
	case txn.Delete:
		pl.ops = append(pl.ops, clientv3.OpDelete(fk))
	}
	return pl, nil
}

// planSetAttr plans a SetAttr; cur is the version of the file at the
// txn's path. The compares keep the record it rewrites as read.
func (s *Store) planSetAttr(txn *meta.Txn, r *pathRead, pl *plan, cur uint64) (*plan, error) {
	p := txn.Path
	fk, dk := s.fileKey(p), s.dirKey(p)
	switch {
	case cur != 0:
		f, err := s.decodeFile(r.get(fk))
		if err != nil {
			return nil, err
		}
		f.Attr = *txn.SetAttr
		v, err := meta.MarshalFile(f)
		if err != nil {
			return nil, err
		}
		pl.ops = append(pl.ops, clientv3.OpPut(fk, string(v)))
		pl.value = v
	case s.isDir(r, p):
		d, err := s.decodeDir(r.get(dk))
		if err != nil {
			return nil, err
		}
		d.Attr = *txn.SetAttr
		v, err := meta.MarshalDir(d)
		if err != nil {
			return nil, err
		}
		pl.cmps = append(pl.cmps, modIs(r, dk))
		pl.ops = append(pl.ops, clientv3.OpPut(dk, string(v)))
	default:
		return nil, rpc.Errorf(rpc.NotFound, "setattr %s: no such file or directory", p)
	}
	return pl, nil
}

// planMove plans a Move; cur is the version of the file at the txn's path.
func (s *Store) planMove(txn *meta.Txn, r *pathRead, pl *plan, cur uint64) (*plan, error) {
	p, to := txn.Path, txn.Move.To
	dk := s.dirKey(p)
	dir := s.isDir(r, p)
	if same, err := meta.CheckMoveSource(txn, cur, dir); err != nil {
		return nil, err
	} else if same {
		if dir {
			pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "=", r.get(dk).CreateRevision))
		}
		return pl, nil
	}
	dst, err := s.version(r, to)
	if err != nil {
		return nil, err
	}
	if err := meta.CheckMoveTarget(txn, dir, dst, s.isDir(r, to)); err != nil {
		return nil, err
	}
	if dir && (r.more || len(r.below) > s.MaxMoveEntries()) {
		return nil, rpc.Errorf(rpc.ResourceExhausted,
			"move %s: the directory holds more than %d files and directories, more than one move may rewrite in the etcd metadata store "+
				"(one etcd txn; raise etcd's --max-txn-ops and the store's limit with it, or move its subdirectories one by one)", p, s.MaxMoveEntries())
	}
	pl.cmps = append(pl.cmps, modIs(r, s.fileKey(to)), clientv3.Compare(clientv3.CreateRevision(s.dirKey(to)), "=", 0))
	if _, err := s.parents(r, pl, to, meta.Dir{Modified: txn.Move.Modified, Attr: txn.Parents}); err != nil {
		return nil, err
	}
	if !dir {
		f, err := s.decodeFile(r.get(s.fileKey(p)))
		if err != nil {
			return nil, err
		}
		f.Path = to
		v, err := meta.MarshalFile(f)
		if err != nil {
			return nil, err
		}
		pl.ops = append(pl.ops, clientv3.OpDelete(s.fileKey(p)), clientv3.OpPut(s.fileKey(to), string(v)))
		return pl, nil
	}
	// Every key below stays as read (its ModRevision), and none is added
	// (every key in the range was created by the read's revision).
	end := clientv3.GetPrefixRangeEnd(dk)
	pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.CreateRevision(dk), "<", r.rev+1).WithRange(end))
	pl.ops = append(pl.ops, clientv3.OpDelete(dk, clientv3.WithRange(end)))
	fpfx := s.pfx + "f"
	for _, kv := range r.below {
		pl.cmps = append(pl.cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		k := string(kv.Key)
		isDirKey := strings.HasSuffix(k, "/")
		old := rpc.Path(strings.TrimSuffix(k[len(fpfx):], "/"))
		np := to + old[len(p):]
		var v []byte
		var nk string
		if isDirKey {
			d, err := s.decodeDir(kv)
			if err != nil {
				return nil, err
			}
			d.Path = np
			if v, err = meta.MarshalDir(d); err != nil {
				return nil, err
			}
			nk = s.dirKey(np)
		} else {
			f, err := s.decodeFile(kv)
			if err != nil {
				return nil, err
			}
			f.Path = np
			if v, err = meta.MarshalFile(f); err != nil {
				return nil, err
			}
			nk = s.fileKey(np)
		}
		pl.ops = append(pl.ops, clientv3.OpPut(nk, string(v)))
	}
	return pl, nil
}

// commitPath applies a txn that names a path: ups (upload and drain
// changes) travel with the path change, dels may follow.
func (s *Store) commitPath(ctx context.Context, txn *meta.Txn, ups, dels []clientv3.Op) error {
	depth := strings.Count(string(txn.Path), "/")
	if txn.Move != nil {
		depth = max(depth, strings.Count(string(txn.Move.To), "/"))
	}
	if 3+depth > s.opts.MaxTxnOps {
		return rpc.Errorf(rpc.Invalid, "path %s is %d levels deep; the etcd metadata store allows at most %d", txn.Path, depth, s.opts.MaxTxnOps-3)
	}
	// The first read is serializable (served by the member without a
	// round of consensus): the txn's compares verify what it saw, and a
	// failure it predicts is confirmed by a linearizable read before
	// Commit returns it.
	serializable := true
	for attempt := 0; attempt < maxCommitAttempts; attempt++ {
		r, err := s.readPath(ctx, txn, serializable)
		if err != nil {
			return err
		}
		pl, err := s.plan(txn, r)
		if err != nil && serializable {
			serializable = false
			attempt--
			continue
		}
		if err != nil {
			if ferr := s.checkFence(ctx); ferr != nil {
				return ferr
			}
			return err
		}
		serializable = false
		mandatory := append(slices.Clip(pl.ops), ups...)
		cmps := s.fenced(pl.cmps...)
		if len(mandatory) > s.opts.MaxTxnOps || len(cmps) > s.opts.MaxTxnOps {
			what := fmt.Sprintf("changes %d keys with %d checks", len(mandatory), len(cmps))
			if txn.Move != nil {
				return rpc.Errorf(rpc.ResourceExhausted, "txn for %s %s; the etcd metadata store allows %d of each per txn (its MaxTxnOps)", txn.Path, what, s.opts.MaxTxnOps)
			}
			return rpc.Errorf(rpc.Invalid, "txn for %s %s (uploads, drains and the directories it creates); the etcd metadata store allows %d of each per txn", txn.Path, what, s.opts.MaxTxnOps)
		}
		used := opsSize(mandatory)
		for _, c := range cmps {
			used += len(c.KeyBytes()) + len(c.GetCompare().GetRangeEnd()) + opOverhead
		}
		bs := s.batches(dels, s.opts.MaxTxnOps-len(mandatory), s.opts.MaxTxnBytes-used)
		then := append(mandatory, bs[0]...)
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Commit()
		if err != nil {
			if pl.value != nil && s.applied(ctx, s.fileKey(txn.Path), pl.value) {
				return s.applyRest(ctx, bs[1:], fmt.Sprintf("change of %s ", txn.Path))
			}
			return etcdError(fmt.Sprintf("commit %s (%d ops, %d bytes)", txn.Path, len(then), opsSize(then)), err)
		}
		if tr.Succeeded {
			return s.applyRest(ctx, bs[1:], fmt.Sprintf("change of %s ", txn.Path))
		}
		if err := s.checkFence(ctx); err != nil {
			return err
		}
	}
	return rpc.Errorf(rpc.Unavailable, "etcdstore: commit %s: the path changed under %d attempts; try again", txn.Path, maxCommitAttempts)
}
