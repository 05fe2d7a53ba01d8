package cli

import (
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// caCommand returns `dfs admin ca`, whose one subcommand, init, creates
// the built-in certificate authority (internal/pki).
func (a *app) caCommand() *cli.Command {
	return &cli.Command{
		Name: "ca", Usage: "the built-in certificate authority",
		Subcommands: []*cli.Command{a.caInitCommand()},
	}
}

// caInitCommand returns `dfs admin ca init --dir DIR`: it writes DIR/ca.crt
// and DIR/ca.key and never overwrites them.
func (a *app) caInitCommand() *cli.Command {
	var dir string
	var ifMissing bool
	return &cli.Command{
		Name:  "init",
		Usage: "create a certificate authority: DIR/ca.crt and DIR/ca.key (never overwritten)",
		Description: "The CA is valid 10 years; its key is ECDSA P-256. Keep ca.key private: whoever holds it can\n" +
			"issue certificates for any role. See docs/security.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true, Destination: &dir, EnvVars: env("CA_DIR"), Usage: "the directory to write ca.crt and ca.key to (created if missing)"},
			&cli.BoolFlag{Name: "if-missing", Destination: &ifMissing, EnvVars: env("CA_IF_MISSING"), Usage: "succeed, leaving it as it is, when DIR already holds a CA (scripts and compose files run it at every start)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "admin ca init takes no arguments, got %q (use --dir)", c.Args().First())
			}
			if err := pki.InitCA(dir, pki.CAOptions{}); err != nil {
				if ifMissing && rpc.KindOf(err) == rpc.Exists && pki.HasCA(dir) {
					fmt.Fprintf(a.stdio.Out, "CA in %s exists; left as it is\n", dir)
					return nil
				}
				return err
			}
			fmt.Fprintf(a.stdio.Out, "wrote CA certificate %s and key %s\n", filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			return nil
		},
	}
}

// certCommand returns `dfs admin cert`, whose one subcommand, issue, signs
// a certificate with the built-in CA.
func (a *app) certCommand() *cli.Command {
	return &cli.Command{
		Name: "cert", Usage: "certificates signed by the built-in certificate authority",
		Subcommands: []*cli.Command{a.certIssueCommand(), a.certRevokeCommand()},
	}
}

// certIssueCommand returns `dfs admin cert issue`: it writes OUT/NAME.crt
// and OUT/NAME.key for one role.
func (a *app) certIssueCommand() *cli.Command {
	var caDir, role, name, out string
	var days int
	var force bool
	var dns, ips, groups cli.StringSlice
	return &cli.Command{
		Name:  "issue",
		Usage: "issue a certificate for a role: OUT/NAME.crt and OUT/NAME.key",
		Description: "The role is carried as the URI SAN dfs://role/ROLE. A client certificate's name is the user;\n" +
			"a server certificate (coordinator, datanode, gateway) serves and dials other servers, for the\n" +
			"--dns names and --ip addresses (none given: localhost and 127.0.0.1). See docs/security.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca", Required: true, Destination: &caDir, EnvVars: env("CERT_CA"), Usage: "the CA directory (made by dfs admin ca init)"},
			&cli.StringFlag{Name: "role", Required: true, Destination: &role, EnvVars: env("CERT_ROLE"), Usage: "coordinator, datanode, gateway or client"},
			&cli.StringFlag{Name: "name", Required: true, Destination: &name, EnvVars: env("CERT_NAME"), Usage: "the user (client) or host name: letters, digits and .-_@, up to 64; names the files"},
			&cli.StringSliceFlag{Name: "dns", Destination: &dns, EnvVars: env("CERT_DNS"), Usage: "a DNS name the server is reached by (repeat for more; server roles only)"},
			&cli.StringSliceFlag{Name: "ip", Destination: &ips, EnvVars: env("CERT_IP"), Usage: "an IP address the server is reached by (repeat for more; server roles only)"},
			&cli.StringSliceFlag{Name: "group", Destination: &groups, EnvVars: env("CERT_GROUP"), Usage: "a group the user is in, for file permissions (repeat for more; client role only)"},
			&cli.StringFlag{Name: "out", Required: true, Destination: &out, EnvVars: env("CERT_OUT"), Usage: "the directory to write NAME.crt and NAME.key to (created if missing)"},
			&cli.IntFlag{Name: "days", Destination: &days, EnvVars: env("CERT_DAYS"), Usage: "days the certificate is valid; 0: 365 for servers, 90 for clients (never past the CA's expiry)"},
			&cli.BoolFlag{Name: "force", Destination: &force, EnvVars: env("CERT_FORCE"), Usage: "replace NAME.crt and NAME.key if they exist"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "admin cert issue takes no arguments, got %q", c.Args().First())
			}
			r, err := pki.ParseRole(role)
			if err != nil {
				return err
			}
			if days < 0 {
				return rpc.Errorf(rpc.Invalid, "--days %d: must not be negative", days)
			}
			req := pki.Request{Role: r, Name: name, DNS: dns.Value(), Groups: groups.Value(), Lifetime: time.Duration(days) * 24 * time.Hour}
			for _, s := range ips.Value() {
				ip := net.ParseIP(s)
				if ip == nil {
					return rpc.Errorf(rpc.Invalid, "--ip %q: not an IP address", s)
				}
				req.IPs = append(req.IPs, ip)
			}
			certPath, keyPath, err := pki.IssueFiles(caDir, out, req, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdio.Out, "wrote %s certificate %s and key %s\n", r, certPath, keyPath)
			return nil
		},
	}
}

// certRevokeCommand returns `dfs admin cert revoke`: it adds certificates
// to the CA's revocation list, CA/ca.crl.
func (a *app) certRevokeCommand() *cli.Command {
	var caDir string
	var serials cli.StringSlice
	return &cli.Command{
		Name:      "revoke",
		Usage:     "revoke certificates: add them to the CA's revocation list CA/ca.crl (processes given it with --tls-crl refuse them)",
		ArgsUsage: "[CERT-FILE]...",
		Description: "Copy the new ca.crl to every process's --tls-crl file: each reloads it within 10 seconds\n" +
			"(or on SIGHUP) and from then on refuses the revoked certificates. See docs/security.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca", Required: true, Destination: &caDir, EnvVars: env("CA_DIR"), Usage: "the CA directory (holding ca.crt and ca.key)"},
			&cli.StringSliceFlag{Name: "serial", Destination: &serials, Usage: "the serial number (decimal, or hex with 0x) of a certificate to revoke, when its file is gone; repeatable"},
		},
		Action: func(c *cli.Context) error {
			var revoke []*big.Int
			var names []string
			for _, f := range c.Args().Slice() {
				sn, name, err := pki.SerialOf(f)
				if err != nil {
					return err
				}
				revoke, names = append(revoke, sn), append(names, fmt.Sprintf("%s (serial %s)", name, sn))
			}
			for _, s := range serials.Value() {
				sn, ok := new(big.Int).SetString(s, 0)
				if !ok || sn.Sign() <= 0 {
					return rpc.Errorf(rpc.Invalid, "--serial %q: not a positive decimal or 0x hex number", s)
				}
				revoke, names = append(revoke, sn), append(names, "serial "+sn.String())
			}
			if len(revoke) == 0 {
				return rpc.Errorf(rpc.Invalid, "admin cert revoke needs a CERT-FILE or --serial")
			}
			path, err := pki.Revoke(caDir, revoke...)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdio.Out, "revoked %s; wrote %s\n", strings.Join(names, ", "), path)
			return nil
		},
	}
}
