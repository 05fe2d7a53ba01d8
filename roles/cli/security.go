package cli

import (
	"context"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// security is how a command's connections are secured, from the global
// options: TLS files and a bearer token, or plain text (--insecure).
type security struct {
	files    pki.Files
	token    string
	insecure bool
}

// check refuses options that contradict each other.
func (s security) check() error {
	if s.insecure && (s.files.Set() || s.token != "") {
		return rpc.Errorf(rpc.Invalid, "--insecure runs in plain text: it does not go with --tls-ca, --tls-cert, --tls-key, --tls-crl or --token")
	}
	return nil
}

// errNoTLS is the error of a command given neither TLS nor --insecure.
func errNoTLS(what string) error {
	return rpc.Errorf(rpc.Invalid, "no TLS configured: give --tls-ca (DFS_TLS_CA) with %s; or --insecure (DFS_INSECURE=true) for a cluster run in plain text (docs/security.md)", what)
}

// client sets cfg's TLS files (the revocation list too: a server whose
// certificate it lists is refused) and token.
func (s security) client(cfg *client.Config) error {
	if s.insecure {
		return nil
	}
	if s.files.CA == "" {
		return errNoTLS("a client certificate (--tls-cert, --tls-key) or a bearer token (--token)")
	}
	if s.files.Cert == "" && s.token == "" {
		return rpc.Errorf(rpc.Invalid, "a client authenticates with a certificate (--tls-cert and --tls-key, DFS_TLS_CERT and DFS_TLS_KEY) or a bearer token (--token, DFS_TOKEN)")
	}
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL, cfg.Token = s.files.CA, s.files.Cert, s.files.Key, s.files.CRL, s.token
	return nil
}

// insecureWarning is what a process that serves the cluster (a server
// role, the S3 gateway, a mount) logs when it runs in plain text.
const insecureWarning = "running without TLS (--insecure): anyone who can reach this process's ports can read, write and delete any file"

// warnInsecure logs insecureWarning for role with --insecure, and
// reports whether it did.
func (s security) warnInsecure(role string, log zerolog.Logger) bool {
	if s.insecure {
		log.Warn().Str("role", role).Msg(insecureWarning)
	}
	return s.insecure
}

// serve readies cl for a command that serves the cluster until ctx ends
// (dfs s3, dfs mount), as a server is readied: plain text is warned of,
// and TLS files are reloaded when they change and on SIGHUP.
func (s security) serve(ctx context.Context, role string, cl *client.Client, log zerolog.Logger) {
	if s.warnInsecure(role, log) {
		return
	}
	roles.KeepTLSFresh(ctx, cl.TLS(), log)
}

// server loads the TLS of a server role (its certificate must carry
// role); nil with --insecure, after a warning.
func (s security) server(role pki.Role, log zerolog.Logger) (*pki.TLS, error) {
	if s.warnInsecure(string(role), log) {
		return nil, nil
	}
	if s.files.CA == "" || s.files.Cert == "" || s.files.Key == "" {
		return nil, errNoTLS("this " + string(role) + "'s certificate and key (--tls-cert, --tls-key)")
	}
	if s.token != "" {
		return nil, rpc.Errorf(rpc.Invalid, "--token is a client's; a %s authenticates with its certificate", role)
	}
	t, err := pki.LoadTLS(s.files, log)
	if err != nil {
		return nil, err
	}
	if r := t.Role(); r != role {
		return nil, rpc.Errorf(rpc.Invalid, "the certificate %s is a %s's, not a %s's (dfs admin cert issue --role %s)", s.files.Cert, r, role, role)
	}
	return t, nil
}

// dialOptions returns the options of a command that dials a server
// itself (dfs health): TLS with the files given, and the token; none
// with --insecure. A server's own certificate will do, so a health check
// run beside a server (a container's) uses the server's environment.
func (s security) dialOptions(log zerolog.Logger) ([]grpc.DialOption, error) {
	if s.insecure {
		return nil, nil
	}
	if s.files.CA == "" {
		return nil, errNoTLS("a certificate (--tls-cert, --tls-key) or a bearer token (--token)")
	}
	t, err := pki.LoadTLS(s.files, log)
	if err != nil {
		return nil, err
	}
	opts := t.DialOptions(t.ClientCredentials())
	if s.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(client.BearerToken(s.token)))
	}
	return opts, nil
}
