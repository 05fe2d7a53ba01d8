package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestProcessSecure runs a cluster of processes with TLS, as an operator
// sets one up with the built-in CA: every call works for the superuser,
// a client without a certificate or without TLS is refused, a kill -9 and
// restart of the coordinator keep serving over TLS, and a certificate
// revoked with dfs admin cert revoke is refused once the servers reload
// their files on SIGHUP.
func TestProcessSecure(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{nodes: 3, suspectAfter: 2 * time.Second, deadAfter: 4 * time.Second, tls: true})
	data := procTestData(3<<20+5, "/secure/a")
	sum := c.put("/secure/a", data)
	c.checkFile("/secure/a", sum)

	ca := filepath.Join(c.pki, "ca", "ca.crt")
	run := func(args ...string) procResult { return runDFSProc(t, bin, c.coord, procCLITimeout, args...) }
	r := run("--insecure=false", "--tls-ca", ca, "stat", "/secure/a")
	is.Equal(r.code, 2) // a client with the CA but no certificate or token: refused before dialing
	r = run("ls", "/") // DFS_INSECURE=true: plain text to a TLS port
	is.True(r.code != 0)
	t.Logf("plain text: exit %d: %s", r.code, strings.TrimSpace(r.stderr))

	// A user's certificate, revoked.
	admin := func(args ...string) {
		if r := run(append([]string{"admin"}, args...)...); r.code != 0 {
			t.Fatalf("dfs admin %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	admin("cert", "issue", "--ca", filepath.Join(c.pki, "ca"), "--role", "client", "--name", "mallory", "--out", c.pki)
	mallory := append(c.tlsFlags("mallory"), "stat", "/secure/a")
	r = run(mallory...)
	is.Equal(r.code, 0) // mallory is a user (until permissions say otherwise, she may stat)

	// kill -9 the coordinator; it comes back over TLS.
	c.kill(c.coordProc)
	c.startCoordinator()
	c.checkFile("/secure/a", sum)

	admin("cert", "revoke", "--ca", filepath.Join(c.pki, "ca"), filepath.Join(c.pki, "mallory.crt"))
	is.NoErr(c.coordProc.cmd.Process.Signal(syscall.SIGHUP)) // reload the revocation list now
	c.poll("mallory refused after the revocation", func() (bool, string) {
		r := run(mallory...)
		return r.code != 0, strings.TrimSpace(r.stderr)
	})
	c.checkFile("/secure/a", sum) // the superuser still reads
}
