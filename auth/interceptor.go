package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// Metadata keys a caller sets.
const (
	// AuthorizationHeader carries "Bearer TOKEN".
	AuthorizationHeader = "authorization"
	// ActAsHeader names the user a gateway acts for: only a caller with a
	// gateway certificate may set it (as HDFS proxy users).
	ActAsHeader = "x-dfs-act-as"
)

// maxTokenLen bounds a bearer token: a token is a few hundred bytes, and a
// longer one is refused before it is parsed.
const maxTokenLen = 8 << 10

// TokenVerifier checks a bearer token and returns the identity it names,
// or an error of kind rpc.Unauthenticated saying why it is refused.
type TokenVerifier interface {
	VerifyToken(token string) (Identity, error)
}

// Interceptors returns the server options that resolve each call's caller
// and put it in the call's context (FromContext): from a bearer token, if
// the call carries one and tokens is set, else from the client
// certificate the connection presented; a call with neither carries the
// zero Identity (anonymous). A gateway's certificate may name the user it
// acts for (ActAsHeader). A call with a token that does not verify, or a
// header it may not set, fails with rpc.Unauthenticated before the
// handler runs.
func Interceptors(tokens TokenVerifier) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			ctx, err := identify(ctx, tokens)
			if err != nil {
				return nil, rpc.ToStatus(err)
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx, err := identify(ss.Context(), tokens)
			if err != nil {
				return rpc.ToStatus(err)
			}
			return handler(srv, &stream{ServerStream: ss, ctx: ctx})
		}),
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// identify returns ctx carrying its caller.
func identify(ctx context.Context, tokens TokenVerifier) (context.Context, error) {
	var id Identity
	if p, ok := peer.FromContext(ctx); ok {
		if cert := pki.PeerCertificate(p.AuthInfo); cert != nil {
			role, err := pki.RoleOf(cert)
			if err != nil {
				return nil, rpc.Errorf(rpc.Unauthenticated, "%w", err)
			}
			id = Identity{User: pki.UserOf(cert), Groups: pki.GroupsOf(cert), Role: role}
		}
	}
	if v := metadata.ValueFromIncomingContext(ctx, AuthorizationHeader); len(v) > 0 {
		tok, ok := strings.CutPrefix(v[0], "Bearer ")
		switch {
		case !ok:
			return nil, rpc.Errorf(rpc.Unauthenticated, "the authorization header is not \"Bearer TOKEN\"")
		case len(tok) > maxTokenLen:
			return nil, rpc.Errorf(rpc.Unauthenticated, "bearer token of %d bytes: more than %d", len(tok), maxTokenLen)
		case tokens == nil:
			return nil, rpc.Errorf(rpc.Unauthenticated, "this server takes no bearer tokens: authenticate with a client certificate")
		}
		tid, err := tokens.VerifyToken(tok)
		if err != nil {
			return nil, err
		}
		id = tid
	}
	if v := metadata.ValueFromIncomingContext(ctx, ActAsHeader); len(v) > 0 {
		if id.Role != pki.Gateway || id.Token {
			return nil, rpc.Errorf(rpc.Unauthenticated, "only a gateway may act for another user (%s)", ActAsHeader)
		}
		if err := pki.ValidName(v[0]); err != nil {
			return nil, rpc.Errorf(rpc.Unauthenticated, "%s: %w", ActAsHeader, err)
		}
		id = Identity{User: v[0], Role: pki.Client, Via: id.User}
	}
	return NewContext(ctx, id), nil
}
