package roles_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// tokenClient returns a client of c that trusts its CA and presents tok,
// and no certificate.
func tokenClient(t *testing.T, c *roles.Cluster, tok string) *client.Client {
	t.Helper()
	return rolestest.Client(t, c, func(cfg *client.Config) {
		cfg.TLSCA, cfg.Token = c.PKI().CA(), tok
		cfg.FailoverTimeout = time.Second
	})
}

// loadTLS loads the TLS files f.
func loadTLS(t *testing.T, f pki.Files) *pki.TLS {
	t.Helper()
	tl, err := pki.LoadTLS(f, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// signClaims signs a token of user with signer, valid from iat to exp.
func signClaims(t *testing.T, signer *pki.TLS, user string, iat, exp time.Time) string {
	t.Helper()
	cl, err := auth.NewClaims(user, nil, iat, exp.Sub(iat))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.SignToken(signer, cl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// alterToken returns tok with part i (0 payload, 1 certificate, 2
// signature) replaced by what edit makes of its decoded bytes.
func alterToken(t *testing.T, tok string, i int, edit func([]byte) []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	parts := strings.Split(strings.TrimPrefix(tok, auth.TokenPrefix), ".")
	b, err := enc.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	parts[i] = enc.EncodeToString(edit(b))
	return auth.TokenPrefix + strings.Join(parts, ".")
}

func TestBearerTokens(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 1, rolestest.Secure)
	admin := rolestest.Client(t, c)

	tok, err := admin.CreateToken(ctx, "bob", []string{"staff"}, time.Hour)
	is.NoErr(err) // the superuser creates a token for bob
	is.True(strings.HasPrefix(tok.Token, auth.TokenPrefix))
	is.Equal(tok.User, "bob")
	is.True(tok.Expires.After(time.Now().Add(59*time.Minute)) && tok.Expires.Before(time.Now().Add(61*time.Minute))) // an hour

	// With the CA and the token, and no certificate, bob is authenticated.
	bob := tokenClient(t, c, tok.Token)
	_, err = bob.Nodes(ctx)
	is.NoErr(err) // a call that needs an authenticated caller succeeds
	// Without the token, the same call is refused.
	_, err = tokenClient(t, c, "").Nodes(ctx)
	is.Equal(rpc.KindOf(err), rpc.Unauthenticated) // anonymous

	// The datanodes verify tokens too: a good one passes the door (the
	// call then fails for want of a chunk), a forged one does not.
	nodeCall := func(tok string) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cc := secureDial(t, c.Nodes()[0].Node.Addr(), pki.Files{CA: c.PKI().CA()})
		s, err := dfspb.NewDataNodeClient(cc).DownloadChunkStream(cctx, &dfspb.DownloadChunkStreamRequest{ChunkId: "00000000-0000-0000-0000-000000000000"},
			grpc.PerRPCCredentials(bearerCreds(tok)))
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	err = nodeCall(tok.Token)
	is.True(err != nil && statusKind(err) != rpc.Unauthenticated) // the datanode accepts the token
	err = nodeCall("dfs1.garbage")
	is.Equal(statusKind(err), rpc.Unauthenticated) // and refuses a malformed one

	// Only a superuser, presenting a certificate, creates tokens.
	_, err = rolestest.UserClient(t, c, "carol", nil).CreateToken(ctx, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Permission) // carol is no superuser
	_, err = bob.CreateToken(ctx, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Permission) // nor is bob's token
	adminTok, err := admin.CreateToken(ctx, auth.DefaultSuperuser, nil, time.Hour)
	is.NoErr(err)
	_, err = tokenClient(t, c, adminTok.Token).CreateToken(ctx, "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Permission) // a superuser's token mints no tokens
	is.True(strings.Contains(err.Error(), "client certificate"))

	// Bad requests.
	_, err = admin.CreateToken(ctx, "bob", nil, 31*24*time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // beyond --token-max-lifetime
	is.True(strings.Contains(err.Error(), "token-max-lifetime"))
	_, err = admin.CreateToken(ctx, "../bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a bad user name
	dflt, err := admin.CreateToken(ctx, "bob", nil, 0)
	is.NoErr(err)
	is.True(dflt.Expires.After(time.Now().Add(23 * time.Hour))) // no lifetime: a day

	// Forged, altered, expired and foreign tokens are refused, saying why.
	coordTLS := loadTLS(t, c.PKI().Files("coordinator"))
	nodeTLS := loadTLS(t, c.PKI().Files("datanode"))
	other, err := roles.OpenLocalPKI(t.TempDir())
	is.NoErr(err)
	now := time.Now()
	for _, tc := range []struct{ name, tok, want string }{
		{"tampered payload", alterToken(t, tok.Token, 0, func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"sub":"bob"`, `"sub":"admin"`, 1))
		}), "bad signature"},
		{"bad signature", alterToken(t, tok.Token, 2, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }), "bad signature"},
		{"expired", signClaims(t, coordTLS, "bob", now.Add(-2*time.Hour), now.Add(-time.Hour)), "expired at"},
		{"signed by a datanode", signClaims(t, nodeTLS, "bob", now, now.Add(time.Hour)), "datanode"},
		{"another CA's coordinator", signClaims(t, loadTLS(t, other.Files("coordinator")), "bob", now, now.Add(time.Hour)), "unknown authority"},
		{"garbage", "not a token", "malformed"},
		{"9 KiB", auth.TokenPrefix + strings.Repeat("x", 9<<10), "more than 8192"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, err := tokenClient(t, c, tc.tok).Nodes(ctx)
			is.Equal(rpc.KindOf(err), rpc.Unauthenticated)  // refused
			is.True(strings.Contains(err.Error(), tc.want)) // with the reason
		})
	}
}

func TestCreateTokenNeedsTLS(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1)
	_, err := rolestest.Client(t, c).CreateToken(t.Context(), "bob", nil, time.Hour)
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // no tokens in plain text
	is.True(strings.Contains(err.Error(), "TLS"))     // saying why
}

// bearerCreds sends a bearer token with a call.
type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{auth.AuthorizationHeader: "Bearer " + string(b)}, nil
}

func (bearerCreds) RequireTransportSecurity() bool { return true }
