package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/s3gw"
	"github.com/dfs-project/dfs/rpc"
)

// s3Flags are the gateway's options, shared by dfs s3 and dfs dev --s3.
type s3Flags struct {
	cfg                  s3gw.Config
	access, secret, user string
	keys                 string
	httpsCert, httpsKey  string
}

// parseKeys reads --keys: ACCESS:SECRET[:USER] entries, comma-separated.
func parseKeys(s string) ([]s3gw.Key, error) {
	var out []s3gw.Key
	for e := range strings.SplitSeq(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		parts := strings.SplitN(e, ":", 3)
		if len(parts) < 2 {
			return nil, rpc.Errorf(rpc.Invalid, "--keys: %q: want ACCESS:SECRET or ACCESS:SECRET:USER", strings.SplitN(e, ":", 2)[0])
		}
		k := s3gw.Key{Access: parts[0], Secret: parts[1]}
		if len(parts) == 3 {
			k.User = parts[2]
		}
		out = append(out, k)
	}
	return out, nil
}

// config returns the gateway's configuration from the flags; secure says
// the cluster is dialed over TLS, where every key needs a user.
func (f *s3Flags) config(secure bool) (s3gw.Config, error) {
	cfg := f.cfg
	cfg.CertFile, cfg.KeyFile = f.httpsCert, f.httpsKey
	keys, err := parseKeys(f.keys)
	if err != nil {
		return cfg, err
	}
	if f.access != "" || f.secret != "" {
		keys = append([]s3gw.Key{{Access: f.access, Secret: f.secret, User: f.user}}, keys...)
	}
	cfg.Keys = keys
	if secure {
		for _, k := range keys {
			if k.User == "" {
				return cfg, rpc.Errorf(rpc.Invalid, "access key %q has no dfs user: with TLS each key acts for a user (--user, or ACCESS:SECRET:USER in --keys)", k.Access)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, rpc.Errorf(rpc.Invalid, "%v", err)
	}
	return cfg, nil
}

func (f *s3Flags) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "access-key", Destination: &f.access, EnvVars: env("S3_ACCESS_KEY"), Usage: "the S3 access key clients sign with"},
		&cli.StringFlag{Name: "secret-key", Destination: &f.secret, EnvVars: env("S3_SECRET_KEY"), Usage: "the secret key of --access-key (prefer the environment or the config file: a flag shows in ps)"},
		&cli.StringFlag{Name: "user", Destination: &f.user, EnvVars: env("S3_USER"), Usage: "the dfs user --access-key acts for (needed with TLS; the gateway's certificate must have the gateway role)"},
		&cli.StringFlag{Name: "keys", Destination: &f.keys, EnvVars: env("S3_KEYS"), Usage: "more access keys: ACCESS:SECRET:USER entries, comma-separated (a list in the config file)"},
		&cli.StringFlag{Name: "region", Value: f.cfg.Region, Destination: &f.cfg.Region, EnvVars: env("S3_REGION"), Usage: "the region the gateway reports and signatures must name"},
		&cli.StringFlag{Name: "domain", Destination: &f.cfg.VirtualDomain, EnvVars: env("S3_DOMAIN"), Usage: "base domain for virtual-host-style requests (<bucket>.<domain>); path style always works"},
		&cli.StringFlag{Name: "https-cert", Destination: &f.httpsCert, EnvVars: env("S3_HTTPS_CERT"), Usage: "PEM certificate to serve S3 over HTTPS (with --https-key; empty: plain HTTP)"},
		&cli.StringFlag{Name: "https-key", Destination: &f.httpsKey, EnvVars: env("S3_HTTPS_KEY"), Usage: "PEM private key of --https-cert"},
		&cli.DurationFlag{Name: "multipart-max-age", Value: f.cfg.MultipartMaxAge, Destination: &f.cfg.MultipartMaxAge, EnvVars: env("S3_MULTIPART_MAX_AGE"), Usage: "multipart uploads started longer ago are aborted and their parts removed (0: never)"},
		&cli.StringFlag{Name: "sweep-user", Destination: &f.cfg.SweepUser, EnvVars: env("S3_SWEEP_USER"), Usage: "the dfs user that aborts stale uploads, a superuser with TLS (default: the first key's user)"},
	}
}

// gatewayCert refuses a TLS client of the gateway without a certificate
// (cert) of the gateway role: only such a certificate may act for the
// users its keys name, so every request would be refused.
func gatewayCert(cl *client.Client, cert string) error {
	t := cl.TLS()
	if t == nil {
		return nil
	}
	switch r := t.Role(); {
	case r == pki.Gateway:
		return nil
	case r == "":
		return rpc.Errorf(rpc.Invalid, "with TLS the S3 gateway needs a certificate of the gateway role (--tls-cert and --tls-key; dfs admin cert issue --role gateway), not a token")
	default:
		return rpc.Errorf(rpc.Invalid, "the certificate %s is a %s's, not a gateway's: the S3 gateway needs one of the gateway role (dfs admin cert issue --role gateway)", cert, r)
	}
}

// s3Command runs the S3 gateway.
func (a *app) s3Command() *cli.Command {
	f := &s3Flags{cfg: s3gw.DefaultConfig()}
	ccfg := client.DefaultConfig()
	listen := &cli.StringFlag{Name: "listen", Value: f.cfg.Listen, Destination: &f.cfg.Listen, EnvVars: env("S3_LISTEN"), Usage: "address S3 clients connect to (host:port)"}
	return &cli.Command{
		Name: "s3", Usage: "run an S3 gateway to the cluster", Category: "server",
		Description: "Serves the cluster over the S3 protocol: buckets are top-level directories, keys are paths below them " +
			"(docs/s3.md). With TLS, its certificate must have the gateway role (dfs admin cert issue --role gateway) and each access key acts for a dfs user.",
		Flags: clientFlags(&ccfg, true, append([]cli.Flag{listen}, f.flags()...)...),
		Action: a.withClient(&ccfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if err := gatewayCert(cl, ccfg.TLSCert); err != nil {
				return err
			}
			cfg, err := f.config(ccfg.TLSCA != "")
			if err != nil {
				return err
			}
			g, err := s3gw.New(cfg, cl, a.log)
			if err != nil {
				return rpc.Errorf(rpc.Invalid, "%v", err)
			}
			watch, stopWatch := context.WithCancel(ctx) // the reloads end with the gateway
			defer stopWatch()
			a.sec.serve(watch, string(pki.Gateway), cl, a.log)
			go func() {
				select {
				case <-g.Ready():
					fmt.Fprintf(a.stdio.Out, "dfs s3: serving %s (region %s, %d access keys)\n", g.Endpoint(), cfg.Region, len(cfg.Keys))
				case <-ctx.Done():
				}
			}()
			return roles.RunNotifying(ctx, g.Ready(), a.log, g.Run)
		}),
	}
}
