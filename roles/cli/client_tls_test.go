package cli

import (
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// TestClientCommandChecksCRL: a client command given --tls-crl refuses a
// coordinator whose certificate dfs admin cert revoke listed, in one
// line; without the list it talks to it.
func TestClientCommandChecksCRL(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1, rolestest.Secure)
	admin := c.PKI().Files("admin")
	code, _, stderr := runDFS(t, "admin", "cert", "revoke", "--ca", filepath.Dir(admin.CA), filepath.Join(c.PKI().Dir, "coordinator.crt"))
	is.Equal(code, ExitOK) // revoked
	tlsArgs := []string{"--insecure=false", "--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key}

	code, _, stderr = runDFS(t, append(tlsArgs, "--tls-crl", admin.CRL, "stat", "--coordinator", c.Addr(), "/nothing")...)
	is.Equal(code, ExitUnavailable)                 // the revoked coordinator is refused
	is.True(strings.Contains(stderr, "is revoked")) // saying why
	is.Equal(strings.Count(stderr, "\n"), 1)        // in one line

	code, _, _ = runDFS(t, append(tlsArgs, "stat", "--coordinator", c.Addr(), "/nothing")...)
	is.Equal(code, ExitNotFound) // without the list the coordinator answers
}

// TestS3GatewayCertificate: dfs s3 with TLS refuses, before serving, a
// certificate without the gateway role, or a token in place of one.
func TestS3GatewayCertificate(t *testing.T) {
	p, err := roles.OpenLocalPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	admin := p.Files("admin") // a client certificate
	keys := []string{"--coordinator", "127.0.0.1:1", "--listen", rolestest.FreeAddr(t), "--access-key", "AKID", "--secret-key", "12345678", "--user", "admin"}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"ClientCert": {[]string{"--tls-cert", admin.Cert, "--tls-key", admin.Key}, "is a client's, not a gateway's"},
		"Token":      {[]string{"--token", "dfs1.x"}, "needs a certificate of the gateway role"},
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			args := append(append([]string{"--insecure=false", "--tls-ca", admin.CA}, tc.args...), "s3")
			code, stdout, stderr := runDFS(t, append(args, keys...)...)
			is.Equal(code, ExitInvalid)                   // refused
			is.True(strings.Contains(stderr, tc.want))    // saying why
			is.Equal(strings.Count(stderr, "\n"), 1)      // in one line
			is.True(!strings.Contains(stdout, "serving")) // before serving
		})
	}
}

// TestS3InsecureWarns: dfs s3 --insecure logs the warning a server run in
// plain text logs.
func TestS3InsecureWarns(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1)
	warned := make(chan []string, 1)
	logs := &lineWriter{re: regexp.MustCompile(`.*` + regexp.QuoteMeta(insecureWarning) + `.*`), seen: warned}
	runServerLogging(t, logs, `serving (http://\S+)`, "--log-format", "json", "s3", "--coordinator", c.Addr(), "--listen", rolestest.FreeAddr(t), "--access-key", "AKID", "--secret-key", "12345678")
	select {
	case m := <-warned:
		is.True(strings.Contains(m[0], `"level":"warn"`))   // a warning
		is.True(strings.Contains(m[0], `"role":"gateway"`)) // of the gateway
	case <-time.After(rolestest.WaitFor):
		t.Fatal("dfs s3 --insecure did not warn that it runs in plain text")
	}
}

// TestS3ReloadsTLSOnSIGHUP: dfs s3 reloads its TLS files on SIGHUP, as a
// server does, and says so.
func TestS3ReloadsTLSOnSIGHUP(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1, rolestest.Secure)
	gw, err := c.GatewayConfig("gw")
	is.NoErr(err)
	// The test's own handler keeps a SIGHUP from ending the test process
	// should the gateway not handle it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	reloaded := make(chan []string, 1)
	logs := &lineWriter{re: regexp.MustCompile(`certificates reloaded`), seen: reloaded}
	runServerLogging(t, logs, `serving (http://\S+)`, "--insecure=false", "--tls-ca", gw.TLSCA, "--tls-cert", gw.TLSCert, "--tls-key", gw.TLSKey, "--tls-crl", gw.TLSCRL,
		"s3", "--coordinator", c.Addr(), "--listen", rolestest.FreeAddr(t), "--access-key", "AKID", "--secret-key", "12345678", "--user", "admin")
	is.NoErr(syscall.Kill(os.Getpid(), syscall.SIGHUP))
	select {
	case <-reloaded:
	case <-time.After(rolestest.WaitFor):
		t.Fatal("dfs s3 did not reload its TLS files on SIGHUP")
	}
}
