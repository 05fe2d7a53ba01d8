package auth

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// Rule says who may make a call at all; the handler may check more (the
// coordinator checks a path's permissions, a datanode a chunk token).
type Rule int

// The rules.
const (
	// Anyone may call, anonymous callers too (health checks, and the
	// datanode's data calls, which a chunk token authorizes).
	Anyone Rule = iota + 1
	// Authenticated callers may call: a certificate or a bearer token.
	Authenticated
	// DatanodeOnly is for a caller with a datanode certificate.
	DatanodeOnly
	// CoordinatorOnly is for a caller with a coordinator certificate.
	CoordinatorOnly
	// SuperuserOnly is for a superuser (Superusers.Has).
	SuperuserOnly
	// Users is for users: a client certificate, a bearer token, or a
	// gateway acting for a user. A server's certificate names a host,
	// not a user, and may not act on paths.
	Users
)

// Policy is the rule of each method of a gRPC service, by its short name
// ("UploadFile"). A method without a rule is refused: a new method must
// be given one.
type Policy struct {
	// Service is the full service name ("dfs.v1.Coordinator").
	Service    string
	Rules      map[string]Rule
	Superusers Superusers
}

// Check returns nil if the caller in ctx may call the method (full name,
// "/dfs.v1.Coordinator/UploadFile"), else an error of kind
// rpc.Unauthenticated (no identity where one is needed) or rpc.Permission.
// Methods of other services (the standard health service) are open.
func (p Policy) Check(ctx context.Context, method string) error {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if svc != p.Service {
		return nil
	}
	rule := p.Rules[name]
	if rule == Anyone {
		return nil
	}
	id, _ := FromContext(ctx)
	if id.Anonymous() {
		return rpc.Errorf(rpc.Unauthenticated, "%s needs a client certificate or a bearer token", name)
	}
	switch rule {
	case Authenticated:
		return nil
	case DatanodeOnly:
		if id.Role == pki.Datanode && !id.Token {
			return nil
		}
		return rpc.Errorf(rpc.Permission, "%s is for datanodes: %s presents a %s identity", name, id.User, id.Role)
	case CoordinatorOnly:
		if id.Role == pki.Coordinator && !id.Token {
			return nil
		}
		return rpc.Errorf(rpc.Permission, "%s is for the coordinator: %s presents a %s identity", name, id.User, id.Role)
	case Users:
		if id.Role == pki.Client {
			return nil
		}
		return rpc.Errorf(rpc.Permission, "%s is for users: %s presents a %s certificate", name, id.User, id.Role)
	case SuperuserOnly:
		if p.Superusers.Has(id) {
			return nil
		}
		return rpc.Errorf(rpc.Permission, "%s is for superusers; %s is not one", name, id.User)
	}
	return rpc.Errorf(rpc.Permission, "%s has no access rule", name)
}

// Interceptors returns the server options that check p on every call; they
// go after the ones of Interceptors (Identify), which put the caller in the
// context.
func (p Policy) Interceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := p.Check(ctx, info.FullMethod); err != nil {
				return nil, rpc.ToStatus(err)
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := p.Check(ss.Context(), info.FullMethod); err != nil {
				return rpc.ToStatus(err)
			}
			return handler(srv, ss)
		}),
	}
}

// ServerOptions returns what a role running with TLS adds to its gRPC
// server: t's credentials, the caller resolved on every call (tokens
// verifies bearer tokens; nil takes none), then p checked. A nil t adds
// nothing: plain text, no identities, no checks.
func ServerOptions(t *pki.TLS, tokens TokenVerifier, p Policy) []grpc.ServerOption {
	if t == nil {
		return nil
	}
	opts := append(t.ServerOptions(), Interceptors(tokens)...)
	return append(opts, p.Interceptors()...)
}

// Mismatch compares p's rules with the methods of desc: the methods
// without a rule (refused, with TLS) and the rules of no method. Each
// role's tests check that both are empty.
func (p Policy) Mismatch(desc *grpc.ServiceDesc) (unruled, unknown []string) {
	names := map[string]bool{}
	for _, m := range desc.Methods {
		names[m.MethodName] = true
	}
	for _, s := range desc.Streams {
		names[s.StreamName] = true
	}
	for n := range names {
		if _, ok := p.Rules[n]; !ok {
			unruled = append(unruled, n)
		}
	}
	for n := range p.Rules {
		if !names[n] {
			unknown = append(unknown, n)
		}
	}
	slices.Sort(unruled)
	slices.Sort(unknown)
	return unruled, unknown
}
