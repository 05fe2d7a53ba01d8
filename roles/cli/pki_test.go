package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/pki"
)

// runDFS runs the command line in process and returns its exit status,
// standard output and standard error.
func runDFS(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := Run(ctx, append([]string{"dfs"}, args...), Version{}, IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, &bytes.Buffer{})
	return code, out.String(), errOut.String()
}

func TestAdminCAAndCert(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")

	code, stdout, stderr := runDFS(t, "admin", "ca", "init", "--dir", caDir)
	is.Equal(code, ExitOK)                                            // ca init succeeds
	is.Equal(stderr, "")                                              // quietly
	is.Equal(strings.Count(stdout, "\n"), 1)                          // one line
	is.True(strings.Contains(stdout, filepath.Join(caDir, "ca.crt"))) // naming what it wrote
	st, err := os.Stat(filepath.Join(caDir, "ca.key"))
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o600)) // the CA key is private

	code, _, stderr = runDFS(t, "admin", "ca", "init", "--dir", caDir)
	is.Equal(code, ExitExists)                  // a CA is never overwritten
	is.True(strings.HasPrefix(stderr, "dfs: ")) // one error line
	t.Log(strings.TrimSpace(stderr))

	code, stdout, _ = runDFS(t, "admin", "cert", "issue", "--ca", caDir, "--role", "datanode", "--name", "dn1",
		"--dns", "dn1.example.com", "--dns", "dn1", "--ip", "10.0.0.1", "--out", out, "--days", "30")
	is.Equal(code, ExitOK)                   // cert issue succeeds
	is.Equal(strings.Count(stdout, "\n"), 1) // one line
	data, err := os.ReadFile(filepath.Join(out, "dn1.crt"))
	is.NoErr(err)
	b, _ := pem.Decode(data)
	is.True(b != nil) // PEM
	c, err := x509.ParseCertificate(b.Bytes)
	is.NoErr(err)
	is.Equal(c.DNSNames, []string{"dn1.example.com", "dn1"})                // the --dns names
	is.Equal(c.IPAddresses[0].String(), "10.0.0.1")                         // the --ip address
	is.Equal(c.NotAfter.Sub(c.NotBefore).Round(time.Hour), 30*24*time.Hour) // --days
	role, err := pki.RoleOf(c)
	is.NoErr(err)
	is.Equal(role, pki.Datanode) // the role
	st, err = os.Stat(filepath.Join(out, "dn1.key"))
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o600)) // the key is private

	code, _, _ = runDFS(t, "admin", "cert", "issue", "--ca", caDir, "--role", "datanode", "--name", "dn1", "--out", out)
	is.Equal(code, ExitExists) // not replaced without --force
	code, _, _ = runDFS(t, "admin", "cert", "issue", "--ca", caDir, "--role", "datanode", "--name", "dn1", "--out", out, "--force")
	is.Equal(code, ExitOK) // replaced with --force

	users := filepath.Join(dir, "users")
	code, _, _ = runDFS(t, "admin", "cert", "issue", "--ca", caDir, "--role", "client", "--name", "alice", "--group", "staff", "--group", "ops", "--out", users)
	is.Equal(code, ExitOK) // a client certificate with groups
	data, err = os.ReadFile(filepath.Join(users, "alice.crt"))
	is.NoErr(err)
	b, _ = pem.Decode(data)
	c, err = x509.ParseCertificate(b.Bytes)
	is.NoErr(err)
	is.Equal(pki.GroupsOf(c), []string{"staff", "ops"}) // the --group names

	for _, bad := range [][]string{
		{"--role", "datanode", "--name", "dn3", "--group", "staff"},
		{"--role", "root", "--name", "x"},
		{"--role", "client", "--name", "a/b"},
		{"--role", "datanode", "--name", "dn2", "--ip", "10.0.0.256"},
		{"--role", "client", "--name", "alice", "--days", "-1"},
	} {
		code, _, stderr = runDFS(t, append([]string{"admin", "cert", "issue", "--ca", caDir, "--out", out}, bad...)...)
		is.Equal(code, ExitInvalid)              // bad input is a usage error
		is.Equal(strings.Count(stderr, "\n"), 1) // in one line
		t.Log(strings.TrimSpace(stderr))
	}
	code, _, _ = runDFS(t, "admin", "cert", "issue", "--ca", filepath.Join(dir, "none"), "--role", "client", "--name", "alice", "--out", out)
	is.Equal(code, ExitNotFound) // no CA there
}
