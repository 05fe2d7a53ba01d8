package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/credentials"
)

// serial returns the serial number of the certificate t presents.
func serial(t *TLS) string { return t.current().cert.Leaf.SerialNumber.String() }

func TestTLSReloadsChangedFiles(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	is.NoErr(InitCA(ca, CAOptions{}))
	cert, key, err := IssueFiles(ca, dir, Request{Role: Coordinator, Name: "c1"}, false)
	is.NoErr(err)
	tl, err := LoadTLS(Files{CA: filepath.Join(ca, CACertFile), Cert: cert, Key: key}, zerolog.Nop())
	is.NoErr(err)
	first := serial(tl)

	// Replaced files are picked up by the watch.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go tl.Watch(ctx, 10*time.Millisecond)
	_, _, err = IssueFiles(ca, dir, Request{Role: Coordinator, Name: "c1"}, true)
	is.NoErr(err)
	deadline := time.Now().Add(10 * time.Second)
	for serial(tl) == first && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	second := serial(tl)
	is.True(second != first) // the new certificate is in use

	// A broken file keeps the last good material.
	is.NoErr(os.WriteFile(key, []byte("not a key"), 0o600))
	is.True(tl.Reload() != nil)  // the reload fails, saying why
	is.Equal(serial(tl), second) // and the certificate in use stays
}

func TestLoadTLSRefusesBadFiles(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	is.NoErr(InitCA(ca, CAOptions{}))
	caCert := filepath.Join(ca, CACertFile)
	cert, key, err := IssueFiles(ca, dir, Request{Role: Datanode, Name: "d1"}, false)
	is.NoErr(err)

	other := filepath.Join(dir, "other")
	is.NoErr(InitCA(other, CAOptions{}))
	alienCert, alienKey, err := IssueFiles(other, filepath.Join(dir, "alien"), Request{Role: Datanode, Name: "d1"}, false)
	is.NoErr(err)
	huge := filepath.Join(dir, "huge.crt")
	is.NoErr(os.WriteFile(huge, bytes.Repeat([]byte("A"), maxPEM+1), 0o600))

	for _, tc := range []struct {
		name string
		f    Files
	}{
		{"no CA", Files{Cert: cert, Key: key}},
		{"cert without key", Files{CA: caCert, Cert: cert}},
		{"missing CA file", Files{CA: filepath.Join(dir, "none.crt")}},
		{"another CA's certificate", Files{CA: caCert, Cert: alienCert, Key: alienKey}},
		{"key of another certificate", Files{CA: caCert, Cert: cert, Key: alienKey}},
		{"huge certificate", Files{CA: caCert, Cert: huge, Key: key}},
		{"huge CA", Files{CA: huge}},
		{"CRL of another CA", Files{CA: caCert, CRL: mustRevoke(t, other)}},
	} {
		_, err := LoadTLS(tc.f, zerolog.Nop())
		is.True(err != nil) // refused
		t.Logf("%s: %v", tc.name, err)
	}
	crl := mustRevoke(t, ca)
	_, err = LoadTLS(Files{CA: caCert, Cert: cert, Key: key, CRL: crl}, zerolog.Nop())
	is.NoErr(err) // the CA's own list loads
}

func mustRevoke(t *testing.T, caDir string) string {
	t.Helper()
	p, err := Revoke(caDir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pipeHandshake runs a TLS handshake between server and client over a pipe,
// the client dialing authority, and returns the client's error.
func pipeHandshake(t *testing.T, server, client *TLS, authority string, accept ...Role) error {
	t.Helper()
	return pipeHandshakeWith(t, server, client.ClientCredentials(accept...), authority)
}

func pipeHandshakeWith(t *testing.T, server *TLS, creds credentials.TransportCredentials, authority string) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, server.serverConfig())
	go srv.Handshake()
	_, _, err := creds.ClientHandshake(t.Context(), authority, b)
	return err
}

func TestClientChecksServerNameRoleAndLoopback(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	is.NoErr(InitCA(ca, CAOptions{}))
	caCert := filepath.Join(ca, CACertFile)
	load := func(req Request) *TLS {
		cert, key, err := IssueFiles(ca, dir, req, false)
		is.NoErr(err)
		tl, err := LoadTLS(Files{CA: caCert, Cert: cert, Key: key}, zerolog.Nop())
		is.NoErr(err)
		return tl
	}
	node := load(Request{Role: Datanode, Name: "dn1", DNS: []string{"dn1.example"}})
	client := load(Request{Role: Client, Name: "alice"})

	is.NoErr(pipeHandshake(t, node, client, "127.0.0.1:7000"))                    // loopback: the CA and the role are checked, not the name
	is.True(pipeHandshake(t, node, client, "dn2.example:7000") != nil)            // another name is refused
	is.True(pipeHandshake(t, node, client, "127.0.0.1:7000", Coordinator) != nil) // a datanode posing as a coordinator is refused
	// A client that knows its coordinators' addresses takes only a
	// coordinator there, and a datanode elsewhere.
	knows := client.ClientCredentialsFor(CoordinatorsOnly([]string{"127.0.0.1:7000"}))
	is.True(pipeHandshakeWith(t, node, knows, "127.0.0.1:7000") != nil) // a datanode at the coordinator's address
	is.NoErr(pipeHandshakeWith(t, node, knows, "127.0.0.1:7001"))       // a datanode at its own
}

// TestRevokedClientCannotResume: a client that kept a session from before
// its certificate was revoked cannot resume it (a resumed session would
// skip the revocation check): the server issues no session tickets.
func TestRevokedClientCannotResume(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	is.NoErr(InitCA(ca, CAOptions{}))
	crl := mustRevoke(t, ca)
	cert, key, err := IssueFiles(ca, dir, Request{Role: Coordinator, Name: "c1"}, false)
	is.NoErr(err)
	server, err := LoadTLS(Files{CA: filepath.Join(ca, CACertFile), Cert: cert, Key: key, CRL: crl}, zerolog.Nop())
	is.NoErr(err)
	bobCert, bobKey, err := IssueFiles(ca, dir, Request{Role: Client, Name: "bob"}, false)
	is.NoErr(err)
	bob, err := tls.LoadX509KeyPair(bobCert, bobKey)
	is.NoErr(err)
	roots := server.current().roots
	cache := tls.NewLRUClientSessionCache(4)
	srvCfg := server.serverConfig() // one, as a server has: its ticket keys last
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	defer ln.Close()
	// dial returns the server's handshake error and whether the client
	// resumed a session.
	dial := func() (resumed bool, err error) {
		errc := make(chan error, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			srv := tls.Server(conn, srvCfg)
			err = srv.Handshake()
			if err == nil {
				_, err = srv.Write([]byte("y"))
			}
			errc <- err
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		is.NoErr(err)
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		c := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{bob}, ClientSessionCache: cache, MinVersion: tls.VersionTLS13})
		if c.Handshake() == nil {
			c.Read(make([]byte, 1)) // the server's byte, after any ticket
		}
		return c.ConnectionState().DidResume, <-errc
	}
	resumed, err := dial()
	is.NoErr(err)
	is.True(!resumed)
	sn, _, err := SerialOf(bobCert)
	is.NoErr(err)
	_, err = Revoke(ca, sn)
	is.NoErr(err)
	is.NoErr(server.Reload())
	resumed, err = dial()
	is.True(!resumed)   // no session to resume
	is.True(err != nil) // and the revoked certificate is refused
}
