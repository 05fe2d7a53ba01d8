package coordinator

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// tokenCoordinator returns a coordinator with a certificate valid for
// two days, its clock an hour before that certificate expires.
func tokenCoordinator(t *testing.T) (*Coordinator, *pki.TLS, time.Time) {
	t.Helper()
	is := is.New(t)
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	is.NoErr(pki.InitCA(caDir, pki.CAOptions{}))
	certFile, keyFile, err := pki.IssueFiles(caDir, dir, pki.Request{Role: pki.Coordinator, Name: "coordinator", Lifetime: 48 * time.Hour}, false)
	is.NoErr(err)
	tl, err := pki.LoadTLS(pki.Files{CA: filepath.Join(caDir, pki.CACertFile), Cert: certFile, Key: keyFile}, zerolog.Nop())
	is.NoErr(err)
	data, err := os.ReadFile(certFile)
	is.NoErr(err)
	b, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(b.Bytes)
	is.NoErr(err)
	cfg := DefaultConfig()
	c, err := New(cfg, Deps{Log: zerolog.New(zerolog.NewTestWriter(t)), Clock: clockwork.NewFakeClockAt(cert.NotAfter.Add(-time.Hour)), Store: metatest.NewMem(), TLS: tl})
	is.NoErr(err)
	return c, tl, cert.NotAfter
}

func TestCreateToken(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c, tl, notAfter := tokenCoordinator(t)
	admin := auth.NewContext(ctx, auth.Identity{User: "admin", Role: pki.Client})

	tok, err := c.createToken(admin, "bob", []string{"staff"}, 24*time.Hour)
	is.NoErr(err)                                                              // signed
	is.True(!tok.expires.After(notAfter))                                      // never past the signing certificate
	is.True(tok.expires.After(notAfter.Add(-time.Hour).Add(59 * time.Minute))) // but as long as it can
	v := auth.NewVerifier(tl)
	v.Now = c.clock.Now
	id, err := v.VerifyToken(tok.token)
	is.NoErr(err) // a holder of the CA accepts it
	is.Equal(id, auth.Identity{User: "bob", Groups: []string{"staff"}, Role: pki.Client, Token: true})

	_, err = c.createToken(admin, "bob", nil, 8*24*time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // longer than --token-max-lifetime
	_, err = c.createToken(admin, "bob", nil, -time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // negative
	_, err = c.createToken(admin, "bob/x", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a bad user name
	byToken := auth.NewContext(ctx, auth.Identity{User: "admin", Role: pki.Client, Token: true})
	_, err = c.createToken(byToken, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Permission) // a token mints no tokens
	viaGateway := auth.NewContext(ctx, auth.Identity{User: "admin", Role: pki.Client, Via: "s3"})
	_, err = c.createToken(viaGateway, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Permission) // nor does a gateway acting for a superuser

	c.tls = nil
	_, err = c.createToken(admin, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // plain text signs nothing
}
