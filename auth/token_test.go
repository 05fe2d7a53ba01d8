package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// testCA is a CA in a temporary directory that issues certificates.
type testCA struct {
	t   testing.TB
	dir string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(filepath.Join(dir, "ca"), pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, dir: dir}
}

// files issues a certificate for role and name and returns its files
// (with the CA's revocation list, when crl is set).
func (ca *testCA) files(role pki.Role, name string) pki.Files {
	ca.t.Helper()
	cert, key, err := pki.IssueFiles(filepath.Join(ca.dir, "ca"), ca.dir, pki.Request{Role: role, Name: name}, true)
	if err != nil {
		ca.t.Fatal(err)
	}
	return pki.Files{CA: filepath.Join(ca.dir, "ca", pki.CACertFile), Cert: cert, Key: key}
}

// tls issues a certificate and loads it.
func (ca *testCA) tls(role pki.Role, name string) *pki.TLS {
	ca.t.Helper()
	return ca.load(ca.files(role, name))
}

func (ca *testCA) load(f pki.Files) *pki.TLS {
	ca.t.Helper()
	t, err := pki.LoadTLS(f, zerolog.Nop())
	if err != nil {
		ca.t.Fatal(err)
	}
	return t
}

// revoke writes a revocation list that lists the certificate certFile and
// returns its path.
func (ca *testCA) revoke(certFile string) string {
	ca.t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			ca.t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	caCert, err := x509.ParseCertificate(read(filepath.Join(ca.dir, "ca", pki.CACertFile)))
	if err != nil {
		ca.t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(read(filepath.Join(ca.dir, "ca", pki.CAKeyFile)))
	if err != nil {
		ca.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(read(certFile))
	if err != nil {
		ca.t.Fatal(err)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: leaf.SerialNumber, RevocationTime: time.Now()},
		},
	}, caCert, k.(crypto.Signer))
	if err != nil {
		ca.t.Fatal(err)
	}
	p := filepath.Join(ca.dir, "ca.crl")
	if err := os.WriteFile(p, der, 0o644); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

func claimsFor(t testing.TB, user string, groups ...string) Claims {
	t.Helper()
	c, err := NewClaims(user, groups, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func signed(t testing.TB, signer *pki.TLS, c Claims) string {
	t.Helper()
	tok, err := SignToken(signer, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenVerifies(t *testing.T) {
	is := is.New(t)
	ca := newTestCA(t)
	coord := ca.tls(pki.Coordinator, "coordinator")
	node := ca.tls(pki.Datanode, "datanode")
	tok := signed(t, coord, claimsFor(t, "bob", "staff", "ops"))
	is.True(strings.HasPrefix(tok, TokenPrefix)) // the format's version
	is.True(len(tok) < 2048)                     // compact: a certificate and a signature
	for _, v := range []*pki.TLS{coord, node} {
		id, err := NewVerifier(v).VerifyToken(tok)
		is.NoErr(err) // any holder of the CA verifies it
		is.Equal(id, Identity{User: "bob", Groups: []string{"staff", "ops"}, Role: pki.Client, Token: true})
	}
}

// tamper returns tok with its part i (0 payload, 1 certificate, 2
// signature) replaced by what edit makes of its decoded bytes.
func tamper(t testing.TB, tok string, i int, edit func([]byte) []byte) string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(tok, TokenPrefix), ".")
	b, err := b64.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	parts[i] = b64.EncodeToString(edit(b))
	return TokenPrefix + strings.Join(parts, ".")
}

func TestTokenRefused(t *testing.T) {
	ca := newTestCA(t)
	coordFiles := ca.files(pki.Coordinator, "coordinator")
	coord := ca.load(coordFiles)
	verifier := NewVerifier(ca.tls(pki.Datanode, "datanode"))
	good := signed(t, coord, claimsFor(t, "bob"))
	other := newTestCA(t)

	past := claimsFor(t, "bob")
	past.IssuedAt, past.Expires = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	future := claimsFor(t, "bob")
	future.IssuedAt, future.Expires = time.Now().Add(time.Hour).Unix(), time.Now().Add(2*time.Hour).Unix()
	asAdmin := func(b []byte) []byte {
		var c Claims
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		c.User = "admin"
		out, _ := json.Marshal(c)
		return out
	}
	badName := claimsFor(t, "bob")
	badName.User = "../bob"
	badNamePayload, _ := json.Marshal(badName)

	for _, tc := range []struct {
		name, tok, want string
	}{
		{"garbage", "hello", "does not start with"},
		{"empty", "", "does not start with"},
		{"too long", TokenPrefix + strings.Repeat("A", 9<<10), "more than 8192"},
		{"two parts", TokenPrefix + "e30.e30", "2 parts"},
		{"four parts", good + ".e30", "4 parts"},
		{"not base64", TokenPrefix + "!!.e30.e30", "payload is not base64url"},
		{"padded base64", tamper(t, good, 2, func(b []byte) []byte { return b }) + "=", "signature is not base64url"},
		{"not JSON", tamper(t, good, 0, func([]byte) []byte { return []byte("{") }), "not the JSON of a token"},
		{"unknown field", tamper(t, good, 0, func([]byte) []byte { return []byte(`{"sub":"bob","root":true}`) }), "not the JSON of a token"},
		{"invalid user", tamper(t, good, 0, func([]byte) []byte { return badNamePayload }), "invalid name"},
		{"not a certificate", tamper(t, good, 1, func([]byte) []byte { return []byte("not DER") }), "its certificate"},
		{"tampered payload", tamper(t, good, 0, asAdmin), "bad signature"},
		{"bad signature", tamper(t, good, 2, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "bad signature"},
		{"expired", signed(t, coord, past), "expired at"},
		{"not yet valid", signed(t, coord, future), "not valid yet"},
		{"signed by a datanode", signed(t, ca.tls(pki.Datanode, "dn2"), claimsFor(t, "bob")), "is a datanode's"},
		{"signed by a client", signed(t, ca.tls(pki.Client, "admin"), claimsFor(t, "bob")), "signer's certificate is not trusted"},
		{"another CA's coordinator", signed(t, other.tls(pki.Coordinator, "coordinator"), claimsFor(t, "bob")), "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, err := verifier.VerifyToken(tc.tok)
			is.True(err != nil)                             // refused
			is.Equal(rpc.KindOf(err), rpc.Unauthenticated)  // as unauthenticated
			is.True(strings.Contains(err.Error(), tc.want)) // saying why
			is.True(!strings.Contains(err.Error(), "\n"))   // on one line
			is.True(len(err.Error()) < 1024)                // and briefly
		})
	}

	t.Run("revoked signer", func(t *testing.T) {
		is := is.New(t)
		f := ca.files(pki.Datanode, "dn3")
		f.CRL = ca.revoke(coordFiles.Cert)
		_, err := NewVerifier(ca.load(f)).VerifyToken(good)
		is.Equal(rpc.KindOf(err), rpc.Unauthenticated)       // a revoked coordinator's tokens end
		is.True(strings.Contains(err.Error(), "is revoked")) // saying so
	})
}

func TestTokenClock(t *testing.T) {
	is := is.New(t)
	ca := newTestCA(t)
	coord := ca.tls(pki.Coordinator, "coordinator")
	now := time.Now()
	tok := signed(t, coord, claimsFor(t, "bob"))
	v := NewVerifier(coord)
	clock := now
	v.Now = func() time.Time { return clock }

	_, err := v.VerifyToken(tok)
	is.NoErr(err) // valid now
	clock = now.Add(59 * time.Minute)
	_, err = v.VerifyToken(tok)
	is.NoErr(err) // valid until its hour is up
	clock = now.Add(61 * time.Minute)
	_, err = v.VerifyToken(tok)
	is.True(strings.Contains(err.Error(), "expired")) // and not after
	clock = now.Add(-4 * time.Minute)
	_, err = v.VerifyToken(tok)
	is.NoErr(err) // a verifier's clock a little behind is tolerated
	clock = now.Add(-6 * time.Minute)
	_, err = v.VerifyToken(tok)
	is.True(strings.Contains(err.Error(), "not valid yet")) // far behind, not
}

func TestSignTokenErrors(t *testing.T) {
	is := is.New(t)
	_, err := SignToken(nil, claimsFor(t, "bob"))
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // no TLS, nothing to sign with

	ca := newTestCA(t)
	tokenOnly := ca.load(pki.Files{CA: filepath.Join(ca.dir, "ca", pki.CACertFile)})
	_, err = SignToken(tokenOnly, claimsFor(t, "bob"))
	is.Equal(rpc.KindOf(err), rpc.FailedPrecondition) // no certificate of its own

	_, err = NewClaims("no/slash", nil, time.Now(), time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a bad user
	_, err = NewClaims("bob", []string{""}, time.Now(), time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a bad group
	_, err = NewClaims("bob", nil, time.Now(), 0)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // no lifetime
	_, err = NewClaims("bob", make([]string, MaxTokenGroups+1), time.Now(), time.Hour)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // too many groups
}

// FuzzVerifyToken feeds the token parser and verifier anything: they
// never panic, refuse with rpc.Unauthenticated, and accept only what a
// coordinator of the CA signed.
func FuzzVerifyToken(f *testing.F) {
	ca := newTestCA(f)
	coord := ca.tls(pki.Coordinator, "coordinator")
	good := signed(f, coord, claimsFor(f, "bob"))
	f.Add(good)
	f.Add(tamper(f, good, 0, func([]byte) []byte { return []byte(`{"sub":"admin","iat":1,"exp":2,"jti":"00"}`) }))
	f.Add(tamper(f, good, 1, func(b []byte) []byte { return b[:len(b)/2] }))
	f.Add(TokenPrefix + "..")
	f.Add("dfs1.e30.e30.e30")
	f.Add("Bearer x")
	v := NewVerifier(coord)
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.VerifyToken(tok)
		if err != nil {
			if rpc.KindOf(err) != rpc.Unauthenticated {
				t.Fatalf("refused with kind %v: %v", rpc.KindOf(err), err)
			}
			return
		}
		if id.User != "bob" || !id.Token || id.Role != pki.Client {
			t.Fatalf("accepted %q as %+v", tok, id)
		}
	})
}

func TestTokenRevokedWithinAMinute(t *testing.T) {
	is := is.New(t)
	ca := newTestCA(t)
	coordFiles := ca.files(pki.Coordinator, "coordinator")
	tok := signed(t, ca.load(coordFiles), claimsFor(t, "bob"))
	nodeFiles := ca.files(pki.Datanode, "datanode")
	nodeFiles.CRL = ca.revoke(ca.files(pki.Client, "mallory").Cert) // a list without the coordinator
	node := ca.load(nodeFiles)
	v := NewVerifier(node)
	clock := time.Now()
	v.Now = func() time.Time { return clock }
	_, err := v.VerifyToken(tok)
	is.NoErr(err) // the coordinator is not revoked

	ca.revoke(coordFiles.Cert)
	is.NoErr(node.Reload()) // now it is
	_, err = v.VerifyToken(tok)
	is.NoErr(err) // the token verified a moment ago is still taken
	clock = clock.Add(verifiedFor)
	_, err = v.VerifyToken(tok)
	is.Equal(rpc.KindOf(err), rpc.Unauthenticated)       // a minute on, it is checked again
	is.True(strings.Contains(err.Error(), "is revoked")) // and refused
}

func BenchmarkVerifyToken(b *testing.B) {
	ca := newTestCA(b)
	coord := ca.tls(pki.Coordinator, "coordinator")
	tok := signed(b, coord, claimsFor(b, "bob", "staff"))
	v := NewVerifier(coord)
	start := time.Now()
	clock := start
	v.Now = func() time.Time { return clock }
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		clock = start.Add(time.Duration(i%2) * verifiedFor) // never remembered: the full check each time
		if _, err := v.VerifyToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTokenRemembered(b *testing.B) {
	ca := newTestCA(b)
	coord := ca.tls(pki.Coordinator, "coordinator")
	tok := signed(b, coord, claimsFor(b, "bob", "staff"))
	v := NewVerifier(coord)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}
