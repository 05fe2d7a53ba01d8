// Package boltstore keeps the coordinator's metadata in one bbolt file.
package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/dfs-project/dfs/rpc"
)

// The file holds five top-level buckets and nothing else:
//
//	meta       "format" -> uint64 big-endian, "cluster_id" -> the cluster ID (absent until Init),
//	           "restoring" -> the cluster ID, only while a restore spanning several transactions is loaded
//	files      path -> metapb.File (bolt keeps keys sorted, so cursors walk paths in order), and
//	           path + "/" -> metapb.Dir for each directory (meta.DirKey: it sorts right before what it holds)
//	uploads    session ID -> metapb.Upload
//	deletions  meta.DeletionKey ("<node>/<chunk>") -> empty (the key is the record)
//	drains     node ID -> empty (the key is the record): the draining datanodes
//
// All five are created, with the format, in the one transaction that turns
// an empty file into a store, so a file with some of them but not all is
// damaged. Init writes the cluster ID in the transaction that writes the
// last records, and one that takes more than one transaction marks the
// store as being restored in its first (see keyRestoring), so a store is
// either uninitialized and empty, or uninitialized and marked (an
// interrupted restore, refused until a restore completes), or
// initialized. The marker needs no new format: a dfs from before it
// refuses a marked store, since it is uninitialized but holds data.
//
// Formats:
//
//	1  meta, files, uploads, deletions
//	2  adds drains
//	3  directories are explicit: every ancestor of a file has its record in files
//
// Open upgrades a store of an older format in place under the file's
// lock: one write transaction creates the buckets it lacks; then, from
// format 2 or older, upgradeDirs creates the directory records of every
// file's ancestors in write transactions of upgradeBatch files each, and
// the last raises the format (see upgradeDirs). The format is raised, rather than the bucket being
// optional, because a dfs that predates the change must not use the
// upgraded file (it would drop the drains from its backups): one of
// format 1 refuses it for its unknown bucket, and since format 2 the
// format is checked before the bucket names, so later formats are
// refused as newer.
const formatVersion uint64 = 3

var (
	bucketMeta      = []byte("meta")
	bucketFiles     = []byte("files")
	bucketUploads   = []byte("uploads")
	bucketDeletions = []byte("deletions")
	bucketDrains    = []byte("drains")

	keyFormat  = []byte("format")
	keyCluster = []byte("cluster_id")

	// allBuckets are the buckets of formatVersion, in the order the
	// formats added them.
	allBuckets = [][]byte{bucketMeta, bucketFiles, bucketUploads, bucketDeletions, bucketDrains}
)

// bucketsOf returns the buckets a store of format f holds.
func bucketsOf(f uint64) [][]byte {
	if f == 1 {
		return allBuckets[:4]
	}
	return allBuckets
}

// Options tunes a Store. Zero fields take the value DefaultOptions gives.
type Options struct {
	// LockTimeout bounds the wait for the file's lock (an exclusive flock
	// held by the process that has the store open). A second coordinator on
	// the same data dir fails after it with an error of kind
	// rpc.Unavailable instead of waiting for ever.
	LockTimeout time.Duration
	// BatchDelay is how long a batch waits for more commits to join it
	// before it is written; 0 (the default) writes at once. Commits that
	// arrive while a transaction is being written always form the next
	// batch, so concurrent commits share fsyncs without any delay.
	BatchDelay time.Duration
	// BatchSize caps the commits of one write transaction.
	BatchSize int
	// MmapSize is the size of the initial memory map. A read transaction
	// (a Snapshot streaming a backup, say) blocks a writer that has to grow
	// the map, so mapping generously up front keeps long reads from stalling
	// commits. It costs address space, not memory.
	MmapSize int
	// Log receives lifecycle events; the zero Logger discards them.
	Log zerolog.Logger
	// Clock paces BatchDelay; nil is the real clock.
	Clock clockwork.Clock
}

// DefaultOptions returns the options Open uses for zero fields.
//
// A bolt commit costs two fdatasyncs (data pages, then the meta page),
// whatever the transaction carries, so throughput is commits per
// transaction over the commit time. Commits are grouped without a delay
// (see Store.Commit): while one transaction is written, the commits that
// arrive queue up and go together in the next. On the 2-core dev machine
// through the gRPC API with 16 clients (roles BenchmarkMetadata) bolt's own
// Batch, which closes a batch on a timer, gave 4,289 commits/s with a 1 ms
// delay and 5,390 with 500 µs; grouping without a delay gives more (see
// docs/benchmarks.md) and adds no wait for a lone client. The size cap
// only bounds the work and dirty memory of one transaction.
func DefaultOptions() Options {
	return Options{
		LockTimeout: 5 * time.Second,
		BatchSize:   1000,
		MmapSize:    1 << 30,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.LockTimeout <= 0 {
		o.LockTimeout = d.LockTimeout
	}
	if o.BatchSize <= 0 {
		o.BatchSize = d.BatchSize
	}
	if o.MmapSize <= 0 {
		o.MmapSize = d.MmapSize
	}
	return o
}

// layout is what inspect found in a file.
type layout struct {
	empty   bool // a bolt database without buckets: not a store yet
	format  uint64
	cluster string
	// restoring is the cluster of an interrupted restore ("" for none).
	restoring string
}

// Open opens the store in the file at path, creating it when it is
// missing; a new store is uninitialized (ClusterID returns "") until Init.
// A new file is made whole beside path (path + ".new", with its buckets)
// and renamed into place, so a file at path was always a store: one that
// is empty (0 bytes, a bolt database without buckets) is refused rather
// than taken for a new cluster, since it means the store was lost (a copy
// that failed, a file truncated on a full disk). A file that is not a
// bolt database, is truncated, is a bolt database of something else, or
// has a format newer than this code knows is refused too, with an error
// of kind rpc.FailedPrecondition, and left exactly as it was: it is
// inspected read-only before it is opened for writing. A store of an
// older format is upgraded to formatVersion (see above). A store that
// holds an interrupted restore opens uninitialized and refuses every use
// but a restore of its cluster (see keyRestoring). A file locked
// by another process is refused with rpc.Unavailable after
// opts.LockTimeout. The caller closes the store.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	created := false
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := create(path, opts); err != nil {
			return nil, err
		}
		created = true
	case err != nil:
		return nil, fmt.Errorf("boltstore.Open %s: %w", path, err)
	case !info.Mode().IsRegular():
		return nil, openErr(path, rpc.FailedPrecondition, nil, "not a regular file")
	case info.Size() == 0:
		return nil, openErr(path, rpc.FailedPrecondition, nil, emptyStore, "empty (0 bytes)")
	default:
		if err := inspectReadOnly(path, opts); err != nil {
			return nil, err
		}
	}

	db, err := openBolt(path, opts, false)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path, log: opts.Log.With().Str("component", "boltstore").Str("path", path).Logger(),
		batchDelay: opts.BatchDelay, batchSize: opts.BatchSize, clock: opts.Clock, restoreBatch: defaultRestoreLimits, maxMove: MaxMoveEntries}
	if s.clock == nil {
		s.clock = clockwork.NewRealClock()
	}
	_, l, err := s.prepare(false)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.cluster.Store(l.cluster)
	s.interrupted.Store(l.restoring)
	if l.restoring != "" {
		s.log.Warn().Str("restoring", l.restoring).Msg("metadata store holds an interrupted restore; " +
			"it is refused until a restore of that cluster completes")
	}
	size := int64(-1)
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	s.log.Info().Str("cluster", l.cluster).Bool("created", created).Uint64("format", l.format).Int64("bytes", size).
		Dur("batch_delay", opts.BatchDelay).Int("batch_size", opts.BatchSize).Msg("metadata store opened")
	return s, nil
}

// emptyStore is the message for an empty file at a store's path; %s says
// how it is empty.
const emptyStore = "the metadata file is %s, but a new store is only created where none exists: " +
	"the store was lost (a failed copy, or a file truncated on a full disk?). Restore a backup " +
	"(move this file away and start with --restore FILE), or remove the file to start a new, empty cluster"

// create makes a new, uninitialized store file at path: whole at
// path + ".new" first, then renamed into place and its directory synced.
func create(path string, opts Options) error {
	tmp := path + ".new"
	// A leftover of a start that crashed while creating the store.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("boltstore.Open %s: %w", path, err)
	}
	db, err := openBolt(tmp, opts, false)
	if err != nil {
		return err
	}
	s := &Store{db: db, path: tmp}
	_, _, err = s.prepare(true)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("boltstore.Open %s: %w", path, cerr)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		if rpc.KindOf(err) != rpc.Other {
			return err
		}
		return fmt.Errorf("boltstore.Open %s: create: %w", path, err)
	}
	return nil
}

// inspectReadOnly checks an existing, non-empty file without opening it
// for writing: opening a bolt file read-write may write to it (bolt syncs
// a missing freelist, for one), and a bad file must stay untouched.
func inspectReadOnly(path string, opts Options) (err error) {
	db, err := openBolt(path, opts, true)
	if err != nil {
		return err
	}
	defer db.Close()
	return guardedOpen(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			_, err := inspect(path, tx, false)
			return err
		})
	})
}

func openBolt(path string, opts Options, readOnly bool) (db *bolt.DB, err error) {
	err = guardedOpen(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:         opts.LockTimeout,
			ReadOnly:        readOnly,
			FreelistType:    bolt.FreelistMapType,
			InitialMmapSize: opts.MmapSize,
		})
		return err
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, openErr(path, rpc.Unavailable, err,
			"the file is locked by another process (is another coordinator using this data dir?); gave up after %v", opts.LockTimeout)
	case errors.As(err, new(*fs.PathError)), errors.As(err, new(syscall.Errno)):
		// The system refused: permissions, a missing directory, I/O.
		return nil, fmt.Errorf("boltstore.Open %s: %w", path, err)
	default:
		// bolt's own verdicts on the file: ErrInvalid, ErrChecksum,
		// ErrVersionMismatch, "file size too small", a fault.
		return nil, openErr(path, rpc.FailedPrecondition, err, "not a bolt database, or a damaged or truncated one")
	}
}

// guardedOpen runs fn, which reads a file of unknown quality through bolt,
// turning a panic or a memory fault (a truncated file read through the
// mmap) into an error.
func guardedOpen(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = openErr(path, rpc.FailedPrecondition, nil, "damaged bolt database (%v)", r)
		}
	}()
	return fn()
}

// inspect checks that tx reads a dfs metadata store of a known format, or,
// when fresh (a file create just made), a bolt database without buckets.
func inspect(path string, tx *bolt.Tx, fresh bool) (layout, error) {
	bad := func(format string, args ...any) (layout, error) {
		return layout{}, openErr(path, rpc.FailedPrecondition, nil, format, args...)
	}
	st, err := os.Stat(path)
	if err != nil {
		return layout{}, fmt.Errorf("boltstore.Open %s: %w", path, err)
	}
	if tx.Size() > st.Size() {
		// Checked before any page beyond the meta pages is read.
		return bad("truncated: the file has %d bytes, its database needs %d", st.Size(), tx.Size())
	}
	var names [][]byte
	var unknown []byte
	err = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		for _, ours := range allBuckets {
			if bytes.Equal(name, ours) {
				names = append(names, name)
				return nil
			}
		}
		if unknown == nil {
			unknown = bytes.Clone(name)
		}
		return nil
	})
	if err != nil {
		return layout{}, fmt.Errorf("boltstore.Open %s: %w", path, err)
	}
	m := tx.Bucket(bucketMeta)
	var format uint64
	if m != nil {
		if v := m.Get(keyFormat); len(v) == 8 {
			format = binary.BigEndian.Uint64(v)
		}
	}
	// A newer format may have buckets this code does not know: the format
	// says why, before they are taken for another program's.
	if format > formatVersion {
		return bad("format version %d is newer than this dfs understands (%d); run a newer dfs", format, formatVersion)
	}
	if unknown != nil {
		return bad("a bolt database but not a dfs metadata store (unexpected bucket %q)", unknown)
	}
	if len(names) == 0 {
		if !fresh {
			return bad(emptyStore, "a bolt database without any dfs bucket")
		}
		return layout{empty: true}, nil
	}
	if m == nil {
		return bad("a bolt database but not a dfs metadata store (no %q bucket)", bucketMeta)
	}
	if format == 0 {
		return bad("a bolt database but not a dfs metadata store, or a damaged one (no format version)")
	}
	for _, name := range bucketsOf(format) {
		if tx.Bucket(name) == nil {
			return bad("damaged dfs metadata store: no %q bucket", name)
		}
	}
	cluster := string(m.Get(keyCluster))
	if _, err := uuid.Parse(cluster); cluster != "" && err != nil {
		return bad("damaged dfs metadata store: its cluster id %q is not a UUID (dfs admin salvage --cluster-id copies what is readable into a new store)", cluster)
	}
	restoring := string(m.Get(keyRestoring))
	switch _, err := uuid.Parse(restoring); {
	case restoring == "":
	case cluster != "":
		return bad("damaged dfs metadata store: it belongs to cluster %s but is marked as being restored (of %q)", cluster, restoring)
	case err != nil:
		return bad("damaged dfs metadata store: it is marked as being restored, of cluster %q, which is not a UUID", restoring)
	}
	if cluster == "" && restoring == "" {
		for _, name := range allBuckets[1:] {
			if b := tx.Bucket(name); b != nil {
				if k, _ := b.Cursor().First(); k != nil {
					return bad("the store is uninitialized but its %q bucket holds data (a damaged store?)", name)
				}
			}
		}
	}
	return layout{format: format, cluster: cluster, restoring: restoring}, nil
}

// prepare re-inspects the file under the exclusive lock, turns an empty
// bolt database that create just made (fresh) into an uninitialized store and upgrades a store of an
// older format.
func (s *Store) prepare(fresh bool) (created bool, l layout, err error) {
	err = guardedOpen(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			var err error
			l, err = inspect(s.path, tx, fresh)
			return err
		})
	})
	if err != nil || (!l.empty && l.format == formatVersion) {
		return false, l, err
	}
	err = s.update("boltstore.Open", func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if !l.empty {
			return nil // upgradeDirs raises the format
		}
		return putFormat(tx)
	})
	if err == nil && !l.empty {
		err = s.upgradeDirs(l.format)
	}
	switch {
	case err != nil && l.empty:
		return false, l, fmt.Errorf("boltstore.Open %s: create buckets: %w", s.path, err)
	case err != nil:
		return false, l, fmt.Errorf("boltstore.Open %s: upgrade from format %d: %w", s.path, l.format, err)
	case !l.empty:
		s.log.Info().Uint64("from", l.format).Uint64("to", formatVersion).Msg("metadata store format upgraded")
	}
	l.format = formatVersion
	return l.empty, l, nil
}

// putFormat writes formatVersion into tx.
func putFormat(tx *bolt.Tx) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], formatVersion)
	return tx.Bucket(bucketMeta).Put(keyFormat, v[:])
}

// upgradeBatch is how many files one write transaction of upgradeDirs
// reads; it creates at most one directory per ancestor of each. Tests
// lower it.
var upgradeBatch = 10_000

// upgradeDirs upgrades a store of format from (2 or older: directories
// were implied by the paths of the files below them) to formatVersion by
// creating the record of every directory that holds a file, with the
// Modified of the first file found in it (in key order). It walks the
// files in write transactions of upgradeBatch files each, so that its
// memory is bounded whatever the store holds, and raises the format in
// the last one only: a process that dies part-way leaves a store of the
// old format with some directories, and the next Open starts again
// (creating a directory that exists is skipped). A dfs of the old format
// must not open a store whose upgrade stopped part-way: it would take the
// directory records for damaged files.
func (s *Store) upgradeDirs(from uint64) error {
	start := time.Now()
	var after []byte
	files, dirs := 0, 0
	for {
		done := false
		err := s.update("boltstore.Open", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketFiles)
			type file struct {
				p   rpc.Path
				mod time.Time
			}
			var page []file
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(page) < upgradeBatch; k, v = c.Next() {
				if isDirKey(k) {
					continue
				}
				mod := start
				if f, err := decodeFile(k, v); err == nil {
					mod = f.Modified
				} // a damaged file keeps its key, which the directories need; reads report it
				page = append(page, file{rpc.Path(k), mod})
			}
			done = k == nil
			for _, f := range page {
				// Every ancestor is checked, not just up to the first
				// that exists: the upgrade does not trust what it finds.
				for d := f.p.Dir(); d != "/"; d = d.Dir() {
					if b.Get(dirKey(d)) != nil {
						continue
					}
					if err := putDirs(b, nil, []rpc.Path{d}, f.mod); err != nil {
						return err
					}
					dirs++
				}
			}
			if len(page) > 0 {
				after = []byte(page[len(page)-1].p)
				files += len(page)
			}
			if done {
				return putFormat(tx)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	s.log.Info().Uint64("from", from).Uint64("to", formatVersion).Int("files", files).Int("directories", dirs).
		Dur("took", time.Since(start)).Msg("metadata store upgraded: directories are explicit")
	return nil
}

func openErr(path string, kind rpc.Kind, cause error, format string, args ...any) error {
	e := rpc.Errorf(kind, format, args...)
	if cause != nil {
		return fmt.Errorf("boltstore.Open %s: %w: %w", path, e, cause)
	}
	return fmt.Errorf("boltstore.Open %s: %w", path, e)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
