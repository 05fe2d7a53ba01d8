package boltstore

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// A restore that fits one write transaction (restoreLimits) is loaded in
// one, with the cluster ID. A larger one is loaded in a run of them, so
// that memory is bounded by a batch rather than by the backup: bolt keeps
// every page a transaction dirties in memory until it commits, and a
// restore of 10M one-chunk files in one transaction took ~9.7 GiB of RSS.
// Crash safety then rests on a marker, keyRestoring, in the meta bucket:
//
//	first transaction   marker = the cluster ID, records
//	...                 records
//	last transaction    records, cluster_id = the cluster ID, marker deleted
//
// So a file holds a cluster ID only once every record is in, and a file
// with the marker is a restore that stopped part-way (a crash, a full
// disk, a backup that changed while it was read, a cancelled context).
// Such a store is not initialized (ClusterID returns ""), and refuses
// every use with interruptedErr, so that the coordinator does not take it
// for a new cluster or serve the part of a namespace it holds. Init of the
// same cluster (a restore run again) empties its data buckets in its first
// transaction and restores; Init of any other cluster (a coordinator
// starting a new one) is refused. A failed Init leaves the marker where it
// wrote one: the store stays refused until a restore completes.
var keyRestoring = []byte("restoring")

// restoreLimits bounds the records of one write transaction of a restore:
// a transaction is committed once it holds records records, or records
// whose keys and values add up to bytes, whichever comes first.
type restoreLimits struct {
	records int
	bytes   int
}

// defaultRestoreLimits is 64Ki records or 64 MiB of keys and values. A
// transaction holds its records (bolt keeps the values it is given until
// it commits, and copies the keys), ~100 bytes of node per record, and at
// commit a copy of it all in the pages it writes: for one-chunk files
// (~190 bytes a record) a batch is ~12 MiB of records and well under
// 100 MiB at its peak; the byte cap keeps batches of large files (many
// chunks a record) within a few hundred MiB. A commit costs two fdatasyncs
// and rewrites the right edge of each tree, so at this size the 150
// commits of a 10M-file restore add about a second to it.
var defaultRestoreLimits = restoreLimits{records: 64 << 10, bytes: 64 << 20}

// restoreFill is the FillPercent of the buckets a restore writes into. A
// backup lists each bucket's records in key order, so a restore appends,
// and bolt splits the last page of a bucket when it is fillPercent full:
// at bolt's default (0.5) every page of a restored store would be half
// empty. 0.9 packs them, leaving room for a record or two before a later
// commit into the page splits it.
const restoreFill = 0.9

// interruptedErr is the error a store that holds an interrupted restore of
// cluster gives for every use but a restore of cluster.
func interruptedErr(path, cluster string) error {
	return rpc.Errorf(rpc.FailedPrecondition,
		"metadata store %s holds an interrupted restore of cluster %s; run the coordinator with --restore again "+
			"(with a backup of that cluster), or remove the file to start over", path, cluster)
}

// Init makes the uninitialized store the store of cluster id and loads
// recs into it (see InitEach). An initialized store is refused with
// rpc.Exists.
func (s *Store) Init(ctx context.Context, id string, recs []meta.Record) error {
	return s.InitEach(ctx, id, func(put func(meta.Record) error) error {
		for _, r := range recs {
			if err := put(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// InitEach is Init with the records given one at a time by each (see
// meta.StreamIniter), in write transactions of s.restoreBatch records
// each (see keyRestoring). A failure leaves the store uninitialized: if
// it came before the first transaction committed (always, for records
// that fit one), the store is as it was; after, it holds the marker and
// refuses use until a restore of cluster id completes. A record that
// would not read back fails it with rpc.Invalid, a store that holds an
// interrupted restore of another cluster with rpc.FailedPrecondition, and
// an initialized store with rpc.Exists.
func (s *Store) InitEach(ctx context.Context, id string, each func(put func(meta.Record) error) error) error {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if c := s.ClusterID(); c != "" {
		return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", c)
	}
	if id == "" {
		return rpc.Errorf(rpc.Invalid, "empty cluster id")
	}
	prev, _ := s.interrupted.Load().(string)
	if prev != "" && prev != id {
		return interruptedErr(s.path, prev)
	}
	r := &restore{s: s, ctx: ctx, id: id, limits: s.restoreBatch}
	err := each(r.put)
	if err == nil {
		err = r.flush(true)
	}
	if err != nil {
		if r.marked {
			// The error is the caller's to log; this is the state it left.
			s.log.Warn().Str("cluster", id).Int("records", r.n).Int("batches", r.batches).
				Msg("restore stopped part-way; the store holds its marker and is refused until a restore of this cluster completes")
		}
		return err
	}
	s.interrupted.Store("")
	s.cluster.Store(id)
	s.log.Info().Str("cluster", id).Int("records", r.n).Int("batches", r.batches).Bool("resumed", prev != "").
		Msg("metadata store initialized")
	return nil
}

// restore is one InitEach in progress: the batch not yet written, and
// what the transactions so far did.
type restore struct {
	s      *Store
	ctx    context.Context
	id     string
	limits restoreLimits

	batch []kv
	bytes int // of the batch's keys and values
	n     int // records given so far

	batches int  // transactions committed
	marked  bool // a committed transaction wrote the marker
}

// kv is one encoded record: its key and value in bucket, and for a file
// or a directory its path and time, whose missing parents putKV creates.
type kv struct {
	bucket   []byte
	k, v     []byte
	path     rpc.Path
	modified time.Time
}

// putKV puts e into its bucket of tx (b, when not nil), first creating
// the missing parent directories of a file or directory with its time: a
// backup from before directories were explicit holds none, and a newer
// one lists each directory before what it holds, so the directories it
// holds are put before they could be created. An ancestor that is a file
// is left as it is (a restore loads what the backup holds).
func putKV(tx *bolt.Tx, b *bolt.Bucket, e kv) error {
	if b == nil {
		b = tx.Bucket(e.bucket)
	}
	if e.path != "" {
		for d := e.path.Dir(); d != "/" && b.Get(dirKey(d)) == nil; d = d.Dir() {
			if err := putDirs(b, nil, []rpc.Path{d}, e.modified); err != nil {
				return err
			}
		}
	}
	return b.Put(e.k, e.v)
}

// put encodes r into the batch and writes the batch once it is full.
func (r *restore) put(rec meta.Record) error {
	if r.n%1024 == 0 {
		if err := r.ctx.Err(); err != nil {
			return err
		}
	}
	e, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("record %d: %w", r.n, err)
	}
	r.n++
	if e.bucket == nil {
		return nil
	}
	r.batch = append(r.batch, e)
	r.bytes += len(e.k) + len(e.v)
	if len(r.batch) >= r.limits.records || r.bytes >= r.limits.bytes {
		return r.flush(false)
	}
	return nil
}

// flush writes the batch in one write transaction: the first also
// empties the data buckets of an interrupted restore and, unless it is
// the last, writes the marker; the last writes the cluster ID and
// deletes the marker.
func (r *restore) flush(last bool) error {
	err := r.s.update("boltstore.Init", func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if c := m.Get(keyCluster); len(c) > 0 {
			return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", c)
		}
		mark := string(m.Get(keyRestoring))
		switch {
		case r.marked && mark != r.id:
			return rpc.Errorf(rpc.Internal, "restore of cluster %s: its marker changed under it (%q)", r.id, mark)
		case r.marked:
		case mark != "" && mark != r.id:
			return interruptedErr(r.s.path, mark)
		case mark != "":
			if err := emptyData(tx); err != nil {
				return err
			}
		}
		if err := r.write(tx); err != nil {
			return err
		}
		switch {
		case last:
			if err := m.Put(keyCluster, []byte(r.id)); err != nil {
				return err
			}
			return m.Delete(keyRestoring)
		case !r.marked:
			return m.Put(keyRestoring, []byte(r.id))
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.batches++
	if !last && !r.marked {
		// As on disk: reads in the meantime would see part of a backup.
		r.marked = true
		r.s.interrupted.Store(r.id)
	}
	clear(r.batch) // let the written values go
	r.batch, r.bytes = r.batch[:0], 0
	r.s.log.Debug().Str("cluster", r.id).Int("records", r.n).Int("batches", r.batches).Msg("restore batch written")
	return nil
}

// write puts the batch into tx's buckets, packed for appending.
func (r *restore) write(tx *bolt.Tx) error {
	var last []byte
	var b *bolt.Bucket
	for _, e := range r.batch {
		if string(e.bucket) != string(last) {
			last, b = e.bucket, tx.Bucket(e.bucket)
			b.FillPercent = restoreFill
		}
		if err := putKV(tx, b, e); err != nil {
			return err
		}
	}
	return nil
}

// emptyData deletes and re-creates the data buckets. Freeing a bucket's
// pages dirties none of them, so it takes no heap that grows with the
// bucket (3M files: the restore after it peaked at 120 MiB of anonymous
// memory); it does read every page through the map, which shows as the
// file's size in file-backed RSS (page cache the kernel can reclaim), as
// loading a term does anyway.
func emptyData(tx *bolt.Tx) error {
	for _, name := range allBuckets[1:] {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("empty bucket %q: %w", name, err)
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("empty bucket %q: %w", name, err)
		}
	}
	return nil
}

// encodeRecord returns r's bucket, key and value, or no bucket for an
// empty record (skipped, as Mem skips it); a record that would not read
// back is refused with rpc.Invalid.
func encodeRecord(r meta.Record) (kv, error) {
	var e kv
	var err error
	switch {
	case r.File != nil:
		e.bucket, e.k = bucketFiles, []byte(r.File.Path)
		e.v, err = encodeFile(r.File)
		e.path, e.modified = r.File.Path, r.File.Modified
	case r.Dir != nil:
		e.bucket, e.k = bucketFiles, dirKey(r.Dir.Path)
		e.v, err = encodeDir(r.Dir)
		e.path, e.modified = r.Dir.Path, r.Dir.Modified
	case r.Upload != nil:
		e.bucket, e.k = bucketUploads, []byte(r.Upload.ID)
		e.v, err = encodeUpload(r.Upload)
	case r.Deletion != nil:
		e.bucket, e.v = bucketDeletions, []byte{}
		e.k, err = deletionKey(*r.Deletion)
	case r.Drain != nil:
		e.bucket, e.v = bucketDrains, []byte{}
		e.k, err = drainKey(*r.Drain)
	}
	return e, err
}

// putRecords writes recs into tx's buckets; a record that would not read
// back is refused with rpc.Invalid.
func putRecords(ctx context.Context, tx *bolt.Tx, recs []meta.Record) error {
	for i, r := range recs {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		e, err := encodeRecord(r)
		if err == nil && e.bucket != nil {
			err = putKV(tx, nil, e)
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
	}
	return nil
}
