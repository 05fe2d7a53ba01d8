package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Lost is a record, or a run of records, that Salvage could not copy.
type Lost struct {
	Bucket string
	// Key is the lost record's key, as read (it may be the damaged part);
	// empty for a run of records behind a damaged page, which After names.
	Key string
	// After is, for a run, the last key read before it ("" for the
	// bucket's start); the run ends at Before ("" for the bucket's end).
	After, Before string
	Reason        string
}

func (l Lost) String() string {
	if l.Key != "" {
		return fmt.Sprintf("lost %s record %q: %s", l.Bucket, l.Key, l.Reason)
	}
	from, to := "the start", "the end"
	if l.After != "" {
		from = fmt.Sprintf("%q", l.After)
	}
	if l.Before != "" {
		to = fmt.Sprintf("%q", l.Before)
	}
	return fmt.Sprintf("lost %s records between %s and %s (a damaged page): %s", l.Bucket, from, to, l.Reason)
}

// SalvageReport sums up a Salvage.
type SalvageReport struct {
	Cluster string
	// Copied counts the records copied, by bucket.
	Copied map[string]int
	// Lost counts the lost records and runs, by bucket.
	Lost map[string]int
}

// SalvageOptions tunes Salvage.
type SalvageOptions struct {
	// ClusterID is the cluster the new store belongs to; empty takes it
	// from the damaged file. Needed when that is unreadable: every
	// datanode of the cluster has it in its cluster-id file.
	ClusterID string
	// Lost is told of each record or run that is not copied, as found.
	Lost func(Lost)
}

const (
	// salvageBatch is how many records go into one write transaction.
	salvageBatch = 1024
	// maxDisorder is how many keys out of order a pass of salvageBucket
	// skips before it takes the page for damaged.
	maxDisorder = 1024
)

// Salvage copies every readable record of the (damaged) store file from
// into a new store file to, which must not exist, and tells opts.Lost
// about every record it cannot read: a record that does not decode is
// lost alone; a page that cannot be read loses the records on it, and the
// copy goes on after it where the tree still leads past it. from is only
// read. to is written whole: on an error it is removed. The error is
// rpc.Exists when to exists, rpc.FailedPrecondition when from cannot be
// read as a bolt database at all or has no readable cluster id (see
// opts.ClusterID).
func Salvage(ctx context.Context, from, to string, opts SalvageOptions) (SalvageReport, error) {
	rep := SalvageReport{Copied: map[string]int{}, Lost: map[string]int{}}
	if opts.Lost == nil {
		opts.Lost = func(Lost) {}
	}
	if _, err := os.Stat(to); err == nil {
		return rep, rpc.Errorf(rpc.Exists, "salvage: %s exists; name a new file", to)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return rep, fmt.Errorf("salvage: %w", err)
	}
	o := DefaultOptions()
	src, err := openBolt(from, o, true)
	if err != nil {
		return rep, fmt.Errorf("salvage: %w", err)
	}
	defer src.Close()

	cluster, err := salvageCluster(from, src)
	switch {
	case opts.ClusterID != "":
		if _, perr := uuid.Parse(opts.ClusterID); perr != nil {
			return rep, rpc.Errorf(rpc.Invalid, "salvage: --cluster-id %q is not a UUID", opts.ClusterID)
		}
		cluster = opts.ClusterID
	case err != nil:
		return rep, fmt.Errorf("salvage: %w; give the cluster id (a datanode's cluster-id file holds it) with --cluster-id", err)
	}
	rep.Cluster = cluster

	dst, err := Open(to, o)
	if err != nil {
		return rep, fmt.Errorf("salvage: %w", err)
	}
	err = func() error {
		for _, b := range allBuckets[1:] {
			if err := salvageBucket(ctx, src, dst, b, &rep, opts.Lost); err != nil {
				return err
			}
		}
		return dst.Init(ctx, cluster, nil)
	}()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(to)
		return rep, fmt.Errorf("salvage: %w", err)
	}
	return rep, nil
}

// salvageCluster reads the cluster id of the file at path.
func salvageCluster(path string, db *bolt.DB) (string, error) {
	var cluster string
	err := guardedOpen(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			if m == nil {
				return rpc.Errorf(rpc.FailedPrecondition, "%s has no readable %q bucket", path, bucketMeta)
			}
			cluster = string(m.Get(keyCluster))
			return nil
		})
	})
	if err != nil {
		return "", err
	}
	if _, err := uuid.Parse(cluster); err != nil {
		return "", rpc.Errorf(rpc.FailedPrecondition, "%s has no readable cluster id (read %q)", path, cluster)
	}
	return cluster, nil
}

// salvageBucket copies the readable records of bucket from src to dst.
// It reads in passes: each pass walks from a start key until the end or a
// damaged page; after a damaged page, the next pass starts at the first
// key past the damage that the tree still leads to.
func salvageBucket(ctx context.Context, src *bolt.DB, dst *Store, bucket []byte, rep *SalvageReport, lost func(Lost)) error {
	name := string(bucket)
	lose := func(l Lost) {
		l.Bucket = name
		rep.Lost[name]++
		lost(l)
	}
	var batch []meta.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.update("boltstore.Salvage", func(tx *bolt.Tx) error { return putRecords(ctx, tx, batch) })
		if err != nil {
			return err
		}
		rep.Copied[name] += len(batch)
		batch = batch[:0]
		return nil
	}
	var start []byte // nil: the bucket's first key
	for pass := 0; ; pass++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var last []byte // the last key read in this pass
		var ferr error  // of flush, inside the pass
		err := readGuarded(func() error {
			return src.View(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucket)
				if b == nil {
					if pass == 0 {
						lose(Lost{Reason: "the bucket is missing or unreadable"})
					}
					return nil
				}
				c := b.Cursor()
				k, v := c.First()
				if start != nil {
					k, v = c.Seek(start)
				}
				disorder := 0
				for ; k != nil; k, v = c.Next() {
					if last != nil && bytes.Compare(k, last) <= 0 {
						// A damaged key, or a damaged page that leads back.
						if disorder++; disorder > maxDisorder {
							return rpc.Errorf(rpc.Internal, "%d keys out of order", disorder)
						}
						lose(Lost{Key: string(k), Reason: "out of key order"})
						continue
					}
					r, err := decodeRecord(bucket, k, v)
					if err != nil {
						lose(Lost{Key: string(k), Reason: err.Error()})
						continue
					}
					last = bytes.Clone(k) // the last key that read back whole
					if batch = append(batch, r); len(batch) >= salvageBatch {
						if ferr = flush(); ferr != nil {
							return ferr
						}
					}
				}
				last = nil // reached the end
				return nil
			})
		})
		if ferr != nil {
			return ferr
		}
		if err == nil {
			return flush()
		}
		// A damaged page: resume past it, if the tree leads past it.
		after := last
		if after == nil {
			after = start
		}
		next, ok := resumeAfter(src, bucket, after)
		l := Lost{After: string(after), Reason: err.Error()}
		if ok {
			l.Before = string(next)
		}
		lose(l)
		if !ok || pass >= 1<<16 { // bounded: every pass starts past the last
			return flush()
		}
		start = next
	}
}

// readGuarded runs fn, which reads a damaged file through bolt, turning a
// panic or a memory fault into an error.
func readGuarded(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = rpc.Errorf(rpc.Internal, "unreadable page (%v)", r)
		}
	}()
	return fn()
}

// decodeRecord decodes the record at k in bucket.
func decodeRecord(bucket, k, v []byte) (meta.Record, error) {
	switch {
	case bytes.Equal(bucket, bucketFiles):
		e, err := decodeEntry(k, v)
		return meta.Record{File: e.File, Dir: e.Dir}, err
	case bytes.Equal(bucket, bucketUploads):
		u, err := decodeUpload(k, v)
		return meta.Record{Upload: u}, err
	case bytes.Equal(bucket, bucketDeletions):
		d, err := decodeDeletion(k)
		return meta.Record{Deletion: &d}, err
	default:
		n, err := decodeDrain(k)
		return meta.Record{Drain: &n}, err
	}
}

// resumeAfter finds a key past the damaged page that follows key after
// (nil: the bucket's start) and can be reached: it seeks to successors of
// ever shorter prefixes of after, so each try skips a larger part of the
// key space, and returns the first key such a seek reaches without
// touching damage.
func resumeAfter(db *bolt.DB, bucket, after []byte) ([]byte, bool) {
	for l := len(after); l > 0; l-- {
		p := successor(after[:l])
		if p == nil {
			continue
		}
		var k []byte
		err := readGuarded(func() error {
			return db.View(func(tx *bolt.Tx) error {
				if b := tx.Bucket(bucket); b != nil {
					got, _ := b.Cursor().Seek(p)
					k = bytes.Clone(got)
				}
				return nil
			})
		})
		if err == nil && k != nil && bytes.Compare(k, after) > 0 {
			return k, true
		}
	}
	return nil, false
}

// successor returns the smallest key greater than every key starting with
// p, or nil if there is none.
func successor(p []byte) []byte {
	s := bytes.Clone(p)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] < 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}
