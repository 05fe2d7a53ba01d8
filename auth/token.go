package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// A bearer token names a user and their groups for a while. A coordinator
// signs it with the private key of its own TLS certificate and embeds that
// certificate, so any process that trusts the cluster's CA (every
// coordinator of an HA group, every datanode) checks it with no shared
// secret and no lookup:
//
//	dfs1.<payload>.<certificates>.<signature>
//
// each part base64url without padding: the payload is the JSON of Claims;
// the certificates are the signer's chain in DER, the leaf first,
// concatenated; the signature covers everything before the last dot. The
// signer's certificate must chain to the CA, be valid, not be on the
// revocation list and carry the coordinator role.
//
// A token cannot be revoked by itself: it ends at its expiry, and revoking
// the certificate of the coordinator that signed it ends every token that
// coordinator signed.

// TokenPrefix starts every bearer token; the version in it changes if the
// format does.
const TokenPrefix = "dfs1."

// Token limits.
const (
	// MaxTokenGroups bounds the groups a token names.
	MaxTokenGroups = 64
	// tokenSkew is how far in the future a token's issue time may be: the
	// signer's clock may be a little ahead of the verifier's.
	tokenSkew = 5 * time.Minute
	// tokenIDLen is the random token ID's length in bytes.
	tokenIDLen = 16
)

// Claims is what a bearer token says: who holds it, and for how long.
type Claims struct {
	// User and Groups are the holder's identity (pki.ValidName each).
	User   string   `json:"sub"`
	Groups []string `json:"grp,omitempty"`
	// IssuedAt and Expires bound the token's validity, in Unix seconds.
	IssuedAt int64 `json:"iat"`
	Expires  int64 `json:"exp"`
	// ID is random, so logs can name one token (hex).
	ID string `json:"jti"`
}

// validate checks the names and times of c; errors are of kind
// rpc.Invalid.
func (c Claims) validate() error {
	if err := pki.ValidName(c.User); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	if len(c.Groups) > MaxTokenGroups {
		return rpc.Errorf(rpc.Invalid, "%d groups: at most %d", len(c.Groups), MaxTokenGroups)
	}
	for _, g := range c.Groups {
		if err := pki.ValidName(g); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	if c.Expires <= c.IssuedAt {
		return rpc.Errorf(rpc.Invalid, "expires (%d) is not after issued-at (%d)", c.Expires, c.IssuedAt)
	}
	if len(c.ID) != 2*tokenIDLen {
		return rpc.Errorf(rpc.Invalid, "token ID %q: want %d hex digits", c.ID, 2*tokenIDLen)
	}
	if _, err := hex.DecodeString(c.ID); err != nil {
		return rpc.Errorf(rpc.Invalid, "token ID %q: want hex digits", c.ID)
	}
	return nil
}

// NewClaims returns the claims of a token for user in groups, valid from
// now for ttl, with a new random ID. Errors are of kind rpc.Invalid.
func NewClaims(user string, groups []string, now time.Time, ttl time.Duration) (Claims, error) {
	if ttl < time.Second {
		return Claims{}, rpc.Errorf(rpc.Invalid, "token lifetime %s: at least a second", ttl)
	}
	id := make([]byte, tokenIDLen)
	if _, err := rand.Read(id); err != nil {
		return Claims{}, fmt.Errorf("token ID: %w", err)
	}
	c := Claims{User: user, Groups: groups, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: hex.EncodeToString(id)}
	if err := c.validate(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

var b64 = base64.RawURLEncoding

// SignToken returns the bearer token of c, signed with t's certificate
// and key. Verifiers accept only tokens a coordinator's certificate
// signed; SignToken signs with any (tests forge tokens with it). Errors:
// rpc.Invalid for bad claims, rpc.FailedPrecondition when t cannot sign
// (nil, no certificate, a key of an unknown kind).
func SignToken(t *pki.TLS, c Claims) (string, error) {
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	chain, key, err := t.Signer()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	algo, err := signatureAlgorithm(leaf.PublicKey)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	signed := TokenPrefix + b64.EncodeToString(payload) + "." + b64.EncodeToString(bytes.Join(chain, nil))
	sig, err := sign(key, algo, []byte(signed))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signed + "." + b64.EncodeToString(sig), nil
}

// signatureAlgorithm is the algorithm tokens are signed with by a key of
// pub's kind: ECDSA (the built-in CA's), RSA or Ed25519, with SHA-256.
func signatureAlgorithm(pub any) (x509.SignatureAlgorithm, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256, nil
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	}
	return 0, rpc.Errorf(rpc.FailedPrecondition, "a %T key cannot sign tokens: want ECDSA, RSA or Ed25519", pub)
}

func sign(key crypto.Signer, algo x509.SignatureAlgorithm, msg []byte) ([]byte, error) {
	if algo == x509.PureEd25519 {
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// parsedToken is a token cut into its parts; nothing in it is verified.
type parsedToken struct {
	claims Claims
	chain  [][]byte // DER, the leaf first
	leaf   *x509.Certificate
	signed []byte // what the signature covers
	sig    []byte
}

// maxTokenCerts bounds the certificates a token may embed: the leaf and
// a few intermediates.
const maxTokenCerts = 4

// parseToken cuts tok into its parts and decodes them, checking their
// form (not the signature, not the times). Errors are of kind
// rpc.Unauthenticated and say what is malformed.
func parseToken(tok string) (*parsedToken, error) {
	bad := func(format string, args ...any) error {
		return rpc.Errorf(rpc.Unauthenticated, "malformed bearer token: "+format, args...)
	}
	if len(tok) > maxTokenLen {
		return nil, rpc.Errorf(rpc.Unauthenticated, "bearer token of %d bytes: more than %d", len(tok), maxTokenLen)
	}
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok {
		return nil, bad("it does not start with %q (made by dfs admin token create)", TokenPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return nil, bad("%d parts after %q, want 3 (payload, certificate, signature)", len(parts), TokenPrefix)
	}
	var raw [3][]byte
	for i, name := range []string{"payload", "certificate", "signature"} {
		b, err := b64.Strict().DecodeString(parts[i])
		if err != nil || len(b) == 0 {
			return nil, bad("its %s is not base64url", name)
		}
		raw[i] = b
	}
	p := &parsedToken{signed: []byte(tok[:len(tok)-len(parts[2])-1]), sig: raw[2]}
	dec := json.NewDecoder(bytes.NewReader(raw[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.claims); err != nil || dec.More() {
		return nil, bad("its payload is not the JSON of a token")
	}
	if err := p.claims.validate(); err != nil {
		return nil, bad("its payload: %v", err)
	}
	certs, err := x509.ParseCertificates(raw[1])
	if err != nil {
		return nil, bad("its certificate: %v", err)
	}
	if len(certs) > maxTokenCerts {
		return nil, bad("%d certificates, at most %d", len(certs), maxTokenCerts)
	}
	for _, c := range certs {
		p.chain = append(p.chain, c.Raw)
	}
	p.leaf = certs[0]
	return p, nil
}

// Verifier checks bearer tokens against a process's TLS material: the
// CA, and the revocation list, loaded last. Every role that trusts the
// cluster's CA can verify any coordinator's tokens with it.
//
// Checking a token's certificate and signature costs about 0.2 ms of CPU,
// and a client sends its token with every call, so a token that verified
// is remembered (by its SHA-256) for verifiedFor: within that time only
// its expiry is checked again. A revocation list loaded meanwhile
// refuses the tokens of a revoked coordinator once that time is up.
type Verifier struct {
	tls *pki.TLS
	// Now is the clock tokens' times are checked against; nil is
	// time.Now. (The signer's certificate is checked against the real
	// time.)
	Now func() time.Time

	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedToken
}

// verifiedToken is a token that verified, and when.
type verifiedToken struct {
	claims Claims
	at     time.Time
}

// Bounds of Verifier's memory of verified tokens.
const (
	verifiedFor = time.Minute
	maxVerified = 4096
)

var _ TokenVerifier = (*Verifier)(nil)

// NewVerifier returns a verifier of tokens signed by coordinators whose
// certificates t's CA signed.
func NewVerifier(t *pki.TLS) *Verifier {
	return &Verifier{tls: t, verified: make(map[[sha256.Size]byte]verifiedToken)}
}

// VerifyToken returns the identity tok names: a client (pki.Client) with
// Token set. A token that is malformed or too long, whose signer's
// certificate does not verify (another CA's, expired, revoked, not a
// coordinator's), whose signature does not match, or that has expired or
// is not valid yet is refused with an error of kind rpc.Unauthenticated
// saying which.
func (v *Verifier) VerifyToken(tok string) (Identity, error) {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now()
	if len(tok) > maxTokenLen {
		return Identity{}, rpc.Errorf(rpc.Unauthenticated, "bearer token of %d bytes: more than %d", len(tok), maxTokenLen)
	}
	key := sha256.Sum256([]byte(tok))
	v.mu.Lock()
	hit, ok := v.verified[key]
	v.mu.Unlock()
	if ok && t.Sub(hit.at) < verifiedFor && !t.Before(hit.at) {
		return hit.claims.identity(t)
	}
	c, err := v.verify(tok)
	if err != nil {
		return Identity{}, err
	}
	id, err := c.identity(t)
	if err != nil {
		return Identity{}, err
	}
	v.mu.Lock()
	if len(v.verified) >= maxVerified {
		for k := range v.verified { // forget one, any
			delete(v.verified, k)
			break
		}
	}
	v.verified[key] = verifiedToken{claims: c, at: t}
	v.mu.Unlock()
	return id, nil
}

// verify checks tok's form, its signer's certificate and its signature,
// and returns its claims.
func (v *Verifier) verify(tok string) (Claims, error) {
	p, err := parseToken(tok)
	if err != nil {
		return Claims{}, err
	}
	if err := v.tls.VerifyPeer(p.chain, pki.Coordinator); err != nil {
		return Claims{}, rpc.Errorf(rpc.Unauthenticated, "bearer token %s: its signer's certificate is not trusted: %v", p.claims.ID, err)
	}
	algo, err := signatureAlgorithm(p.leaf.PublicKey)
	if err != nil {
		return Claims{}, rpc.Errorf(rpc.Unauthenticated, "bearer token %s: %v", p.claims.ID, err)
	}
	if err := p.leaf.CheckSignature(algo, p.signed, p.sig); err != nil {
		return Claims{}, rpc.Errorf(rpc.Unauthenticated, "bearer token %s: bad signature (altered, or not signed by its certificate)", p.claims.ID)
	}
	return p.claims, nil
}

// identity returns the identity c names if it is valid at t, else an
// error of kind rpc.Unauthenticated.
func (c Claims) identity(t time.Time) (Identity, error) {
	switch exp, iat := time.Unix(c.Expires, 0), time.Unix(c.IssuedAt, 0); {
	case !t.Before(exp):
		return Identity{}, rpc.Errorf(rpc.Unauthenticated, "bearer token %s of %s expired at %s: create a new one (dfs admin token create)", c.ID, c.User, exp.UTC().Format(time.RFC3339))
	case t.Add(tokenSkew).Before(iat):
		return Identity{}, rpc.Errorf(rpc.Unauthenticated, "bearer token %s of %s is not valid yet: issued at %s (a clock is wrong)", c.ID, c.User, iat.UTC().Format(time.RFC3339))
	}
	return Identity{User: c.User, Groups: slices.Clone(c.Groups), Role: pki.Client, Token: true}, nil
}
