// Package auth says who is calling and what they may do: the caller's
// identity (from its client certificate or a bearer token), the
// superusers, and the checks on it that every role shares. It decides;
// it does no I/O of its own.
//
// A role that runs with TLS installs Interceptors on its gRPC server; each
// call's context then carries the caller's Identity (FromContext). A role
// running in plain text (--insecure) installs none: its calls carry no
// identity, and the roles then check nothing, as before security existed.
package auth

import (
	"context"
	"slices"

	"github.com/dfs-project/dfs/internal/pki"
)

// Identity is who made a call.
type Identity struct {
	// User is the user name: a client certificate's common name, a bearer
	// token's user, or, for a server certificate, its name (a node name).
	User string
	// Groups are the user's groups: a client certificate's organizations
	// (O=), or a bearer token's groups.
	Groups []string
	// Role is what the caller's certificate lets it act as; a bearer
	// token's holder is a pki.Client.
	Role pki.Role
	// Token says the identity came from a bearer token, not a certificate.
	Token bool
	// Via names the gateway that acts for User, if one does.
	Via string
}

// Anonymous reports whether the caller presented neither a certificate
// nor a bearer token.
func (id Identity) Anonymous() bool { return id.Role == "" }

// InGroup reports whether the identity is a member of group g.
func (id Identity) InGroup(g string) bool { return slices.Contains(id.Groups, g) }

// Server reports whether the caller holds a server role's certificate
// (coordinator, datanode, gateway).
func (id Identity) Server() bool { return !id.Token && id.Role.Server() }

type ctxKey struct{}

// NewContext returns ctx carrying id as the caller.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller ctx carries, and whether it carries one.
// A call to a role running with TLS always carries one, unless the caller
// presented neither a certificate nor a bearer token (anonymous).
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Superusers is the set of users who may do anything: every permission
// check passes for them, and only they may run the cluster-wide
// operations (dfs admin ..., decommission, a cluster-wide fsck).
type Superusers []string

// DefaultSuperuser is the superuser when none are configured.
const DefaultSuperuser = "admin"

// Has reports whether id is a superuser: a user in the list who is not a
// server (a node named like a superuser is still only a node), and who
// calls for themselves: a gateway acting for a superuser's name gets that
// user's permissions on paths, not the superuser's powers.
func (s Superusers) Has(id Identity) bool {
	return id.Role == pki.Client && id.Via == "" && slices.Contains(s, id.User)
}
