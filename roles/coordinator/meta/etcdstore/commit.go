package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
// A txn that names a path is one etcd txn whose compares implement the
// checks (see paths.go): the ModRevision of each key the checks read
// (the version lives inside the value, so the store compares the
// revision that identifies the value it read; a revision also catches a
// delete and re-create that restores the same version), the absence of
// the path's directory key for a Put, the nearest existing ancestor
// directory and the absence of a file at each missing one, and for a
// Rmdir or a Move of a directory the range below it. A failure is
// classified from a new read of the same keys, so it is rpc.NotFound,
// ErrConflict, rpc.Exists or ErrNotEmpty exactly as metatest.Mem decides.
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
// A path deeper than MaxTxnOps-3 levels (125 with etcd's defaults) cannot
// be checked in one txn and is refused with rpc.Invalid, and so is a Put
// or Mkdir whose missing parents, checks and upload and drain changes do
// not fit one txn. A Move of a directory rewrites every key below it in
// its one txn: one with more than MaxMoveEntries entries is refused with
// rpc.ResourceExhausted.
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
	return s.commitPath(ctx, txn, append(ups, drains...), dels)
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
