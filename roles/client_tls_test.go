package roles_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// TestClientRefusesRevokedServers: a client given the CA's revocation
// list refuses a datanode or coordinator whose certificate it lists,
// saying so; the same client without the list still works (the servers
// themselves have not reloaded the list).
func TestClientRefusesRevokedServers(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	p := c.PKI()
	data := randomBytes(100 << 10)
	_, err := rolestest.Client(t, c).Put(ctx, "/f", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err)

	admin := p.Files(auth.DefaultSuperuser)
	withCRL := func(cfg *client.Config) {
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL = admin.CA, admin.Cert, admin.Key, admin.CRL
		cfg.Attempts = 1
	}
	noCRL := func(cfg *client.Config) {
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL = admin.CA, admin.Cert, admin.Key, ""
	}

	is.NoErr(p.Revoke("datanode")) // the certificate every datanode of the cluster serves with
	_, err = rolestest.Client(t, c, withCRL).Stat(ctx, "/f")
	is.NoErr(err) // the coordinator is not revoked
	_, err = getBytes(ctx, rolestest.Client(t, c, withCRL), "/f")
	is.True(err != nil)                                                // no datanode is trusted
	is.True(strings.Contains(err.Error(), `certificate \"datanode\"`)) // the error names the certificate
	is.True(strings.Contains(err.Error(), "is revoked"))               // and why it was refused
	got, err := getBytes(ctx, rolestest.Client(t, c, noCRL), "/f")
	is.NoErr(err) // without the list, the datanodes are trusted
	is.True(bytes.Equal(got, data))

	is.NoErr(p.Revoke("coordinator"))
	_, err = rolestest.Client(t, c, withCRL).Stat(ctx, "/f")
	is.Equal(rpc.KindOf(err), rpc.Unavailable)                            // the coordinator is refused
	is.True(strings.Contains(err.Error(), `certificate \"coordinator\"`)) // by name
	is.True(strings.Contains(err.Error(), "is revoked"))
	_, err = rolestest.Client(t, c, noCRL).Stat(ctx, "/f")
	is.NoErr(err) // without the list, the coordinator is trusted
}

// TestClientReloadsTLS: a long-running client picks up a reissued
// certificate and a new revocation list from its files when its TLS is
// reloaded (what dfs s3 and dfs mount do on a file change or SIGHUP),
// without a restart: the next connection it sets up uses them.
func TestClientReloadsTLS(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 1, rolestest.Secure)
	p := c.PKI()
	cl := rolestest.UserClient(t, c, "carol", nil)
	is.True(cl.TLS() != nil)
	_, err := cl.Stat(ctx, "/nothing")
	is.Equal(rpc.KindOf(err), rpc.NotFound) // carol is let in

	// carol's certificate is revoked and a new one issued in its place;
	// the servers reload the list.
	is.NoErr(p.Revoke("carol"))
	_, err = p.Issue(pki.Request{Role: pki.Client, Name: "carol"})
	is.NoErr(err)
	is.NoErr(c.ReloadTLS())
	is.NoErr(c.RestartCoordinator()) // the client's connection ends; its next one is new
	_, err = cl.Stat(ctx, "/nothing")
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the client still presents the revoked certificate
	is.NoErr(cl.TLS().Reload())
	// The connection waits out its reconnect backoff (up to 5 s) after
	// the refused handshake: the next attempt presents the new certificate.
	deadline := time.Now().Add(rolestest.WaitFor)
	for _, err = cl.Stat(ctx, "/nothing"); rpc.KindOf(err) == rpc.Unavailable && time.Now().Before(deadline); _, err = cl.Stat(ctx, "/nothing") {
		time.Sleep(50 * time.Millisecond)
	}
	is.Equal(rpc.KindOf(err), rpc.NotFound) // with the reissued one it is let in again

	// The coordinator's certificate is revoked: the client refuses it once
	// it has reloaded the list.
	is.NoErr(p.Revoke("coordinator"))
	is.NoErr(cl.TLS().Reload())
	is.NoErr(c.RestartCoordinator())
	_, err = cl.Stat(ctx, "/nothing")
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // the revoked coordinator is refused
	is.True(strings.Contains(err.Error(), "is revoked"))
}
