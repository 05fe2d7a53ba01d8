package s3gw

import (
	"context"
	"errors"
	"io"
	"io/fs"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// maxPartChunk bounds the chunk size of a part: a Writer holds up to
// Parallel+1 chunks, so a part in chunks of at most 8 MiB (the
// coordinator's default chunk size) costs the gateway no more memory than
// any other upload.
const maxPartChunk = 8 << 20

// partChunkSize returns the chunk size that makes a part of size bytes
// whole chunks, so that Complete can concatenate the parts without
// copying them (Concat needs every part but the last to be whole chunks of
// one size): the part's size when it is at most maxPartChunk, else the
// largest divisor of it below that; 0 (the default) when there is none.
func partChunkSize(size int64) int64 {
	switch {
	case size < rpc.MinChunkSize:
		return 0
	case size <= maxPartChunk:
		return size
	}
	first := (size + maxPartChunk - 1) / maxPartChunk
	for k := first; k < first+4096; k++ {
		if size%k == 0 && size/k >= rpc.MinChunkSize {
			return size / k
		}
	}
	return 0
}

// concat makes dst the concatenation of srcs, with metadata md, sharing
// their chunks; parts that are not whole chunks of one size (parts of
// different sizes) are copied through the gateway instead, into a file
// that appears as atomically.
func concat(ctx context.Context, c *client.Client, dst string, srcs []string, md map[string]string, ifNotExist bool, ifVersion uint64) (*client.FileInfo, error) {
	fi, err := c.Concat(ctx, dst, srcs, &client.ConcatOptions{IfNotExist: ifNotExist, IfVersion: ifVersion, Metadata: md})
	if err == nil || !errors.Is(err, fs.ErrInvalid) {
		return fi, err
	}
	w, err := c.Create(ctx, dst, &client.CreateOptions{IfNotExist: ifNotExist, IfVersion: ifVersion, Metadata: md})
	if err != nil {
		return nil, err
	}
	for _, s := range srcs {
		r, err := c.Open(ctx, s)
		if err != nil {
			w.Abort()
			return nil, err
		}
		_, err = io.Copy(w, r)
		r.Close()
		if err != nil {
			w.Abort()
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Info(), nil
}
