package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// tokenCommand returns `dfs admin token`, whose one subcommand, create,
// asks the coordinator for a bearer token.
func (a *app) tokenCommand() *cli.Command {
	return &cli.Command{
		Name: "token", Usage: "bearer tokens the coordinator signs",
		Subcommands: []*cli.Command{a.tokenCreateCommand()},
	}
}

// tokenCreateCommand returns `dfs admin token create --user U`: it prints
// the token on stdout, alone on its line, so a script can take it
// (DFS_TOKEN=$(dfs admin token create ...)).
func (a *app) tokenCreateCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var user string
	var groups cli.StringSlice
	expires := lifetime(24 * time.Hour)
	var asJSON bool
	return &cli.Command{
		Name:  "create",
		Usage: "create a bearer token for a user (superusers, over TLS); it is printed on stdout",
		Description: "The coordinator signs the token with its certificate's key; every coordinator and datanode that\n" +
			"trusts the cluster's CA accepts it until it expires. A token cannot be revoked by itself: keep\n" +
			"lifetimes short, or revoke the signing coordinator's certificate, which ends all its tokens.\n" +
			"See docs/security.md.",
		Flags: clientFlags(&cfg, false,
			&cli.StringFlag{Name: "user", Required: true, Destination: &user, EnvVars: env("TOKEN_USER"), Usage: "the user the token names: letters, digits and .-_@, up to 64"},
			&cli.StringSliceFlag{Name: "group", Destination: &groups, EnvVars: env("TOKEN_GROUP"), Usage: "a group the user is in (repeat for more)"},
			&cli.GenericFlag{Name: "expires", Value: &expires, EnvVars: env("TOKEN_EXPIRES"), Usage: "how long the token is valid: 90m, 12h, 7d; at most the coordinator's --token-max-lifetime"},
			jsonFlag(&asJSON),
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "admin token create takes no arguments, got %q (use --user)", c.Args().First())
			}
			if expires <= 0 {
				return rpc.Errorf(rpc.Invalid, "--expires %s: must be positive", expires.String())
			}
			tok, err := cl.CreateToken(ctx, user, groups.Value(), time.Duration(expires))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdio.Out, tokenJSON{Token: tok.Token, User: tok.User, Groups: tok.Groups, Expires: tok.Expires.UTC(), ID: tok.ID})
			}
			fmt.Fprintln(a.stdio.Out, tok.Token)
			fmt.Fprintf(a.stdio.Err, "dfs: token %s for %s expires at %s\n", tok.ID, tok.User, tok.Expires.UTC().Format(time.RFC3339))
			return nil
		}),
	}
}

// tokenJSON is what `dfs admin token create --json` prints.
type tokenJSON struct {
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Groups  []string  `json:"groups,omitempty"`
	Expires time.Time `json:"expires"`
	ID      string    `json:"id"`
}

// lifetime is a flag's duration that also takes days: "7d", "1d12h", or
// anything time.ParseDuration takes.
type lifetime time.Duration

var _ cli.Generic = (*lifetime)(nil)

// Set parses s.
func (l *lifetime) Set(s string) error {
	d, err := parseLifetime(s)
	if err != nil {
		return err
	}
	*l = lifetime(d)
	return nil
}

// String formats l in days when it is whole days ("7d"), else as Go does.
func (l *lifetime) String() string {
	if l == nil {
		return "0s"
	}
	d := time.Duration(*l)
	if day := 24 * time.Hour; d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// parseLifetime parses a duration with an optional leading count of days:
// "30d", "1d12h", "90m".
func parseLifetime(s string) (time.Duration, error) {
	bad := rpc.Errorf(rpc.Invalid, "invalid duration %q: want e.g. 90m, 12h, 7d or 1d12h", s)
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, bad
		}
		return d, nil
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil || n > 36500 {
		return 0, bad
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 {
			return 0, bad
		}
		d += r
	}
	return d, nil
}
