// Package pki is dfs's small built-in certificate authority, for operators
// who have no PKI of their own: it creates a CA (`dfs admin ca init`) and
// issues certificates for each role (`dfs admin cert issue`).
//
// The CA lives 10 years; a server certificate (coordinator, datanode,
// gateway) 1 year and a client certificate 90 days by default, never past
// the CA's own expiry. Every key is ECDSA P-256: small keys and signatures,
// fast handshakes (the TLS 1.3 default curve, with assembly on amd64 and
// arm64), and accepted by every TLS stack dfs talks to.
//
// A certificate carries its role as a URI SAN dfs://role/<role> (and in
// Subject.OrganizationalUnit, for people reading it), so a server reads
// the role back with RoleOf without parsing the common name. A client
// certificate's common name is the user (UserOf).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// Role is what a certificate's holder may act as.
type Role string

// The roles a certificate can carry.
const (
	Coordinator Role = "coordinator"
	Datanode    Role = "datanode"
	Gateway     Role = "gateway"
	Client      Role = "client"
)

// Roles lists every role, in the order help text shows them.
var Roles = []Role{Coordinator, Datanode, Gateway, Client}

// Lifetimes of what this package creates.
const (
	CALifetime     = 10 * 365 * 24 * time.Hour
	ServerLifetime = 365 * 24 * time.Hour
	ClientLifetime = 90 * 24 * time.Hour
)

// backdate is how far before now a certificate becomes valid, so a peer
// whose clock is a little behind accepts it at once.
const backdate = 5 * time.Minute

// The file names in a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// RoleURIScheme and RoleURIHost make the URI SAN that carries a role:
// dfs://role/<role>.
const (
	RoleURIScheme = "dfs"
	RoleURIHost   = "role"
)

// RoleURI returns the URI SAN that names role r: dfs://role/<r>.
func RoleURI(r Role) *url.URL {
	return &url.URL{Scheme: RoleURIScheme, Host: RoleURIHost, Path: "/" + string(r)}
}

// Server reports whether r is a server role (its certificate is used both
// to serve and to dial other servers).
func (r Role) Server() bool { return r == Coordinator || r == Datanode || r == Gateway }

// ParseRole returns the role named s, or an error of kind rpc.Invalid.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", rpc.Errorf(rpc.Invalid, "unknown role %q: want coordinator, datanode, gateway or client", s)
}

// CAOptions tunes InitCA. The zero value is the default.
type CAOptions struct {
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// InitCA creates a new CA in dir (created 0700 if missing): dir/ca.crt,
// the self-signed certificate, and dir/ca.key, its private key (mode
// 0600), both PEM. It never overwrites: if either file exists it returns
// an error of kind rpc.Exists and writes nothing. Each file appears whole
// or not at all (written to a temporary file, fsynced, linked into place,
// the directory fsynced).
func InitCA(dir string, opts CAOptions) error {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if dir == "" {
		return rpc.Errorf(rpc.Invalid, "pki.InitCA: no directory given")
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return rpc.Errorf(rpc.Exists, "pki.InitCA: %s already exists; a CA is never overwritten (move it away to start a new one)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pki.InitCA: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "dfs CA " + hex.EncodeToString(id), Organization: []string{"dfs"}},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	// The key first: a ca.crt without its key is useless, a lone ca.key
	// still makes the next InitCA refuse rather than lose it.
	if err := writeFile(keyPath, keyPEM, 0o600, false); err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644, false); err != nil {
		return fmt.Errorf("pki.InitCA: %w", err)
	}
	return nil
}

// Request is what to put in a certificate Issue signs.
type Request struct {
	// Role is the holder's role.
	Role Role
	// Name is the common name: the user for a client, the host or node
	// name for a server. Letters, digits and .-_@, 1 to 64 characters; it
	// also names the files IssueFiles writes.
	Name string
	// DNS and IPs are the server's names (SANs). Empty for a server role:
	// "localhost" and 127.0.0.1. A client certificate takes none.
	DNS []string
	IPs []net.IP
	// Lifetime is how long the certificate is valid; 0 is ServerLifetime
	// or ClientLifetime by role. Never past the CA's own expiry.
	Lifetime time.Duration

	// Groups are a client's groups, carried as URI SANs dfs://group/NAME
	// (GroupsOf); a server certificate takes none.
	Groups []string

	// Now is the clock; nil is time.Now (tests issue expired
	// certificates with it).
	Now func() time.Time
}

// maxNameLen bounds Request.Name.
const maxNameLen = 64

// validate checks r's role, name and names; errors are of kind rpc.Invalid.
func (r *Request) validate() error {
	if _, err := ParseRole(string(r.Role)); err != nil {
		return err
	}
	if err := ValidName(r.Name); err != nil {
		return err
	}
	if r.Lifetime < 0 {
		return rpc.Errorf(rpc.Invalid, "negative certificate lifetime %s", r.Lifetime)
	}
	if !r.Role.Server() && (len(r.DNS) > 0 || len(r.IPs) > 0) {
		return rpc.Errorf(rpc.Invalid, "a client certificate takes no DNS names or IP addresses (only server roles do)")
	}
	if r.Role.Server() && len(r.Groups) > 0 {
		return rpc.Errorf(rpc.Invalid, "a %s certificate takes no groups (only a client's does)", r.Role)
	}
	for _, g := range r.Groups {
		if err := ValidName(g); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	for _, d := range r.DNS {
		if err := validDNS(d); err != nil {
			return err
		}
	}
	for _, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return rpc.Errorf(rpc.Invalid, "invalid IP address %v", ip)
		}
	}
	return nil
}

// validName checks a certificate name: 1..64 of letters, digits, .-_@.
// ValidName checks a user, group or node name: 1 to 64 letters, digits
// and . - _ @ (kind rpc.Invalid otherwise).
func ValidName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return rpc.Errorf(rpc.Invalid, "invalid name %q: want 1 to %d characters", s, maxNameLen)
	}
	if s == "." || s == ".." {
		return rpc.Errorf(rpc.Invalid, "invalid name %q", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_@", c)) {
			return rpc.Errorf(rpc.Invalid, "invalid name %q: only letters, digits and . - _ @ are allowed", s)
		}
	}
	return nil
}

// validDNS checks a DNS SAN: dot-separated labels of letters, digits and
// hyphens, the first label possibly "*", 253 characters at most.
func validDNS(s string) error {
	if s == "" || len(s) > 253 {
		return rpc.Errorf(rpc.Invalid, "invalid DNS name %q", s)
	}
	for i, label := range strings.Split(s, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return rpc.Errorf(rpc.Invalid, "invalid DNS name %q", s)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return rpc.Errorf(rpc.Invalid, "invalid DNS name %q: only letters, digits, hyphens and dots are allowed", s)
			}
		}
	}
	return nil
}

// Issue signs a new certificate for req with the CA in caDir and returns
// it and its new private key, both PEM. Errors: rpc.Invalid for a bad
// request, rpc.NotFound when the CA files are missing, rpc.FailedPrecondition
// when the CA has expired.
func Issue(caDir string, req Request) (certPEM, keyPEM []byte, err error) {
	if err := req.validate(); err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	ca, caKey, err := loadCA(caDir)
	if err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	now := time.Now
	if req.Now != nil {
		now = req.Now
	}
	t := now()
	life := req.Lifetime
	if life == 0 {
		life = ClientLifetime
		if req.Role.Server() {
			life = ServerLifetime
		}
	}
	notAfter := t.Add(life)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	if !t.Before(ca.NotAfter) {
		return nil, nil, fmt.Errorf("pki.Issue: %w", rpc.Errorf(rpc.FailedPrecondition, "the CA in %s expired at %s", caDir, ca.NotAfter.UTC().Format(time.RFC3339)))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{string(req.Role)}, Organization: []string{"dfs"}},
		NotBefore:    t.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{RoleURI(req.Role)},
	}
	for _, g := range req.Groups {
		tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: RoleURIScheme, Host: GroupURIHost, Path: "/" + g})
	}
	if req.Role.Server() {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames, tmpl.IPAddresses = req.DNS, req.IPs
		if len(req.DNS) == 0 && len(req.IPs) == 0 {
			tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki.Issue: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// IssueFiles issues a certificate as Issue does and writes it to
// outDir/NAME.crt and its key to outDir/NAME.key (mode 0600), creating
// outDir (0700) if missing. Unless force, it refuses with an error of kind
// rpc.Exists when either file exists, and writes nothing. It returns the
// paths written.
func IssueFiles(caDir, outDir string, req Request, force bool) (certPath, keyPath string, err error) {
	if err := ValidName(req.Name); err != nil {
		return "", "", fmt.Errorf("pki.Issue: %w", err)
	}
	certPath, keyPath = filepath.Join(outDir, req.Name+".crt"), filepath.Join(outDir, req.Name+".key")
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return "", "", rpc.Errorf(rpc.Exists, "pki.Issue: %s already exists (--force replaces it)", p)
			}
		}
	}
	certPEM, keyPEM, err := Issue(caDir, req)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", fmt.Errorf("pki.Issue: %w", err)
	}
	if err := writeFile(keyPath, keyPEM, 0o600, force); err != nil {
		return "", "", fmt.Errorf("pki.Issue: %w", err)
	}
	if err := writeFile(certPath, certPEM, 0o644, force); err != nil {
		return "", "", fmt.Errorf("pki.Issue: %w", err)
	}
	return certPath, keyPath, nil
}

// RoleOf returns the role cert carries in its dfs://role/<role> URI SAN.
// A certificate with none, an unknown one, or two different ones gets an
// error of kind rpc.Permission: it may act as no role.
func RoleOf(cert *x509.Certificate) (Role, error) {
	var found Role
	for _, u := range cert.URIs {
		if u.Scheme != RoleURIScheme || u.Host != RoleURIHost {
			continue
		}
		r, err := ParseRole(strings.TrimPrefix(u.Path, "/"))
		if err != nil {
			return "", rpc.Errorf(rpc.Permission, "certificate %q: role URI %s names no known role", cert.Subject.CommonName, u)
		}
		if found != "" && found != r {
			return "", rpc.Errorf(rpc.Permission, "certificate %q carries two roles, %s and %s", cert.Subject.CommonName, found, r)
		}
		found = r
	}
	if found == "" {
		return "", rpc.Errorf(rpc.Permission, "certificate %q carries no dfs role (a URI SAN dfs://role/<role>)", cert.Subject.CommonName)
	}
	return found, nil
}

// GroupURIHost makes the URI SAN that carries a client's group:
// dfs://group/<group>.
const GroupURIHost = "group"

// GroupsOf returns the groups a client certificate carries in its
// dfs://group/<group> URI SANs.
func GroupsOf(cert *x509.Certificate) []string {
	var gs []string
	for _, u := range cert.URIs {
		if u.Scheme == RoleURIScheme && u.Host == GroupURIHost {
			if g := strings.TrimPrefix(u.Path, "/"); ValidName(g) == nil {
				gs = append(gs, g)
			}
		}
	}
	return gs
}

// UserOf returns the user a client certificate names: its common name.
func UserOf(cert *x509.Certificate) string { return cert.Subject.CommonName }

// HasCA reports whether dir holds a CA that loads: its certificate and
// key, matching.
func HasCA(dir string) bool {
	_, _, err := loadCA(dir)
	return err == nil
}

// loadCA reads the CA certificate and key in dir.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certData, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, readErr(err, "the CA certificate %s (create a CA with dfs admin ca init)", certPath)
	}
	keyData, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, readErr(err, "the CA key %s", keyPath)
	}
	b, _ := pem.Decode(certData)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s holds no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s is not a CA certificate", certPath)
	}
	kb, _ := pem.Decode(keyData)
	if kb == nil {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s holds no PEM key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s: not an ECDSA key", keyPath)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, rpc.Errorf(rpc.Invalid, "%s does not match %s", keyPath, certPath)
	}
	return cert, key, nil
}

// readErr wraps a file read error, kind rpc.NotFound for a missing file.
func readErr(err error, format string, args ...any) error {
	kind := rpc.Other
	if errors.Is(err, fs.ErrNotExist) {
		kind = rpc.NotFound
	}
	return rpc.Errorf(kind, "reading "+format+": %w", append(args, err)...)
}

// encodeKey returns key as a PKCS#8 PEM block.
func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// writeFile writes data to path with mode perm so that path holds either
// nothing (or its old content) or all of data: a temporary file in the
// same directory is written and fsynced, then renamed over path (replace)
// or hard-linked to it (otherwise, failing with rpc.Exists if path
// exists, even when another process created it meanwhile), and the
// directory is fsynced.
func writeFile(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return rpc.Errorf(rpc.Exists, "%s already exists", path)
	} else if err == nil {
		err = os.Remove(tmp.Name())
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CRLFile is the revocation list's file name in a CA directory.
const CRLFile = "ca.crl"

// CRLLifetime is how long a revocation list says it is current
// (NextUpdate); dfs keeps using a list past it, but other TLS stacks may
// not, so revoke (or run Revoke with nothing new) within it.
const CRLLifetime = 365 * 24 * time.Hour

// Revoke adds the certificates with the given serial numbers to the CA's
// revocation list, caDir/ca.crl (PEM), keeping those it already lists,
// and returns its path. With no serials it writes the list as it is, a
// fresh one (empty) if there was none. The file is replaced atomically.
// Processes started with --tls-crl on it refuse those certificates once
// they reload it (on a change, within seconds, or on SIGHUP).
func Revoke(caDir string, serials ...*big.Int) (string, error) {
	ca, key, err := loadCA(caDir)
	if err != nil {
		return "", fmt.Errorf("pki.Revoke: %w", err)
	}
	path := filepath.Join(caDir, CRLFile)
	now := time.Now()
	var entries []x509.RevocationListEntry
	number := big.NewInt(1)
	seen := map[string]bool{}
	if data, err := os.ReadFile(path); err == nil {
		if b, _ := pem.Decode(data); b != nil {
			data = b.Bytes
		}
		old, err := x509.ParseRevocationList(data)
		if err != nil {
			return "", fmt.Errorf("pki.Revoke: %w", rpc.Errorf(rpc.Invalid, "the revocation list %s: %w", path, err))
		}
		for _, e := range old.RevokedCertificateEntries {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: e.SerialNumber, RevocationTime: e.RevocationTime})
			seen[e.SerialNumber.String()] = true
		}
		if old.Number != nil {
			number = new(big.Int).Add(old.Number, big.NewInt(1))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("pki.Revoke: %w", err)
	}
	for _, s := range serials {
		if !seen[s.String()] {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
			seen[s.String()] = true
		}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries, Number: number, ThisUpdate: now, NextUpdate: now.Add(CRLLifetime),
	}, ca, key)
	if err != nil {
		return "", fmt.Errorf("pki.Revoke: %w", err)
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644, true); err != nil {
		return "", fmt.Errorf("pki.Revoke: %w", err)
	}
	return path, nil
}

// SerialOf reads the serial number of the PEM certificate in file.
func SerialOf(file string) (*big.Int, string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", readErr(err, "the certificate %s", file)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, "", rpc.Errorf(rpc.Invalid, "%s holds no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, "", rpc.Errorf(rpc.Invalid, "%s: %w", file, err)
	}
	return c.SerialNumber, c.Subject.CommonName, nil
}
