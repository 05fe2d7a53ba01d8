package pki

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dfs-project/dfs/rpc"
)

// Files names the TLS material of a process: the CA certificate (or
// bundle) that signs every peer, the process's own certificate and key,
// and optionally the CA's revocation list.
type Files struct {
	// CA is the PEM file of the CA certificates peers must chain to.
	CA string
	// Cert and Key are the process's own certificate and private key. A
	// client that authenticates with a bearer token may leave both empty;
	// every server role needs them.
	Cert, Key string
	// CRL, when set, is the CA's revocation list (PEM or DER, as
	// `dfs admin cert revoke` writes it): a peer whose certificate it lists
	// is refused.
	CRL string
}

// Set reports whether any TLS file is named.
func (f Files) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" || f.CRL != "" }

// maxPEM bounds every file read: a certificate chain or CRL is a few KiB,
// and a file of megabytes is a mistake, not a certificate.
const maxPEM = 1 << 20

// material is one loaded generation of a process's TLS files.
type material struct {
	roots   *x509.CertPool
	cert    *tls.Certificate // nil for a client without a certificate
	revoked map[string]bool  // serial numbers (decimal) the CRL lists
	stamp   string           // the files' sizes and modification times
}

// TLS is a process's TLS configuration, reloaded from its files when they
// change (Watch) or when asked (Reload, on SIGHUP). A connection being
// set up uses the material loaded last; connections already up keep
// theirs. A nil *TLS means plain text: its credentials are insecure.
type TLS struct {
	files Files
	log   zerolog.Logger

	mu  sync.Mutex
	cur *material
}

// LoadTLS reads files, which must name at least the CA, and a certificate
// with its key for a server. It fails with rpc.Invalid (or rpc.NotFound
// for a missing file) saying which file is wrong.
func LoadTLS(files Files, log zerolog.Logger) (*TLS, error) {
	if files.CA == "" {
		return nil, rpc.Errorf(rpc.Invalid, "--tls-ca is needed with --tls-cert, --tls-key or --tls-crl: the CA that signs the cluster's certificates")
	}
	if (files.Cert == "") != (files.Key == "") {
		return nil, rpc.Errorf(rpc.Invalid, "--tls-cert and --tls-key go together: a certificate and its private key")
	}
	t := &TLS{files: files, log: log}
	m, err := load(files)
	if err != nil {
		return nil, err
	}
	t.cur = m
	return t, nil
}

// Files returns the files t was loaded from.
func (t *TLS) Files() Files { return t.files }

// HasCert reports whether t presents a certificate of its own.
func (t *TLS) HasCert() bool { return t != nil && t.current().cert != nil }

// Role returns the role of t's own certificate, or "" without one.
func (t *TLS) Role() Role {
	if t == nil {
		return ""
	}
	c := t.current().cert
	if c == nil || c.Leaf == nil {
		return ""
	}
	r, _ := RoleOf(c.Leaf)
	return r
}

// Signer returns t's own certificate chain (DER, the leaf first) and its
// private key, as loaded last, so a role can sign with the identity it
// serves with (bearer tokens). It fails with rpc.FailedPrecondition when
// t is nil or holds no certificate, or when the key cannot sign.
func (t *TLS) Signer() (chain [][]byte, key crypto.Signer, err error) {
	if t == nil {
		return nil, nil, rpc.Errorf(rpc.FailedPrecondition, "no TLS: plain text has no certificate to sign with")
	}
	c := t.current().cert
	if c == nil {
		return nil, nil, rpc.Errorf(rpc.FailedPrecondition, "no certificate of its own to sign with (--tls-cert)")
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, rpc.Errorf(rpc.FailedPrecondition, "the key of %s cannot sign", t.files.Cert)
	}
	return c.Certificate, key, nil
}

// VerifyPeer checks a certificate chain (DER, the leaf first) as a
// connection's peer is checked, against the material loaded last: it
// chains to the CA for the usage of role (server authentication for a
// server role, client authentication for a client), is valid now, is not
// on the revocation list, and carries role. The error, without a kind,
// says which check failed; a nil t accepts nothing.
func (t *TLS) VerifyPeer(chain [][]byte, role Role) error {
	if t == nil {
		return fmt.Errorf("no TLS: no CA to verify a certificate with")
	}
	usage := x509.ExtKeyUsageClientAuth
	if role.Server() {
		usage = x509.ExtKeyUsageServerAuth
	}
	return t.current().verify(chain, usage, "", []Role{role})
}

func (t *TLS) current() *material {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// Reload reads the files again and, if they are valid, uses them for new
// connections; invalid files leave the old material in use and return
// the error.
func (t *TLS) Reload() error {
	m, err := load(t.files)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.cur = m
	t.mu.Unlock()
	return nil
}

// Watch reloads the files whenever their size or modification time
// changes, checking every interval, until ctx ends. A reload that fails
// is logged and the old material kept; it is tried again on the next
// change.
func (t *TLS) Watch(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	seen := t.current().stamp // the files as last acted on: loaded, or warned of
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st := stampOf(t.files)
		if st == seen {
			continue
		}
		seen = st
		if err := t.Reload(); err != nil {
			t.log.Warn().Err(err).Msg("tls: files changed but do not load; keeping the certificates in use")
			continue
		}
		t.log.Info().Str("cert", t.files.Cert).Msg("tls: certificates reloaded")
	}
}

// stampOf describes the files' sizes and modification times; a change of
// it means a file changed.
func stampOf(f Files) string {
	s := ""
	for _, p := range []string{f.CA, f.Cert, f.Key, f.CRL} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += p + ":missing;"
		}
	}
	return s
}

func readSmall(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, readErr(err, "%s %s", what, path)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxPEM {
		return nil, rpc.Errorf(rpc.Invalid, "%s %s is %d bytes: more than the %d a certificate file may hold", what, path, fi.Size(), maxPEM)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, readErr(err, "%s %s", what, path)
	}
	if len(data) > maxPEM {
		return nil, rpc.Errorf(rpc.Invalid, "%s %s holds more than the %d bytes a certificate file may hold", what, path, maxPEM)
	}
	return data, nil
}

func load(files Files) (*material, error) {
	m := &material{stamp: stampOf(files)}
	caPEM, err := readSmall("the CA certificate", files.CA)
	if err != nil {
		return nil, err
	}
	m.roots = x509.NewCertPool()
	if !m.roots.AppendCertsFromPEM(caPEM) {
		return nil, rpc.Errorf(rpc.Invalid, "the CA certificate %s holds no PEM certificate", files.CA)
	}
	if files.Cert != "" {
		certPEM, err := readSmall("the certificate", files.Cert)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readSmall("the key", files.Key)
		if err != nil {
			return nil, err
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, rpc.Errorf(rpc.Invalid, "the certificate %s and key %s: %w", files.Cert, files.Key, err)
		}
		if _, err := RoleOf(c.Leaf); err != nil {
			return nil, rpc.Errorf(rpc.Invalid, "the certificate %s: %w", files.Cert, err)
		}
		inter := x509.NewCertPool()
		for _, der := range c.Certificate[1:] {
			if ic, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(ic)
			}
		}
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, rpc.Errorf(rpc.Invalid, "the certificate %s is not valid under the CA %s: %w", files.Cert, files.CA, err)
		}
		m.cert = &c
	}
	if files.CRL != "" {
		data, err := readSmall("the revocation list", files.CRL)
		if err != nil {
			return nil, err
		}
		if b, _ := pem.Decode(data); b != nil {
			data = b.Bytes
		}
		crl, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, rpc.Errorf(rpc.Invalid, "the revocation list %s: %w", files.CRL, err)
		}
		if err := crlSignedByRoots(crl, caPEM); err != nil {
			return nil, rpc.Errorf(rpc.Invalid, "the revocation list %s: %w", files.CRL, err)
		}
		m.revoked = make(map[string]bool, len(crl.RevokedCertificateEntries))
		for _, e := range crl.RevokedCertificateEntries {
			m.revoked[e.SerialNumber.String()] = true
		}
	}
	return m, nil
}

// crlSignedByRoots checks that one of the CA certificates in caPEM signed
// crl.
func crlSignedByRoots(crl *x509.RevocationList, caPEM []byte) error {
	for rest := caPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return fmt.Errorf("not signed by the CA")
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err == nil && crl.CheckSignatureFrom(ca) == nil {
			return nil
		}
	}
}

// verify checks a peer's chain against m: it chains to the roots with the
// usage wanted, is not revoked, and carries one of the roles accept (any
// role when accept is empty). host, when set, must be among the
// certificate's names (a server dialed by that host).
func (m *material) verify(rawCerts [][]byte, usage x509.ExtKeyUsage, host string, accept []Role) error {
	if len(rawCerts) == 0 {
		return fmt.Errorf("no certificate")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, raw := range rawCerts[1:] {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return err
	}
	if m.revoked[leaf.SerialNumber.String()] {
		return fmt.Errorf("certificate %q (serial %s) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
	}
	role, err := RoleOf(leaf)
	if err != nil {
		return err
	}
	if len(accept) > 0 && !slices.Contains(accept, role) {
		return fmt.Errorf("certificate %q is a %s's, not a %v's", leaf.Subject.CommonName, role, accept)
	}
	return nil
}

// serverConfig is the configuration a server hands each new connection:
// its own certificate, and the client's checked if it presents one (a
// client may instead authenticate each call with a bearer token).
func (t *TLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// No session resumption: a resumed session skips
		// VerifyPeerCertificate, and so the revocation list and a
		// reloaded CA. Connections are long-lived; a full handshake
		// each costs nothing that matters.
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.current()
			if m.cert == nil {
				return nil, fmt.Errorf("no server certificate")
			}
			return &tls.Config{
				MinVersion:             tls.VersionTLS13,
				SessionTicketsDisabled: true,
				Certificates:           []tls.Certificate{*m.cert},
				ClientAuth:             tls.RequestClientCert,
				NextProtos:             []string{"h2"},
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					if len(raw) == 0 {
						return nil // anonymous: each call then needs a bearer token
					}
					return m.verify(raw, x509.ExtKeyUsageClientAuth, "", nil)
				},
			}, nil
		},
	}
}

// clientConfig is the configuration a dial to serverName uses: the
// server must chain to the CA, name serverName, and carry one of the
// roles accept.
func (t *TLS) clientConfig(serverName string, accept []Role) *tls.Config {
	m := t.current()
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The standard verification is replaced by m.verify, which
		// does it (roots, names, expiry) and adds the role and the
		// revocation list.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return m.verify(raw, x509.ExtKeyUsageServerAuth, serverName, accept)
		},
		NextProtos: []string{"h2"},
	}
	if m.cert != nil {
		cfg.Certificates = []tls.Certificate{*m.cert}
	}
	return cfg
}

// ServerCredentials returns the gRPC credentials of a server: plain text
// for a nil t.
func (t *TLS) ServerCredentials() credentials.TransportCredentials {
	if t == nil {
		return insecure.NewCredentials()
	}
	return serverCreds{credentials.NewTLS(t.serverConfig())}
}

// connBuffer is how much of a TLS connection's bytes one system call
// moves. crypto/tls reads and writes each record (16 KiB at most) with a
// call of its own; through these buffers a bulk transfer moves four
// records a call, which on a chunk stream saves about as much CPU as the
// encryption costs (profile of BenchmarkGet64MiB with BENCH_SECURE=1).
const connBuffer = 64 << 10

// bufferedConn is the socket under a TLS connection: its reads go through
// a buffer, and so do its writes while a batch is open (batchConn.Write),
// which ends with a flush. Outside a batch (the handshake, an alert) it
// writes through.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	w       *bufio.Writer
	batches int // open batches
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batches > 0 {
		return c.w.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *bufferedConn) open() {
	c.mu.Lock()
	c.batches++
	c.mu.Unlock()
}

// close ends a batch; the last one open flushes what they wrote.
func (c *bufferedConn) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches--
	if c.batches > 0 {
		return nil
	}
	return c.w.Flush()
}

func buffered(conn net.Conn) *bufferedConn {
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, connBuffer), w: bufio.NewWriterSize(conn, connBuffer)}
}

// batchConn is a TLS connection over a bufferedConn: each Write's records
// reach the socket together.
type batchConn struct {
	net.Conn // the TLS connection
	raw      *bufferedConn
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.raw.open()
	n, err := b.Conn.Write(p)
	if ferr := b.raw.close(); err == nil {
		err = ferr
	}
	return n, err
}

// handshake runs hs over a buffered conn and returns the TLS connection
// that batches its writes.
func handshake(conn net.Conn, hs func(net.Conn) (net.Conn, credentials.AuthInfo, error)) (net.Conn, credentials.AuthInfo, error) {
	raw := buffered(conn)
	c, info, err := hs(raw)
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: c, raw: raw}, info, nil
}

// serverCreds are a server's TLS credentials over a buffered connection.
type serverCreds struct {
	credentials.TransportCredentials
}

func (s serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return handshake(conn, s.TransportCredentials.ServerHandshake)
}

func (s serverCreds) Clone() credentials.TransportCredentials {
	return serverCreds{s.TransportCredentials.Clone()}
}

// ClientCredentials returns the gRPC credentials of connections to
// servers of the roles accept (any server role when empty): plain text
// for a nil t.
func (t *TLS) ClientCredentials(accept ...Role) credentials.TransportCredentials {
	if t == nil {
		return insecure.NewCredentials()
	}
	if len(accept) == 0 {
		accept = []Role{Coordinator, Datanode, Gateway}
	}
	return t.ClientCredentialsFor(func(string) []Role { return accept })
}

// ClientCredentialsFor is ClientCredentials with the roles accepted
// chosen by the address dialed ("host:port"): a client that knows its
// coordinators' addresses accepts only a coordinator there.
func (t *TLS) ClientCredentialsFor(accept func(authority string) []Role) credentials.TransportCredentials {
	if t == nil {
		return insecure.NewCredentials()
	}
	return &clientCreds{TransportCredentials: credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13}), t: t, accept: accept}
}

// writeBuffer is gRPC's write buffer on a TLS connection. Its writes reach
// the socket in connBuffer batches whatever its size, so a larger one
// saves no system call. At 1 MiB (rpc's, for plain text) each flush took
// a 1 MiB buffer from a pool, zeroed anew whenever the pool was empty,
// and encrypted from memory larger than a core's cache. At 64 KiB, in
// eight pairs: a datanode's peak RSS during a 1 GiB put 64.8 -> 59.6
// MiB, 1 GiB gets 1.09x, 4 KiB puts 1.11x (docs/benchmarks.md, eighth
// round).
const writeBuffer = connBuffer

// DialOptions returns the options of a gRPC client dialing with creds,
// t's ClientCredentials or ClientCredentialsFor, after rpc.DialOptions:
// the credentials and, with TLS, gRPC's write buffer for it. A nil t
// (plain text) adds creds alone.
func (t *TLS) DialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if t != nil {
		opts = append(opts, grpc.WithWriteBufferSize(writeBuffer))
	}
	return opts
}

// ServerOptions returns the options of a gRPC server serving with t,
// after rpc.ServerOptions: its credentials and, with TLS, gRPC's write
// buffer for it.
func (t *TLS) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.Creds(t.ServerCredentials())}
	if t != nil {
		opts = append(opts, grpc.WriteBufferSize(writeBuffer))
	}
	return opts
}

// CoordinatorsOnly returns the roles to accept at an address for a
// process that dials the coordinators at coordinators and datanodes
// elsewhere: only a coordinator at a coordinator's address; elsewhere a
// datanode, or a coordinator (a leader named by a standby, at an address
// the process was not given).
func CoordinatorsOnly(coordinators []string) func(string) []Role {
	return func(authority string) []Role {
		if slices.Contains(coordinators, authority) {
			return []Role{Coordinator}
		}
		return []Role{Coordinator, Datanode}
	}
}

// HTTPServerConfig returns the TLS configuration of an HTTP server (the
// admin endpoints), or nil for a nil t.
func (t *TLS) HTTPServerConfig() *tls.Config {
	if t == nil {
		return nil
	}
	cfg := t.serverConfig()
	get := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := get(h)
		if c != nil {
			c.NextProtos = []string{"h2", "http/1.1"}
		}
		return c, err
	}
	return cfg
}

// HTTPClientConfig returns the TLS configuration of an HTTPS client of
// host (the admin endpoints), or nil for a nil t.
func (t *TLS) HTTPClientConfig(host string) *tls.Config {
	if t == nil {
		return nil
	}
	c := t.clientConfig(host, nil)
	c.NextProtos = nil
	return c
}

// clientCreds builds each connection's TLS configuration when it is
// dialed, from the material loaded last.
type clientCreds struct {
	credentials.TransportCredentials
	t      *TLS
	accept func(authority string) []Role
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority
	}
	name := host
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		// A server reached on a loopback address runs on this machine
		// (a container's health check dials its own process at
		// 127.0.0.1): its certificate must chain to the CA and carry
		// the role, but need not name the loopback address.
		name = ""
	}
	cfg := c.t.clientConfig(name, c.accept(authority))
	cfg.ServerName = host
	return handshake(conn, func(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
		return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
	})
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{TransportCredentials: c.TransportCredentials.Clone(), t: c.t, accept: c.accept}
}

// PeerCertificate returns the verified certificate a TLS peer presented,
// or nil.
func PeerCertificate(info credentials.AuthInfo) *x509.Certificate {
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}
