// Package s3gw serves a dfs cluster over the S3 protocol.
//
// The S3 side (SigV4 and presigned URLs, aws-chunked payloads, checksums,
// the XML, routing) is versitygw's embeddable gateway; this package is its
// backend, written on the SDK (roles/client) alone: buckets are top-level
// directories, keys are paths below them, and multipart uploads keep their
// parts under /.s3/multipart so any gateway of the cluster can continue
// them. docs/s3.md has the mapping rules.
package s3gw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"

	"github.com/dfs-project/dfs/roles/client"
)

// Key is one access key of the gateway and the dfs user it acts for.
type Key struct {
	// Access and Secret are the S3 credentials.
	Access, Secret string
	// User is the dfs user the key's requests act as (client.ActingAs);
	// with TLS to the cluster it must be set, and the gateway's
	// certificate must have the gateway role. Over plain text it is only
	// recorded.
	User string
}

// Config is the gateway's configuration.
type Config struct {
	// Listen is the address S3 clients connect to (host:port).
	Listen string
	// Region is the region the gateway reports and signatures name.
	Region string
	// Keys are the access keys; the first is the gateway's root account
	// (versitygw's), which changes nothing here: every key may do what
	// its dfs user may.
	Keys []Key
	// VirtualDomain, when set, enables virtual-host-style addressing
	// (<bucket>.<VirtualDomain>) beside path-style.
	VirtualDomain string
	// CertFile and KeyFile, when set, serve S3 over HTTPS.
	CertFile, KeyFile string
	// MultipartMaxAge aborts multipart uploads started longer ago; 0
	// keeps them until completed or aborted.
	MultipartMaxAge time.Duration
	// SweepEvery is how often uploads older than MultipartMaxAge are
	// looked for.
	SweepEvery time.Duration
	// SweepUser is the dfs user the sweep of stale uploads acts as (it
	// must be allowed to remove any upload: a superuser); empty takes the
	// first key's user.
	SweepUser string
	// Clock tells the time (uploads' ages); nil is the real clock.
	Clock clockwork.Clock
	// OnSweep, when set, is told what each sweep of stale uploads did
	// (tests wait on it).
	OnSweep func(aborted int, err error)
}

// DefaultListen is the address the gateway listens on unless told: the
// port MinIO and most S3 tools expect, on loopback only.
const DefaultListen = "127.0.0.1:9000"

// DefaultConfig returns the defaults: 127.0.0.1:9000, us-east-1, stale
// multipart uploads aborted after 7 days, looked for every hour.
func DefaultConfig() Config {
	return Config{Listen: DefaultListen, Region: "us-east-1", MultipartMaxAge: 7 * 24 * time.Hour, SweepEvery: time.Hour}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" || port == "0" {
		return fmt.Errorf("s3 gateway: listen address %q: want host:port with a port", c.Listen)
	}
	if c.Region == "" {
		return errors.New("s3 gateway: empty region")
	}
	if len(c.Keys) == 0 {
		return errors.New("s3 gateway: no access key: set --access-key and --secret-key (DFS_S3_ACCESS_KEY, DFS_S3_SECRET_KEY) or keys in the config file")
	}
	seen := map[string]bool{}
	for _, k := range c.Keys {
		switch {
		case k.Access == "" || k.Secret == "":
			return fmt.Errorf("s3 gateway: access key %q: access key and secret key must both be set", k.Access)
		case strings.ContainsAny(k.Access, " /:,") || len(k.Access) < 3 || len(k.Access) > 128:
			return fmt.Errorf("s3 gateway: access key %q: want 3 to 128 characters without spaces, slashes, colons or commas", k.Access)
		case len(k.Secret) < 8:
			return fmt.Errorf("s3 gateway: access key %q: the secret key needs at least 8 characters", k.Access)
		case seen[k.Access]:
			return fmt.Errorf("s3 gateway: access key %q given twice", k.Access)
		}
		seen[k.Access] = true
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("s3 gateway: set both the certificate and the key for HTTPS, or neither")
	}
	if c.MultipartMaxAge < 0 || (c.MultipartMaxAge > 0 && c.SweepEvery <= 0) {
		return errors.New("s3 gateway: the multipart max age must be 0 (never) or positive, with a positive sweep interval")
	}
	return nil
}

// Gateway is the S3 gateway role.
type Gateway struct {
	cfg   Config
	be    *Backend
	log   zerolog.Logger
	ready chan struct{}
	once  sync.Once
}

// New returns a gateway serving the cluster c talks to; it does not
// listen until Run. c is not closed by the gateway.
func New(cfg Config, c *client.Client, log zerolog.Logger) (*Gateway, error) {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With().Str("role", "s3").Logger()
	users := make(map[string]string, len(cfg.Keys))
	for _, k := range cfg.Keys {
		users[k.Access] = k.User
	}
	be := newBackend(c, users, cfg.Clock, log)
	return &Gateway{cfg: cfg, be: be, log: log, ready: make(chan struct{})}, nil
}

// Backend returns the gateway's S3 backend.
func (g *Gateway) Backend() *Backend { return g.be }

// Ready is closed once the gateway listens.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Endpoint is the URL S3 clients use.
func (g *Gateway) Endpoint() string {
	scheme := "http"
	if g.cfg.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + g.cfg.Listen
}

// Run serves S3 until ctx ends, then stops gracefully and returns nil. It
// also aborts stale multipart uploads (Config.MultipartMaxAge). Only one
// gateway runs per process (a limit of versitygw's).
func (g *Gateway) Run(ctx context.Context) error {
	g.be.base = ctx
	var sweeper sync.WaitGroup
	if g.cfg.MultipartMaxAge > 0 {
		sweepUser := g.cfg.SweepUser
		if sweepUser == "" {
			sweepUser = g.cfg.Keys[0].User
		}
		sweeper.Go(func() { g.sweep(ctx, sweepUser) })
	}
	defer sweeper.Wait()
	iam := newIAM(g.cfg.Keys)
	vcfg := &embedgw.Config{
		RootUserAccess: g.cfg.Keys[0].Access, RootUserSecret: g.cfg.Keys[0].Secret, Region: g.cfg.Region,
		Ports: []string{g.cfg.Listen}, MaxConnections: 250000, MaxRequests: 100000, MultipartMaxParts: 10000,
		CertFile: g.cfg.CertFile, KeyFile: g.cfg.KeyFile, Quiet: true, KeepAlive: true, DisableACLs: true,
		VirtualDomain: g.cfg.VirtualDomain, IAMService: iam,
		S3Options: []s3api.Option{s3api.WithOnListen(func() { g.once.Do(func() { close(g.ready) }) })},
	}
	g.log.Info().Str("listen", g.cfg.Listen).Str("region", g.cfg.Region).Int("keys", len(g.cfg.Keys)).Msg("s3 gateway serving")
	err := embedgw.RunVersityGW(ctx, g.be, vcfg)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("s3 gateway: %w", err)
	}
	g.log.Info().Msg("s3 gateway stopped")
	return nil
}

// sweep aborts, every SweepEvery, the multipart uploads started more than
// MultipartMaxAge ago, acting as user.
func (g *Gateway) sweep(ctx context.Context, user string) {
	t := g.cfg.Clock.NewTicker(g.cfg.SweepEvery)
	defer t.Stop()
	for {
		n, err := g.be.AbortStale(ctx, user, g.cfg.MultipartMaxAge)
		if g.cfg.OnSweep != nil {
			g.cfg.OnSweep(n, err)
		}
		if err != nil && ctx.Err() == nil {
			g.log.Warn().Err(err).Msg("abort stale multipart uploads")
		} else if n > 0 {
			g.log.Info().Int("uploads", n).Dur("max_age", g.cfg.MultipartMaxAge).Msg("aborted stale multipart uploads")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}
