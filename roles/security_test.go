package roles_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// secureDial dials addr over TLS trusting the CA f.CA and presenting the
// certificate f.Cert (none if empty), whatever it is: the standard
// library's TLS, not dfs's, so a test can present what dfs would not
// load (an expired certificate, another CA's).
func secureDial(t *testing.T, addr string, f pki.Files) *grpc.ClientConn {
	t.Helper()
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	cc, err := rpc.Dial(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// callBoth makes one call to the coordinator and one to datanode 0 over
// cc's address pair and returns their errors.
func callBoth(ctx context.Context, t *testing.T, c *roles.Cluster, f pki.Files) (coordErr, nodeErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, coordErr = dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), f)).StatFile(ctx, &dfspb.StatFileRequest{Path: "/f"})
	s, err := dfspb.NewDataNodeClient(secureDial(t, c.Nodes()[0].Node.Addr(), f)).DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{ChunkId: "00000000-0000-0000-0000-000000000000"})
	if err == nil {
		_, err = s.Recv()
	}
	return coordErr, err
}

func TestSecureClusterServesTLSOnly(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	admin := rolestest.Client(t, c)
	data := randomBytes(200 << 10)
	_, err := admin.Put(ctx, "/f", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // the superuser puts over TLS
	got, err := getBytes(ctx, admin, "/f")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // and gets it back

	// A plain-text client reaches nothing.
	_, err = dfspb.NewCoordinatorClient(testDial(t, c.Addr())).StatFile(ctx, &dfspb.StatFileRequest{Path: "/f"})
	is.True(err != nil) // plain text to a TLS port fails
	is.Equal(statusKind(err), rpc.Unavailable)

	// No certificate: the handshake succeeds, every call is refused.
	ca := c.PKI().CA()
	coordErr, nodeErr := callBoth(ctx, t, c, pki.Files{CA: ca})
	is.Equal(statusKind(coordErr), rpc.Unauthenticated) // coordinator without a certificate
	is.Equal(statusKind(nodeErr), rpc.Unauthenticated)  // datanode without a certificate

	// A certificate from another CA: the handshake fails.
	other, err := roles.OpenLocalPKI(t.TempDir())
	is.NoErr(err)
	alien := other.Files("admin")
	alien.CA = ca // trusts the cluster, presents a stranger's certificate
	coordErr, nodeErr = callBoth(ctx, t, c, alien)
	is.Equal(statusKind(coordErr), rpc.Unavailable) // coordinator refuses another CA's certificate
	is.Equal(statusKind(nodeErr), rpc.Unavailable)  // so does the datanode

	// An expired certificate: the handshake fails.
	old := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	expired, err := c.PKI().Issue(pki.Request{Role: pki.Client, Name: "admin-expired", Lifetime: time.Hour, Now: old})
	is.NoErr(err)
	coordErr, nodeErr = callBoth(ctx, t, c, expired)
	is.Equal(statusKind(coordErr), rpc.Unavailable) // expired at the coordinator
	is.Equal(statusKind(nodeErr), rpc.Unavailable)  // and at the datanode

	// A client certificate cannot register as a datanode.
	adminFiles := c.PKI().Files("admin")
	_, err = dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), adminFiles)).RegisterDataNode(ctx, &dfspb.RegisterDataNodeRequest{NodeId: "fake", Addr: "127.0.0.1:1"})
	is.Equal(statusKind(err), rpc.Permission) // only datanode certificates register
	// Nor ask a datanode to delete.
	_, err = dfspb.NewDataNodeClient(secureDial(t, c.Nodes()[0].Node.Addr(), adminFiles)).BulkDeleteChunk(ctx, &dfspb.BulkDeleteChunkRequest{})
	is.Equal(statusKind(err), rpc.Permission) // deletions come from the coordinator only
}

func TestRevokedCertificatesRefused(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	p := c.PKI()
	mallory, err := p.User("mallory")
	is.NoErr(err)
	old, err := p.Issue(pki.Request{Role: pki.Datanode, Name: "dn-removed"})
	is.NoErr(err)

	stat := func(f pki.Files) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), f)).StatFile(cctx, &dfspb.StatFileRequest{Path: "/nothing"})
		return err
	}
	heartbeat := func(f pki.Files) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), f)).DataNodeHeartbeat(cctx, &dfspb.HeartbeatRequest{NodeId: "00000000-0000-0000-0000-00000000dead"})
		return err
	}
	is.Equal(statusKind(stat(mallory)), rpc.NotFound)  // before: mallory is a user like any other
	is.Equal(statusKind(heartbeat(old)), rpc.NotFound) // and the old datanode's certificate is accepted (its node is unknown)

	is.NoErr(p.Revoke("mallory"))
	is.NoErr(p.Revoke("dn-removed"))
	is.NoErr(c.ReloadTLS()) // what SIGHUP, or the file watch, does

	is.Equal(statusKind(stat(mallory)), rpc.Unavailable)  // a revoked user's certificate fails the handshake
	is.Equal(statusKind(heartbeat(old)), rpc.Unavailable) // so does a removed datanode's
	is.Equal(statusKind(stat(p.Files("admin"))), rpc.NotFound)
	// The cluster itself still works: its datanode was not revoked.
	cl := rolestest.Client(t, c)
	_, err = cl.Put(ctx, "/after", bytes.NewReader([]byte("x")), 1, nil)
	is.NoErr(err)
}
