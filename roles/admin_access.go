package roles

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
)

// AdminAccess is who may read a role's admin endpoints. On a loopback
// address they are served in plain HTTP to anyone on the machine, as
// before security existed. On any other address, a role running with TLS
// serves them over HTTPS with its own certificate, and /metrics and the
// status page need a caller who is a server (a certificate of the
// coordinator, datanode or gateway role, as a scraper run by the operator
// may hold), a superuser's client certificate, or a superuser's bearer
// token (anyone else gets 401, or 403 if known); /healthz and /readyz
// stay open, since probes carry no secrets.
// A role run with --insecure serves them in plain text wherever asked,
// with a warning.
type AdminAccess struct {
	TLS        *pki.TLS
	Tokens     auth.TokenVerifier
	Superusers auth.Superusers
}

// guard returns lis and h as they must be served under a.
func (a AdminAccess) guard(lis net.Listener, h http.Handler, log zerolog.Logger) (net.Listener, http.Handler) {
	if lis == nil || loopback(lis.Addr()) {
		return lis, h
	}
	if a.TLS == nil {
		log.Warn().Str("admin", lis.Addr().String()).Msg("admin endpoints in plain HTTP on a non-loopback address (--insecure): anyone who reaches it reads the metrics and status")
		return lis, h
	}
	return tls.NewListener(lis, a.TLS.HTTPServerConfig()), a.require(h)
}

// loopback reports whether addr is a loopback address.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// require wraps h so that only callers a admits reach it (health probes
// excepted). A caller who presents no credential, or one that does not
// verify, gets 401; a known user who is neither a server nor a superuser
// gets 403.
func (a AdminAccess) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			h.ServeHTTP(w, r)
			return
		}
		id, ok := a.identify(r)
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="dfs"`)
			plain(w, http.StatusUnauthorized, "the admin endpoints need a server's or a superuser's certificate, or a superuser's bearer token")
		case id.Server() || a.Superusers.Has(id):
			h.ServeHTTP(w, r)
		default:
			plain(w, http.StatusForbidden, fmt.Sprintf("the admin endpoints are for servers and superusers; %s is neither", id.User))
		}
	})
}

// identify returns who made r: the user of its bearer token, else the
// holder of its client certificate. It reports false for a request with
// neither, a token that does not verify, or a certificate without a role.
func (a AdminAccess) identify(r *http.Request) (auth.Identity, bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && a.Tokens != nil {
		id, err := a.Tokens.VerifyToken(tok)
		return id, err == nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return auth.Identity{}, false
	}
	// The certificate was verified against the CA in the handshake.
	cert := r.TLS.PeerCertificates[0]
	role, err := pki.RoleOf(cert)
	if err != nil {
		return auth.Identity{}, false
	}
	return auth.Identity{User: pki.UserOf(cert), Role: role}, true
}
