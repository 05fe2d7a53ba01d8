package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// newCA creates a CA in a new temporary directory and returns the directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// parseCert parses one PEM certificate.
func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pool returns a pool holding the CA certificate in caDir.
func pool(t *testing.T, caDir string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(caDir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(data) {
		t.Fatal("bad CA PEM")
	}
	return p
}

func TestInitCA(t *testing.T) {
	is := is.New(t)
	dir := newCA(t)
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o600)) // the CA key is private
	data, err := os.ReadFile(filepath.Join(dir, CACertFile))
	is.NoErr(err)
	ca := parseCert(t, data)
	is.True(ca.IsCA)                                                  // a CA
	is.Equal(ca.MaxPathLen, 0)                                        // signs leaf certificates only
	is.True(ca.MaxPathLenZero)                                        // the zero is explicit
	is.Equal(ca.KeyUsage, x509.KeyUsageCertSign|x509.KeyUsageCRLSign) // key usage
	is.True(ca.NotAfter.Sub(ca.NotBefore) > CALifetime-time.Hour)     // 10 years
	is.True(len(ca.Subject.CommonName) > len("dfs CA "))              // a random id in the name
	is.NoErr(ca.CheckSignatureFrom(ca))                               // self-signed
	is.True(ca.SerialNumber.BitLen() > 64)                            // a random serial
	entries, err := os.ReadDir(dir)
	is.NoErr(err)
	is.Equal(len(entries), 2)                                                   // ca.crt and ca.key only: no temporary files left
	is.True(ca.Subject.CommonName != parseCert(t, caPEM(t)).Subject.CommonName) // each CA has its own id
}

// caPEM creates another CA and returns its certificate.
func caPEM(t *testing.T) []byte {
	data, err := os.ReadFile(filepath.Join(newCA(t), CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestInitCARefusesOverwrite(t *testing.T) {
	is := is.New(t)
	dir := newCA(t)
	before, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	is.NoErr(err)
	err = InitCA(dir, CAOptions{})
	is.True(err != nil)                   // refused
	is.Equal(rpc.KindOf(err), rpc.Exists) // as Exists
	after, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	is.NoErr(err)
	is.Equal(before, after) // the key is untouched

	// A lone ca.crt is refused too.
	dir2 := t.TempDir()
	is.NoErr(os.WriteFile(filepath.Join(dir2, CACertFile), []byte("x"), 0o644))
	err = InitCA(dir2, CAOptions{})
	is.Equal(rpc.KindOf(err), rpc.Exists) // refused: ca.crt exists
	_, err = os.Stat(filepath.Join(dir2, CAKeyFile))
	is.True(errors.Is(err, os.ErrNotExist)) // and no key was written
}

func TestIssueEveryRole(t *testing.T) {
	caDir := newCA(t)
	roots := pool(t, caDir)
	for _, r := range Roles {
		t.Run(string(r), func(t *testing.T) {
			is := is.New(t)
			certPEM, keyPEM, err := Issue(caDir, Request{Role: r, Name: "n1-" + string(r)})
			is.NoErr(err)
			_, err = tls.X509KeyPair(certPEM, keyPEM)
			is.NoErr(err) // the key matches the certificate
			c := parseCert(t, certPEM)
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			is.NoErr(err) // every role may authenticate as a client
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			is.Equal(err == nil, r.Server()) // only server roles may serve
			got, err := RoleOf(c)
			is.NoErr(err)
			is.Equal(got, r)                                            // the role reads back
			is.Equal(UserOf(c), "n1-"+string(r))                        // the name reads back
			is.Equal(c.Subject.OrganizationalUnit, []string{string(r)}) // and is in the OU
			life := c.NotAfter.Sub(c.NotBefore) - backdate
			if r.Server() {
				is.Equal(life, ServerLifetime)                          // a year
				is.Equal(c.DNSNames, []string{"localhost"})             // default DNS SAN
				is.Equal(len(c.IPAddresses), 1)                         // default IP SAN
				is.True(c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1))) // 127.0.0.1
				_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"})
				is.NoErr(err) // valid for localhost
			} else {
				is.Equal(life, ClientLifetime)                  // 90 days
				is.Equal(len(c.DNSNames)+len(c.IPAddresses), 0) // no SANs but the role
			}
		})
	}
}

func TestIssueSANsAndLifetime(t *testing.T) {
	is := is.New(t)
	caDir := newCA(t)
	certPEM, _, err := Issue(caDir, Request{Role: Datanode, Name: "dn1", DNS: []string{"dn1.example.com"}, IPs: []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("::1")}, Lifetime: 48 * time.Hour})
	is.NoErr(err)
	c := parseCert(t, certPEM)
	is.Equal(c.DNSNames, []string{"dn1.example.com"})            // only the given names
	is.Equal(len(c.IPAddresses), 2)                              // the given addresses
	is.Equal(c.NotAfter.Sub(c.NotBefore), 48*time.Hour+backdate) // the given lifetime

	// A lifetime past the CA's expiry ends with the CA.
	certPEM, _, err = Issue(caDir, Request{Role: Client, Name: "alice", Lifetime: 20 * CALifetime})
	is.NoErr(err)
	ca := parseCert(t, caPEMOf(t, caDir))
	is.Equal(parseCert(t, certPEM).NotAfter, ca.NotAfter) // bounded by the CA
}

// caPEMOf returns the CA certificate in dir.
func caPEMOf(t *testing.T, dir string) []byte {
	data, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestVerifyFailures(t *testing.T) {
	is := is.New(t)
	caDir, otherDir := newCA(t), newCA(t)
	certPEM, _, err := Issue(otherDir, Request{Role: Client, Name: "mallory"})
	is.NoErr(err)
	_, err = parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: pool(t, caDir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	is.True(err != nil) // a certificate from another CA is refused

	old := func() time.Time { return time.Now().Add(-72 * time.Hour) }
	certPEM, _, err = Issue(caDir, Request{Role: Client, Name: "bob", Lifetime: time.Hour, Now: old})
	is.NoErr(err)
	_, err = parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: pool(t, caDir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var inv x509.CertificateInvalidError
	is.True(errors.As(err, &inv))      // an expired certificate is refused
	is.Equal(inv.Reason, x509.Expired) // as expired
}

func TestIssueBadInput(t *testing.T) {
	caDir := newCA(t)
	for _, tc := range []struct {
		name string
		req  Request
		kind rpc.Kind
	}{
		{"unknown role", Request{Role: "admin", Name: "x"}, rpc.Invalid},
		{"empty role", Request{Name: "x"}, rpc.Invalid},
		{"empty name", Request{Role: Client}, rpc.Invalid},
		{"slash in name", Request{Role: Client, Name: "../etc/passwd"}, rpc.Invalid},
		{"space in name", Request{Role: Client, Name: "a b"}, rpc.Invalid},
		{"dot dot", Request{Role: Client, Name: ".."}, rpc.Invalid},
		{"long name", Request{Role: Client, Name: string(make([]byte, 65))}, rpc.Invalid},
		{"bad DNS", Request{Role: Datanode, Name: "dn", DNS: []string{"a..b"}}, rpc.Invalid},
		{"bad DNS char", Request{Role: Datanode, Name: "dn", DNS: []string{"a_b.com"}}, rpc.Invalid},
		{"bad IP", Request{Role: Datanode, Name: "dn", IPs: []net.IP{{1, 2, 3}}}, rpc.Invalid},
		{"client with SAN", Request{Role: Client, Name: "alice", DNS: []string{"example.com"}}, rpc.Invalid},
		{"negative lifetime", Request{Role: Client, Name: "alice", Lifetime: -time.Hour}, rpc.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, _, err := Issue(caDir, tc.req)
			is.True(err != nil)                // refused
			is.Equal(rpc.KindOf(err), tc.kind) // with the right kind
			t.Log(err)
		})
	}
	is := is.New(t)
	_, _, err := Issue(t.TempDir(), Request{Role: Client, Name: "alice"})
	is.Equal(rpc.KindOf(err), rpc.NotFound) // no CA there
	t.Log(err)
}

func TestIssueFilesRefusesOverwrite(t *testing.T) {
	is := is.New(t)
	caDir := newCA(t)
	out := filepath.Join(t.TempDir(), "out")
	req := Request{Role: Gateway, Name: "gw"}
	certPath, keyPath, err := IssueFiles(caDir, out, req, false)
	is.NoErr(err)
	is.Equal(certPath, filepath.Join(out, "gw.crt")) // named after the name
	st, err := os.Stat(keyPath)
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o600)) // the key is private
	first, err := os.ReadFile(certPath)
	is.NoErr(err)

	_, _, err = IssueFiles(caDir, out, req, false)
	is.Equal(rpc.KindOf(err), rpc.Exists) // refused without force
	same, err := os.ReadFile(certPath)
	is.NoErr(err)
	is.Equal(first, same) // untouched

	_, _, err = IssueFiles(caDir, out, req, true)
	is.NoErr(err) // force replaces
	second, err := os.ReadFile(certPath)
	is.NoErr(err)
	is.True(string(first) != string(second)) // a new certificate
	_, err = tls.LoadX509KeyPair(certPath, keyPath)
	is.NoErr(err) // the new pair matches
}

func TestRoleOfWithoutRole(t *testing.T) {
	is := is.New(t)
	_, err := RoleOf(&x509.Certificate{})
	is.Equal(rpc.KindOf(err), rpc.Permission) // no role URI: no role
	u := RoleURI("root")
	_, err = RoleOf(&x509.Certificate{URIs: []*url.URL{u}})
	is.Equal(rpc.KindOf(err), rpc.Permission) // an unknown role
	_, err = RoleOf(&x509.Certificate{URIs: []*url.URL{RoleURI(Client), RoleURI(Datanode)}})
	is.Equal(rpc.KindOf(err), rpc.Permission) // two roles
}

// TestMutualTLS runs real mutual-TLS handshakes on loopback with issued files.
func TestMutualTLS(t *testing.T) {
	caDir, otherDir := newCA(t), newCA(t)
	out := t.TempDir()
	issue := func(ca string, req Request) tls.Certificate {
		certPath, keyPath, err := IssueFiles(ca, filepath.Join(out, filepath.Base(filepath.Dir(ca))), req, false)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := issue(caDir, Request{Role: Coordinator, Name: "coord"})
	good := issue(caDir, Request{Role: Client, Name: "alice"})
	foreign := issue(otherDir, Request{Role: Client, Name: "alice"})
	roots := pool(t, caDir)

	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	users := make(chan string, 4)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				users <- "refused"
			} else {
				cert := tc.ConnectionState().PeerCertificates[0]
				role, _ := RoleOf(cert)
				users <- string(role) + ":" + UserOf(cert)
				tc.Write([]byte("ok"))
			}
			tc.Close()
		}
	}()
	dial := func(c tls.Certificate) error {
		conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{Certificates: []tls.Certificate{c}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13})
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadAll(conn) // with TLS 1.3 the client learns of a refusal on its first read
		return err
	}

	t.Run("right certificates", func(t *testing.T) {
		is := is.New(t)
		is.NoErr(dial(good))              // the handshake succeeds
		is.Equal(<-users, "client:alice") // the server reads role and user back
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		is := is.New(t)
		is.True(dial(foreign) != nil) // the client sees the refusal
		is.Equal(<-users, "refused")  // the server refused it
	})
}
