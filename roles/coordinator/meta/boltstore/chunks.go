package boltstore

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

var (
	_ meta.ChunkLoader = (*Store)(nil)
	_ meta.FileCounter = (*Store)(nil)
)

// FileChunks calls fn for every committed file in path order with its
// replication and chunks (see meta.ChunkLoader). It reads the files as
// Files does, in pages of walkPage per read transaction, calling fn
// between transactions, but decodes only the chunks
// (meta.DecodeFileChunks) into a page of FileChunks reused from one page
// to the next: a new term walks every file, and that decoding is several
// times faster than decoding whole files.
func (s *Store) FileChunks(ctx context.Context, fn func(*meta.FileChunks) error) error {
	page := make([]meta.FileChunks, walkPage)
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 0
		err := s.walk("boltstore.FileChunks", bucketFiles, after, func(k, v []byte) (bool, error) {
			if isDirKey(k) {
				return true, nil
			}
			if err := decodeFileChunks(k, v, &page[n]); err != nil {
				return false, err
			}
			n++
			after = append(after[:0], k...)
			return n < walkPage, nil
		})
		if err != nil {
			return err
		}
		for i := range n {
			if err := fn(&page[i]); err != nil {
				return err
			}
		}
		if n < walkPage {
			return nil
		}
	}
}

// decodeFileChunks decodes what fc holds of the stored file k, checking
// it against its key as decodeFile does.
func decodeFileChunks(k, v []byte, fc *meta.FileChunks) error {
	path, err := meta.DecodeFileChunks(v, fc)
	if err != nil {
		return rpc.Errorf(rpc.Internal, "stored file %q is damaged: %w", k, err)
	}
	if !bytes.Equal(path, k) {
		return rpc.Errorf(rpc.Internal, "stored file %q is damaged: it holds %q", k, path)
	}
	return nil
}

// CountFiles returns how many files are committed, from the files
// bucket's statistics, which count the directories too: the count is an
// upper bound, as close as directories are few beside files (it only
// says how far a load is). bolt counts the keys of each leaf page from
// its header, without decoding a record (about 50 ms for a million files
// with the file in the page cache, against seconds for a walk).
//
// Reading every page's header maps the whole file into the coordinator
// at once (2.4 GiB at 10M files: the peak of a restart's RSS, 2.45 GiB,
// the load's walk releasing the pages as it goes). Both ways out were
// measured at 10M files on 1,000 datanodes and are worse: releasing the
// pages after the count, or not counting, leaves the load's walk to fault
// every page in while the datanodes register and report, and the load
// took 12-34 s instead of 8-9 s (the restart left safe mode in 81 s).
func (s *Store) CountFiles(ctx context.Context) (int, error) {
	n := 0
	err := s.view("boltstore.CountFiles", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFiles)
		if b == nil {
			return rpc.Errorf(rpc.Internal, "no %q bucket", bucketFiles)
		}
		n = b.Stats().KeyN
		return nil
	})
	return n, err
}
