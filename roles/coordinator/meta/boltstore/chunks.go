package boltstore

import (
	"bytes"
	"context"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// The store is no meta.FileCounter: its cheap count (the bucket's
// statistics) reads every page's header, which maps the whole file into
// the coordinator at once (2.4 GiB at 10M files, the peak of a restart),
// and releasing those pages before the load's walk made the walk fault
// them in again (a 9 s load took 12-30 s). The load says how many files it
// has read so far instead.
var _ meta.ChunkLoader = (*Store)(nil)

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
