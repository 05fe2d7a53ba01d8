package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/credentials"

	"github.com/dfs-project/dfs/rpc"
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
	tooBig := fmt.Sprintf("%s is %d bytes: more than the %d a certificate file may hold", huge, maxPEM+1, maxPEM)

	for _, tc := range []struct {
		name string
		f    Files
		kind rpc.Kind
		want string // what the message says
	}{
		{"no CA", Files{Cert: cert, Key: key}, rpc.Invalid, "--tls-ca is needed"},
		{"cert without key", Files{CA: caCert, Cert: cert}, rpc.Invalid, "--tls-cert and --tls-key go together"},
		{"missing CA file", Files{CA: filepath.Join(dir, "none.crt")}, rpc.NotFound, "the CA certificate " + filepath.Join(dir, "none.crt")},
		{"another CA's certificate", Files{CA: caCert, Cert: alienCert, Key: alienKey}, rpc.Invalid, "the certificate " + alienCert + " is not valid under the CA " + caCert},
		{"key of another certificate", Files{CA: caCert, Cert: cert, Key: alienKey}, rpc.Invalid, "the certificate " + cert + " and key " + alienKey},
		{"huge certificate", Files{CA: caCert, Cert: huge, Key: key}, rpc.Invalid, "the certificate " + tooBig},
		{"huge key", Files{CA: caCert, Cert: cert, Key: huge}, rpc.Invalid, "the key " + tooBig},
		{"huge CA", Files{CA: huge}, rpc.Invalid, "the CA certificate " + tooBig},
		{"huge revocation list", Files{CA: caCert, CRL: huge}, rpc.Invalid, "the revocation list " + tooBig},
		// A file whose size says nothing is read no further than the bound.
		{"endless CA", Files{CA: "/dev/zero"}, rpc.Invalid, fmt.Sprintf("the CA certificate /dev/zero holds more than the %d bytes a certificate file may hold", maxPEM)},
		{"CRL of another CA", Files{CA: caCert, CRL: mustRevoke(t, other)}, rpc.Invalid, "the revocation list " + filepath.Join(other, CRLFile) + ": not signed by the CA"},
	} {
		_, err := LoadTLS(tc.f, zerolog.Nop())
		if err == nil || rpc.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want a %v error saying %q, got %v", tc.name, tc.kind, tc.want, err)
		}
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

// selfSigned returns a self-signed certificate (DER) carrying a
// non-critical extension of extra bytes.
func selfSigned(t *testing.T, extra int) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "padding"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{
			Id:    asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1},
			Value: bytes.Repeat([]byte{0x42}, extra),
		}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestHugePeerChainRefused: a client presenting a certificate chain far
// larger than any real one, or a certificate with a huge extension, is
// refused in the handshake with a message saying why, and the server
// goes on serving the next client.
func TestHugePeerChainRefused(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	is.NoErr(InitCA(ca, CAOptions{}))
	cert, key, err := IssueFiles(ca, dir, Request{Role: Coordinator, Name: "c1"}, false)
	is.NoErr(err)
	server, err := LoadTLS(Files{CA: filepath.Join(ca, CACertFile), Cert: cert, Key: key}, zerolog.Nop())
	is.NoErr(err)
	bobCert, bobKey, err := IssueFiles(ca, dir, Request{Role: Client, Name: "bob"}, false)
	is.NoErr(err)
	bob, err := tls.LoadX509KeyPair(bobCert, bobKey)
	is.NoErr(err)

	// The server: each connection's handshake as a gRPC server makes it,
	// its error reported; a connection that passes gets one byte.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	defer ln.Close()
	creds := server.ServerCredentials()
	errc := make(chan error)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				c, _, err := creds.ServerHandshake(conn)
				if err == nil {
					_, err = c.Write([]byte("y"))
				}
				errc <- err
			}()
		}
	}()
	// dial presents chain (DER, leaf first) with bob's key; it returns
	// whether the client got the server's byte, and the server's
	// handshake error.
	dial := func(chain [][]byte) (bool, error) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		is.NoErr(err)
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		c := tls.Client(raw, &tls.Config{RootCAs: server.current().roots, ServerName: "localhost", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
			Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: bob.PrivateKey}}})
		got := c.Handshake() == nil && func() bool { _, err := c.Read(make([]byte, 1)); return err == nil }()
		return got, <-errc
	}

	// Bob's own certificate followed by 320 KiB of padding certificates:
	// more than a TLS certificate message may hold.
	pad := selfSigned(t, 64<<10)
	chain := [][]byte{bob.Certificate[0]}
	for range 5 {
		chain = append(chain, pad)
	}
	served, err := dial(chain)
	is.True(!served) // the huge chain is refused
	if err == nil || !strings.Contains(err.Error(), "exceeds maximum") {
		t.Fatalf("huge chain: want the server to refuse a message too large, got %v", err)
	}
	t.Logf("huge chain: %v", err)

	// One certificate with a 200 KiB extension, within the message
	// bound: not signed by the CA.
	served, err = dial([][]byte{selfSigned(t, 200<<10)})
	is.True(!served) // refused
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("huge certificate: want it refused as not the CA's, got %v", err)
	}
	t.Logf("huge certificate: %v", err)

	served, err = dial(bob.Certificate)
	is.NoErr(err)   // the next good client is served
	is.True(served) // and gets its byte
}
