package client

import (
	"context"

	"github.com/dfs-project/dfs/rpc"
)

// What the command line (roles/cli) needs of the client beyond its calls.

// Head returns a file's metadata with at most one chunk of its map: its
// size, without paging the chunk map in.
func (c *Client) Head(ctx context.Context, path string) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	fi, err := c.head(ctx, path)
	if err != nil {
		return nil, wrap(ctx, "stat", path, err)
	}
	return fromFileInfo(fi), nil
}
