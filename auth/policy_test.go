package auth_test

import (
	"context"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

func TestPolicyCheck(t *testing.T) {
	is := is.New(t)
	p := auth.Policy{Service: "dfs.v1.Coordinator", Superusers: auth.Superusers{"admin"}, Rules: map[string]auth.Rule{
		"Open": auth.Anyone, "Stat": auth.Authenticated, "Read": auth.Users, "Register": auth.DatanodeOnly,
		"Delete": auth.CoordinatorOnly, "Backup": auth.SuperuserOnly,
	}}
	as := func(id auth.Identity) context.Context { return auth.NewContext(t.Context(), id) }
	anon := as(auth.Identity{})
	alice := as(auth.Identity{User: "alice", Role: pki.Client})
	admin := as(auth.Identity{User: "admin", Role: pki.Client})
	adminToken := as(auth.Identity{User: "admin", Role: pki.Client, Token: true})
	dn := as(auth.Identity{User: "dn1", Role: pki.Datanode})
	adminNode := as(auth.Identity{User: "admin", Role: pki.Datanode}) // a node named like a superuser
	coord := as(auth.Identity{User: "c1", Role: pki.Coordinator})
	kind := func(ctx context.Context, m string) rpc.Kind {
		return rpc.KindOf(p.Check(ctx, "/dfs.v1.Coordinator/"+m))
	}
	ok := rpc.Kind(255)
	kindOK := func(ctx context.Context, m string) rpc.Kind {
		if p.Check(ctx, "/dfs.v1.Coordinator/"+m) == nil {
			return ok
		}
		return kind(ctx, m)
	}
	is.Equal(kindOK(anon, "Open"), ok)                           // anyone
	is.Equal(kindOK(anon, "Stat"), rpc.Unauthenticated)          // anonymous callers are not users
	is.Equal(kindOK(alice, "Stat"), ok)                          // users are
	is.Equal(kindOK(alice, "Read"), ok)                          // a user acts on paths
	is.Equal(kindOK(adminToken, "Read"), ok)                     // by token too
	is.Equal(kindOK(dn, "Read"), rpc.Permission)                 // a datanode's certificate does not
	is.Equal(kindOK(alice, "Register"), rpc.Permission)          // a client is no datanode
	is.Equal(kindOK(dn, "Register"), ok)                         // a datanode is
	is.Equal(kindOK(dn, "Delete"), rpc.Permission)               // but no coordinator
	is.Equal(kindOK(coord, "Delete"), ok)                        // the coordinator is
	is.Equal(kindOK(alice, "Backup"), rpc.Permission)            // alice is no superuser
	is.Equal(kindOK(admin, "Backup"), ok)                        // admin is, by certificate
	is.Equal(kindOK(adminToken, "Backup"), ok)                   // or by token
	is.Equal(kindOK(adminNode, "Backup"), rpc.Permission)        // a datanode called admin is not
	is.Equal(kindOK(alice, "NoSuchMethod"), rpc.Permission)      // a method without a rule is refused
	is.Equal(p.Check(anon, "/grpc.health.v1.Health/Check"), nil) // other services are not this policy's
}
