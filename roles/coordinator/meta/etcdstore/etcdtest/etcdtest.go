// Package etcdtest runs real etcd servers, embedded in the test process, on
// loopback ports for tests of code that talks to etcd.
package etcdtest

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfs-project/dfs/internal/freeport"
	"github.com/google/uuid"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startTimeout bounds how long a cluster may take to elect a leader and
// serve clients; generous, as CI machines are slow and shared.
const startTimeout = time.Minute

// Start starts a one-member etcd on 127.0.0.1 with its data in t.TempDir()
// and returns its client endpoints ("127.0.0.1:port"). The server stops in
// t.Cleanup. A server that does not start fails the test.
func Start(t testing.TB) (endpoints []string) {
	t.Helper()
	return StartCluster(t, 1).Endpoints()
}

// TLS is the TLS a member serves its clients with: PEM files of its
// certificate (which must name 127.0.0.1) and key, and of the CA whose
// client certificates it accepts.
type TLS struct {
	CertFile, KeyFile, CAFile string
	// ClientCertAuth makes the member refuse a client without a
	// certificate the CA signed (etcd's --client-cert-auth).
	ClientCertAuth bool
}

// StartTLS starts a one-member etcd as Start does, serving its clients
// over TLS, and returns its client endpoints ("https://127.0.0.1:port").
func StartTLS(t testing.TB, tls TLS) (endpoints []string) {
	t.Helper()
	c := startWith(t, 1, &tls, 0)
	for _, e := range c.Endpoints() {
		endpoints = append(endpoints, "https://"+e)
	}
	return endpoints
}

// Cluster is a running etcd cluster of in-process members.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	members []*member
}

type member struct {
	name   string
	client string // host:port
	etcd   *embed.Etcd
	level  zap.AtomicLevel
}

// StartCluster starts an n-member etcd cluster on 127.0.0.1, each member
// with its own t.TempDir(), waits until it serves clients, and stops every
// member in t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return startWith(t, n, nil, 0)
}

// StartMaxTxnOps starts a one-member etcd as Start does, which refuses a
// transaction of more than ops operations (etcd's --max-txn-ops).
func StartMaxTxnOps(t testing.TB, ops uint) (endpoints []string) {
	t.Helper()
	return startWith(t, 1, nil, ops).Endpoints()
}

// startWith starts n members; maxTxnOps 0 keeps etcd's default.
func startWith(t testing.TB, n int, tls *TLS, maxTxnOps uint) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: a cluster needs at least one member, not %d", n)
	}
	var lastErr error
	// Ports are chosen by the kernel and released before etcd binds them,
	// so another process may take one in between: try again on new ports.
	for attempt := 0; attempt < 5; attempt++ {
		c, err := startCluster(t, n, tls, maxTxnOps)
		if err == nil {
			t.Cleanup(c.stopAll)
			return c
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("etcdtest: start %d-member etcd: %v", n, lastErr)
	return nil
}

func startCluster(t testing.TB, n int, tls *TLS, maxTxnOps uint) (*Cluster, error) {
	ports, err := freeport.Free(2 * n)
	if err != nil {
		return nil, err
	}
	token := "dfs-test-" + uuid.NewString()
	var initial []string
	for i := 0; i < n; i++ {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	c := &Cluster{t: t}
	cfgs := make([]*embed.Config, n)
	for i := 0; i < n; i++ {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = token
		if maxTxnOps > 0 {
			cfg.MaxTxnOps = maxTxnOps
		}
		cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		if tls != nil {
			cu.Scheme = "https"
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: tls.CertFile, KeyFile: tls.KeyFile, TrustedCAFile: tls.CAFile, ClientCertAuth: tls.ClientCertAuth}
		}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		// Errors only, to stderr: the test output stays readable, and
		// nothing logs through t after the test ends.
		level := zap.NewAtomicLevelAt(zap.ErrorLevel)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(stderrLogger(level))
		cfgs[i] = cfg
		c.members = append(c.members, &member{name: cfg.Name, client: cu.Host, level: level})
	}
	// Members of a new cluster wait for each other, so start them all
	// before waiting for any.
	for i, cfg := range cfgs {
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.stopAll()
			return nil, fmt.Errorf("member %s: %w", cfg.Name, err)
		}
		c.members[i].etcd = e
	}
	deadline := time.After(startTimeout)
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case err := <-m.etcd.Err():
			c.stopAll()
			return nil, fmt.Errorf("member %s: %w", m.name, err)
		case <-deadline:
			c.stopAll()
			return nil, fmt.Errorf("member %s not ready after %v", m.name, startTimeout)
		}
	}
	return c, nil
}

func stderrLogger(level zap.AtomicLevel) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), level)
	return zap.New(core).Named("etcd")
}

// Endpoints returns the client endpoints of every member, stopped ones
// included.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.client)
	}
	return out
}

// Stop stops member i, as a crash of its machine would (the data stays).
// Stopping a stopped member does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	m := c.members[i]
	e := m.etcd
	m.etcd = nil
	c.mu.Unlock()
	if e != nil {
		// Closing listeners logs errors that mean nothing here.
		m.level.SetLevel(zap.FatalLevel)
		e.Close()
	}
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}
