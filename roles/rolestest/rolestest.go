// Package rolestest starts whole dfs clusters in the test's process for
// the roles tests, the CLI tests and the benchmarks.
//
// A cluster is a coordinator and datanodes on 127.0.0.1:0 in temp dirs,
// logging into the test, stopped when the test ends; the roles.Cluster it
// returns stops, restarts and adds nodes and restarts the coordinator.
package rolestest

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/testlog"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/datanode"
)

// Test tuning: small chunks and frames so a few KiB exercise every chunk
// boundary, quick heartbeats, and failure timeouts generous enough that a
// busy 2-core machine running -race never marks a live node suspect.
const (
	ChunkSize = 64 << 10
	FrameSize = 16 << 10
	// WaitFor bounds a test's polling loops: far longer than any of them
	// should take, so a slow machine is never a failure.
	WaitFor = 60 * time.Second
)

// Option adjusts a test cluster's configuration.
type Option func(*roles.ClusterConfig)

// WithCoordinator adjusts the coordinator's configuration.
func WithCoordinator(f func(*coordinator.Config)) Option {
	return func(c *roles.ClusterConfig) { f(&c.Coordinator) }
}

// WithDatanode adjusts every datanode's configuration.
func WithDatanode(f func(*datanode.Config)) Option {
	return func(c *roles.ClusterConfig) { f(&c.Datanode) }
}

// WithLogLevel sets the level of the cluster's logs (Info by default).
func WithLogLevel(l zerolog.Level) Option {
	return func(c *roles.ClusterConfig) { c.Log = c.Log.Level(l) }
}

// WithConfig adjusts the whole cluster configuration.
func WithConfig(f func(*roles.ClusterConfig)) Option { return Option(f) }

// Logger logs into the test's output at Info, with timestamps, until the
// test ends.
func Logger(t testing.TB) zerolog.Logger {
	t.Helper()
	return PlainLogger(t).With().Timestamp().Logger()
}

// PlainLogger is Logger without timestamps, for tests that run the
// command line in process: it sets zerolog's global time format, which
// the timestamp hook reads.
func PlainLogger(t testing.TB) zerolog.Logger {
	t.Helper()
	return testlog.New(t).Level(zerolog.InfoLevel)
}

// Config returns the test configuration of a cluster of nodes datanodes
// in a temp dir: 64 KiB chunks, each a file (no pack files), no GC delay,
// quick heartbeats, logs into t.
func Config(t testing.TB, nodes int) roles.ClusterConfig {
	t.Helper()
	cfg := roles.DefaultClusterConfig(t.TempDir())
	cfg.Nodes = nodes
	cfg.Log = Logger(t)
	cfg.Coordinator.ChunkSize = ChunkSize
	cfg.Coordinator.GCDelay = 0 // tests that need it set it
	cfg.Coordinator.SuspectAfter = 15 * time.Second
	cfg.Coordinator.DeadAfter = 30 * time.Second
	cfg.Datanode.HeartbeatInterval = 100 * time.Millisecond
	// Every chunk a file of its own: tests damage and remove chunks by
	// their file (ChunkPath). Packed chunks are covered by the datanode's
	// and chunkstore's tests and the process tests.
	cfg.Datanode.PackThreshold = 0
	return cfg
}

// Start starts a coordinator and nodes datanodes with Config adjusted by
// opts, waits until every datanode is healthy and stops the cluster when
// the test ends.
func Start(t testing.TB, nodes int, opts ...Option) *roles.Cluster {
	t.Helper()
	cfg := Config(t, nodes)
	for _, o := range opts {
		o(&cfg)
	}
	return StartWith(t, cfg)
}

// StartWith starts the cluster cfg describes and stops it when the test
// ends. Benchmarks start roles.DefaultClusterConfig this way, for figures
// with the default chunk size and no logging.
func StartWith(t testing.TB, cfg roles.ClusterConfig) *roles.Cluster {
	t.Helper()
	c, err := roles.StartCluster(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start a cluster of %d datanodes: %v", cfg.Nodes, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Client returns a client of c with 16 KiB frames and the default
// timeouts, adjusted by tune; it closes when the test ends.
func Client(t testing.TB, c *roles.Cluster, tune ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.FrameSize = FrameSize
	for _, f := range tune {
		f(&cfg)
	}
	cl, err := c.Client(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Secure runs the cluster with TLS and access checks (roles.LocalPKI
// under its directory); rolestest.Client is then the superuser.
func Secure(cfg *roles.ClusterConfig) { cfg.Secure = true }

// UserClient returns a client of a Secure cluster c for user in groups
// (a client certificate is issued for them), adjusted by tune; it closes
// when the test ends.
func UserClient(t testing.TB, c *roles.Cluster, user string, groups []string, tune ...func(*client.Config)) *client.Client {
	t.Helper()
	uc, err := c.UserConfig(user, groups...)
	if err != nil {
		t.Fatalf("user %s: %v", user, err)
	}
	return Client(t, c, append([]func(*client.Config){func(cfg *client.Config) {
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL = uc.TLSCA, uc.TLSCert, uc.TLSKey, uc.TLSCRL
	}}, tune...)...)
}

// GatewayClient returns a client of a Secure cluster c with a gateway
// certificate called name, which may act for users (client.ActingAs),
// adjusted by tune; it closes when the test ends.
func GatewayClient(t testing.TB, c *roles.Cluster, name string, tune ...func(*client.Config)) *client.Client {
	t.Helper()
	gc, err := c.GatewayConfig(name)
	if err != nil {
		t.Fatalf("gateway %s: %v", name, err)
	}
	return Client(t, c, append([]func(*client.Config){func(cfg *client.Config) {
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL = gc.TLSCA, gc.TLSCert, gc.TLSKey, gc.TLSCRL
	}}, tune...)...)
}
