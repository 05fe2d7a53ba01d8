package s3gw

import (
	"context"
	"io"

	"github.com/dfs-project/dfs/roles/client"
)

// The SDK calls that carry an object's metadata, in one place.
// TEMPORARY: until the SDK's file metadata lands (CreateOptions.Metadata,
// Writer.SetMetadata, FileInfo/DirEntry.Metadata, CopyOptions.Metadata,
// Client.Concat), metadata is not kept and Concat streams the parts.

func fileMeta(*client.FileInfo) map[string]string { return nil }

func entryMeta(client.DirEntry) map[string]string { return nil }

func setMeta(*client.Writer, map[string]string) {}

func copyFile(ctx context.Context, c *client.Client, src, dst string, md map[string]string) (*client.FileInfo, error) {
	return c.Copy(ctx, src, dst, nil)
}

// concat makes dst the concatenation of srcs, with metadata md.
func concat(ctx context.Context, c *client.Client, dst string, srcs []string, md map[string]string, ifNotExist bool, ifVersion uint64) (*client.FileInfo, error) {
	w, err := c.Create(ctx, dst, &client.CreateOptions{IfNotExist: ifNotExist, IfVersion: ifVersion})
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
