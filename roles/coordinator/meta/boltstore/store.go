package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Store is a meta.Store in one bolt file. Every commit is durable when it
// returns (bolt fsyncs each write transaction); concurrent commits share
// write transactions, and so fsyncs (see Commit).
type Store struct {
	db   *bolt.DB
	path string
	log  zerolog.Logger

	batchDelay time.Duration
	clock      clockwork.Clock
	batchSize  int
	// mu guards the commits waiting for a write transaction and whether a
	// writer goroutine is running.
	mu      sync.Mutex
	queue   []*commit
	writing bool

	cluster atomic.Value // string
	// interrupted is the cluster of an interrupted restore the file holds
	// (its marker, see restore.go), or "": such a store is not
	// initialized, and refuses every use but a restore of that cluster.
	interrupted atomic.Value // string
	// initMu serializes Init: a restore spans many write transactions,
	// and a second one interleaved with it would take its marker for an
	// interrupted restore and clear what it wrote.
	initMu sync.Mutex
	// restoreBatch bounds each write transaction of a restore; tests
	// lower it to restore in many.
	restoreBatch restoreLimits

	closeOnce sync.Once
	closeErr  error

	// maxMove bounds the entries one Move rewrites: MaxMoveEntries;
	// tests lower it.
	maxMove int

	// applied counts runs of commit functions; tests check that a failed
	// check does not make bolt re-run the rest of its batch.
	applied atomic.Int64
}

var _ meta.Store = (*Store)(nil)

// walkPage is how many files Files reads per read transaction.
const walkPage = 512

// ClusterID returns the ID of the cluster the store belongs to, or "" for
// an uninitialized store.
func (s *Store) ClusterID() string {
	id, _ := s.cluster.Load().(string)
	return id
}

// ready refuses a store that is not initialized.
func (s *Store) ready() error {
	if s.ClusterID() != "" {
		return nil
	}
	if err := s.usable(); err != nil {
		return err
	}
	return rpc.Errorf(rpc.FailedPrecondition, "metadata store not initialized")
}

// usable refuses a store that holds an interrupted restore: its records
// are a part of a backup, which no read may take for the cluster's
// metadata (a backup of it would look whole). An uninitialized store
// without one is empty, and reads as such.
func (s *Store) usable() error {
	if id, _ := s.interrupted.Load().(string); id != "" {
		return interruptedErr(s.path, id)
	}
	return nil
}

// Close closes the file, waiting for transactions in progress. It is
// idempotent; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.db.Close()
		s.log.Info().Err(s.closeErr).Msg("metadata store closed")
	})
	return s.closeErr
}

// Get returns the file at p, or an error of kind rpc.NotFound.
func (s *Store) Get(ctx context.Context, p rpc.Path) (*meta.File, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	var f *meta.File
	err := s.view("boltstore.Get", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketFiles).Get([]byte(p))
		if v == nil {
			return rpc.Errorf(rpc.NotFound, "file %s not found", p)
		}
		var err error
		f, err = decodeFile([]byte(p), v)
		return err
	})
	return f, err
}

// Lookup returns what p names, a file or a directory, or an error of
// kind rpc.NotFound.
func (s *Store) Lookup(ctx context.Context, p rpc.Path) (meta.Entry, error) {
	if err := s.ready(); err != nil {
		return meta.Entry{}, err
	}
	if p == "/" {
		return meta.Root(), nil
	}
	var e meta.Entry
	err := s.view("boltstore.Lookup", func(tx *bolt.Tx) error {
		var found bool
		var err error
		e, found, err = lookup(tx.Bucket(bucketFiles), p)
		if err == nil && !found {
			err = rpc.Errorf(rpc.NotFound, "%s: no such file or directory", p)
		}
		return err
	})
	return e, err
}

// Walk implements meta.Namespace.Walk in one read transaction.
func (s *Store) Walk(ctx context.Context, p rpc.Path) ([]meta.Entry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	out := []meta.Entry{meta.Root()}
	if p == "/" {
		return out, nil
	}
	err := s.view("boltstore.Walk", func(tx *bolt.Tx) error {
		files := tx.Bucket(bucketFiles)
		for _, q := range meta.Lineage(p)[1:] {
			e, found, err := lookup(files, q)
			if err != nil || !found {
				return err
			}
			out = append(out, e)
			if !e.IsDir {
				return nil
			}
		}
		return nil
	})
	return out, err
}

// lookup reads what p (not the root) names from the files bucket.
func lookup(files *bolt.Bucket, p rpc.Path) (e meta.Entry, found bool, err error) {
	k := []byte(p)
	v := files.Get(k)
	if v == nil {
		k = dirKey(p)
		v = files.Get(k)
	}
	if v == nil {
		return meta.Entry{}, false, nil
	}
	e, err = decodeEntry(k, v)
	return e, err == nil, err
}

// List implements meta.Namespace.List with metatest.Mem's semantics: a
// cursor walks the sorted keys below dir (a directory's key, its path and
// a slash, comes right before what it holds), and without recursive it
// seeks past each subdirectory after emitting it, so a listing costs one
// seek per entry whatever lies below.
func (s *Store) List(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	var out []meta.Entry
	err := s.view("boltstore.List", func(tx *bolt.Tx) error {
		files := tx.Bucket(bucketFiles)
		prefix := meta.DirKey(dir)
		if dir == "/" {
			prefix = "/"
		} else if v := files.Get([]byte(dir)); v != nil {
			// A file lists itself.
			if after >= string(dir) {
				return nil
			}
			f, err := decodeFile([]byte(dir), v)
			if err != nil {
				return err
			}
			out = []meta.Entry{{Path: dir, File: f}}
			return nil
		} else if files.Get([]byte(prefix)) == nil {
			return rpc.Errorf(rpc.NotFound, "%s: no such file or directory", dir)
		}
		start := prefix + "\x00" // past the directory's own key
		if after >= start {
			start = meta.ListResume(after, recursive)
		}
		c := files.Cursor()
		var walked span
		defer func() { s.releaseSpan(tx, walked) }() // a listing of millions of files leaves no trace in the RSS
		k, v := c.Seek([]byte(start))
		for k != nil && len(out) < limit && bytes.HasPrefix(k, []byte(prefix)) {
			walked.add(k)
			walked.add(v)
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			if e.IsDir && !recursive {
				// Seek past everything below it.
				k, v = c.Seek([]byte(meta.ListStart(string(k))))
				continue
			}
			k, v = c.Next()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Uploads returns every open upload session, ordered by ID.
func (s *Store) Uploads(ctx context.Context) ([]*meta.Upload, error) {
	var out []*meta.Upload
	err := s.walk("boltstore.Uploads", bucketUploads, nil, func(k, v []byte) (bool, error) {
		u, err := decodeUpload(k, v)
		if err == nil {
			out = append(out, u)
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Deletions returns every pending deletion, ordered by meta.DeletionKey.
func (s *Store) Deletions(ctx context.Context) ([]meta.Deletion, error) {
	out := []meta.Deletion{}
	err := s.walk("boltstore.Deletions", bucketDeletions, nil, func(k, _ []byte) (bool, error) {
		d, err := decodeDeletion(k)
		if err == nil {
			out = append(out, d)
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Drains returns every draining datanode, ordered by ID.
func (s *Store) Drains(ctx context.Context) ([]rpc.NodeID, error) {
	out := []rpc.NodeID{}
	err := s.walk("boltstore.Drains", bucketDrains, nil, func(k, _ []byte) (bool, error) {
		n, err := decodeDrain(k)
		if err == nil {
			out = append(out, n)
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// walk calls fn with the records of bucket in key order, from the first
// key after after (from the first key when after is nil), in one read
// transaction, until fn returns false or an error. A record that does not
// decode, or a page that cannot be read, fails it with an error of kind
// rpc.Internal that names the file, the bucket and the record: the key
// of a record that does not decode, the last key read before a damaged
// page.
func (s *Store) walk(op string, bucket, after []byte, fn func(k, v []byte) (bool, error)) error {
	if err := s.usable(); err != nil {
		return err
	}
	last := after  // the last key fn accepted
	var bad []byte // the key fn refused
	err := s.view(op, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return rpc.Errorf(rpc.Internal, "no %q bucket", bucket)
		}
		var walked span
		defer func() { s.releaseSpan(tx, walked) }() // a walk over every record leaves no trace in the RSS
		c := b.Cursor()
		k, v := c.First()
		if after != nil {
			if k, v = c.Seek(after); bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			walked.add(k)
			walked.add(v)
			more, err := fn(k, v)
			if err != nil {
				bad = bytes.Clone(k)
				return err
			}
			last = bytes.Clone(k)
			if !more {
				return nil
			}
		}
		return nil
	})
	if err == nil || rpc.KindOf(err) != rpc.Internal {
		return err
	}
	return damagedErr(s.path, bucket, bad, last, err)
}

// damagedErr says where in the file at path a read failed with cause: at
// the record with key bad if there is one, else after the record last.
func damagedErr(path string, bucket, bad, last []byte, cause error) error {
	at := fmt.Sprintf("the record %q", bad)
	switch {
	case bad != nil:
	case last != nil:
		at = fmt.Sprintf("the records after %q (a damaged page)", last)
	default:
		at = "its first records (a damaged page)"
	}
	return rpc.Errorf(rpc.Internal, "damaged metadata file %s: bucket %q, %s: %w", path, bucket, at, cause)
}

// Files calls fn for every committed file in path order, skipping the
// directories. It reads the
// files in pages of walkPage, each in its own read transaction, and calls
// fn between transactions, so fn may use the store (a commit that grows
// the file would deadlock against a read transaction held open across
// it) and a long walk never pins old pages. A commit concurrent with the
// walk may or may not be seen; every file is seen at most once.
func (s *Store) Files(ctx context.Context, fn func(*meta.File) error) error {
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page := make([]*meta.File, 0, walkPage)
		err := s.walk("boltstore.Files", bucketFiles, after, func(k, v []byte) (bool, error) {
			if isDirKey(k) {
				return true, nil
			}
			f, err := decodeFile(k, v)
			if err != nil {
				return false, err
			}
			page = append(page, f)
			return len(page) < walkPage, nil
		})
		if err != nil {
			return err
		}
		for _, f := range page {
			if err := fn(f); err != nil {
				return err
			}
		}
		if len(page) < walkPage {
			return nil
		}
		after = []byte(page[len(page)-1].Path)
	}
}

// Snapshot calls fn with every record of one read transaction: files and
// directories in key order (meta.ListKey's), then uploads by ID, then deletions by key, then drains by
// node ID. fn must not call the store.
func (s *Store) Snapshot(ctx context.Context, fn func(meta.Record) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	return s.view("boltstore.Snapshot", func(tx *bolt.Tx) error {
		n := 0
		check := func() error {
			n++
			if n%1024 == 0 {
				return ctx.Err()
			}
			return nil
		}
		err := tx.Bucket(bucketFiles).ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err == nil {
				err = check()
			}
			if err == nil {
				err = fn(meta.Record{File: e.File, Dir: e.Dir})
			}
			return err
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketUploads).ForEach(func(k, v []byte) error {
			u, err := decodeUpload(k, v)
			if err == nil {
				err = check()
			}
			if err == nil {
				err = fn(meta.Record{Upload: u})
			}
			return err
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketDeletions).ForEach(func(k, _ []byte) error {
			d, err := decodeDeletion(k)
			if err == nil {
				err = check()
			}
			if err == nil {
				err = fn(meta.Record{Deletion: &d})
			}
			return err
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDrains).ForEach(func(k, _ []byte) error {
			n, err := decodeDrain(k)
			if err == nil {
				err = check()
			}
			if err == nil {
				err = fn(meta.Record{Drain: &n})
			}
			return err
		})
	})
}

// Commit applies txn atomically and durably, sharing a write transaction
// and its fsync with concurrent commits: one writer goroutine at a time
// takes every commit queued so far into one transaction, and those that
// arrive while it is written go in the next. The checks (version,
// directory, parent) run inside the transaction, but a failed check is
// only recorded, not returned to bolt: returning it would roll back the
// whole batch. Only errors from bolt itself (a failed write) fail the
// commit that hit them, and the batch is written again without it; a
// failed commit of the transaction (fsync) fails the whole batch and
// leaves nothing applied. A context that ends while the commit waits for
// its batch withdraws it; one that ends later does not undo it.
func (s *Store) Commit(ctx context.Context, txn *meta.Txn) error {
	if err := meta.CheckTxn(txn); err != nil {
		return err
	}
	if err := s.ready(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Encode outside the batch: the encoding is the commit's CPU work and
	// runs in parallel in the callers; the batch only checks and writes.
	c := &commit{ctx: ctx, txn: txn, applied: &s.applied, maxMove: s.maxMove}
	var err error
	if txn.Put != nil {
		if c.file, err = encodeFile(txn.Put); err != nil {
			return err
		}
	}
	for _, u := range txn.PutUploads {
		b, err := encodeUpload(u)
		if err != nil {
			return err
		}
		c.uploads = append(c.uploads, b)
	}
	for _, d := range txn.AddDeletions {
		k, err := deletionKey(d)
		if err != nil {
			return err
		}
		c.dels = append(c.dels, k)
	}
	for _, n := range txn.Drain {
		k, err := drainKey(n)
		if err != nil {
			return err
		}
		c.drains = append(c.drains, k)
	}
	c.done = make(chan error, 1)
	s.mu.Lock()
	s.queue = append(s.queue, c)
	if !s.writing {
		s.writing = true
		go s.write()
	}
	s.mu.Unlock()
	return <-c.done
}

// write writes batches until no commit is queued.
func (s *Store) write() {
	for {
		if s.batchDelay > 0 {
			s.clock.Sleep(s.batchDelay)
		}
		s.mu.Lock()
		n := min(len(s.queue), s.batchSize)
		if n == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		batch := slices.Clone(s.queue[:n])
		s.queue = slices.Delete(s.queue, 0, n)
		s.mu.Unlock()
		s.writeBatch(batch)
	}
}

// writeBatch applies batch in one write transaction and tells each commit
// its result; a commit whose writes fail is dropped and the rest written
// again.
func (s *Store) writeBatch(batch []*commit) {
	for len(batch) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range batch {
				if err := c.apply(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].done <- boltErr("boltstore.Commit", err)
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		for _, c := range batch {
			if err != nil {
				c.done <- boltErr("boltstore.Commit", err)
			} else {
				c.done <- c.res
			}
		}
		return
	}
}

// commit is one Commit's work. apply may run more than once (a batch is
// written again without a member whose writes failed), always in a fresh
// transaction, so it computes res anew each time.
type commit struct {
	ctx     context.Context
	txn     *meta.Txn
	file    []byte
	uploads [][]byte
	dels    [][]byte
	drains  [][]byte
	applied *atomic.Int64
	done    chan error // receives the commit's result
	// mk lists the directories the commit creates, as check found them.
	mk []rpc.Path
	// maxMove bounds the entries a Move rewrites (Store.maxMove).
	maxMove int

	res error
}

func (c *commit) apply(tx *bolt.Tx) (err error) {
	defer guard("boltstore.Commit", &err)
	c.applied.Add(1)
	c.res = c.ctx.Err()
	if c.res == nil {
		c.res = c.check(tx)
	}
	if c.res != nil {
		return nil // nothing written; only this caller sees the error
	}
	return c.write(tx)
}

// check runs Mem's checks, in Mem's order, without writing, and records
// in c the directories the commit creates.
func (c *commit) check(tx *bolt.Tx) error {
	txn := c.txn
	c.mk = nil
	if txn.Path == "" {
		return nil
	}
	files := tx.Bucket(bucketFiles)
	p := txn.Path
	cur, err := fileVersion(files, p)
	if err != nil {
		return err
	}
	switch {
	case txn.Mkdir != nil:
		c.mk, err = checkMkdir(files, txn, cur)
		return err
	case txn.Rmdir:
		return checkRmdir(files, p, cur)
	case txn.Move != nil:
		c.mk, err = checkMove(files, txn, cur, c.maxMove)
		return err
	case txn.SetAttr != nil:
		return checkSetAttr(files, p, cur)
	}
	if txn.Delete && cur == 0 {
		return rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	if cur != txn.Expect {
		return meta.Conflict(p, cur, txn.Expect)
	}
	if txn.Put != nil {
		if isDir(files, p) {
			return rpc.Errorf(rpc.Exists, "%s is a directory", p)
		}
		c.mk, err = missingParents(files, p)
		return err
	}
	return nil
}

func (c *commit) write(tx *bolt.Tx) error {
	txn := c.txn
	files, uploads, dels, drains := tx.Bucket(bucketFiles), tx.Bucket(bucketUploads), tx.Bucket(bucketDeletions), tx.Bucket(bucketDrains)
	var errs []error
	if len(c.mk) > 0 {
		errs = append(errs, putDirs(files, txn, c.mk, txnModified(txn)))
	}
	switch {
	case txn.Put != nil:
		errs = append(errs, files.Put([]byte(txn.Path), c.file))
	case txn.Delete:
		errs = append(errs, files.Delete([]byte(txn.Path)))
	case txn.Rmdir:
		errs = append(errs, files.Delete(dirKey(txn.Path)))
	case txn.Move != nil && txn.Move.To != txn.Path:
		errs = append(errs, move(files, txn.Path, txn.Move.To))
	case txn.SetAttr != nil:
		errs = append(errs, setAttr(files, txn.Path, *txn.SetAttr))
	}
	for i, u := range txn.PutUploads {
		errs = append(errs, uploads.Put([]byte(u.ID), c.uploads[i]))
	}
	for _, id := range txn.DeleteUploads {
		errs = append(errs, uploads.Delete([]byte(id)))
	}
	for _, k := range c.dels {
		errs = append(errs, dels.Put(k, []byte{}))
	}
	for _, d := range txn.DoneDeletions {
		errs = append(errs, dels.Delete([]byte(meta.DeletionKey(d))))
	}
	for _, k := range c.drains {
		errs = append(errs, drains.Put(k, []byte{}))
	}
	for _, n := range txn.Undrain {
		errs = append(errs, drains.Delete([]byte(n)))
	}
	return errors.Join(errs...)
}

// view runs fn in a read transaction, turning a panic or memory fault in
// bolt (a damaged page) into an error.
func (s *Store) view(op string, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(op, &err)
	if err := s.db.View(fn); err != nil {
		return boltErr(op, err)
	}
	return nil
}

// update runs fn in a write transaction of its own, like view.
func (s *Store) update(op string, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(op, &err)
	if err := s.db.Update(fn); err != nil {
		return boltErr(op, err)
	}
	return nil
}

// noSpace reports whether err is the file system's "disk full" or "quota
// exceeded". bolt wraps most write errors, but reports a failed resize with
// %s, so its text is matched too.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) || strings.Contains(err.Error(), syscall.EDQUOT.Error())
}

func guard(op string, err *error) {
	if r := recover(); r != nil {
		*err = rpc.Errorf(rpc.Internal, "%s: reading the metadata file failed (damaged?): %v", op, r)
	}
}

// boltErr passes our own errors through and classifies bolt's.
func boltErr(op string, err error) error {
	var e *rpc.Error
	switch {
	case errors.As(err, &e), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return rpc.Errorf(rpc.FailedPrecondition, "%s: metadata store is closed", op)
	case noSpace(err):
		return rpc.Errorf(rpc.ResourceExhausted, "%s: no space left for metadata (free space on the coordinator's data dir; nothing was written): %w", op, err)
	default:
		return rpc.Errorf(rpc.Internal, "%s: %w", op, err)
	}
}
