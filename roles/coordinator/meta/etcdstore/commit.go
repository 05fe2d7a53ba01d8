package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

const (
	// maxCommitAttempts bounds the retries of a commit whose file key
	// changed between its read and its txn without changing version (a
	// delete and re-create by others): each retry needs another writer to
	// have won, so hitting the bound means heavy contention.
	maxCommitAttempts = 16
	// restTimeout bounds how long Commit keeps retrying the deletion
	// batches that follow a txn's first, conditional part.
	restTimeout = 30 * time.Second
	// opOverhead approximates the encoding overhead of one op or compare.
	opOverhead = 32
)

// Commit applies txn.
//
// A txn that changes a file is one etcd txn whose compares implement the
// checks: the file key's ModRevision equals the one read just before (the
// version lives inside the value, so the store compares the revision that
// identifies the value it read; a revision also catches a delete and
// re-create that restores the same version), no key lies below the path
// (a compare over the range <prefix>f<path>/ — on an empty range etcd
// compares against an absent key, so CreateRevision = 0 holds exactly
// when the range is empty), and no ancestor is a file (CreateRevision = 0
// on each ancestor key). The txn's Else branch reads the same keys, so a
// failure is classified from the state that made it fail: rpc.NotFound,
// ErrConflict or rpc.Exists exactly as metatest.Mem decides.
//
// Size limits: the file change, its checks and the txn's upload and drain
// changes always travel in that one txn. Chunk deletions (AddDeletions,
// DoneDeletions) that do not fit beside them within MaxTxnOps and
// MaxTxnBytes follow in further txns, applied only after the first one
// succeeded. Those are the only parts ever split, and splitting them is
// safe: a crash in between loses some AddDeletions, which leaves orphan
// chunks for the collector rather than losing data, or some
// DoneDeletions, which only repeats a delete. If those later txns still
// fail after retries, Commit returns an error although the file change
// is durable. A txn without a path is only upload, deletion and drain
// changes; its drain changes travel in its first txn, each of its
// batches is atomic, and when it does not fit one txn a failure can leave
// the earlier batches applied. A txn with more drain changes (plus, with
// a path, upload changes and the file change) than MaxTxnOps is refused
// with rpc.Invalid.
//
// Durability: etcd answers a txn once a quorum of members has it in
// their fsynced logs, and concurrent commits share those fsyncs. An error
// of kind Unavailable or DeadlineExceeded can leave a txn's fate unknown;
// for a put Commit settles it by reading the key back (a version's
// encoding is unique to its upload), while a caller that gets such an
// error for a delete re-reads the path before it retries.
//
// A path deeper than MaxTxnOps-2 levels (126 with etcd's defaults) cannot
// be checked in one txn and is refused with rpc.Invalid.
func (s *Store) Commit(ctx context.Context, txn *meta.Txn) error {
	if err := meta.CheckTxn(txn); err != nil {
		return err
	}
	if err := s.ready(); err != nil {
		return err
	}
	ups, err := s.uploadOps(txn)
	if err != nil {
		return err
	}
	dels := s.deletionOps(txn)
	drains := s.drainOps(txn)
	if txn.Path == "" {
		return s.commitUnconditional(ctx, drains, append(ups, dels...))
	}
	return s.commitFile(ctx, txn, append(ups, drains...), dels)
}

// uploadOps returns the upload changes as their final state per key: a
// txn that puts and deletes one upload deletes it, as Mem applies puts
// first. etcd refuses a txn that touches a key twice.
func (s *Store) uploadOps(txn *meta.Txn) ([]clientv3.Op, error) {
	final := map[string]clientv3.Op{}
	for _, u := range txn.PutUploads {
		v, err := meta.MarshalUpload(u)
		if err != nil {
			return nil, err
		}
		k := s.uploadKey(u.ID)
		final[k] = clientv3.OpPut(k, string(v))
	}
	for _, id := range txn.DeleteUploads {
		k := s.uploadKey(id)
		final[k] = clientv3.OpDelete(k)
	}
	return sortedOps(final), nil
}

// deletionOps returns the deletion changes, final state per key.
func (s *Store) deletionOps(txn *meta.Txn) []clientv3.Op {
	final := map[string]clientv3.Op{}
	for _, d := range txn.AddDeletions {
		k := s.deletionKey(d)
		final[k] = clientv3.OpPut(k, string(marshalDeletion(d)))
	}
	for _, d := range txn.DoneDeletions {
		k := s.deletionKey(d)
		final[k] = clientv3.OpDelete(k)
	}
	return sortedOps(final)
}

// drainOps returns the drain changes, final state per key.
func (s *Store) drainOps(txn *meta.Txn) []clientv3.Op {
	final := map[string]clientv3.Op{}
	for _, n := range txn.Drain {
		k := s.drainKey(n)
		final[k] = clientv3.OpPut(k, "")
	}
	for _, n := range txn.Undrain {
		k := s.drainKey(n)
		final[k] = clientv3.OpDelete(k)
	}
	return sortedOps(final)
}

func sortedOps(m map[string]clientv3.Op) []clientv3.Op {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = m[k]
	}
	return ops
}

func opSize(op clientv3.Op) int {
	return len(op.KeyBytes()) + len(op.ValueBytes()) + len(op.RangeBytes()) + opOverhead
}

func opsSize(ops []clientv3.Op) int {
	n := 0
	for _, op := range ops {
		n += opSize(op)
	}
	return n
}

// batches splits ops into txns: the first holds at most firstOps ops and
// firstBytes bytes (it may be empty), the others MaxTxnOps and
// MaxTxnBytes. An op larger than a whole batch gets a batch of its own.
func (s *Store) batches(ops []clientv3.Op, firstOps, firstBytes int) [][]clientv3.Op {
	out := [][]clientv3.Op{nil}
	n, size := firstOps, firstBytes
	for _, op := range ops {
		sz := opSize(op)
		cur := out[len(out)-1]
		if fits := len(cur) < n && sz <= size; !fits && (len(out) == 1 || len(cur) > 0) {
			out = append(out, nil)
			n, size = s.opts.MaxTxnOps, s.opts.MaxTxnBytes
		}
		out[len(out)-1] = append(out[len(out)-1], op)
		size -= sz
	}
	return out
}

// fenced appends the leadership compare, if the store is fenced.
func (s *Store) fenced(cmps ...clientv3.Cmp) []clientv3.Cmp {
	if l := s.fence.Load(); l != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev))
	}
	return cmps
}

// checkFence reports rpc.Unavailable when the fencing leadership is gone.
func (s *Store) checkFence(ctx context.Context) error {
	l := s.fence.Load()
	if l == nil {
		return nil
	}
	resp, err := s.cli.Get(ctx, l.key, clientv3.WithKeysOnly())
	if err != nil {
		return etcdError("check leadership", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.rev {
		return errLostLeadership(l)
	}
	return nil
}

// ErrNotLeader is in the chain of a write refused because the store's
// fencing leadership (SetFence) is gone; its kind is rpc.Unavailable.
var ErrNotLeader = errors.New("etcdstore: not the leader")

func errLostLeadership(l *Leadership) error {
	return fmt.Errorf("%w: %w", ErrNotLeader, rpc.Errorf(rpc.Unavailable, "leadership of %s lost", l.name))
}

// commitUnconditional applies first, all in the first txn, and then ops
// in as few batches as the limits allow.
func (s *Store) commitUnconditional(ctx context.Context, first, ops []clientv3.Op) error {
	if len(first)+len(ops) == 0 {
		return nil
	}
	if len(first) > s.opts.MaxTxnOps {
		return rpc.Errorf(rpc.Invalid, "txn changes %d drains; the etcd metadata store allows %d per txn", len(first), s.opts.MaxTxnOps)
	}
	bs := s.batches(ops, s.opts.MaxTxnOps-len(first), s.opts.MaxTxnBytes-opsSize(first))
	if err := s.applyBatch(ctx, append(slices.Clip(first), bs[0]...)); err != nil {
		return err
	}
	return s.applyRest(ctx, bs[1:], "")
}

// applyBatch applies one batch of unconditional ops (fenced).
func (s *Store) applyBatch(ctx context.Context, ops []clientv3.Op) error {
	tr, err := s.cli.Txn(ctx).If(s.fenced()...).Then(ops...).Commit()
	if err != nil {
		return etcdError(fmt.Sprintf("commit (%d ops, %d bytes)", len(ops), opsSize(ops)), err)
	}
	if !tr.Succeeded {
		return errLostLeadership(s.fence.Load())
	}
	return nil
}

// applyRest applies the batches that follow a committed first txn,
// retrying each (they are idempotent) for up to restTimeout, even past
// ctx's end: the first part is already durable, and leaving the rest
// undone only leaks chunks.
func (s *Store) applyRest(ctx context.Context, bs [][]clientv3.Op, what string) error {
	if len(bs) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restTimeout)
	defer cancel()
	total := 0
	for _, b := range bs {
		total += len(b)
	}
	done := 0
	for _, b := range bs {
		delay := 50 * time.Millisecond
		for {
			err := s.applyBatch(rctx, b)
			if err == nil {
				break
			}
			if rctx.Err() != nil || rpc.KindOf(err) != rpc.Unavailable || errors.Is(err, ErrNotLeader) {
				return fmt.Errorf("etcdstore: %scommitted, but %d of %d deletion changes were not: %w", what, total-done, total, err)
			}
			_ = rpc.Sleep(rctx, nil, delay) // an ended rctx fails the next attempt
			delay = min(2*delay, time.Second)
		}
		done += len(b)
	}
	return nil
}

// commitFile applies a txn that names a path: ups (upload and drain
// changes) travel with the file change, dels may follow.
func (s *Store) commitFile(ctx context.Context, txn *meta.Txn, ups, dels []clientv3.Op) error {
	fk := s.fileKey(txn.Path)
	var ancestors []string
	if txn.Put != nil {
		for d := txn.Path.Dir(); d != "/"; d = d.Dir() {
			ancestors = append(ancestors, s.fileKey(d))
		}
	}
	if 3+len(ancestors) > s.opts.MaxTxnOps {
		return rpc.Errorf(rpc.Invalid, "path %s is %d levels deep; the etcd metadata store allows at most %d", txn.Path, len(ancestors)+1, s.opts.MaxTxnOps-2)
	}
	dirStart := fk + "/"
	dirEnd := clientv3.GetPrefixRangeEnd(dirStart)

	// The file op and its reads.
	var fileOp clientv3.Op
	var value []byte
	switch {
	case txn.Put != nil:
		v, err := meta.MarshalFile(txn.Put)
		if err != nil {
			return err
		}
		fileOp, value = clientv3.OpPut(fk, string(v)), v
	case txn.Delete:
		fileOp = clientv3.OpDelete(fk)
	}
	var mandatory []clientv3.Op
	if fileOp.KeyBytes() != nil {
		mandatory = append(mandatory, fileOp)
	}
	mandatory = append(mandatory, ups...)
	if len(mandatory) > s.opts.MaxTxnOps {
		return rpc.Errorf(rpc.Invalid, "txn for %s changes %d uploads and drains; the etcd metadata store allows %d changes per txn", txn.Path, len(ups), s.opts.MaxTxnOps-1)
	}
	reads := []clientv3.Op{clientv3.OpGet(fk)}
	if txn.Put != nil {
		reads = append(reads, clientv3.OpGet(dirStart, clientv3.WithRange(dirEnd), clientv3.WithLimit(1), clientv3.WithKeysOnly()))
		for _, a := range ancestors {
			reads = append(reads, clientv3.OpGet(a, clientv3.WithKeysOnly()))
		}
	}
	fence, fenceIdx := s.fence.Load(), -1
	if fence != nil {
		fenceIdx = len(reads)
		reads = append(reads, clientv3.OpGet(fence.key, clientv3.WithKeysOnly()))
	}

	// Read the file key, and whether the path is a directory, before
	// writing: the read gives the ModRevision to compare, classifies most
	// failures without a write, and keeps a put onto a large directory
	// from making etcd scan the directory in a compare. The read is
	// serializable (served by the member without a round of consensus):
	// the txn's compares verify what it saw, and a failure it predicts is
	// confirmed by a linearizable read before Commit returns it.
	preRead := func(serializable bool) ([]*pb.ResponseOp, error) {
		var o []clientv3.OpOption
		if serializable {
			o = append(o, clientv3.WithSerializable())
		}
		pre := []clientv3.Op{clientv3.OpGet(fk, o...)}
		if txn.Put != nil {
			pre = append(pre, clientv3.OpGet(dirStart, append(o, clientv3.WithRange(dirEnd), clientv3.WithLimit(1), clientv3.WithKeysOnly())...))
		}
		resp, err := s.cli.Txn(ctx).Then(pre...).Commit()
		if err != nil {
			return nil, etcdError("commit "+string(txn.Path), err)
		}
		return resp.Responses, nil
	}
	state, err := preRead(true)
	if err != nil {
		return err
	}
	stateFence, serializable := -1, true
	for attempt := 0; attempt < maxCommitAttempts; attempt++ {
		modRev, err := s.classify(txn, state, len(ancestors), fence, stateFence)
		if err != nil && serializable {
			if state, err = preRead(false); err != nil {
				return err
			}
			serializable = false
			modRev, err = s.classify(txn, state, len(ancestors), fence, stateFence)
		}
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(fk), "=", modRev)}
		if txn.Put != nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(dirStart), "=", 0).WithRange(dirEnd))
			for _, a := range ancestors {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(a), "=", 0))
			}
		}
		cmps = s.fenced(cmps...)
		used := opsSize(mandatory)
		for _, c := range cmps {
			used += len(c.KeyBytes()) + len(c.GetCompare().GetRangeEnd()) + opOverhead
		}
		bs := s.batches(dels, s.opts.MaxTxnOps-len(mandatory), s.opts.MaxTxnBytes-used)
		then := append(slices.Clip(mandatory), bs[0]...)
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(reads...).Commit()
		if err != nil {
			if value != nil && s.applied(ctx, fk, value) {
				return s.applyRest(ctx, bs[1:], fmt.Sprintf("change of %s ", txn.Path))
			}
			return etcdError(fmt.Sprintf("commit %s (%d ops, %d bytes)", txn.Path, len(then), opsSize(then)), err)
		}
		if tr.Succeeded {
			return s.applyRest(ctx, bs[1:], fmt.Sprintf("change of %s ", txn.Path))
		}
		state, stateFence, serializable = tr.Responses, fenceIdx, false
	}
	return rpc.Errorf(rpc.Unavailable, "etcdstore: commit %s: the file changed under %d attempts; try again", txn.Path, maxCommitAttempts)
}

// applied reports whether key holds value, read after a txn that put it
// failed with an error that leaves its fate unknown (a timeout, a lost
// connection, a leader change): a file version's encoding names chunks
// that belong to one upload, so finding it means the txn was applied.
func (s *Store) applied(ctx context.Context, key string, value []byte) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	resp, err := s.cli.Get(rctx, key)
	return err == nil && len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, value)
}

// classify decides a txn's fate from reads of its keys, in the order of
// reads built by commitFile (file, directory range, ancestors, fence; a
// prefix of them), exactly as Mem does, and returns the file key's
// ModRevision when nothing forbids the txn.
func (s *Store) classify(txn *meta.Txn, rs []*pb.ResponseOp, nAncestors int, fence *Leadership, fenceIdx int) (int64, error) {
	kvs := func(i int) []*mvccpb.KeyValue {
		if i >= len(rs) {
			return nil
		}
		return rs[i].GetResponseRange().GetKvs()
	}
	if fence != nil && fenceIdx >= 0 && fenceIdx < len(rs) {
		if k := kvs(fenceIdx); len(k) == 0 || k[0].CreateRevision != fence.rev {
			return 0, errLostLeadership(fence)
		}
	}
	var cur uint64
	var modRev int64
	if k := kvs(0); len(k) > 0 {
		f, err := meta.UnmarshalFile(k[0].Value)
		if err != nil {
			return 0, rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", k[0].Key, err)
		}
		cur, modRev = f.Version, k[0].ModRevision
	}
	if txn.Delete && cur == 0 {
		return 0, rpc.Errorf(rpc.NotFound, "file %s not found", txn.Path)
	}
	if cur != txn.Expect {
		return 0, meta.Conflict(txn.Path, cur, txn.Expect)
	}
	if txn.Put != nil {
		if len(kvs(1)) > 0 {
			return 0, rpc.Errorf(rpc.Exists, "%s is a directory", txn.Path)
		}
		for i, d := 0, txn.Path.Dir(); i < nAncestors; i, d = i+1, d.Dir() {
			if len(kvs(2+i)) > 0 {
				return 0, rpc.Errorf(rpc.Exists, "%s: parent %s is a file", txn.Path, d)
			}
		}
	}
	return modRev, nil
}
