package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore"
	"github.com/dfs-project/dfs/rpc"
)

// electionName is the election coordinators of one etcd prefix run.
const electionName = "coordinator"

// The coordinator lowers its file chunk limit (--max-file-chunks) to what
// the etcd store can hold, through this method.
var _ interface{ MaxFileChunks() int } = (*etcdstore.Store)(nil)

// openEtcd opens the etcd metadata store and the election that lets
// several coordinators share it.
func openEtcd(ctx context.Context, sc StoreConfig, log zerolog.Logger) (*etcdstore.Store, coordinator.Elector, error) {
	if len(sc.EtcdEndpoints) == 0 {
		return nil, nil, rpc.Errorf(rpc.Invalid, "--metadata etcd needs --etcd-endpoints")
	}
	opts, err := etcdOptions(sc)
	if err != nil {
		return nil, nil, err
	}
	opts.Log = log.With().Str("component", "etcdstore").Logger()
	s, err := etcdstore.Open(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	return s, &etcdElector{store: s, election: s.Election(electionName), ttl: sc.LeaseTTL, log: log}, nil
}

// maxSecretFile bounds the password file: a password, not a document.
const maxSecretFile = 4 << 10

// etcdOptions returns the options of the etcd client sc asks for: its
// endpoints and prefix, TLS (--etcd-ca, --etcd-cert, --etcd-key) and
// etcd's user and password (--etcd-user, --etcd-password or
// --etcd-password-file). Errors are of kind rpc.Invalid (or rpc.NotFound
// for a missing file) and name the flag.
func etcdOptions(sc StoreConfig) (etcdstore.Options, error) {
	opts := etcdstore.Options{Endpoints: sc.EtcdEndpoints, Prefix: sc.EtcdPrefix}
	if (sc.EtcdCert == "") != (sc.EtcdKey == "") {
		return opts, rpc.Errorf(rpc.Invalid, "--etcd-cert and --etcd-key go together: a client certificate and its key")
	}
	if sc.EtcdCA != "" || sc.EtcdCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if sc.EtcdCA != "" {
			pem, err := readSmallFile("--etcd-ca", sc.EtcdCA, 1<<20)
			if err != nil {
				return opts, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return opts, rpc.Errorf(rpc.Invalid, "--etcd-ca %s holds no PEM certificate", sc.EtcdCA)
			}
		}
		if sc.EtcdCert != "" {
			cert, err := readSmallFile("--etcd-cert", sc.EtcdCert, 1<<20)
			if err != nil {
				return opts, err
			}
			key, err := readSmallFile("--etcd-key", sc.EtcdKey, 1<<20)
			if err != nil {
				return opts, err
			}
			c, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return opts, rpc.Errorf(rpc.Invalid, "--etcd-cert %s and --etcd-key %s: %w", sc.EtcdCert, sc.EtcdKey, err)
			}
			cfg.Certificates = []tls.Certificate{c}
		}
		opts.TLS = cfg
	}
	password := sc.EtcdPassword
	if sc.EtcdPasswordFile != "" {
		if password != "" {
			return opts, rpc.Errorf(rpc.Invalid, "--etcd-password and --etcd-password-file: give one")
		}
		b, err := readSmallFile("--etcd-password-file", sc.EtcdPasswordFile, maxSecretFile)
		if err != nil {
			return opts, err
		}
		password = strings.TrimRight(string(b), "\r\n")
		if password == "" {
			return opts, rpc.Errorf(rpc.Invalid, "--etcd-password-file %s is empty", sc.EtcdPasswordFile)
		}
	}
	if (sc.EtcdUser == "") != (password == "") {
		return opts, rpc.Errorf(rpc.Invalid, "--etcd-user and --etcd-password (or --etcd-password-file) go together")
	}
	opts.Username, opts.Password = sc.EtcdUser, password
	return opts, nil
}

// readSmallFile reads the file path that flag names, of at most limit
// bytes.
func readSmallFile(flag, path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		kind := rpc.Invalid
		if errors.Is(err, fs.ErrNotExist) {
			kind = rpc.NotFound
		}
		return nil, rpc.Errorf(kind, "%s: %w", flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "%s: %w", flag, err)
	}
	if int64(len(b)) > limit {
		return nil, rpc.Errorf(rpc.Invalid, "%s %s: more than %d bytes", flag, path, limit)
	}
	return b, nil
}

// etcdElector elects a coordinator with an etcd lease; the store is fenced
// by the leadership, so a deposed leader can write nothing.
type etcdElector struct {
	store    *etcdstore.Store
	election *etcdstore.Election
	ttl      time.Duration
	log      zerolog.Logger
}

var _ coordinator.Elector = (*etcdElector)(nil)

func (e *etcdElector) Campaign(ctx context.Context, addr string) (<-chan struct{}, error) {
	l, err := e.election.Campaign(ctx, addr, e.ttl)
	if err != nil {
		return nil, err
	}
	e.store.SetFence(l)
	e.log.Info().Str("leader", addr).Dur("lease", e.ttl).Msg("elected leader")
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		select {
		case <-l.Done():
		case <-ctx.Done():
			// Stopping: hand over at once rather than when the lease runs out.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := l.Resign(rctx); err != nil {
				e.log.Warn().Err(err).Msg("resign leadership")
			}
		}
	}()
	return lost, nil
}

func (e *etcdElector) Leader(ctx context.Context) (string, error) {
	l, err := e.election.Leader(ctx)
	if rpc.KindOf(err) == rpc.NotFound {
		return "", nil
	}
	return l, err
}
