package roles

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/rpc"
)

// etcdPKI makes a CA with a certificate for etcd (127.0.0.1) and a client
// certificate for the etcd user root.
func etcdPKI(t *testing.T) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if err := pki.InitCA(caDir, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey, err := pki.IssueFiles(caDir, dir, pki.Request{Role: pki.Coordinator, Name: "etcd"}, false)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err = pki.IssueFiles(caDir, dir, pki.Request{Role: pki.Client, Name: "root"}, false)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(caDir, pki.CACertFile), serverCert, serverKey, clientCert, clientKey
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEtcdTLSAndAuth opens the etcd metadata store over TLS with a client
// certificate, then with etcd's authentication on, as a user with a
// password from a file.
func TestEtcdTLSAndAuth(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	ca, cert, key, clientCert, clientKey := etcdPKI(t)
	endpoints := etcdtest.StartTLS(t, etcdtest.TLS{CertFile: cert, KeyFile: key, CAFile: ca, ClientCertAuth: true})

	sc := DefaultStoreConfig()
	sc.Kind, sc.EtcdEndpoints, sc.EtcdPrefix = "etcd", endpoints, "/tls/"
	sc.EtcdCA, sc.EtcdCert, sc.EtcdKey = ca, clientCert, clientKey
	open := func(sc StoreConfig) error {
		s, _, err := openEtcd(ctx, sc, zerolog.Nop())
		if err == nil {
			s.Close()
		}
		return err
	}
	is.NoErr(open(sc)) // TLS with a client certificate

	noCert := sc
	noCert.EtcdCert, noCert.EtcdKey = "", ""
	err := open(noCert)
	is.Equal(rpc.KindOf(err), rpc.Unavailable) // etcd wants a client certificate (the client gives up after its dial timeout)

	// Turn etcd's authentication on: a root user with a password.
	opts, err := etcdOptions(sc)
	is.NoErr(err)
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: opts.TLS, DialTimeout: 5 * time.Second})
	is.NoErr(err)
	defer cli.Close()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cli.UserAdd(actx, "root", "s3cret")
	is.NoErr(err)
	_, err = cli.UserGrantRole(actx, "root", "root")
	is.NoErr(err)
	_, err = cli.AuthEnable(actx)
	is.NoErr(err)

	sc.EtcdUser, sc.EtcdPasswordFile = "root", writeSecret(t, "s3cret\n")
	is.NoErr(open(sc)) // a user and a password from a file (its newline ignored)

	sc.EtcdPasswordFile = writeSecret(t, "wrong\n")
	err = open(sc)
	is.True(err != nil)                                             // a wrong password is refused
	is.Equal(rpc.KindOf(err), rpc.Permission)                       // as a permission error
	is.True(strings.Contains(err.Error(), "authentication failed")) // saying so
}

func TestEtcdOptionsErrors(t *testing.T) {
	ca, _, _, clientCert, clientKey := etcdPKI(t)
	notPEM := writeSecret(t, "not a certificate")
	big := writeSecret(t, strings.Repeat("x", maxSecretFile+1))
	base := StoreConfig{Kind: "etcd", EtcdEndpoints: []string{"127.0.0.1:1"}}
	for _, tc := range []struct {
		name string
		edit func(*StoreConfig)
		kind rpc.Kind
		want string
	}{
		{"cert without key", func(s *StoreConfig) { s.EtcdCert = clientCert }, rpc.Invalid, "--etcd-cert and --etcd-key go together"},
		{"missing CA", func(s *StoreConfig) { s.EtcdCA = "/nonexistent/ca.crt" }, rpc.NotFound, "--etcd-ca"},
		{"CA not PEM", func(s *StoreConfig) { s.EtcdCA = notPEM }, rpc.Invalid, "holds no PEM certificate"},
		{"key of another cert", func(s *StoreConfig) { s.EtcdCert, s.EtcdKey = clientCert, notPEM }, rpc.Invalid, "--etcd-key"},
		{"user without password", func(s *StoreConfig) { s.EtcdUser = "root" }, rpc.Invalid, "go together"},
		{"password without user", func(s *StoreConfig) { s.EtcdPassword = "pw" }, rpc.Invalid, "go together"},
		{"password twice", func(s *StoreConfig) { s.EtcdUser, s.EtcdPassword, s.EtcdPasswordFile = "root", "pw", notPEM }, rpc.Invalid, "give one"},
		{"empty password file", func(s *StoreConfig) { s.EtcdUser, s.EtcdPasswordFile = "root", writeSecret(t, "\n") }, rpc.Invalid, "is empty"},
		{"huge password file", func(s *StoreConfig) { s.EtcdUser, s.EtcdPasswordFile = "root", big }, rpc.Invalid, "more than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			sc := base
			tc.edit(&sc)
			_, err := etcdOptions(sc)
			is.Equal(rpc.KindOf(err), tc.kind)              // the kind
			is.True(strings.Contains(err.Error(), tc.want)) // and a message naming the flag
		})
	}
	is := is.New(t)
	sc := base
	sc.EtcdCA, sc.EtcdCert, sc.EtcdKey = ca, clientCert, clientKey
	opts, err := etcdOptions(sc)
	is.NoErr(err)
	is.True(opts.TLS != nil && len(opts.TLS.Certificates) == 1) // TLS with the client certificate
	sc = base
	opts, err = etcdOptions(sc)
	is.NoErr(err)
	is.True(opts.TLS == nil) // no TLS flag: plain text
}
