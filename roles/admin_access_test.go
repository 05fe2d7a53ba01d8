package roles

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
)

// staticTokens verifies one token as one identity.
type staticTokens map[string]auth.Identity

func (s staticTokens) VerifyToken(tok string) (auth.Identity, error) {
	if id, ok := s[tok]; ok {
		return id, nil
	}
	return auth.Identity{}, os.ErrPermission
}

func TestAdminAccessOffLoopback(t *testing.T) {
	is := is.New(t)
	p, err := OpenLocalPKI(t.TempDir())
	is.NoErr(err)
	bob, err := p.User("bob")
	is.NoErr(err)
	certOf := func(f pki.Files) *x509.Certificate {
		data, err := os.ReadFile(f.Cert)
		is.NoErr(err)
		b, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(b.Bytes)
		is.NoErr(err)
		return c
	}
	a := AdminAccess{Superusers: auth.Superusers{"admin"}, Tokens: staticTokens{
		"su":  {User: "admin", Role: pki.Client, Token: true},
		"bob": {User: "bob", Role: pki.Client, Token: true},
	}}
	h := a.require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	get := func(path string, cert *x509.Certificate, token string) int {
		r := httptest.NewRequest("GET", "https://node:7081"+path, nil)
		r.TLS = &tls.ConnectionState{}
		if cert != nil {
			r.TLS.PeerCertificates = []*x509.Certificate{cert}
		}
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	is.Equal(get("/metrics", nil, ""), http.StatusUnauthorized)                     // nobody
	is.Equal(get("/healthz", nil, ""), http.StatusOK)                               // probes stay open
	is.Equal(get("/readyz", nil, ""), http.StatusOK)                                // both of them
	is.Equal(get("/metrics", certOf(p.Files("datanode")), ""), http.StatusOK)       // a server's certificate
	is.Equal(get("/metrics", certOf(p.Files("admin")), ""), http.StatusOK)          // a superuser's
	is.Equal(get("/metrics", certOf(bob), ""), http.StatusForbidden)                // not another user's: known, and forbidden
	is.Equal(get("/", nil, "su"), http.StatusOK)                                    // a superuser's token
	is.Equal(get("/", nil, "bob"), http.StatusForbidden)                            // not another user's
	is.Equal(get("/", certOf(p.Files("admin")), "forged"), http.StatusUnauthorized) // a bad token is not saved by a certificate
}
