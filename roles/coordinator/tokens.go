package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc"
)

// defaultTokenLifetime is a token's lifetime when the request names none.
const defaultTokenLifetime = 24 * time.Hour

// token is a bearer token createToken signed.
type token struct {
	token   string
	expires time.Time
	id      string
}

// createToken signs a bearer token for user in groups, valid for ttl (0:
// a day, or less if --token-max-lifetime is less), with this
// coordinator's certificate; the token ends no later than that
// certificate. Errors: rpc.FailedPrecondition without TLS, rpc.Permission
// when the caller authenticated with a token or through a gateway (a
// stolen token must not outlive its expiry by minting others),
// rpc.Invalid for a bad user, group or lifetime.
//
// Any coordinator of a group signs, the leader or not: a token needs no
// metadata.
func (c *Coordinator) createToken(ctx context.Context, user string, groups []string, ttl time.Duration) (token, error) {
	if c.tls == nil {
		return token{}, rpc.Errorf(rpc.FailedPrecondition, "create token: this coordinator runs in plain text (--insecure); tokens need TLS")
	}
	caller, ok := auth.FromContext(ctx)
	if ok && (caller.Token || caller.Via != "") {
		return token{}, rpc.Errorf(rpc.Permission, "create token: only a client certificate may create tokens, not a bearer token or a gateway")
	}
	switch {
	case ttl == 0:
		ttl = min(defaultTokenLifetime, c.cfg.TokenMaxLifetime)
	case ttl < time.Second:
		return token{}, rpc.Errorf(rpc.Invalid, "create token: lifetime %s: at least a second", ttl)
	case ttl > c.cfg.TokenMaxLifetime:
		return token{}, rpc.Errorf(rpc.Invalid, "create token: lifetime %s is longer than this coordinator's --token-max-lifetime %s", ttl, c.cfg.TokenMaxLifetime)
	}
	chain, _, err := c.tls.Signer()
	if err != nil {
		return token{}, fmt.Errorf("create token: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return token{}, rpc.Errorf(rpc.Internal, "create token: this coordinator's certificate: %w", err)
	}
	now := c.clock.Now()
	if until := leaf.NotAfter.Sub(now); until < ttl {
		ttl = until.Truncate(time.Second)
	}
	claims, err := auth.NewClaims(user, groups, now, ttl)
	if err != nil {
		return token{}, fmt.Errorf("create token: %w", err)
	}
	tok, err := auth.SignToken(c.tls, claims)
	if err != nil {
		return token{}, err
	}
	c.log.Info().Str("token_id", claims.ID).Str("user", user).Strs("groups", groups).Str("by", caller.User).
		Time("expires", time.Unix(claims.Expires, 0)).Msg("bearer token created")
	return token{token: tok, expires: time.Unix(claims.Expires, 0), id: claims.ID}, nil
}
