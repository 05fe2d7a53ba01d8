package client

import (
	"context"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// CreateToken asks the coordinator for a bearer token naming user in
// groups, valid for ttl (0: the coordinator's default, a day). Only a
// superuser who authenticates with a client certificate may (kind
// rpc.Permission otherwise), and only over TLS (rpc.FailedPrecondition);
// a ttl beyond the coordinator's --token-max-lifetime, or a bad user or
// group name, is rpc.Invalid. The token may end sooner than ttl: never
// after the coordinator's certificate (Token.Expires says when).
func (c *Client) CreateToken(ctx context.Context, user string, groups []string, ttl time.Duration) (*Token, error) {
	ctx = rpc.EnsureRequestID(ctx)
	var resp *dfspb.CreateTokenResponse
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		var err error
		resp, err = cc.CreateToken(ctx, &dfspb.CreateTokenRequest{User: user, Groups: groups, TtlMs: ttl.Milliseconds()})
		return err
	})
	if err != nil {
		return nil, wrap(ctx, "create token", "", err)
	}
	return &Token{Token: resp.Token, User: user, Groups: groups, Expires: time.UnixMilli(resp.ExpiresUnixMs), ID: resp.Id}, nil
}
