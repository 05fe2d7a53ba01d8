package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
)

// offLoopback is a listener on a loopback port that reports an address
// other hosts reach (TEST-NET-1), so AdminAccess.guard, which decides by
// the listener's address, applies the rules of a public admin address to
// it; the tests bind only loopback addresses.
type offLoopback struct{ net.Listener }

func (offLoopback) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7081} }

// serveAdminOffLoopback serves a role's admin endpoints (with pprof) as
// on a non-loopback address, over the real TLS listener guard builds,
// and returns their base URL ("https://127.0.0.1:PORT").
func serveAdminOffLoopback(t *testing.T, a AdminAccess) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := AdminHandler(NewMetricsRegistry(), func(context.Context) error { return nil }, nil, true)
	lis, h := a.guard(offLoopback{raw}, h, zerolog.New(zerolog.NewTestWriter(t)))
	if _, ok := lis.(offLoopback); ok {
		t.Fatal("guard served a non-loopback admin address without TLS")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runWithAdmin(ctx, lis, h, zerolog.New(zerolog.NewTestWriter(t)), func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	})
	return "https://" + raw.Addr().String()
}

// adminGetter returns a GET of the admin endpoints at base over HTTPS
// trusting caPath, presenting the client certificate f (none when f.Cert
// is empty) and the bearer token tok (none when empty). It returns the
// status, or the error of a refused connection.
func adminGetter(t *testing.T, base, caPath string) func(f pki.Files, tok, path string) (int, error) {
	t.Helper()
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return func(f pki.Files, tok, path string) (int, error) {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if f.Cert != "" {
			c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{c}
		}
		// A transport per request: each makes its own handshake.
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, err := http.NewRequestWithContext(t.Context(), "GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
}

// TestAdminHTTPSOffLoopback drives the admin endpoints of a role with TLS
// on a non-loopback address over a real HTTPS listener: who is refused in
// the handshake, who gets 401 or 403, and who is served.
func TestAdminHTTPSOffLoopback(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p, err := OpenLocalPKI(t.TempDir())
	is.NoErr(err)
	srv, err := pki.LoadTLS(p.Files("coordinator"), zerolog.New(zerolog.NewTestWriter(t)))
	is.NoErr(err)
	// "ops" and "ops-old" are superusers too, whose certificates are
	// revoked and expired below.
	a := AdminAccess{TLS: srv, Tokens: auth.NewVerifier(srv), Superusers: auth.Superusers{auth.DefaultSuperuser, "ops", "ops-old"}}
	get := adminGetter(t, serveAdminOffLoopback(t, a), p.CA())
	none := pki.Files{}
	token := func(user string) string {
		c, err := auth.NewClaims(user, nil, time.Now(), time.Hour)
		is.NoErr(err)
		tok, err := auth.SignToken(srv, c)
		is.NoErr(err)
		return tok
	}
	status := func(f pki.Files, tok, path string) int {
		code, err := get(f, tok, path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return code
	}
	// handshakeRefused checks that f's certificate is refused in the TLS
	// handshake, before any HTTP.
	handshakeRefused := func(what string, f pki.Files) {
		t.Helper()
		code, err := get(f, "", "/healthz")
		if err == nil {
			t.Fatalf("%s: served (%d), want the TLS handshake refused", what, code)
		}
		var alert tls.AlertError
		if !errors.As(err, &alert) && !strings.Contains(err.Error(), "tls") {
			t.Fatalf("%s: want a TLS alert, got %v", what, err)
		}
	}

	// No credentials.
	is.Equal(status(none, "", "/metrics"), http.StatusUnauthorized)      // no certificate: refused
	is.Equal(status(none, "", "/debug/pprof/"), http.StatusUnauthorized) // nor the profiles
	is.Equal(status(none, "", "/"), http.StatusUnauthorized)             // nor the status page
	is.Equal(status(none, "", "/healthz"), http.StatusOK)                // probes stay open
	is.Equal(status(none, "", "/readyz"), http.StatusOK)                 // both of them
	is.Equal(status(none, "forged", "/metrics"), http.StatusUnauthorized)

	// A user who is not a superuser is known, and forbidden.
	bob, err := p.User("bob")
	is.NoErr(err)
	is.Equal(status(bob, "", "/metrics"), http.StatusForbidden)          // bob's certificate
	is.Equal(status(bob, "", "/debug/pprof/"), http.StatusForbidden)     // no profiles for bob
	is.Equal(status(bob, "", "/debug/pprof/heap"), http.StatusForbidden) // nor a heap dump
	is.Equal(status(none, token("bob"), "/metrics"), http.StatusForbidden)
	is.Equal(status(bob, "", "/healthz"), http.StatusOK) // the probe is open to bob too

	// Servers and superusers are served.
	admin := p.Files(auth.DefaultSuperuser)
	is.Equal(status(admin, "", "/metrics"), http.StatusOK)                               // a superuser's certificate
	is.Equal(status(admin, "", "/debug/pprof/"), http.StatusOK)                          // and its profiles
	is.Equal(status(none, token(auth.DefaultSuperuser), "/metrics"), http.StatusOK)      // a superuser's token
	is.Equal(status(none, token(auth.DefaultSuperuser), "/debug/pprof/"), http.StatusOK) // without a certificate
	is.Equal(status(p.Files("datanode"), "", "/metrics"), http.StatusOK)                 // a server's certificate

	// Certificates the handshake refuses.
	other := filepath.Join(t.TempDir(), "other")
	is.NoErr(pki.InitCA(other, pki.CAOptions{}))
	alienCert, alienKey, err := pki.IssueFiles(other, t.TempDir(), pki.Request{Role: pki.Client, Name: auth.DefaultSuperuser}, false)
	is.NoErr(err)
	handshakeRefused("another CA's superuser", pki.Files{Cert: alienCert, Key: alienKey})
	expired, err := p.Issue(pki.Request{Role: pki.Client, Name: "ops-old", Now: func() time.Time {
		return time.Now().Add(-pki.ClientLifetime - time.Hour)
	}})
	is.NoErr(err)
	handshakeRefused("an expired certificate", expired)

	// A superuser's certificate, served until it is revoked.
	ops, err := p.User("ops")
	is.NoErr(err)
	is.Equal(status(ops, "", "/metrics"), http.StatusOK) // ops is a superuser
	is.NoErr(p.Revoke("ops"))
	is.NoErr(srv.Reload()) // the role rereads its CRL
	handshakeRefused("a revoked certificate", ops)

	// The refused handshakes left the server up.
	is.Equal(status(admin, "", "/metrics"), http.StatusOK) // still serving
}
