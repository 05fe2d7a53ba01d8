package roles

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// LocalPKI is a CA with certificates for a cluster on one machine (dfs
// dev, the in-process clusters of the tests), under one directory:
// ca/ca.crt and ca/ca.key, then NAME.crt and NAME.key for the
// coordinator ("coordinator"), the datanodes ("datanode", shared) and
// each client user.
type LocalPKI struct{ Dir string }

// OpenLocalPKI makes the CA and the server certificates under dir if they
// are missing, and the superuser's client certificate (auth.DefaultSuperuser);
// existing files are kept, so a dev cluster restarted on its data
// directory keeps its CA.
func OpenLocalPKI(dir string) (*LocalPKI, error) {
	p := &LocalPKI{Dir: dir}
	if err := pki.InitCA(p.caDir(), pki.CAOptions{}); err != nil && rpc.KindOf(err) != rpc.Exists {
		return nil, err
	}
	for _, r := range []struct {
		role pki.Role
		name string
	}{{pki.Coordinator, "coordinator"}, {pki.Datanode, "datanode"}, {pki.Client, auth.DefaultSuperuser}} {
		if _, err := p.issue(pki.Request{Role: r.role, Name: r.name}); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(p.crl()); errors.Is(err, fs.ErrNotExist) {
		if _, err := pki.Revoke(p.caDir()); err != nil { // an empty list
			return nil, err
		}
	}
	return p, nil
}

func (p *LocalPKI) crl() string { return filepath.Join(p.caDir(), pki.CRLFile) }

// Revoke adds the certificate called name to the CA's revocation list;
// the processes refuse it once they reload their TLS files
// (Cluster.ReloadTLS).
func (p *LocalPKI) Revoke(name string) error {
	sn, _, err := pki.SerialOf(p.Files(name).Cert)
	if err != nil {
		return err
	}
	_, err = pki.Revoke(p.caDir(), sn)
	return err
}

func (p *LocalPKI) caDir() string { return filepath.Join(p.Dir, "ca") }

// CA returns the CA certificate's path.
func (p *LocalPKI) CA() string { return filepath.Join(p.caDir(), pki.CACertFile) }

// Files returns the TLS files of the certificate called name, with the
// CA's revocation list.
func (p *LocalPKI) Files(name string) pki.Files {
	return pki.Files{CA: p.CA(), Cert: filepath.Join(p.Dir, name+".crt"), Key: filepath.Join(p.Dir, name+".key"), CRL: p.crl()}
}

// issue writes the certificate req asks for unless one of that name
// exists, and returns its files.
func (p *LocalPKI) issue(req pki.Request) (pki.Files, error) {
	f := p.Files(req.Name)
	if _, err := os.Stat(f.Cert); err == nil {
		return f, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return pki.Files{}, err
	}
	if _, _, err := pki.IssueFiles(p.caDir(), p.Dir, req, true); err != nil {
		return pki.Files{}, err
	}
	return f, nil
}

// User returns the files of a client certificate for user in groups,
// issuing it if it does not exist yet.
func (p *LocalPKI) User(user string, groups ...string) (pki.Files, error) {
	return p.issue(pki.Request{Role: pki.Client, Name: user, Groups: groups})
}

// Issue writes a certificate for req, replacing one of the same name.
func (p *LocalPKI) Issue(req pki.Request) (pki.Files, error) {
	if _, _, err := pki.IssueFiles(p.caDir(), p.Dir, req, true); err != nil {
		return pki.Files{}, err
	}
	return p.Files(req.Name), nil
}

// tlsPoll is how often a long-running process (a server role, the S3
// gateway, a mount) checks its TLS files for a change.
const tlsPoll = 10 * time.Second

// KeepTLSFresh reloads t's files when they change and on SIGHUP, until ctx
// ends; a nil t does nothing. Every long-running process runs it: the
// servers on their own TLS, the S3 gateway and a mount on their client's
// (client.Client.TLS).
func KeepTLSFresh(ctx context.Context, t *pki.TLS, log zerolog.Logger) {
	if t == nil {
		return
	}
	go t.Watch(ctx, tlsPoll)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := t.Reload(); err != nil {
					log.Warn().Err(err).Msg("tls: SIGHUP: the files do not load; keeping the certificates in use")
					continue
				}
				log.Info().Msg("tls: SIGHUP: certificates reloaded")
			}
		}
	}()
}

// tokenVerifier returns the verifier of the bearer tokens a role running
// with t accepts: those a coordinator of t's CA signed. A nil t (plain
// text) takes no tokens.
func tokenVerifier(t *pki.TLS) auth.TokenVerifier {
	if t == nil {
		return nil
	}
	return auth.NewVerifier(t)
}
