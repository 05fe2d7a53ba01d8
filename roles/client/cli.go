package client

import (
	"context"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// What the command line (roles/cli) needs of the client beyond its calls.

// Head returns a file's metadata with at most one chunk of its map: its
// size, without paging the chunk map in.
func (c *Client) Head(ctx context.Context, path string) (*dfspb.FileInfo, error) {
	return c.head(ctx, path)
}

// StateName renders a node state for people and scripts.
func StateName(s dfspb.NodeState) string {
	return stateFromProto(s).String()
}
