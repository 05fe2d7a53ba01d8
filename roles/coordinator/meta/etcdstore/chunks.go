package etcdstore

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

var (
	_ meta.ChunkLoader = (*Store)(nil)
	_ meta.FileCounter = (*Store)(nil)
)

// FileChunks calls fn for every committed file in path order with its
// replication and chunks (see meta.ChunkLoader), read as Files reads the
// files but decoding only those (meta.DecodeFileChunks) into one reused
// FileChunks.
func (s *Store) FileChunks(ctx context.Context, fn func(*meta.FileChunks) error) error {
	var fc meta.FileChunks
	_, err := s.scanPrefix(ctx, s.pfx+"f/", 0, func(kv *mvccpb.KeyValue) error {
		if isDirKey(kv.Key) {
			return nil
		}
		path, err := meta.DecodeFileChunks(kv.Value, &fc)
		if err != nil {
			return rpc.Errorf(rpc.Internal, "etcdstore: key %q: %w", kv.Key, err)
		}
		if s.fileKey(rpc.Path(path)) != string(kv.Key) {
			return rpc.Errorf(rpc.Internal, "etcdstore: key %q holds file %s", kv.Key, path)
		}
		return fn(&fc)
	})
	return err
}

// CountFiles returns how many files are committed: a count-only range
// read, which etcd answers from its index without sending a key. It
// counts the directories too (see meta.FileCounter).
func (s *Store) CountFiles(ctx context.Context) (int, error) {
	if err := s.ready(); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.pfx+"f/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, etcdError("count files", err)
	}
	return int(resp.Count), nil
}
