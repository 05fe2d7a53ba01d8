package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/rolestest"
)

func TestParseLifetime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"12h", 12 * time.Hour, true},
		{"0d", 0, true},
		{"", 0, false},
		{"d", 0, false},
		{"-1d", 0, false},
		{"1d-1h", 0, false},
		{"1.5d", 0, false},
		{"99999999d", 0, false},
		{"7days", 0, false},
		{"forever", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			is := is.New(t)
			got, err := parseLifetime(tc.in)
			is.Equal(err == nil, tc.ok) // parsed, or refused
			if tc.ok {
				is.Equal(got, tc.want)
			} else {
				is.True(strings.Contains(err.Error(), "want e.g. 90m, 12h, 7d")) // saying what it takes
			}
		})
	}
	is := is.New(t)
	l := lifetime(7 * 24 * time.Hour)
	is.Equal(l.String(), "7d") // whole days print as days
	l = lifetime(36 * time.Hour)
	is.Equal(l.String(), "36h0m0s") // others as Go does
}

func TestAdminTokenCreate(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1)
	addr := c.Addr()

	code, _, stderr := runDFS(t, "admin", "token", "create", "--coordinator", addr, "--user", "bob", "--group", "staff", "--expires", "2d")
	is.Equal(code, ExitFailedPrecondition)               // a plain-text cluster makes no tokens
	is.True(strings.Contains(stderr, "tokens need TLS")) // saying why
	is.Equal(strings.Count(stderr, "\n"), 1)             // on one line

	code, _, stderr = runDFS(t, "admin", "token", "create", "--coordinator", addr, "--user", "bob", "--expires", "soon")
	is.Equal(code, ExitInvalid) // a bad duration
	is.True(strings.Contains(stderr, "expires"))

	code, _, _ = runDFS(t, "admin", "token", "create", "--coordinator", addr, "--user", "bob", "--expires", "0d")
	is.Equal(code, ExitInvalid) // no lifetime

	code, _, stderr = runDFS(t, "admin", "token", "create", "--coordinator", addr)
	is.True(code != ExitOK)                       // --user is required
	is.True(strings.Contains(stderr, "\"user\"")) // saying so
}

func TestAdminTokenCreateSecure(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 1, rolestest.Secure)
	admin := c.PKI().Files("admin")
	asAdmin := []string{"--insecure=false", "--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key}

	code, stdout, stderr := runDFS(t, append(asAdmin, "admin", "token", "create", "--coordinator", c.Addr(), "--user", "bob", "--group", "staff", "--expires", "2h")...)
	is.Equal(code, ExitOK) // the superuser creates a token
	tok := strings.TrimSuffix(stdout, "\n")
	is.True(strings.HasPrefix(tok, "dfs1.") && !strings.Contains(tok, "\n")) // alone on stdout
	is.True(strings.Contains(stderr, "for bob expires at "))                 // its expiry on stderr

	code, stdout, stderr = runDFS(t, "--insecure=false", "--tls-ca", admin.CA, "--token", tok, "nodes", "--coordinator", c.Addr())
	is.Equal(code, ExitOK) // the token alone authenticates
	is.True(strings.Contains(stdout, "healthy"))

	code, _, stderr = runDFS(t, "--insecure=false", "--tls-ca", admin.CA, "--token", tok, "admin", "token", "create", "--coordinator", c.Addr(), "--user", "bob")
	is.Equal(code, ExitPermission)                      // bob is no superuser
	is.True(strings.Contains(stderr, "for superusers")) // saying so

	code, stdout, _ = runDFS(t, append(asAdmin, "admin", "token", "create", "--coordinator", c.Addr(), "--user", "carol", "--json")...)
	is.Equal(code, ExitOK)
	var out tokenJSON
	is.NoErr(json.Unmarshal([]byte(stdout), &out))
	is.Equal(out.User, "carol")                                    // the JSON names the user
	is.True(strings.HasPrefix(out.Token, "dfs1.") && out.ID != "") // the token and its ID
	is.True(out.Expires.After(time.Now().Add(23 * time.Hour)))     // a day by default

	code, _, stderr = runDFS(t, append(asAdmin, "admin", "token", "create", "--coordinator", c.Addr(), "--user", "carol", "--expires", "30d")...)
	is.Equal(code, ExitInvalid) // beyond the coordinator's --token-max-lifetime
	is.True(strings.Contains(stderr, "--token-max-lifetime"))
}
